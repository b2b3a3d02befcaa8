"""The calls between their start and end events, keyed by LangChain run id.

``on_llm_end`` carries no metadata, only the run id, so the guard must
remember each reservation itself until the call ends. A run id is not a call
id: callers reuse them (retries, tracing setups), so one run id may have
several calls in flight. Each call is owned by the handler that began it
(only that handler's end or error settles it). Concurrent calls sharing a
run id are told apart by the context they began in (a ContextVar: LangChain
runs a call's later events in that context or a copy of it).

A cancelled asyncio call gets no end or error event from LangChain's
``agenerate`` path. So a call begun in a task is also registered with that
task: when the task ends with the call still here, ``on_abandoned`` settles it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ..pricing import Rates
from ..reservation import Amount, CounterRef, CounterSpec
from ..usage import TokenUsage

__all__ = ["Pending", "PendingRuns", "current_task"]

#: The lease of the last call begun in this context: which of a run id's calls an event is about.
_began: ContextVar[str | None] = ContextVar("budgetguard_began", default=None)


@dataclass(slots=True, eq=False)
class Pending:
    """One reservation in flight, and what its stream has shown so far."""

    lease_id: str
    refs: tuple[CounterRef, ...]
    labels: tuple[str, ...]  # the scopes as the user wrote them, for records
    amount: Amount
    rates: Rates
    provider: str | None
    input_est: int
    output_cap: int
    # set by every start (``Flows.start`` passes them positionally, in this order)
    owner: object = None  # the handler that began the call: only its end or error settles it
    start: object = None  # the start event's prompt object: the same event seen by a second handler
    task: asyncio.Task[object] | None = None  # the asyncio task the call began in
    audio_in: bool = False  # the prompt carries audio: a reading that does not split it out is charged so
    prefix: bytes | None = None  # the prompt's fingerprint: its reported input is remembered under it
    fit: bool = False  # the model sends a fitted output cap (``fit_max_tokens``): a refusal may fit
    wait: bool = True  # a refusal by contention waits (``contention_wait``); False on a fallback's way
    thread: int = 0  # the thread the call began in (``held_here``)
    run_id: UUID | None = None  # the model call's LangChain run id, and its parent's, for records
    parent_run_id: UUID | None = None
    metadata: Mapping[str, Any] | None = None  # the caller's metadata the plan was read from
    started: float = 0.0  # time.time() at the start event
    specs: tuple[CounterSpec, ...] = ()  # the counters' caps, for alerts (set only when alerts= is)
    # changed as the call goes on
    chunks: int = 0
    out_seen: int = 0
    partial: TokenUsage | None = None
    spooled: bool = False  # reserved in the spool (store down, fail-open): settle there too
    probe: bool = False  # pipe form: the reservation was a 1-unit probe, not an estimate
    ready: bool = False  # reserved: an end or error may settle it
    fitted: int | None = None  # the output cap the call was lowered to, to be sent as its max tokens
    deferred: object = None  # unreserved, for the cache to answer: what to reserve if the model is called


def current_task() -> asyncio.Task[object] | None:
    """The running asyncio task, if this thread runs an event loop."""
    loop = asyncio._get_running_loop()  # None, not RuntimeError, when no loop runs: cheap on sync calls
    return None if loop is None else asyncio.current_task(loop)


class PendingRuns:
    """Thread-safe run id -> calls in flight with that run id."""

    __slots__ = ("_fits", "_lock", "_runs", "_tasks", "on_abandoned")

    def __init__(self) -> None:
        self._runs: dict[UUID, list[Pending]] = {}
        self._tasks: dict[asyncio.Task[object], list[tuple[UUID, Pending]]] = {}
        self._fits: list[Pending] = []  # the calls in flight with a fitted cap
        self._lock = threading.Lock()
        self.on_abandoned: Callable[[UUID, Pending], None] | None = None

    def __contains__(self, run_id: UUID) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        """How many calls are in flight (not run ids)."""
        with self._lock:
            return sum(len(calls) for calls in self._runs.values())

    def has_event(self, run_id: UUID, event: object) -> bool:
        """Whether a call was already begun for this very start event (another handler's)."""
        runs = self._runs  # (empty, the common case, is told without hashing the run id)
        if event is None or not runs or run_id not in runs:  # claim() checks again, under the lock
            return False
        with self._lock:
            return any(p.start is event for p in self._runs.get(run_id, ()))

    def claim(self, run_id: UUID, pending: Pending) -> bool:
        """Add a call about to reserve; False if this start event was already claimed."""
        with self._lock:
            calls = self._runs.setdefault(run_id, [])
            if calls and pending.start is not None and any(p.start is pending.start for p in calls):
                return False
            calls.append(pending)
            _began.set(pending.lease_id)
            return True

    def reserved(self, run_id: UUID, pending: Pending) -> None:
        """The call's reservation is held: its events may settle it, and so may its task's end."""
        task = pending.task
        if task is None:  # no task to register with: one attribute set, no lock to take
            pending.ready = True
            return
        with self._lock:
            pending.ready = True
            if not any(p is pending for p in self._runs.get(run_id, ())):
                return
            calls = self._tasks.get(task)
            if calls is None:
                calls = self._tasks[task] = []
                task.add_done_callback(self._task_done)
            calls.append((run_id, pending))

    def get(self, run_id: UUID, owner: object = None) -> Pending | None:
        with self._lock:
            return self._find(run_id, owner)

    def pop(self, run_id: UUID, owner: object = None) -> Pending | None:
        """The owner's call with this run id, preferring the one begun here; removed."""
        p: Pending | None
        with self._lock:
            found = self._runs.get(run_id)
            if found is not None and len(found) == 1:  # the common case, in one look-up
                p = found[0]
                if not p.ready or (owner is not None and p.owner is not owner):
                    return None
                if p.fitted is None and p.task is None:  # nothing else to unregister (``_remove``)
                    del self._runs[run_id]
                    return p
            else:
                p = self._find(run_id, owner)
            if p is not None:
                self._remove(run_id, p)
            return p

    def fitted(self, run_id: UUID | None, owner: object) -> int | None:
        """The output cap the owner's call was fitted to: the call ``run_id``, else the one begun here.

        A stream's ``_stream`` gets no run manager: the call is the last one
        begun in this context, as the start event's handler ran in it.
        """
        if not self._fits:  # none fitted (a call is fitted while it reserves, before its model runs)
            return None
        with self._lock:
            if run_id is not None:
                p = self._find(run_id, owner)
            else:
                began = _began.get()
                p = next((c for c in self._fits if c.lease_id == began and c.owner is owner), None)
            return None if p is None else p.fitted

    def here(self, run_id: UUID | None, owner: object) -> Pending | None:
        """The owner's call ``run_id``; without a run id (a stream), the one begun in this context."""
        with self._lock:
            if run_id is not None:
                return self._find(run_id, owner)
            began = _began.get()
            return next(
                (
                    p
                    for calls in self._runs.values()
                    for p in calls
                    if p.lease_id == began and p.owner is owner
                ),
                None,
            )

    def fit(self, pending: Pending, cap: int) -> None:
        """The call was reserved at a lowered output cap, which its model must send."""
        with self._lock:
            pending.fitted = cap
            self._fits.append(pending)

    def held_here(self, refs: tuple[CounterRef, ...]) -> list[Amount]:
        """What the calls in flight begun by this asyncio task (else this thread) hold on each counter.

        They cannot settle while it waits (``engine/contention.py``).
        """
        task = current_task()
        ident = threading.get_ident()
        index = {ref: i for i, ref in enumerate(refs)}
        held = [Amount()] * len(refs)
        with self._lock:
            for calls in self._runs.values():
                for p in calls:
                    mine = p.task is task if task is not None else p.task is None and p.thread == ident
                    if not (p.ready and mine and p.deferred is None):
                        continue
                    for ref in p.refs:
                        i = index.get(ref)
                        if i is not None:
                            held[i] = held[i] + p.amount
        return held

    def discard(self, run_id: UUID, pending: Pending) -> bool:
        """Remove this very call; False if an end or error has already taken it."""
        with self._lock:
            calls = self._runs.get(run_id)
            if calls is None or not any(p is pending for p in calls):
                return False
            self._remove(run_id, pending)
            return True

    def stale(self, task: asyncio.Task[object], start: object) -> list[tuple[UUID, Pending]]:
        """Calls begun in ``task`` with no event since: over, since the task has moved on.

        Within one task a call without streamed chunks brackets an await, so
        a new start in that task means the earlier call was abandoned (an
        ``asyncio.timeout`` that cancelled it and let the task go on).
        """
        with self._lock:
            return [
                (run_id, p)
                for run_id, calls in self._runs.items()
                for p in calls
                if p.task is task and p.ready and p.chunks == 0 and p.start is not start
            ]

    def _task_done(self, task: asyncio.Task[object]) -> None:
        with self._lock:
            calls = self._tasks.pop(task, [])
        for run_id, p in calls:
            if self.discard(run_id, p) and self.on_abandoned is not None:
                self.on_abandoned(run_id, p)

    def _find(self, run_id: UUID, owner: object) -> Pending | None:
        found = self._runs.get(run_id)
        if found is None:
            return None
        if len(found) == 1:  # the common case: one call per run id
            p = found[0]
            return p if p.ready and (owner is None or p.owner is owner) else None
        calls = [p for p in found if p.ready and (owner is None or p.owner is owner)]
        if len(calls) > 1:
            began = _began.get()
            for p in calls:
                if p.lease_id == began:
                    return p
        return calls[0] if calls else None

    def _remove(self, run_id: UUID, pending: Pending) -> None:
        if pending.fitted is not None:
            self._fits[:] = [p for p in self._fits if p is not pending]
        calls = self._runs[run_id]
        if len(calls) == 1 and calls[0] is pending:
            del self._runs[run_id]
        else:
            calls[:] = [p for p in calls if p is not pending]
            if not calls:
                del self._runs[run_id]
        task = pending.task
        if task is None:
            return
        watched = self._tasks.get(task)
        if watched is not None:
            watched[:] = [(r, p) for r, p in watched if p is not pending]
            if not watched:
                del self._tasks[task]
                task.remove_done_callback(self._task_done)
