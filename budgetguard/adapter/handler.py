"""The callback handler a guard places on a chat model: one core, a sync and an async twin.

LangChain's sync dispatch calls a handler's method and swallows the exception
of one that turns out to be a coroutine; its async dispatch awaits a coroutine
function and otherwise calls the method inline or on its executor. A guard must
raise on the sync path and should await the store's async client (redis.asyncio)
on the async path rather than block the loop. So the handler LangChain holds,
``BudgetGuardCallback``, answers each look-up of an event with the sync twin's
method, or with the async twin's when ``compat.on_async_path()`` sees LangChain's
async dispatcher asking. The twins share ``_Core`` and differ only in calling
``engine.begin`` or ``await engine.abegin`` (as langchain-core's ``BaseTracer``
and ``AsyncBaseTracer`` share ``_TracerCore``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..engine import CallStart, Engine, ModelHint
from .compat import on_async_path
from .composite import AsyncFanOut, FanOut
from .logs import quiet_refusals
from .v3 import stream_event

__all__ = ["BudgetGuardCallback", "SyncTwin", "AsyncTwin", "guard_callback"]

#: The events a guard handles, in the order LangChain sends them.
EVENTS = (
    "on_chat_model_start",
    "on_llm_start",
    "on_llm_new_token",
    "on_stream_event",
    "on_llm_end",
    "on_llm_error",
)

T = TypeVar("T")


class _Core:
    """What both twins share: the engine, the model hint, the metadata merge, token counting."""

    __slots__ = ("engine", "extra_metadata", "hint")

    def __init__(self, engine: Engine, hint: ModelHint, extra_metadata: dict[str, Any]) -> None:
        self.engine = engine
        self.hint = hint
        self.extra_metadata = extra_metadata

    def _meta(self, metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
        if not self.extra_metadata:
            return metadata or {}
        return {**(metadata or {}), **self.extra_metadata}

    def _begin(
        self,
        begin: Callable[..., T],
        messages: Sequence[BaseMessage] | None,
        prompts: Sequence[str] | None,
        kwargs: dict[str, Any],
    ) -> T:
        """``engine.begin`` or ``engine.abegin`` for a start event's keyword arguments."""
        meta = self._meta(kwargs.get("metadata"))
        return begin(
            CallStart(kwargs["run_id"], messages, prompts, kwargs.get("invocation_params"), meta, self.hint)
        )

    def _observe(self, token: Any, kwargs: dict[str, Any]) -> None:
        # No I/O, so the async twin counts tokens with this too.
        chunk = kwargs.get("chunk")
        self.engine.observe(
            kwargs["run_id"], getattr(chunk, "message", None), token if isinstance(token, str) else ""
        )


class SyncTwin(_Core):
    """The events on LangChain's sync path (and its executor): the store's blocking client."""

    __slots__ = ()

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self._begin(self.engine.begin, messages[0], None, kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        self._begin(self.engine.begin, None, prompts[:1], kwargs)

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self._observe(token, kwargs)

    def on_stream_event(self, event: Any, **kwargs: Any) -> None:
        stream_event(self.engine, event, kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.engine.end(run_id, response)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.engine.fail(run_id, error)


class AsyncTwin(_Core):
    """The events on LangChain's async path: coroutine functions awaiting the store's async client."""

    __slots__ = ()

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        await self._begin(self.engine.abegin, messages[0], None, kwargs)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        await self._begin(self.engine.abegin, None, prompts[:1], kwargs)

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self._observe(token, kwargs)

    async def on_stream_event(self, event: Any, **kwargs: Any) -> None:
        stream_event(self.engine, event, kwargs)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        await self.engine.aend(run_id, response)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        await self.engine.afail(run_id, error)


class _Routed:
    """An event of ``BudgetGuardCallback``: the sync twin's method, or the async twin's on the async path."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, handler: BudgetGuardCallback | None, owner: type | None = None) -> Any:
        if handler is None:
            return self
        return getattr(handler.async_twin if on_async_path() else handler.sync_twin, self.name)


@quiet_refusals
class BudgetGuardCallback(BaseCallbackHandler):
    """What LangChain holds: sync methods on its sync path, coroutine functions on its async path.

    Attached by the guard, not by users. Its refusals reach the caller as is
    (``raise_error``). A store that answers at once (in memory) is used inline
    and sync on both paths, as it is fastest.
    """

    raise_error = True

    on_chat_model_start: Any = _Routed()
    on_llm_start: Any = _Routed()
    on_llm_new_token: Any = _Routed()
    on_stream_event: Any = _Routed()
    on_llm_end: Any = _Routed()
    on_llm_error: Any = _Routed()

    def __init__(
        self, sync_twin: SyncTwin | FanOut, async_twin: AsyncTwin | AsyncFanOut, *, blocking: bool
    ) -> None:
        self.sync_twin = sync_twin
        self.async_twin = async_twin
        self.run_inline = not blocking
        if not blocking:
            # Plain instance attributes shadow the routing: no look-up logic per event.
            for name in EVENTS:
                setattr(self, name, getattr(sync_twin, name))


def guard_callback(
    engine: Engine, hint: ModelHint | None = None, metadata: Mapping[str, Any] | None = None
) -> BudgetGuardCallback:
    """The handler of one guard: both twins over the same engine, hint and extra metadata."""
    state = (engine, hint or ModelHint(), dict(metadata or {}))
    return BudgetGuardCallback(SyncTwin(*state), AsyncTwin(*state), blocking=engine.store.blocking)
