"""From a named model to what the engine loads: converted once, never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimesh_model_server.prepare import ModelSourceError, is_engine_dir, main, resolve


def test_an_engine_directory_is_loaded_as_it_is(tiny_engine_dir: Path, tmp_path: Path) -> None:
    found = resolve(
        tiny_engine_dir, tmp_path, engine="onnxruntime-genai", precision="int4", device="cpu"
    )
    assert found == tiny_engine_dir


def test_a_transformers_directory_is_built_once(
    tiny_hf_dir: Path, tiny_engine_dir: Path, tiny_data_dir: Path
) -> None:
    # tiny_engine_dir was built by resolve() into tiny_data_dir.
    assert is_engine_dir(tiny_engine_dir)
    assert tiny_engine_dir.parent == tiny_data_dir / "models"
    stamp = (tiny_engine_dir / "genai_config.json").stat().st_mtime_ns
    again = resolve(
        tiny_hf_dir, tiny_data_dir, engine="onnxruntime-genai", precision="int4", device="cpu"
    )
    assert again == tiny_engine_dir
    assert (tiny_engine_dir / "genai_config.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert not [p for p in (tiny_data_dir / "models").iterdir() if ".tmp-" in p.name]


def test_the_transformers_engine_reads_the_directory_itself(
    tiny_hf_dir: Path, tmp_path: Path
) -> None:
    assert (
        resolve(tiny_hf_dir, tmp_path, engine="transformers", precision="int4", device="cpu")
        == tiny_hf_dir
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.gguf", "does not exist"),
        (lambda d: (d / "weights.bin").write_bytes(b"x") and d / "weights.bin", "not a GGUF file"),
        (lambda d: d, "neither a GGUF file"),
    ],
)
def test_what_cannot_be_loaded_says_why(tmp_path: Path, make: object, message: str) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ModelSourceError, match=message):
        resolve(
            source, tmp_path / "data", engine="onnxruntime-genai", precision="int4", device="cpu"
        )


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "nothing-real"}')
    with pytest.raises(ModelSourceError, match="model builder failed"):
        resolve(
            broken, tmp_path / "data", engine="onnxruntime-genai", precision="int4", device="cpu"
        )
    assert [
        p.name for p in (tmp_path / "data" / "models").iterdir() if p.name != "builder-cache"
    ] == []


def test_ahead_of_time_conversion_writes_an_engine_directory(
    tiny_hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the image build runs: the engine directory the server then loads as it is."""
    out = tmp_path / "model"
    assert main(["--model-path", str(tiny_hf_dir), "--out", str(out)]) == 0
    assert is_engine_dir(out)
    assert (
        resolve(out, tmp_path / "d", engine="onnxruntime-genai", precision="int4", device="cpu")
        == out
    )
    # An existing target is never overwritten; a bad source says why.
    assert main(["--model-path", str(tiny_hf_dir), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["--model-path", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
