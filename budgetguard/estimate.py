"""Offline worst-case token estimates for a call before it is sent.

No tokenizer file is needed: text counts one token per UTF-8 byte. Every
byte-level BPE token (OpenAI's cl100k/o200k, Anthropic's) covers at least one
byte, so this can never undercount, whatever the script: CJK, emoji, UUIDs
and digits included (ratios such as "4 characters a token" undercount those).
The price is a generous reservation for English prose (about 4x); the
reservation is settled to the real usage right after the call. Images and
files count a flat amount; tools count their JSON schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

__all__ = [
    "estimate_input_tokens",
    "estimate_text_tokens",
    "max_output_tokens",
    "configured_max_output_tokens",
    "has_audio_input",
]

PER_MESSAGE = 6  # role markers and separators
PER_CALL = 8
PER_IMAGE = 1_600  # a high-detail 1024x1024 image is about 765 tokens on OpenAI, 1,600 on Anthropic
DEFAULT_MAX_OUTPUT_TOKENS = 4_096
DEFAULT_MIN_OUTPUT_TOKENS = 256


def estimate_text_tokens(text: str) -> int:
    """An upper bound on the BPE tokens in ``text``: its UTF-8 byte count."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    if isinstance(content, Sequence):
        for block in content:
            if isinstance(block, str):
                total += estimate_text_tokens(block)
            elif isinstance(block, Mapping):
                kind = block.get("type")
                if kind in ("text", "reasoning", "thinking"):
                    total += estimate_text_tokens(str(block.get("text") or block.get("thinking") or ""))
                elif kind in ("image", "image_url", "file", "audio", "document", "input_audio"):
                    total += PER_IMAGE
                else:
                    total += estimate_text_tokens(json.dumps(block, default=str))
    return total


def estimate_input_tokens(messages: Sequence[BaseMessage], tools: Any = None) -> int:
    """Worst-case input tokens of one prompt, plus the tool definitions bound to it."""
    total = PER_CALL
    for m in messages:
        total += PER_MESSAGE + _content_tokens(m.content)
        calls = m.tool_calls if isinstance(m, AIMessage) else None
        if calls:
            total += estimate_text_tokens(json.dumps(calls, default=str))
    if tools:
        total += estimate_text_tokens(json.dumps(tools, default=str))
    return total


_MAX_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict", "maxTokens")
CAP_KEYS = _MAX_KEYS  #: the names a provider gives its output cap (adapter/fit.py sends a fitted one)
_AUDIO_KINDS = ("audio", "input_audio")


def _cap(where: Mapping[str, Any] | object) -> int | None:
    """The first positive int output cap among ``where``'s keys (a mapping) or attributes."""
    mapping = type(where) is dict or isinstance(where, Mapping)  # (once, not once per key)
    for key in _MAX_KEYS:
        v = where.get(key) if mapping else getattr(where, key, None)  # type: ignore[union-attr]
        if type(v) is int and v > 0:
            return v
    return None


def configured_max_output_tokens(model: object) -> int | None:
    """The output cap a chat-model object is configured with, if it has one.

    ChatOllama sends its ``num_predict`` without putting it in the callback's
    ``invocation_params``, so the cap must be read from the model itself.
    """
    return _cap(model)


def has_audio_input(messages: Sequence[BaseMessage] | None) -> bool:
    """Whether a prompt carries audio (a block of type audio, or any block with an audio MIME type)."""
    for m in messages or ():
        content = m.content
        if isinstance(content, str):
            continue
        for block in content:
            if not isinstance(block, Mapping):
                continue
            mime = block.get("mime_type") or block.get("mimeType")
            if block.get("type") in _AUDIO_KINDS or (isinstance(mime, str) and mime.startswith("audio/")):
                return True
    return False


def max_output_tokens(
    invocation_params: Mapping[str, Any] | None, profile_max: int | None, default: int
) -> int:
    """The call's output cap: its own max tokens, else the model profile's, else ``default``.

    Only the invocation parameters count, the ones the provider is sent. Run
    metadata is the caller's to fill (``config["metadata"]``), so a
    ``max_tokens`` there must never shrink a reservation.
    """
    params = invocation_params or {}
    options = params.get("options")  # ChatOllama: a call's options={"num_predict": ...}
    for where in (params, options if isinstance(options, Mapping) else {}):
        cap = _cap(where)
        if cap is not None:
            return cap
    if profile_max:
        return profile_max
    return default
