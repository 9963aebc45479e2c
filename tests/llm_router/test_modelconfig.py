"""The model configuration file: validation with one message per problem, keys, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimesh.llm.v1 import llm_pb2
from aimesh_llm_router.config import Settings
from aimesh_llm_router.modelconfig import (
    ModelConfigError,
    default_models_config,
    load_models_config,
)
from aimesh_llm_router.providers import PROVIDERS
from aimesh_llm_router.server import build_dependencies
from tests.llm_router.conftest import (
    TEST_KEY,
    FixedRetrieval,
    models_config,
    openai_model,
    openai_settings,
    start_router,
    stop_router,
)
from tests.llm_router.openai_server import FakeOpenAI, Reply

KNOWN = frozenset(PROVIDERS)
EXAMPLE = Path(__file__).parents[2] / "services" / "llm-router" / "models.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ModelConfigError) as caught:
        load_models_config(path, KNOWN, environ or {})
    return caught.value.problems


def test_a_full_file_loads_with_keys_from_env_and_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n", encoding="utf-8")
    path = write(
        tmp_path,
        f"""
models:
  default:
    provider: openai
    model: gpt-4o-mini
    base_url: https://llm.internal/v1
    api_key_env: MY_KEY
    timeout_seconds: 10
    deadline_seconds: 30
    max_tokens: 512
    context_window: 128000
    price_per_1k_input: 0.15
    price_per_1k_output: 0.6
    fallbacks: [fast]
  fast:
    provider: openai
    model: small
    api_key_file: {secret}
retry: {{base_delay_seconds: 0.1}}
circuit_breaker: {{failure_threshold: 3, cooldown_seconds: 5}}
""",
    )
    config = load_models_config(path, KNOWN, {"MY_KEY": "sk-from-env"})
    default = config.models["default"]
    assert default.api_key is not None
    assert default.api_key.get_secret_value() == "sk-from-env"
    fast = config.models["fast"]
    assert fast.api_key is not None
    assert fast.api_key.get_secret_value() == "sk-from-file"
    assert default.fallbacks == ["fast"]
    assert default.cost(2000, 1000) == pytest.approx(0.3 + 0.6)
    assert config.retry.base_delay_seconds == 0.1
    assert config.circuit_breaker.failure_threshold == 3
    assert "sk-from-env" not in repr(config)


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  default:
    provider: nosuch
    fallbacks: [default, ghost]
    max_tokens: 8000
    context_window: 4096
  fast:
    provider: openai
    model: m
    api_key_env: MISSING_KEY
  cheap:
    provider: openai
    model: m
    api_key_file: /nonexistent/key
""",
    )
    found = problems(path)
    assert "models.default.provider: unknown provider 'nosuch'; known: local, openai" in (
        found[0].replace("anthropic, ", "").replace("huggingface, ", "")
    )
    assert "models.default.fallbacks[0]: an alias cannot fall back to itself" in found
    assert "models.default.fallbacks[1]: unknown alias 'ghost'" in found
    assert any(p.startswith("models.default.max_tokens: 8000 leaves no room") for p in found)
    assert "models.fast.api_key_env: environment variable MISSING_KEY is not set or empty" in found
    assert any(p.startswith("models.cheap.api_key_file: cannot read") for p in found)
    assert len(found) == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: {}", "models: at least one alias is required"),
        ("models:\n  fast: {provider: local}", "models: an alias named 'default' is required"),
        ("- just a list", "the file must be a mapping with a 'models' key"),
        ("models: {default: {provider: local, colour: red}}", "models.default.colour: Extra"),
        ("models: {default: {provider: local, timeout_seconds: -1}}", "timeout_seconds: Input"),
        ("models: {default: {provider: openai, base_url: ftp://x}}", "models.default.base_url"),
        ("models: [unclosed", "not valid YAML"),
    ],
)
def test_malformed_files_fail_clearly(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))
    assert any(expected in problem for problem in found), found


def test_missing_file_fails_clearly(tmp_path: Path) -> None:
    assert problems(tmp_path / "absent.yaml") == ["cannot read the file: No such file or directory"]


def test_the_shipped_example_is_valid() -> None:
    config = load_models_config(EXAMPLE, KNOWN, {"OPENAI_API_KEY": "sk-x"})
    assert "default" in config.models


