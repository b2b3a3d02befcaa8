"""Refusals that end their run in traces, and the guard's decisions as custom trace events.

A handler that raises in ``on_chat_model_start`` stops the call, but the
tracers that saw the start (LangSmith, ``astream_events``) never hear of an
end: the run stays open. So a guarded model's handler (the model is one of
``adapter/fit.py``'s subclasses, which run code inside the model call) does
not raise there: it *holds* the refusal, and the model's ``_generate``,
``_agenerate``, ``_stream`` or ``_astream`` raises it before anything is
sent. LangChain reports that error with ``on_llm_error``, so every tracer
ends the run with the refusal as its error, and the caller still gets the
guard's exception object as is. Only single-prompt calls (``batch_size`` 1:
invoke, stream, each call of batch) are held; any other call is refused at
its start, as before.

The decisions are sent to the run's handlers (tracers, ``astream_events``)
as custom events named ``budgetguard``, through the run manager LangChain
hands the model (``stream``/``astream`` hand ``_stream`` none: it is read
from their frame, as ``compat.py`` reads LangChain's dispatcher):
``{"decision": "reserved" | "output_cap_fitted" | "refused" | "degraded", ...}``.
Nothing is built when no handler of the run listens.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import LLMResult

from ..errors import BudgetExceeded, DegradeRequired
from ..units import to_usd

__all__ = ["EVENT_NAME", "HeldRefusals", "aannounce", "announce", "end_open_runs", "held"]

EVENT_NAME = "budgetguard"
#: Refusals held at most, oldest dropped first (one is held only until its model call raises it).
_MAX_HELD = 4096
#: The refusal held last in this context: what a ``_stream`` without a run manager raises.
_held_here: ContextVar[tuple[object, UUID] | None] = ContextVar("budgetguard_held", default=None)


class HeldRefusals:
    """Refusals waiting for their model call to raise them, by (handler owner, run id)."""

    __slots__ = ("_held", "_lock", "waiting")

    def __init__(self) -> None:
        self._held: OrderedDict[tuple[object, UUID], BudgetExceeded] = OrderedDict()
        self._lock = threading.Lock()
        #: the same mapping, to test for none held without a call to ``__bool__`` (every call does)
        self.waiting: Mapping[tuple[object, UUID], BudgetExceeded] = self._held

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, owner: object, run_id: UUID, exc: BudgetExceeded) -> None:
        with self._lock:
            self._held[(owner, run_id)] = exc
            while len(self._held) > _MAX_HELD:
                self._held.popitem(last=False)
        _held_here.set((owner, run_id))

    def take(self, owner: object, run_id: UUID | None) -> BudgetExceeded | None:
        """The refusal of this owner's call ``run_id`` (else the one held in this context), removed."""
        if not self._held:
            return None
        if run_id is None:
            here = _held_here.get()
            if here is None or here[0] is not owner:
                return None
            run_id = here[1]
        with self._lock:
            return self._held.pop((owner, run_id), None)


#: One registry per process: owners and run ids tell the calls apart.
held = HeldRefusals()


#: ``stream`` and ``astream``: their ``run_manager`` is what their ``_stream`` is not handed.
_STREAMS = frozenset(
    code
    for code in (getattr(getattr(BaseChatModel, n, None), "__code__", None) for n in ("stream", "astream"))
    if code is not None
)
_getframe = getattr(sys, "_getframe", None)


def run_manager_of(run_manager: Any) -> Any:
    """``run_manager``, or the one of the ``stream``/``astream`` this hook runs in (a few frames up)."""
    if run_manager is not None or _getframe is None:
        return run_manager
    frame = _getframe(2)
    for _ in range(4):
        if frame is None:
            return None
        if frame.f_code in _STREAMS:
            return frame.f_locals.get("run_manager")
        frame = frame.f_back
    return None


_SYNC_DISPATCH = getattr(handle_event, "__code__", None)
_ASYNC_DISPATCH = getattr(ahandle_event, "__code__", None)
#: Background error ends scheduled from a sync handler on LangChain's async path.
_ending: set[asyncio.Task[None]] = set()


def _dispatcher() -> tuple[bool, list[Any]] | None:
    """(async?, the handlers before the current one) of the LangChain dispatcher running this event."""
    if _getframe is None:
        return None
    frame = _getframe(2)
    for _ in range(12):
        if frame is None:
            return None
        if frame.f_code is _SYNC_DISPATCH or frame.f_code is _ASYNC_DISPATCH:
            is_async = frame.f_code is _ASYNC_DISPATCH
            loc = frame.f_locals
            handlers, current = loc.get("handlers"), loc.get("handler")
            if not isinstance(handlers, list) or current is None:
                return None
            if is_async and frame.f_back is not None:
                # The async manager dispatches one handler at a time: its own list, from its frame.
                manager = frame.f_back.f_locals.get("self")
                every = getattr(manager, "handlers", None)
                if isinstance(every, list) and any(h is current for h in every):
                    handlers = every
            order = [h for h in handlers if h.run_inline] if is_async else handlers
            before = next((order[:i] for i, h in enumerate(order) if h is current), [])
            return is_async, before
        frame = frame.f_back
    return None


