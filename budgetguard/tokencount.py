"""Pluggable input-token counters: ``BudgetGuard(token_counter=...)``.

A counter is an upper bound on the input tokens of a prompt, used before the
call to size its reservation. The choices:

- ``"bytes"`` (the default): one token per UTF-8 byte (``estimate.py``), a
  proven bound for every byte-level BPE tokenizer, whatever the model.
- ``"o200k"`` / ``"cl100k"``: OpenAI's encodings, counted exactly offline with
  ``bpe-openai`` (``pip install 'langchain-budgetguard[tokenizers]'``), for models of that
  encoding only (o200k: gpt-4o*, gpt-4.1*, gpt-5*, o1*, o3*, o4*; cl100k:
  gpt-4*, gpt-3.5*); every other model keeps the byte bound.
- ``"auto"``: each OpenAI model its own encoding, by the table above; the byte
  bound for every other model.
- a callable ``(messages, tools) -> int``, used for every model: it must return
  an upper bound on the provider's input count (tools are the call's tool
  schemas, or ``None``), or calls may be admitted with too small a reservation.

The exact counters add a margin for the chat format (``PER_MESSAGE`` per
message, one token per content block, ``PER_CALL`` per call: OpenAI's format
uses 3-4 a message and 3 a call), count images the flat ``PER_IMAGE`` and tool
schemas by their bytes (the provider re-renders schemas in a format of its own).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Protocol

from langchain_core.messages import AIMessage, BaseMessage

from .errors import ConfigError
from .estimate import PER_CALL, PER_IMAGE, PER_MESSAGE, estimate_input_tokens, estimate_text_tokens

__all__ = ["STRATEGIES", "Counter", "InputCounter", "encoding_for_model", "resolve_counter"]

#: ``(messages, tools) -> int``: an upper bound on a prompt's input tokens.
InputCounter = Callable[[Sequence[BaseMessage], Any], int]

STRATEGIES = ("bytes", "o200k", "cl100k", "auto")
_ENCODINGS = {"o200k": "o200k_base", "cl100k": "cl100k_base"}
_O200K = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K = ("gpt-4", "gpt-3.5")
_MEDIA = ("image", "image_url", "file", "audio", "document", "input_audio")


def encoding_for_model(model: str | None) -> str | None:
    """``"o200k"`` or ``"cl100k"`` for an OpenAI model of that encoding, else ``None``."""
    if not model:
        return None
    name = model.lower().rsplit("/", 1)[-1]
    name = name.removeprefix("ft:").removeprefix("openai:")
    if name.startswith(_O200K):
        return "o200k"
    if name.startswith(_CL100K):
        return "cl100k"
    return None


class Counter(Protocol):
    def __call__(self, messages: Sequence[BaseMessage], tools: Any, model: str | None) -> int: ...


def bytes_counter(messages: Sequence[BaseMessage], tools: Any, model: str | None = None) -> int:
    """The default: the byte bound, for every model."""
    return estimate_input_tokens(messages, tools)


class _Exact:
    """An exact offline BPE count plus the chat-format margin, for one encoding."""

    def __init__(self, encoding: str) -> None:
        _module()  # a missing bpe-openai is a configuration error, raised at construction
        self._encoding = encoding  # its vocabulary loads on first use (seconds), once per process

    def text(self, text: str) -> int:
        return len(_load(self._encoding).encode_ordinary(text)) if text else 0

    def _content(self, content: Any) -> int:
        if isinstance(content, str):
            return self.text(content) + 1
        total = 0
        for block in content if isinstance(content, Sequence) else ():
            total += 1  # the provider may join blocks; a join never costs more than one token a seam
            if isinstance(block, str):
                total += self.text(block)
            elif isinstance(block, Mapping):
                kind = block.get("type")
                if kind in ("text", "reasoning", "thinking"):
                    total += self.text(str(block.get("text") or block.get("thinking") or ""))
                elif kind in _MEDIA:
                    total += PER_IMAGE
                else:
                    total += self.text(json.dumps(block, default=str))
        return total

    def __call__(self, messages: Sequence[BaseMessage], tools: Any) -> int:
        total = PER_CALL
        for m in messages:
            total += PER_MESSAGE + self._content(m.content)
            calls = m.tool_calls if isinstance(m, AIMessage) else None
            if calls:
                total += self.text(json.dumps(calls, default=str)) + PER_MESSAGE
        if tools:
            total += estimate_text_tokens(json.dumps(tools, default=str))
        return total


class _Named:
    """An exact encoding for the models that use it (``"auto"``: each its own), the byte bound otherwise."""

    def __init__(self, strategy: str) -> None:
        names = ("o200k", "cl100k") if strategy == "auto" else (strategy,)
        self._exact = {n: _Exact(n) for n in names}

    def __call__(self, messages: Sequence[BaseMessage], tools: Any, model: str | None) -> int:
        exact = self._exact.get(encoding_for_model(model) or "")
        if exact is None:
            return estimate_input_tokens(messages, tools)
        # both are upper bounds: the smaller is the tighter
        return min(exact(messages, tools), estimate_input_tokens(messages, tools))


class _Custom:
    def __init__(self, fn: InputCounter) -> None:
        self._fn = fn

    def __call__(self, messages: Sequence[BaseMessage], tools: Any, model: str | None) -> int:
        n = self._fn(messages, tools)
        if type(n) is not int or n < 0:
            raise ConfigError(f"token_counter must return a non-negative int, got {n!r}")
        return n


def _module() -> Any:
    try:
        import bpe_openai  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            "token_counter='o200k', 'cl100k' and 'auto' need bpe-openai: "
            "pip install 'langchain-budgetguard[tokenizers]'"
        ) from None
    return bpe_openai


@cache
def _load(encoding: str) -> Any:
    return _module().get_encoding(_ENCODINGS[encoding])


def resolve_counter(spec: str | InputCounter | None) -> Counter:
    """The counter for ``token_counter=``; a bad value raises ``ConfigError`` naming the choices."""
    if spec is None or spec == "bytes":
        return bytes_counter
    if isinstance(spec, str) and spec in STRATEGIES:
        return _Named(spec)
    if callable(spec) and not isinstance(spec, str):
        return _Custom(spec)
    choices = ", ".join(repr(s) for s in STRATEGIES)
    raise ConfigError(
        f"token_counter must be one of {choices} or a callable (messages, tools) -> int, got {spec!r}"
    )