def test_without_a_file_the_settings_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AIMESH_OPENAI_API_KEY", "AIMESH_LLM_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    local = default_models_config(Settings())
    assert {spec.provider for spec in local.models.values()} == {"local"}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    remote = default_models_config(Settings())
    assert set(remote.models) == {"default", "fast"}
    default = remote.models["default"]
    assert default.provider == "openai"
    assert default.context_window == 128_000
    assert default.api_key is not None
    assert default.api_key.get_secret_value() == "sk-env"


async def test_list_models_shows_aliases_never_urls_or_keys(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    config = models_config(
        {
            "default": openai_model(fake_openai.base_url, description="Main model"),
            "summarizer": openai_model(
                fake_openai.base_url,
                context_window=32000,
                price_per_1k_input=0.5,
                price_per_1k_output=1.5,
                max_tokens=300,
                fallbacks=["default"],
            ),
        }
    )
    router = await start_router(
        openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1]), config
    )
    try:
        reply = await router.stub.ListModels(llm_pb2.ListModelsRequest())
        assert [(m.id, m.context_window) for m in reply.models] == [
            ("default", 8192),
            ("summarizer", 32000),
        ]
        text = str(reply)
        assert "127.0.0.1" not in text
        assert TEST_KEY not in text
        assert reply.models[0].description.startswith("Main model: ")
        # What budgets reserve by: prices (an unpriced alias says so), caps, fallbacks.
        default, summarizer = reply.models
        assert not default.priced
        assert (summarizer.priced, summarizer.price_per_1k_input) == (True, 0.5)
        assert (summarizer.price_per_1k_output, summarizer.max_tokens) == (1.5, 300)
        assert list(summarizer.fallbacks) == ["default"]
    finally:
        await stop_router(router)


async def test_swapping_the_provider_of_an_alias_by_configuration_alone(
    fake_openai: FakeOpenAI,
    backup_openai: FakeOpenAI,
    retrieval_server: tuple[FixedRetrieval, str],
) -> None:
    """The same client request works whichever upstream the file puts behind the alias."""
    request = llm_pb2.SummarizeRequest(text="Cats sleep a lot. Dogs bark.", model="summarizer")
    answers = []
    for server, text in ((fake_openai, "first upstream"), (backup_openai, "second upstream")):
        server.enqueue(Reply(content=text))
        config = models_config(
            {
                "default": openai_model(server.base_url),
                "summarizer": openai_model(server.base_url, model=f"model-{server.port}"),
            }
        )
        router = await start_router(
            openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1]),
            config,
        )
        try:
            reply = await router.stub.Summarize(request)
        finally:
            await stop_router(router)
        answers.append(reply.summary)
        assert reply.model == "summarizer"
        assert server.requests[-1].body["model"] == f"model-{server.port}"
    assert answers == ["first upstream", "second upstream"]


async def test_template_versions_are_chosen_per_alias(
    fake_openai: FakeOpenAI, retrieval_server: tuple[FixedRetrieval, str]
) -> None:
    config = models_config(
        {
            "default": openai_model(fake_openai.base_url),
            "small": openai_model(fake_openai.base_url, prompts={"summarize": 2}),
        }
    )
    router = await start_router(
        openai_settings(fake_openai.base_url, retrieval_service_addr=retrieval_server[1]), config
    )
    try:
        for alias in ("default", "small"):
            fake_openai.enqueue(Reply(content="ok"))
            await router.stub.Summarize(llm_pb2.SummarizeRequest(text="Cats sleep.", model=alias))
    finally:
        await stop_router(router)
    v1, v2 = (request.messages for request in fake_openai.requests)
    assert v1[0]["content"].startswith("You are a careful summarizer.")
    assert v2[0]["content"].startswith("Summarize faithfully.")
    assert v2[1]["content"].startswith("<<<TEXT\nCats sleep.")


def test_an_unknown_template_version_fails_at_start(fake_openai: FakeOpenAI) -> None:
    config = models_config({"default": openai_model(fake_openai.base_url, prompts={"qa": 9})})
    with pytest.raises(ValueError, match=r"model 'default': prompts/qa/v9.yaml: no such template"):
        build_dependencies(openai_settings(fake_openai.base_url), config=config)
