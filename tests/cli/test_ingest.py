"""``aimesh ingest`` and ``aimesh search`` against a live gateway (uvicorn, real TCP) in
front of the real retrieval service (Milvus Lite, real embedding model)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from aimesh_cli.main import main
from aimesh_gateway.main import create_app
from aimesh_retrieval.config import Settings as RetrievalSettings
from aimesh_retrieval.jobs import JobStore
from aimesh_retrieval.store import MilvusStore
from tests.conftest import free_port
from tests.gateway.helpers import settings_for, token
from tests.retrieval.conftest import serve


@pytest.fixture(scope="module")
async def gateway_url(
    embedding_addr: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    data = tmp_path_factory.mktemp("cli-retrieval")
    store = MilvusStore.open(RetrievalSettings(data_dir=data))
    jobs = await JobStore.open(f"sqlite+aiosqlite:///{data / 'jobs.db'}")
    async for retrieval in serve(store, embedding_addr, jobs):
        port = free_port()
        app = create_app(
            settings_for(
                router_addr=embedding_addr,
                retrieval_addr=retrieval.address,
                embedding_addr=embedding_addr,
            )
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        task = asyncio.create_task(server.serve())
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    await jobs.close()
    await store.close()


async def cli(*argv: str) -> int:
    # The CLI is synchronous; the gateway runs on this event loop, so run it in a thread.
    return await asyncio.to_thread(main, list(argv))


async def test_ingest_folder_then_search(
    gateway_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "harbour.md").write_text("# Harbour\n\nThe harbour master watches the tides.")
    (root / "sub" / "bread.txt").write_text("Sourdough bread rises slowly overnight.")
    # Same file name in another folder: a different document, not a replacement.
    (root / "sub" / "harbour.md").write_text("Fishing boats leave the harbour at dawn.")
    (root / "sub" / "empty.txt").write_text("")
    (root / "photo.png").write_bytes(b"\x89PNG")
    collection = f"cli-{uuid.uuid4().hex[:8]}"

    code = await cli("ingest", str(root), "--collection", collection, "--url", gateway_url)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "ingested 3 file(s); 2 failed" in err
    # The gateway decides which types it parses.
    assert (
        "FAILED kb/photo.png: HTTP 415: file 'kb/photo.png': has the unsupported type '.png'" in err
    )
    assert "FAILED kb/sub/empty.txt: HTTP 422: file 'kb/sub/empty.txt': is empty" in err

    code = await cli(
        "search", "when do boats go out", "-c", collection, "-k", "2", "--url", gateway_url
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("kb/sub/harbour.md#0"), out
    assert "Fishing boats" in lines[1]

    code = await cli(
        "search", "bread", "-c", collection, "--mode", "bm25", "--json", "--url", gateway_url
    )
    out = capsys.readouterr().out
    assert code == 0
    assert '"document_id": "kb/sub/bread.txt"' in out

    code = await cli("search", "x", "-c", f"missing-{collection}", "--url", gateway_url)
    assert code == 1
    assert "HTTP 404" in capsys.readouterr().err


async def test_search_without_credentials_fails_readably(
    gateway_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIMESH_API_KEY", raising=False)
    assert await cli("search", "x", "-c", "any", "--url", gateway_url) == 1
    assert "HTTP 401" in capsys.readouterr().err


async def test_search_rerank_without_a_reranker_says_why(
    gateway_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMESH_API_KEY", token(roles=["editor"]))
    (tmp_path / "note.txt").write_text("The harbour master watches the tides.")
    collection = f"cli-{uuid.uuid4().hex[:8]}"
    assert await cli("ingest", str(tmp_path), "-c", collection, "--url", gateway_url) == 0
    code = await cli("search", "tides", "-c", collection, "--no-rerank", "--url", gateway_url)
    assert code == 0
    assert "note.txt#0" in capsys.readouterr().out
    code = await cli("search", "x", "-c", collection, "--rerank", "--url", gateway_url)
    assert code == 1
    err = capsys.readouterr().err
    assert "HTTP 409" in err
    assert "no reranker configured" in err
