"""Usage details an integration reads from the provider but drops from its streamed chunks.

langchain-mistralai turns a streamed chunk's ``usage`` into ``usage_metadata``
with totals only: ``prompt_tokens_details.cached_tokens`` is lost, so a stream
would charge cache reads at the full input rate (its invoke keeps them, in
``llm_output``). Its sync client, ``ChatMistralAI.completion_with_retry``, is a
method of the model, so the guarded subclass (``adapter/fit.py``) overrides it
to keep the raw usage of the call's chunks, and the usage chunk the stream then
yields gets ``input_token_details.cache_read``. Its async client is a module
function (``acompletion_with_retry``) that nothing but patching langchain-mistralai
could reach: async streams are charged as before, cache reads at the full input
rate (more than the bill, never less).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

__all__ = ["raw_usage_hooks", "with_raw_details"]

#: The raw usages of the stream being started in this context (set only while it starts).
_collecting: ContextVar[list[Mapping[str, Any]] | None] = ContextVar("budgetguard_raw_usage", default=None)


def _tee(chunks: Iterator[Any], into: list[Mapping[str, Any]]) -> Iterator[Any]:
    for chunk in chunks:
        usage = chunk.get("usage") if isinstance(chunk, Mapping) else None
        if isinstance(usage, Mapping):
            into.append(usage)
        yield chunk


def raw_usage_hooks(base: type[Any]) -> dict[str, Any]:
    """The overrides that keep a class's raw stream usage; none for a class that needs none."""
    if not base.__module__.startswith("langchain_mistralai") or not callable(
        getattr(base, "completion_with_retry", None)
    ):
        return {}

    def completion_with_retry(self: Any, run_manager: Any = None, **kwargs: Any) -> Any:
        out = base.completion_with_retry(self, run_manager=run_manager, **kwargs)
        into = _collecting.get()
        if into is None or not kwargs.get("stream") or isinstance(out, Mapping):
            return out
        return _tee(iter(out), into)

    return {"completion_with_retry": completion_with_retry}


def _cached(usage: Mapping[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    n = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return n if type(n) is int and n > 0 else 0


def with_raw_details(chunks: Iterator[Any]) -> Iterator[Any]:
    """``base._stream(...)``'s chunks, the usage chunk given the cache reads its raw usage had."""
    seen: list[Mapping[str, Any]] = []
    token = _collecting.set(seen)
    try:  # the request is sent, and the raw stream opened, on the first chunk
        first = next(chunks, None)
    finally:
        _collecting.reset(token)
    if first is None:
        return
    for chunk in _chain(first, chunks):
        um = getattr(getattr(chunk, "message", None), "usage_metadata", None)
        if isinstance(um, dict) and seen and "input_token_details" not in um:
            cached = _cached(seen[-1])
            if 0 < cached <= um.get("input_tokens", 0):
                um["input_token_details"] = {"cache_read": cached}
        yield chunk


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
