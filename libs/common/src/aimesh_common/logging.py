"""One logging setup for every service: JSON lines for machines, plain text for a terminal.

Records made while a request is handled carry its id as ``request_id``
(:class:`RequestIdLogFilter`, see :mod:`aimesh_common.request_id`): a field of the JSON
line, ``[<id>]`` after the logger name in text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from aimesh_common.request_id import request_id_var

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's colored duplicate of msg
}


# One encoder for every line (json.dumps with an argument builds a new one per call).
_ENCODER = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line, with ``extra=`` fields included."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(payload)


class RequestIdLogFilter(logging.Filter):
    """Adds the current request id to every log record made while handling a request.

    A filter of the handler (not of a logger), so records of every logger get it; a record
    that names its own ``request_id`` (``extra=``) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class TextFormatter(logging.Formatter):
    """``<time> <level> <service> <logger>: <message>``, with ``[<request id>]`` after the
    logger name when the record has one."""

    def __init__(self, service: str) -> None:
        service = service.replace("%", "%%")
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        self._with_request_id = logging.PercentStyle(
            f"%(asctime)s %(levelname)s {service} %(name)s [%(request_id)s]: %(message)s"
        )

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        if getattr(record, "request_id", None):
            return self._with_request_id.format(record)
        return super().formatMessage(record)


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route all logging to stderr in the chosen format. Called once by each ``main()``.

    Every record made while a request is handled carries its id (:class:`RequestIdLogFilter`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    handler.addFilter(RequestIdLogFilter())
    # No format here shows the thread or the process: skip looking them up for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party loggers that are chatty at INFO (faiss's loader logs each CPU-specific build
    # it probes for, with a ModuleNotFoundError for every one not installed).
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "sentence_transformers", "faiss"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