def end_open_runs(exc: BaseException, kwargs: dict[str, Any]) -> Any:
    """Send ``on_llm_error`` to the handlers that saw this start: the sync dispatch now; on the
    async one, the coroutine to await (the caller's) or, from a sync handler, a task."""
    found = _dispatcher()
    if found is None or not found[1]:
        return None
    is_async, before = found
    args = ("on_llm_error", "ignore_llm", exc)
    kw = {
        "run_id": kwargs["run_id"],
        "parent_run_id": kwargs.get("parent_run_id"),
        "tags": kwargs.get("tags"),
        "response": LLMResult(generations=[]),
    }
    if not is_async:
        handle_event(before, *args, **kw)
        return None
    return ahandle_event(before, *args, **kw)


def end_open_runs_sync(exc: BaseException, kwargs: dict[str, Any]) -> None:
    """``end_open_runs`` from a sync handler: an async dispatch gets a task on its loop."""
    coro = end_open_runs(exc, kwargs)
    if coro is not None:
        task = asyncio.get_running_loop().create_task(coro)
        _ending.add(task)
        task.add_done_callback(_ending.discard)


def _listeners(run_manager: Any) -> list[Any]:
    handlers = getattr(run_manager, "handlers", None) or ()
    return [h for h in handlers if not getattr(h, "ignore_custom_event", False)]


def decision_events(pending: Any, refusal: BudgetExceeded | None) -> list[dict[str, Any]]:
    """What the guard decided for a call, as custom-event payloads (JSON-safe: money as strings)."""
    if refusal is not None:
        decision = "degraded" if isinstance(refusal, DegradeRequired) else "refused"
        return [
            {
                "decision": decision,
                "scope": refusal.scope,
                "window": refusal.window,
                "quantity": refusal.quantity,
                "remaining": str(refusal.remaining),
                "requested": str(refusal.requested),
                "reason": refusal.reason(),
            }
        ]
    if pending is None:
        return []
    scopes: Sequence[str] = pending.labels
    out = [
        {
            "decision": "reserved",
            "scopes": list(scopes),
            "reserved_usd": str(to_usd(pending.amount.nanos)),
            "reserved_tokens": pending.amount.tokens,
            "lease_id": pending.lease_id,
        }
    ]
    if pending.fitted is not None:
        out.append({"decision": "output_cap_fitted", "max_tokens": pending.fitted})
    return out


def _payloads(model: Any, run_manager: Any, refusal: BudgetExceeded | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for h in _model_handlers(model):
        ask = getattr(h, "decisions", None)
        if callable(ask):
            out += ask(run_manager.run_id, refusal)
    return out


def _event_args(run_manager: Any, data: dict[str, Any]) -> tuple[Any, ...]:
    """``handle_event``'s positional arguments for one ``budgetguard`` custom event (both twins)."""
    return (run_manager.handlers, "on_custom_event", "ignore_custom_event", EVENT_NAME, data)


def _event_kwargs(run_manager: Any) -> dict[str, Any]:
    return {"run_id": run_manager.run_id, "tags": run_manager.tags, "metadata": run_manager.metadata}


def announce(model: Any, run_manager: Any, refusal: BudgetExceeded | None = None) -> None:
    """Send the guard's decisions on this call to the run's handlers, if any listens."""
    if run_manager is None or not _listeners(run_manager):
        return
    for data in _payloads(model, run_manager, refusal):
        handle_event(*_event_args(run_manager, data), **_event_kwargs(run_manager))


async def aannounce(model: Any, run_manager: Any, refusal: BudgetExceeded | None = None) -> None:
    if run_manager is None or not _listeners(run_manager):
        return
    for data in _payloads(model, run_manager, refusal):
        await ahandle_event(*_event_args(run_manager, data), **_event_kwargs(run_manager))


def _model_handlers(model: Any) -> list[Any]:
    cbs = model.callbacks
    return list(cbs if isinstance(cbs, list) else getattr(cbs, "handlers", ()))


def take_refusal(model: Any, run_manager: Any) -> BudgetExceeded | None:
    """The refusal a guard's handler on this model holds for this call, if any."""
    if not held.waiting:  # none held, by any guard (the handlers' ``take_refusal`` reads ``held``)
        return None
    run_id = getattr(run_manager, "run_id", None)  # None in a stream: the call begun in this context
    for h in _model_handlers(model):
        take = getattr(h, "take_refusal", None)
        if callable(take):
            exc = take(run_id)
            if exc is not None:
                return exc  # type: ignore[no-any-return]
    return None
