"""What `make run` prints, without starting the mesh: the model aliases served and a
banner whose curls store a document before asking about it."""

from __future__ import annotations

from pathlib import Path

from scripts.devmesh import banner, served_aliases


def test_the_aliases_of_the_models_file_are_listed_with_their_providers(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  default: {provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}\n"
        "  claude: {provider: anthropic, model: claude-x, api_key_env: ANTHROPIC_API_KEY}\n"
        "  tgi: {provider: huggingface, base_url: 'http://tgi:8080'}\n"
    )
    listed = served_aliases({"AIMESH_MODELS_FILE": str(models)})
    assert listed == "default (openai), claude (anthropic), tgi (huggingface)"


def test_without_a_models_file_the_default_alias_is_named() -> None:
    assert served_aliases({}) == "default (local: extractive, no key)"
    assert served_aliases({"OPENAI_API_KEY": "sk-test"}) == "default (openai)"


def test_an_unreadable_models_file_is_said_so(tmp_path: Path) -> None:
    listed = served_aliases({"AIMESH_MODELS_FILE": str(tmp_path / "missing.yaml")})
    assert "unreadable" in listed
    assert "the router reports why" in listed


def test_the_banner_stores_a_document_before_asking() -> None:
    text = banner("http://127.0.0.1:8000", "am_dev_key", "web", "model")
    upload = text.index("/v1/collections/docs/documents")
    ask = text.index("/v1/ask")
    assert upload < ask
    assert text.count('-H "Authorization: Bearer am_dev_key"') == 2
    assert '"collection": "docs"' in text
