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

import asyncio
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..engine import CallStart, Engine, ModelHint
from ..errors import BudgetExceeded
from .candidates import Role, candidates
from .compat import detection_available, on_async_path
from .composite import AsyncFanOut, FanOut
from .fit import cache_will_answer
from .logs import quiet_refusals
from .traces import decision_events, end_open_runs, end_open_runs_sync, held
from .v3 import stream_event

__all__ = ["GUARDS_KEY", "BudgetGuardCallback", "SyncTwin", "AsyncTwin", "context_scopes", "guard_callback"]

_new = tuple.__new__  # a NamedTuple from all its fields

#: The events a guard handles, in the order LangChain sends them.
EVENTS = (
    "on_chat_model_start",
    "on_llm_start",
    "on_llm_new_token",
    "on_stream_event",
    "on_llm_end",
    "on_llm_error",
)

#: The events that reserve, and so may wait (``contention_wait``).
START_EVENTS = ("on_chat_model_start", "on_llm_start")

#: Metadata key on a guarded model: the tags of the guards whose handler the model carries.
GUARDS_KEY = "budgetguard_guards"

#: Scope values the context supplies to every call made in it, over the run's own metadata (and under
#: ``enforce()``'s): the agents middleware sets ``run_id``, ``thread_id`` and the like here, since an
#: agent's model calls carry no per-run key of their own. Set it with ``.set()``/``.reset()``.
context_scopes: ContextVar[Mapping[str, Any] | None] = ContextVar("budgetguard_context_scopes", default=None)


class _Core:
    """What both twins share: the engine, the model hint, the metadata merge, token counting.

    ``owner`` is shared by the two twins of one handler: the calls it begins
    are settled only by its own end and error events, never by another
    handler's (the same guard on a model and on the chain around it).
    """

    __slots__ = ("engine", "extra_metadata", "generic", "hint", "late", "owner", "role")

    def __init__(
        self,
        engine: Engine,
        hint: ModelHint,
        extra_metadata: dict[str, Any],
        owner: object,
        role: Role | None = None,
        late: bool = False,
    ) -> None:
        self.engine = engine
        #: the model raises this handler's refusals itself (``adapter/traces.py``): traces see the run end
        self.late = late
        self.role = role  # the model's place in a fallback chain, if it has one
        self.hint = hint
        self.extra_metadata = extra_metadata
        self.owner = owner
        # Knows nothing of the model, adds no metadata: defers to a handler of its guard on the model.
        self.generic = hint == ModelHint() and not extra_metadata

    def _call(
        self, messages: Sequence[BaseMessage] | None, prompts: Sequence[str] | None, kwargs: dict[str, Any]
    ) -> CallStart | None:
        """The start event as a ``CallStart``; None if this guard's handler on the model will take it.

        The model's own handler knows the model (its profile's output cap, the
        degrade threshold), so a chain-level handler of the same guard leaves
        the call to it rather than reserving a cruder estimate first.
        """
        # the run's metadata, under the context's scopes and this handler's extra metadata
        meta = kwargs.get("metadata")
        supplied = context_scopes.get()
        if supplied:
            meta = {**(meta or {}), **supplied}
        meta = {**(meta or {}), **self.extra_metadata} if self.extra_metadata else meta or {}
        if self.generic and self.engine.tag in (meta.get(GUARDS_KEY) or ()):
            return None
        params = kwargs.get("invocation_params")
        deferred = not self.generic and cache_will_answer.get()
        return _new(  # all its fields, without CallStart's Python-level __new__
            CallStart,
            (
                kwargs["run_id"],
                messages,
                prompts,
                params,
                meta,
                self.hint,
                self.owner,
                deferred,
                kwargs.get("parent_run_id"),
            ),
        )

    def _held(self, exc: BudgetExceeded, kwargs: dict[str, Any]) -> bool:
        """Whether the refusal is held for the model call to raise (``adapter/traces.py``); else the
        caller raises it now, after ending the runs that saw this start."""
        candidates.refused(self.role, kwargs.get("parent_run_id"), exc)
        if not self.late or kwargs.get("batch_size", 1) != 1:
            return False
        held.hold(self.owner, kwargs["run_id"], exc)
        return True

    def _over(self, run_id: UUID) -> None:
        """The call ended: a refusal still held for it is void (LangChain's cache answered it)."""
        if held.waiting:
            held.take(self.owner, run_id)

    def _observe(self, token: Any, kwargs: dict[str, Any]) -> None:
        # No I/O, so the async twin counts tokens with this too.
        chunk = kwargs.get("chunk")
        self.engine.observe(
            kwargs["run_id"],
            getattr(chunk, "message", None),
            token if isinstance(token, str) else "",
            self.owner,
        )


