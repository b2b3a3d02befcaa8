"""Usage details an integration reads from the provider but drops from its streamed chunks.

langchain-mistralai turns a streamed chunk's ``usage`` into ``usage_metadata``
with totals only: ``prompt_tokens_details.cached_tokens`` is lost, so a stream
would charge cache reads at the full input rate (its invoke keeps them, in
``llm_output``). The guarded subclass (``adapter/fit.py``) keeps the raw usage
of the call's stream, and the usage chunk the stream then yields gets
``input_token_details.cache_read``. Sync: ``ChatMistralAI.completion_with_retry``
is a method of the model, overridden to keep the parsed chunks. Async: the
client is reached through a module function (``acompletion_with_retry``), so the
call's copy of the model gets an ``async_client`` that forwards everything and
reads the ``data:`` lines of the decoded event stream as they pass.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["adetailed", "araw_details", "raw_usage_hooks", "with_raw_details"]

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
        _detail(chunk, seen)
        yield chunk


def _detail(chunk: Any, seen: list[Mapping[str, Any]]) -> None:
    """Give a usage chunk the cache reads of the last raw usage seen."""
    um = getattr(getattr(chunk, "message", None), "usage_metadata", None)
    if isinstance(um, dict) and seen and "input_token_details" not in um:
        cached = _cached(seen[-1])
        if 0 < cached <= um.get("input_tokens", 0):
            um["input_token_details"] = {"cache_read": cached}


def araw_details(target: Any) -> tuple[Any, list[Mapping[str, Any]]] | None:
    """A copy of ``target`` whose async client keeps its streams' raw usage, and where; or None."""
    client = getattr(target, "async_client", None)
    if client is None or not callable(getattr(client, "stream", None)):
        return None
    seen: list[Mapping[str, Any]] = []
    return target.model_copy(update={"async_client": _TeeClient(client, seen)}), seen


async def adetailed(chunks: AsyncIterator[Any], seen: list[Mapping[str, Any]]) -> AsyncIterator[Any]:
    async for chunk in chunks:
        _detail(chunk, seen)
        yield chunk


class _TeeClient:
    """An httpx.AsyncClient in all but ``stream``, whose responses' text is read as it passes."""

    def __init__(self, inner: Any, into: list[Mapping[str, Any]]) -> None:
        self._inner = inner
        self._into = into

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with self._inner.stream(*args, **kwargs) as response:
            yield _TeeResponse(response, self._into)


class _TeeResponse:
    def __init__(self, inner: Any, into: list[Mapping[str, Any]]) -> None:
        self._inner = inner
        self._into = into

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def aiter_text(self, *args: Any, **kwargs: Any) -> AsyncIterator[str]:
        tail = ""
        async for text in self._inner.aiter_text(*args, **kwargs):
            tail = _scan(tail + text, self._into)
            yield text
        _scan(tail + "\n", self._into)


def _scan(text: str, into: list[Mapping[str, Any]]) -> str:
    """Keep the usage of each complete ``data:`` line; the incomplete rest is returned."""
    *lines, rest = text.split("\n")
    for line in lines:
        if line.startswith("data:") and '"usage"' in line:
            try:
                event = json.loads(line[5:])
            except ValueError:
                continue
            usage = event.get("usage") if isinstance(event, dict) else None
            if isinstance(usage, Mapping):
                into.append(usage)
    return rest


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
