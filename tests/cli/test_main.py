"""The ``aimesh`` command line: the parser skeleton."""

from __future__ import annotations

import pytest

from aimesh_cli.main import build_parser, main


def test_without_a_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: aimesh" in capsys.readouterr().err


def test_command_groups_are_registered() -> None:
    help_text = build_parser().format_help()
    for group in ("ingest", "search", "eval"):
        assert group in help_text
    assert "keys" not in help_text  # server-side: aimesh-gateway-manage