class SyncTwin(_Core):
    """The events on LangChain's sync path (and its executor): the store's blocking client."""

    __slots__ = ()

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self._begin(self._call(messages[0], None, kwargs), kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        self._begin(self._call(None, prompts[:1], kwargs), kwargs)

    def _begin(self, call: CallStart | None, kwargs: dict[str, Any]) -> None:
        if call is None:
            return
        try:
            self.engine.begin(call)
        except BudgetExceeded as exc:
            if self._held(exc, kwargs):
                return
            end_open_runs_sync(exc, kwargs)
            raise
        if self.role is not None:  # in a fallback chain: noted as admitted
            candidates.admitted(self.role, kwargs.get("parent_run_id"))

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self._observe(token, kwargs)

    def on_stream_event(self, event: Any, **kwargs: Any) -> None:
        stream_event(self.engine, event, kwargs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        if held.waiting:  # (``_over``, inline)
            held.take(self.owner, run_id)
        self.engine.end(run_id, response, self.owner)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._over(run_id)
        self.engine.fail(run_id, error, self.owner)


class AsyncTwin(_Core):
    """The events on LangChain's async path: coroutine functions awaiting the store's async client."""

    __slots__ = ()

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        await self._begin(self._call(messages[0], None, kwargs), kwargs)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        await self._begin(self._call(None, prompts[:1], kwargs), kwargs)

    async def _begin(self, call: CallStart | None, kwargs: dict[str, Any]) -> None:
        if call is None:
            return
        try:
            await self.engine.abegin(call)
        except BudgetExceeded as exc:
            if self._held(exc, kwargs):
                return
            ending = end_open_runs(exc, kwargs)
            if ending is not None:
                await ending
            raise
        if self.role is not None:  # in a fallback chain: noted as admitted
            candidates.admitted(self.role, kwargs.get("parent_run_id"))

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self._observe(token, kwargs)

    async def on_stream_event(self, event: Any, **kwargs: Any) -> None:
        stream_event(self.engine, event, kwargs)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._over(run_id)
        await self.engine.aend(run_id, response, self.owner)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._over(run_id)
        await self.engine.afail(run_id, error, self.owner)


class _Routed:
    """An event of ``BudgetGuardCallback``: the sync twin's method, or the async twin's on the async path."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, handler: BudgetGuardCallback | None, owner: type | None = None) -> Any:
        if handler is None:
            return self
        # No event loop in this thread: no async dispatcher either (and no frames to walk).
        async_path = asyncio._get_running_loop() is not None and on_async_path()
        return getattr(handler.async_twin if async_path else handler.sync_twin, self.name)


@quiet_refusals
class BudgetGuardCallback(BaseCallbackHandler):
    """What LangChain holds: sync methods on its sync path, coroutine functions on its async path.

    Attached by the guard, not by users. Its refusals reach the caller as is
    (``raise_error``). A store that answers at once (in memory) is used inline
    and sync on both paths, as it is fastest.
    """

    raise_error = True
    ignore_custom_event = True  # its own trace events (``adapter/traces.py``) are for the others

    on_chat_model_start: Any = _Routed()
    on_llm_start: Any = _Routed()
    on_llm_new_token: Any = _Routed()
    on_stream_event: Any = _Routed()
    on_llm_end: Any = _Routed()
    on_llm_error: Any = _Routed()

    def __init__(
        self,
        sync_twin: SyncTwin | FanOut,
        async_twin: AsyncTwin | AsyncFanOut,
        *,
        blocking: bool,
        waits: bool = False,
    ) -> None:
        self.sync_twin = sync_twin
        self.async_twin = async_twin
        self.blocking = blocking
        self.waits = waits
        # Inline on the async path too: the async twin then runs in the caller's own task,
        # which is what a cancelled call is registered with (``engine.pending``).
        self.run_inline = not blocking or detection_available()
        if not blocking:
            # Plain instance attributes shadow the routing: no look-up logic per event. A start
            # that may wait out contention stays routed: on the async path it must await, not block.
            routed = START_EVENTS if waits and detection_available() else ()
            for name in EVENTS:
                if name not in routed:
                    setattr(self, name, getattr(sync_twin, name))

    def take_refusal(self, run_id: UUID | None) -> BudgetExceeded | None:
        """The refusal held for this handler's call ``run_id``, for the model to raise."""
        twin = self.sync_twin
        return held.take(twin.owner, run_id) if isinstance(twin, SyncTwin) and held else None

    def decisions(self, run_id: UUID | None, refusal: BudgetExceeded | None) -> list[dict[str, Any]]:
        """What this handler's guard decided for the call ``run_id``, as trace-event payloads."""
        twin = self.sync_twin
        if not isinstance(twin, SyncTwin):
            return []
        pending = None if refusal is not None else twin.engine.pending.here(run_id, twin.owner)
        return decision_events(pending, refusal)

    def model_call(self, run_id: UUID | None) -> int | None:
        """As the model is called (``adapter/fit.py``): this handler's call left to the cache, which
        missed after all, is reserved now (or raises); the output cap its call was fitted to."""
        twin = self.sync_twin
        if not isinstance(twin, SyncTwin):
            return None
        engine, owner = twin.engine, twin.owner
        if engine.flows.any_deferred:  # else none to reserve
            engine.reserve_deferred(run_id, owner)
        return engine.pending.fitted(run_id, owner)

    async def amodel_call(self, run_id: UUID | None) -> int | None:
        twin = self.sync_twin
        if not isinstance(twin, SyncTwin):
            return None
        engine, owner = twin.engine, twin.owner
        if engine.flows.any_deferred:
            await engine.areserve_deferred(run_id, owner)
        return engine.pending.fitted(run_id, owner)


def guard_callback(
    engine: Engine,
    hint: ModelHint | None = None,
    metadata: Mapping[str, Any] | None = None,
    role: Role | None = None,
    late: bool = False,
) -> BudgetGuardCallback:
    """The handler of one guard: both twins over the same engine, hint, extra metadata and role.

    ``late``: the model is a ``fitting_class`` one, which raises the handler's held refusals itself.
    """
    state = (engine, hint or ModelHint(), dict(metadata or {}), object(), role, late)
    waits = engine.flows.contention_wait > 0
    return BudgetGuardCallback(
        SyncTwin(*state), AsyncTwin(*state), blocking=engine.store.blocking, waits=waits
    )
