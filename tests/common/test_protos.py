"""The committed generated code matches protos/; the check catches a stale file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_protos.py"


def _check(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_committed_code_is_fresh() -> None:
    result = _check(ROOT / "libs" / "common" / "src")
    assert result.returncode == 0, result.stderr


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "libs" / "common" / "src" / "aimesh", tmp_path / "aimesh")
    stale = tmp_path / "aimesh" / "llm" / "v1" / "llm_pb2.py"
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "llm_pb2.py" in result.stderr


def test_packages_are_versioned() -> None:
    from aimesh.embedding.v1 import embedding_pb2
    from aimesh.llm.v1 import llm_pb2
    from aimesh.retrieval.v1 import retrieval_pb2

    names = {
        embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
        retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name,
        llm_pb2.DESCRIPTOR.services_by_name["LLMRouterService"].full_name,
    }
    assert names == {
        "aimesh.embedding.v1.EmbeddingService",
        "aimesh.retrieval.v1.RetrievalService",
        "aimesh.llm.v1.LLMRouterService",
    }
