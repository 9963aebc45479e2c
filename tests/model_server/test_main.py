"""The model server's start: an engine whose library is not installed is a clear error."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from aimesh_model_server import main
from aimesh_model_server.config import Settings
from aimesh_model_server.prepare import ModelSourceError


def test_openvino_without_its_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "openvino_genai" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    settings = Settings(engine="openvino-genai", model_path=tmp_path, data_dir=tmp_path)
    with pytest.raises(ModelSourceError, match=r"aimesh-model-server\[openvino\]"):
        main.build_engine(settings)
