"""A LangChain chat model running a local ``transformers`` causal LM from a directory.

Generation is a plain token loop with the KV cache (greedy, or sampling when a
temperature is given), so every token is streamed as soon as it exists, counted exactly,
and generation stops as soon as the consumer stops asking: LangChain runs ``_stream`` in
a worker thread one item at a time, so a cancelled request stops at the next token.

torch and transformers are imported when a model is loaded, so the router only needs
them (the ``transformers`` extra) when an alias uses a local model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

_ROLE_NAMES = {"system": "System", "human": "User", "ai": "Assistant"}


def _cache_of(output: Any) -> dict[str, Any]:
    """The KV cache argument for the next step: ``cache`` in transformers 5, else the
    older ``past_key_values``."""
    cache = getattr(output, "cache", None)
    if cache is not None:
        return {"cache": cache}
    return {"past_key_values": output.past_key_values}


class TransformersChatModel(BaseChatModel):
    """Chat with a causal LM saved by ``save_pretrained`` (model and tokenizer)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_dir: str
    context_window: int = 2048
    max_tokens: int = 256
    temperature: float | None = None

    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    # One generation at a time: the model is shared and CPU-bound.
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def load(self) -> None:
        """Load model and tokenizer; ValueError when the directory does not hold them."""
        directory = Path(self.model_dir)
        if not directory.is_dir():
            raise ValueError(f"model directory {self.model_dir} does not exist")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as error:  # pragma: no cover - depends on the install
            raise ValueError(
                "local models need the 'transformers' extra of aimesh-llm-router"
            ) from error
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            self._model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load a causal LM from {self.model_dir}: {error}") from None
        self._model.eval()

    @property
    def _llm_type(self) -> str:
        return "transformers"

    def render(self, messages: list[BaseMessage]) -> str:
        """The prompt text: the tokenizer's chat template, or a plain transcript."""
        if getattr(self._tokenizer, "chat_template", None):
            roles = {"human": "user", "ai": "assistant"}
            conversation = [
                {"role": roles.get(m.type, m.type), "content": m.text} for m in messages
            ]
            rendered = self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False
            )
            return str(rendered)
        lines = [f"{_ROLE_NAMES.get(m.type, m.type)}: {m.text}" for m in messages]
        return "\n".join([*lines, "Assistant:"])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = ""
        final: BaseMessage | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            text += chunk.message.text
            final = chunk.message
        metadata = final.response_metadata if final is not None else {}
        usage = final.usage_metadata if isinstance(final, AIMessageChunk) else None
        message = AIMessage(content=text, response_metadata=metadata, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        import torch

        max_new = int(kwargs.get("max_tokens") or self.max_tokens)
        temperature = kwargs.get("temperature", self.temperature)
        prompt_ids = self._tokenizer(self.render(messages), return_tensors="pt")["input_ids"]
        # Keep the end of the prompt (the newest messages) when it is too long.
        room = max(1, self.context_window - max_new)
        prompt_ids = prompt_ids[:, -room:]
        eos = self._tokenizer.eos_token_id
        generated: list[int] = []
        emitted = ""
        finish = "length"
        with self._lock, torch.no_grad():
            output = self._model(input_ids=prompt_ids, use_cache=True)
            for _ in range(max_new):
                logits = output.logits[0, -1]
                if temperature:
                    probabilities = torch.softmax(logits / float(temperature), dim=-1)
                    token = int(torch.multinomial(probabilities, 1).item())
                else:
                    token = int(torch.argmax(logits).item())
                if eos is not None and token == eos:
                    finish = "stop"
                    break
                generated.append(token)
                text = self._tokenizer.decode(generated, skip_special_tokens=True)
                # Byte-level BPE may need several tokens for one character: emit only
                # text that is complete (no replacement character at its end).
                if len(text) > len(emitted) and not text.endswith("\ufffd"):
                    delta, emitted = text[len(emitted) :], text
                    yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
                output = self._model(
                    input_ids=torch.tensor([[token]]), use_cache=True, **_cache_of(output)
                )
        usage = {
            "input_tokens": int(prompt_ids.shape[1]),
            "output_tokens": len(generated),
            "total_tokens": int(prompt_ids.shape[1]) + len(generated),
        }
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata={"finish_reason": finish},
            )
        )
