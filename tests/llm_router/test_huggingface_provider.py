"""The huggingface provider: a TGI server through its Messages API, and a local
``transformers`` model built in the test (a one-layer GPT-2 and a tokenizer trained here;
nothing is downloaded)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers import HuggingFaceProvider, ProviderContext
from aimesh_llm_router.providers.base import GenerateTask, Message
from aimesh_llm_router.providers.huggingface import messages_api_url
from aimesh_llm_router.providers.transformers_chat import TransformersChatModel
from aimesh_llm_router.templates import load_prompt_library
from tests.llm_router.conftest import (
    TEST_KEY,
    FixedRetrieval,
    models_config,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.openai_server import FakeOpenAI, Reply

CORPUS = [
    "The router sends prompts to models and streams their replies.",
    "Cats sleep most of the day and dogs bark at the mail carrier.",
    "Summaries keep the main points of a text and drop the details.",
] * 20


class FakeTGI(FakeOpenAI):
    """A TGI server: its Messages API at /v1/chat/completions, and /info."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[Route]:
        return [*super().routes(), Route("/info", self._info, methods=["GET"])]

    async def _info(self, request: Request) -> Response:
        return JSONResponse({"model_id": "tiny/tgi-test", "max_input_tokens": 4096})


@pytest.fixture(scope="session")
async def tgi_server() -> AsyncIterator[FakeTGI]:
    server = FakeTGI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fake_tgi(tgi_server: FakeTGI) -> Iterator[FakeTGI]:
    tgi_server.reset()
    yield tgi_server
    tgi_server.reset()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer GPT-2 with random weights and a byte-level BPE trained on CORPUS."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    tokenizer.save_pretrained(directory)
    torch.manual_seed(7)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=32,
        n_layer=1,
        n_head=2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def context_for(base_url: str) -> ProviderContext:
    return ProviderContext(
        settings=openai_settings(base_url), prompts=load_prompt_library(), embedding=None
    )


def test_messages_api_url() -> None:
    assert messages_api_url("https://x.endpoints.huggingface.cloud/") == (
        "https://x.endpoints.huggingface.cloud/v1"
    )
    assert messages_api_url("https://router.huggingface.co/v1") == (
        "https://router.huggingface.co/v1"
    )


async def test_tgi_endpoint_streams_through_the_messages_api(fake_tgi: FakeTGI) -> None:
    spec = ModelSpec(provider="huggingface", base_url=fake_tgi.base_url, api_key=TEST_KEY)
    provider = HuggingFaceProvider.from_model(spec, context_for(fake_tgi.base_url))
    assert provider.describe() == "Hugging Face TGI endpoint tgi"
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    fake_tgi.enqueue(Reply(content="served by tgi", usage=usage))
    task = GenerateTask(messages=[Message("user", "Hello")], max_tokens=20, temperature=None)
    deltas = [delta async for delta in provider.generate(task)]
    assert "".join(delta.text for delta in deltas) == "served by tgi"
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.prompt_tokens == 12
    sent = fake_tgi.requests[0]
    assert sent.body["model"] == "tgi"
    assert sent.body["stream"] is True
    # TGI's Messages API reads max_tokens and ignores max_completion_tokens (it would
    # generate its default 100 tokens); vLLM and the HF router accept max_tokens too.
    assert sent.body["max_tokens"] == 20
    assert "max_completion_tokens" not in sent.body
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert "traceparent" not in sent.headers  # the router does not trace here


async def test_tgi_endpoint_calls_carry_the_routers_trace(fake_tgi: FakeTGI) -> None:
    tracing = TracerProvider()
    context = dataclasses.replace(context_for(fake_tgi.base_url), tracer_provider=tracing)
    spec = ModelSpec(provider="huggingface", base_url=fake_tgi.base_url, api_key=TEST_KEY)
    provider = HuggingFaceProvider.from_model(spec, context)
    fake_tgi.enqueue(Reply(content="traced"))
    task = GenerateTask(messages=[Message("user", "Hello")], max_tokens=20, temperature=None)
    with tracing.get_tracer("test").start_as_current_span("rpc") as rpc:
        assert "".join([d.text async for d in provider.generate(task)]) == "traced"
    await provider.aclose()
    _, trace_id, _, _ = fake_tgi.requests[0].headers["traceparent"].split("-")
    assert int(trace_id, 16) == rpc.get_span_context().trace_id


async def test_local_model_streams_exactly_what_greedy_generate_produces(
    tiny_model_dir: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = ModelSpec(
        provider="huggingface", model=str(tiny_model_dir), max_tokens=12, context_window=512
    )
    provider = HuggingFaceProvider.from_model(spec, context_for("http://unused"))
    assert provider.describe() == f"local transformers model {tiny_model_dir.name}"
    task = GenerateTask(messages=[Message("user", "Cats sleep")], max_tokens=8, temperature=None)
    deltas = [delta async for delta in provider.generate(task)]
    streamed = "".join(delta.text for delta in deltas)
    last = deltas[-1]
    assert last.usage is not None
    assert not last.usage.estimated

    # The reference: transformers' own greedy generate on the same rendered prompt.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # type: ignore[no-untyped-call]
    chat = provider._chat
    assert isinstance(chat, TransformersChatModel)
    rendered = chat.render(
        load_prompt_library().chat.render(conversation=[HumanMessage("Cats sleep")])
    )
    ids = tokenizer(rendered, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    new_tokens = out[0, ids.shape[1] :].tolist()
    if tokenizer.eos_token_id in new_tokens:
        new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id)]
    assert streamed == tokenizer.decode(new_tokens, skip_special_tokens=True)
    assert last.usage.prompt_tokens == ids.shape[1]
    assert last.usage.completion_tokens == len(new_tokens)
    assert last.finish_reason == ("length" if len(new_tokens) == 8 else "stop")


async def test_local_model_serves_an_alias_over_grpc(
    tiny_model_dir: Path, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    models: dict[str, Any] = {
        "default": {
            "provider": "huggingface",
            "model": str(tiny_model_dir),
            "max_tokens": 16,
            "context_window": 512,
            "price_per_1k_output": 1.0,
        }
    }
    router = await start_router(
        openai_settings("http://unused", retrieval_service_addr=retrieval_server[1]),
        models_config(models),
    )
    try:
        reply = await router.stub.Summarize(
            llm_pb2.SummarizeRequest(text="Cats sleep most of the day.", tenant_id="t1")
        )
        assert reply.model == "default"
        assert 0 < reply.usage.completion_tokens <= 16
        assert reply.usage.cost_usd == pytest.approx(reply.usage.completion_tokens / 1000)
        listed = await router.stub.ListModels(llm_pb2.ListModelsRequest())
        assert str(tiny_model_dir.parent) not in str(listed)
    finally:
        await stop_router(router)


def test_a_missing_model_directory_fails_at_start(tmp_path: Path) -> None:
    spec = ModelSpec(provider="huggingface", model=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="does not exist"):
        HuggingFaceProvider.from_model(spec, context_for("http://unused"))
