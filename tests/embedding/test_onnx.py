"""The onnx backend: exported from the packaged model, same vectors as torch, no torch needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest

from aimesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from aimesh_embedding.config import Settings
from aimesh_embedding.export_onnx import export
from aimesh_embedding.onnx_backend import ARENA_SHRINKAGE, OnnxEncoder, load_onnx_encoder
from aimesh_embedding.server import create_server
from scripts.bench.texts import bench_texts
from tests.embedding.texts import words

if TYPE_CHECKING:
    from aimesh_embedding.model import TorchEncoder

pytestmark = pytest.mark.slow

EDGE_CASES = [
    "hello",
    "naïve café résumé — unicode text with punctuation!",
    "日本語のテキストも埋め込める。",
    words(254),
    words(600),  # truncated to 256 tokens
]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export(Settings(metrics_port=None), str(out))
    return out


def onnx_encoder(onnx_dir: Path, variant: str, shrink_arena: bool = True) -> OnnxEncoder:
    return load_onnx_encoder(
        Settings(
            metrics_port=None,
            embedding_backend="onnx",
            embedding_onnx_dir=str(onnx_dir),
            embedding_onnx_variant=variant,
            embedding_onnx_shrink_arena=shrink_arena,
        )
    )


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*EDGE_CASES, *bench_texts(300)]


@pytest.fixture(scope="module")
def torch_vectors(embedding_encoder: TorchEncoder, texts: list[str]) -> np.ndarray:
    return np.asarray(embedding_encoder.embed(texts, truncate=True, dimensions=0).vectors)


def test_export_is_self_contained(onnx_dir: Path) -> None:
    assert sorted(os.listdir(onnx_dir)) == [
        "aimesh_onnx.json",
        "model.onnx",
        "model_int8.onnx",
        "tokenizer.json",
    ]
    metadata = json.loads((onnx_dir / "aimesh_onnx.json").read_text())
    assert metadata["name"] == "all-MiniLM-L6-v2"
    assert metadata["dimension"] == 384
    assert metadata["max_input_tokens"] == 256
    # int8 weights: about a quarter of the fp32 file.
    assert (onnx_dir / "model_int8.onnx").stat().st_size < 0.35 * (
        onnx_dir / "model.onnx"
    ).stat().st_size


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dots: np.ndarray = np.sum(a * b, axis=1)
    norms: np.ndarray = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(dots / norms)


def _neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean share of each text's top-k neighbours (by the reference) that the candidate finds."""
    queries = range(0, len(reference), 3)
    shared = 0
    for query in queries:
        expected = np.argsort(-(reference @ reference[query]))[1 : k + 1]
        found = np.argsort(-(candidate @ candidate[query]))[1 : k + 1]
        shared += len(set(expected.tolist()) & set(found.tolist()))
    return shared / (k * len(queries))


def test_fp32_vectors_equal_torch(
    onnx_dir: Path, texts: list[str], torch_vectors: np.ndarray
) -> None:
    encoder = onnx_encoder(onnx_dir, "fp32")
    assert encoder.backend == "onnx"
    assert (encoder.name, encoder.dimension, encoder.max_input_tokens) == (
        "all-MiniLM-L6-v2",
        384,
        256,
    )
    result = encoder.embed(texts, truncate=True, dimensions=0)
    cosines = _cosines(result.vectors, torch_vectors)
    assert cosines.min() >= 0.999, f"min cosine {cosines.min():.6f}"
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert _neighbour_overlap(torch_vectors, result.vectors) >= 0.99


@pytest.mark.parametrize("shrink", [True, False])
def test_the_arena_setting_reaches_the_session(onnx_dir: Path, shrink: bool) -> None:
    encoder = onnx_encoder(onnx_dir, "fp32", shrink)
    assert encoder._session.get_session_options().enable_cpu_mem_arena is True
    assert encoder._session.get_session_options().enable_mem_pattern is not shrink
    entry = encoder._run_options.get_run_config_entry(ARENA_SHRINKAGE) if shrink else None
    assert entry == ("cpu:0" if shrink else None)


