"""Export the packaged sentence-transformers model to ONNX (fp32 and int8), offline.

``python -m aimesh_embedding.export_onnx [--out DIR]`` (``make embedding-onnx``) needs torch
and sentence-transformers; the service that serves the result needs neither. The graph maps
(input_ids, attention_mask, token_type_ids) to the attention-masked mean of the last hidden
state, the pooling of all-MiniLM-L6-v2; the service L2-normalizes it. The int8 variant is
dynamic, per-channel quantization of the weights (per-tensor int8 loses too much: cosine
about 0.86 to the fp32 vectors on this model, against about 0.98 per channel).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from typing import Any

from aimesh_embedding.config import Settings
from aimesh_embedding.onnx_backend import METADATA_FILE, MODEL_FILES

OPSET = 17


def _pooling_mode(model_dir: str) -> str:
    """The pooling of the sentence-transformers model; only mean pooling is exported."""
    with open(os.path.join(model_dir, "modules.json"), encoding="utf-8") as file:
        modules = json.load(file)
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            with open(
                os.path.join(model_dir, module["path"], "config.json"), encoding="utf-8"
            ) as file:
                config = json.load(file)
            if config.get("pooling_mode_mean_tokens"):
                return "mean"
            raise SystemExit(f"only mean pooling is exported; {model_dir} uses {config}")
    raise SystemExit(f"{model_dir} has no Pooling module")


def export(settings: Settings, out_dir: str) -> dict[str, Any]:
    """Write model.onnx, model_int8.onnx, tokenizer.json and the metadata to ``out_dir``."""
    import torch
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    from aimesh_embedding.model import load_encoder

    model_dir = settings.embedding_model
    pooling = _pooling_mode(model_dir)
    encoder = load_encoder(settings)
    sentence_transformer = encoder._model
    bert = sentence_transformer[0].auto_model.eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            # transformers 5 rejects positional arguments here.
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled: torch.Tensor = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return pooled

    os.makedirs(out_dir, exist_ok=True)
    fp32_path = os.path.join(out_dir, MODEL_FILES["fp32"])
    int8_path = os.path.join(out_dir, MODEL_FILES["int8"])
    example = encoder.tokenize(["an example sentence for tracing", "short"], truncate=True)
    longest = max(len(ids) for ids in example)
    input_ids = torch.zeros((len(example), longest), dtype=torch.int64)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(example):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        attention_mask[row, : len(ids)] = 1
    dynamic = {0: "batch", 1: "sequence"}
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks in transformers: harmless here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled().eval(),
            (input_ids, attention_mask, torch.zeros_like(input_ids)),
            fp32_path,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "token_type_ids": dynamic,
                "sentence_embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    quantize_dynamic(fp32_path, int8_path, per_channel=True, weight_type=QuantType.QInt8)
    shutil.copyfile(
        os.path.join(model_dir, "tokenizer.json"), os.path.join(out_dir, "tokenizer.json")
    )
    metadata = {
        "name": encoder.name,
        "dimension": encoder.dimension,
        "max_input_tokens": encoder.max_input_tokens,
        "pooling": pooling,
        "normalize": True,
        "opset": OPSET,
        "source": os.path.basename(model_dir),
    }
    with open(os.path.join(out_dir, METADATA_FILE), "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=2)
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        help="export directory (default: AIMESH_EMBEDDING_ONNX_DIR or "
        "<AIMESH_DATA_DIR>/models/all-MiniLM-L6-v2-onnx)",
    )
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing when the export already exists"
    )
    args = parser.parse_args(argv)
    settings = Settings(embedding_backend="torch", metrics_port=None)
    out_dir = os.path.abspath(args.out or settings.onnx_dir())
    if args.if_missing and all(
        os.path.isfile(os.path.join(out_dir, name))
        for name in (*MODEL_FILES.values(), METADATA_FILE, "tokenizer.json")
    ):
        print(f"ONNX export already in {out_dir}", file=sys.stderr)
        return
    started = time.perf_counter()
    metadata = export(settings, out_dir)
    sizes = {
        name: os.path.getsize(os.path.join(out_dir, name)) // 1024 for name in MODEL_FILES.values()
    }
    print(
        f"exported {metadata['name']} to {out_dir} in {time.perf_counter() - started:.1f}s "
        f"({', '.join(f'{name} {kib} KiB' for name, kib in sizes.items())})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
