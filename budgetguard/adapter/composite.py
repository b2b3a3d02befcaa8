"""One callback handler that hands each event to several members, in order.

Used by ``enforce()`` (every guard active in the context) and by
``track_usage()`` (every tracker open in it). ``FanOut`` calls the members'
sync methods; ``AsyncFanOut`` is its twin for LangChain's async path and awaits
theirs. With ``release=True`` a start that a member refuses is undone in the
members already started (their ``on_llm_error``), so nothing stays reserved
for a call that never happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

__all__ = ["FanOut", "AsyncFanOut"]


def _ignore(*args: Any, **kwargs: Any) -> None:
    """A member with no v3 event handler (a usage tracker) ignores the event."""


class FanOut(BaseCallbackHandler):
    """Every member's sync method, in order; a handler of its own (``track_usage``) or a twin."""

    def __init__(self, members: Sequence[Any], *, release: bool = False) -> None:
        self.members = tuple(members)
        self.release = release

    def _start(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        started: list[Any] = []
        try:
            for m in self.members:
                getattr(m, event)(*args, **kwargs)
                started.append(m)
        except BaseException as exc:
            if self.release:
                for m in started:
                    m.on_llm_error(exc, run_id=kwargs["run_id"])
            raise

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self._start("on_chat_model_start", args, kwargs)

    def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        self._start("on_llm_start", args, kwargs)

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            m.on_llm_new_token(*args, **kwargs)

    def on_stream_event(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            getattr(m, "on_stream_event", _ignore)(*args, **kwargs)

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            m.on_llm_end(*args, **kwargs)

    def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            m.on_llm_error(*args, **kwargs)


class AsyncFanOut:
    """``FanOut``'s twin for LangChain's async path: awaits every member's async method."""

    def __init__(self, members: Sequence[Any], *, release: bool = False) -> None:
        self.members = tuple(members)
        self.release = release

    async def _start(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        started: list[Any] = []
        try:
            for m in self.members:
                await getattr(m, event)(*args, **kwargs)
                started.append(m)
        except BaseException as exc:
            if self.release:
                for m in started:
                    await m.on_llm_error(exc, run_id=kwargs["run_id"])
            raise

    async def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        await self._start("on_chat_model_start", args, kwargs)

    async def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        await self._start("on_llm_start", args, kwargs)

    async def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            await m.on_llm_new_token(*args, **kwargs)

    async def on_stream_event(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            handler = getattr(m, "on_stream_event", None)
            if handler is not None:
                await handler(*args, **kwargs)

    async def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            await m.on_llm_end(*args, **kwargs)

    async def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            await m.on_llm_error(*args, **kwargs)
