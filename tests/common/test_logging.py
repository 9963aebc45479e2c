"""The logging setup: JSON and text lines, with the current request id on every record."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from aimesh_common.logging import JsonFormatter, TextFormatter, configure_logging
from aimesh_common.request_id import request_id_var


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers and a few module flags: put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    flags = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags


@pytest.fixture
def current_id() -> Iterator[str]:
    token = request_id_var.set("rid-5")
    yield "rid-5"
    request_id_var.reset(token)


def _emit(message: str, **extra: object) -> None:
    logging.getLogger("aimesh.test.logging").warning(message, extra=extra)


def test_json_lines_carry_the_current_request_id(
    restore_logging: None, current_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("svc", "INFO", "json")
    _emit("inside", collection="docs")
    line = json.loads(capsys.readouterr().err.strip())
    assert line["request_id"] == current_id
    assert line["collection"] == "docs"
    assert line["service"] == "svc"
    assert line["msg"] == "inside"


def test_json_lines_outside_a_request_have_no_request_id(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("svc", "INFO", "json")
    _emit("outside")
    line = json.loads(capsys.readouterr().err.strip())
    assert "request_id" not in line


def test_a_request_id_given_with_extra_wins(
    restore_logging: None, current_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("svc", "INFO", "json")
    _emit("explicit", request_id="own-1")
    assert json.loads(capsys.readouterr().err.strip())["request_id"] == "own-1"


def test_text_lines_show_the_request_id_after_the_logger(
    restore_logging: None, current_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("svc", "INFO", "text")
    _emit("inside")
    token = request_id_var.set(None)
    try:
        _emit("outside")
    finally:
        request_id_var.reset(token)
    inside, outside = capsys.readouterr().err.strip().splitlines()
    assert inside.endswith(" WARNING svc aimesh.test.logging [rid-5]: inside")
    assert outside.endswith(" WARNING svc aimesh.test.logging: outside")


def test_formatters_alone_take_request_id_from_the_record() -> None:
    record = logging.makeLogRecord(
        {"name": "n", "levelname": "INFO", "msg": "m %s", "args": ("x",), "request_id": "r-1"}
    )
    assert json.loads(JsonFormatter("s").format(record))["request_id"] == "r-1"
    assert TextFormatter("100%").format(record).endswith(" INFO 100% n [r-1]: m x")
    plain = logging.makeLogRecord({"name": "n", "levelname": "INFO", "msg": "m"})
    assert TextFormatter("s").format(plain).endswith(" INFO s n: m")


def test_faiss_probing_its_cpu_builds_is_not_logged_at_info(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """faiss's loader logs a ModuleNotFoundError for each CPU-specific build it probes: a
    clean start must not show lines that look like failures."""
    configure_logging("svc", "INFO", "text")
    loader = logging.getLogger("faiss.loader")
    loader.info("Could not load library with AVX512 support due to: ModuleNotFoundError(...)")
    loader.warning("a real faiss problem")
    err = capsys.readouterr().err
    assert "ModuleNotFoundError" not in err
    assert "a real faiss problem" in err
