"""From a named model to what the engine loads: converted once, never half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aimesh_model_server.prepare import (
    ModelSourceError,
    is_engine_dir,
    is_openvino_dir,
    main,
    resolve,
    transformers_to_gguf,
)
from tests.model_server.tiny import build_tiny_llama


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
    """What the image build runs: the engine directory the server then loads as it is
    (openvino-genai's unless another engine is named)."""
    out = tmp_path / "model"
    assert main(["--model-path", str(tiny_hf_dir), "--out", str(out)]) == 0
    assert is_openvino_dir(out)
    assert (
        resolve(out, tmp_path / "d", engine="openvino-genai", precision="int4", device="cpu") == out
    )
    ort = tmp_path / "ort"
    argv = ["--model-path", str(tiny_hf_dir), "--out", str(ort), "--engine", "onnxruntime-genai"]
    assert main(argv) == 0
    assert is_engine_dir(ort)
    assert (
        resolve(ort, tmp_path / "d", engine="onnxruntime-genai", precision="int4", device="cpu")
        == ort
    )
    # An existing target is never overwritten; a bad source says why.
    assert main(["--model-path", str(tiny_hf_dir), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["--model-path", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_openvino_model_computes_what_transformers_computes(tmp_path: Path) -> None:
    """The transformers directory written as GGUF (float16) and read by openvino-genai: the
    same logits at every position, and the same prompt tokens from its own tokenizer.

    The tiny model attends sharply (scaled query/key weights), so a wrong rotary layout
    shows: without the q/k reordering the logits differ by about 37 % of their range, with
    it by 0.5 %."""
    tiny_hf_dir = build_tiny_llama(tmp_path / "sharp", attention_scale=8.0)
    import numpy as np
    import openvino as ov
    import openvino_genai
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    built = resolve(tiny_hf_dir, tmp_path, engine="openvino-genai", precision="fp32", device="cpu")
    assert is_openvino_dir(built)
    messages = [{"role": "user", "content": "When was the harbor lighthouse built?"}]
    reference_tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    encoded: Any = reference_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True
    )
    ids = [int(i) for i in (encoded if isinstance(encoded, list) else encoded["input_ids"])]
    tokenizer = openvino_genai.Tokenizer(str(built))
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist() == ids

    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    with torch.inference_mode():
        expected = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    compiled = ov.Core().compile_model(str(built / "openvino_model.xml"), "CPU")
    request = compiled.create_infer_request()
    length = len(ids)
    request.infer(
        {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, length), dtype=np.int64),
            "position_ids": np.arange(length, dtype=np.int64)[None, :],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
    )
    logits = request.get_tensor("logits").data[0]
    assert logits.shape == expected.shape
    # float16 weights: close, and the same greedy choice wherever the margin is clear.
    assert np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()
    top2 = np.sort(expected, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.01
    assert clear.any()
    assert (logits.argmax(-1) == expected.argmax(-1))[clear].all()


def test_a_gguf_file_is_read_into_openvino_once(tiny_hf_dir: Path, tmp_path: Path) -> None:
    gguf_file = transformers_to_gguf(tiny_hf_dir, tmp_path / "tiny.gguf", "int8")
    built = resolve(
        gguf_file, tmp_path / "d", engine="openvino-genai", precision="int4", device="cpu"
    )
    assert is_openvino_dir(built)
    assert not list(built.glob("*.gguf"))  # the source is not copied into the data dir
    stamp = (built / "openvino_model.xml").stat().st_mtime_ns
    again = resolve(
        gguf_file, tmp_path / "d", engine="openvino-genai", precision="int4", device="cpu"
    )
    assert again == built
    assert (built / "openvino_model.xml").stat().st_mtime_ns == stamp  # not rebuilt
    # An OpenVINO directory is loaded as it is.
    assert (
        resolve(built, tmp_path / "e", engine="openvino-genai", precision="int4", device="cpu")
        == built
    )


def test_openvino_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelSourceError, match="Llama models only"):
        resolve(other, tmp_path / "data", engine="openvino-genai", precision="int8", device="cpu")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelSourceError, match="cannot read"):
        resolve(broken, tmp_path / "data", engine="openvino-genai", precision="int8", device="cpu")
    assert not list((tmp_path / "data" / "models").iterdir())
