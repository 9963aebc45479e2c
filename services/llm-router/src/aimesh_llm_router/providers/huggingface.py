"""The Hugging Face provider: TGI / Inference Endpoints, or a local ``transformers`` model.

- With ``base_url``: a Text Generation Inference server or a Hugging Face Inference
  Endpoint (or the HF router), through TGI's OpenAI-compatible Messages API
  (``POST {base_url}/v1/chat/completions``, streaming with SSE). ``model`` is sent as is
  (TGI serves one model and accepts ``tgi``). The key, if any, is the HF token.
- Without ``base_url``: ``model`` is a local directory holding a causal LM and its
  tokenizer (``save_pretrained`` output), run in-process on CPU by
  :class:`TransformersChatModel`. Nothing is downloaded.

(``langchain-huggingface`` requires huggingface-hub < 2, which conflicts with the
sentence-transformers stack of the embedding service, hence the two LangChain chat models
used here.)
"""

from __future__ import annotations

from typing import Any, Self

from langchain_openai import ChatOpenAI
from openai import DefaultAsyncHttpxClient
from pydantic import SecretStr

from aimesh_llm_router.modelconfig import ModelSpec
from aimesh_llm_router.providers.base import ProviderContext
from aimesh_llm_router.providers.chat import ChatModelProvider, traced_http_client
from aimesh_llm_router.providers.transformers_chat import TransformersChatModel

_NO_KEY = "unused"


def messages_api_url(base_url: str) -> str:
    """The OpenAI-compatible root of a TGI server or endpoint (adds ``/v1`` once)."""
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else f"{root}/v1"


class _MessagesApiChat(ChatOpenAI):
    """ChatOpenAI that sends ``max_tokens``, which TGI's Messages API reads.

    LangChain renames it ``max_completion_tokens`` (OpenAI's newer name). TGI ignores that
    field and generates its default 100 tokens; vLLM, TGI and the Hugging Face router all
    read ``max_tokens``.
    """

    def _get_request_payload(
        self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        return payload


class HuggingFaceProvider(ChatModelProvider):
    """Hugging Face models, served by TGI or loaded locally with transformers."""

    name = "huggingface"

    def __init__(self, spec: ModelSpec, context: ProviderContext) -> None:
        self._prompts = context.prompts
        self._model = spec.model
        self._secret = spec.api_key.get_secret_value() if spec.api_key is not None else None
        if spec.base_url:
            self._where = "Hugging Face TGI endpoint"
            # TGI's Messages API takes OpenAI function tools; the local model does not.
            self.supports_tools = True
            self._http = traced_http_client(context, DefaultAsyncHttpxClient)
            self._chat = _MessagesApiChat(
                model=spec.model or "tgi",
                base_url=messages_api_url(spec.base_url),
                api_key=spec.api_key or SecretStr(_NO_KEY),
                timeout=spec.timeout_seconds,
                max_retries=0,
                stream_usage=True,
                use_responses_api=False,
                stream_chunk_timeout=spec.timeout_seconds,
                http_async_client=self._http,
            )
        else:
            self._where = "local transformers model"
            local = TransformersChatModel(
                model_dir=spec.model,
                context_window=spec.context_window,
                max_tokens=spec.max_tokens,
            )
            local.load()
            self._chat = local

    @classmethod
    def keeps_data_local(cls, spec: ModelSpec) -> bool:
        """A model directory runs in this process; a base URL is a remote endpoint."""
        return spec.base_url is None

    @classmethod
    def from_model(cls, spec: ModelSpec, context: ProviderContext) -> Self:
        if not spec.model and not spec.base_url:
            raise ValueError(
                "the huggingface provider needs base_url (TGI / Inference Endpoint) or "
                "model (a local model directory)"
            )
        return cls(spec, context)

    def describe(self) -> str:
        # A local path is not shown: only the directory's last component.
        shown = self._model.rstrip("/").rsplit("/", 1)[-1] if self._model else "tgi"
        return f"{self._where} {shown}"