def test_shrinking_the_arena_changes_no_vector(onnx_dir: Path, texts: list[str]) -> None:
    # Batches of many shapes, as the batcher makes them, shrunk after each and not.
    shrunk = onnx_encoder(onnx_dir, "fp32").embed(texts, truncate=True, dimensions=0)
    kept = onnx_encoder(onnx_dir, "fp32", shrink_arena=False).embed(
        texts, truncate=True, dimensions=0
    )
    np.testing.assert_allclose(shrunk.vectors, kept.vectors, atol=1e-6)


def test_int8_stays_close_to_torch(
    onnx_dir: Path, texts: list[str], torch_vectors: np.ndarray
) -> None:
    result = onnx_encoder(onnx_dir, "int8").embed(texts, truncate=True, dimensions=0)
    cosines = _cosines(result.vectors, torch_vectors)
    overlap = _neighbour_overlap(torch_vectors, result.vectors)
    print(
        f"int8 vs torch: min cosine {cosines.min():.4f}, mean {cosines.mean():.4f}, "
        f"top-10 neighbour overlap {overlap:.3f}"
    )
    assert cosines.min() >= 0.97
    assert cosines.mean() >= 0.99
    assert overlap >= 0.85


@pytest.fixture(scope="module")
async def onnx_stub(onnx_dir: Path) -> AsyncIterator[embedding_pb2_grpc.EmbeddingServiceAsyncStub]:
    settings = Settings(
        port=0,
        host="127.0.0.1",
        metrics_port=None,
        embedding_backend="onnx",
        embedding_onnx_dir=str(onnx_dir),
    )
    server = create_server(settings, load_onnx_encoder(settings))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield embedding_pb2_grpc.EmbeddingServiceStub(channel)
    await server.stop(5)


async def test_service_on_the_onnx_backend(
    onnx_stub: embedding_pb2_grpc.EmbeddingServiceAsyncStub, embedding_encoder: TorchEncoder
) -> None:
    info = await onnx_stub.Info(embedding_pb2.InfoRequest(), timeout=10)
    assert (info.model, info.backend, info.dimension) == ("all-MiniLM-L6-v2", "onnx", 384)
    reply = await onnx_stub.Embed(
        embedding_pb2.EmbedRequest(inputs=EDGE_CASES, truncate=True, dimensions=128), timeout=60
    )
    vectors = np.array([list(item.values) for item in reply.embeddings], dtype=np.float32)
    expected = embedding_encoder.embed(EDGE_CASES, truncate=True, dimensions=128)
    assert reply.usage.prompt_tokens == expected.tokens
    assert _cosines(vectors, expected.vectors).min() >= 0.999


def test_onnx_backend_never_imports_torch(onnx_dir: Path) -> None:
    """The whole service path of the onnx backend, in a fresh interpreter: no torch module."""
    script = textwrap.dedent(
        """
        import sys
        from aimesh_embedding.config import Settings
        from aimesh_embedding.model import load_backend
        from aimesh_embedding.server import create_server
        import aimesh_embedding.main

        settings = Settings(port=0, host="127.0.0.1", metrics_port=None)
        encoder = load_backend(settings)
        create_server(settings, encoder)
        assert encoder.embed(["a test"], truncate=False, dimensions=0).vectors.shape == (1, 384)
        heavy = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {"torch", "sentence_transformers", "transformers"}
        )
        assert not heavy, heavy
        print("ok", encoder.backend)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **os.environ,
            "AIMESH_EMBEDDING_BACKEND": "onnx",
            "AIMESH_EMBEDDING_ONNX_DIR": str(onnx_dir),
            "AIMESH_EMBEDDING_ONNX_VARIANT": "int8",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok onnx"


def test_missing_export_is_a_readable_start_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "aimesh-embedding")],
        env={
            **os.environ,
            "AIMESH_METRICS_PORT": "0",
            "AIMESH_LOG_FORMAT": "text",
            "AIMESH_EMBEDDING_BACKEND": "onnx",
            "AIMESH_EMBEDDING_ONNX_DIR": str(tmp_path / "none"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "holds no ONNX export" in result.stderr
    assert "make embedding-onnx" in result.stderr
    assert "Traceback" not in result.stderr
