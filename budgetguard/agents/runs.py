"""Agent runs in this process: each one's scope values and running bill, keyed by its run id.

A run is opened by the middleware's ``before_agent`` (one per ``invoke``/
``stream``), or adopted by an agent invoked inside one of its tools (a
nested agent counts against its parent). Its bill is summed from the guard's
own ``CallRecord``s: the middleware taps the guard's ``on_record`` (the user's
callback still runs first) and adds every record whose ``metadata["run_id"]``
is an open run. Runs that never reach ``after_agent`` (a crash, a cancel) are
forgotten oldest first beyond ``MAX_RUNS``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..engine import Engine
from ..records import CallRecord
from .state import RunBudget

__all__ = ["MAX_RUNS", "Run", "Runs", "TOOL_PREFIX", "active_run", "install_tap", "runs", "scope_values"]

MAX_RUNS = 4096
#: A charged tool call's record names it ``tool:<name>`` in place of a model.
TOOL_PREFIX = "tool:"


@dataclass(eq=False)
class Run:
    """One agent run: the scope values it fills, and its bill so far."""

    run_id: str
    engine: Engine
    scopes: dict[str, Any]
    spent: Decimal = Decimal(0)
    calls: int = 0
    tool_calls: int = 0
    ended_by_budget: bool = False
    wrapped_up: bool = False
    reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: CallRecord) -> None:
        if record.outcome == "refused":  # never sent, nothing charged: not a call of the run
            return
        with self.lock:
            self.spent += record.cost_usd
            if record.model.startswith(TOOL_PREFIX):
                self.tool_calls += 1
            elif record.outcome != "released":  # released: the provider was never reached
                self.calls += 1

    def snapshot(self) -> RunBudget:
        with self.lock:
            return RunBudget(
                run_id=self.run_id,
                spent_usd=self.spent,
                calls=self.calls,
                tool_calls=self.tool_calls,
                ended_by_budget=self.ended_by_budget,
                wrapped_up=self.wrapped_up,
                reason=self.reason,
            )


class Runs:
    """The open runs of this process, oldest first (bounded)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.run_id] = run
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
        return run

    def get(self, run_id: object) -> Run | None:
        return self._runs.get(run_id) if isinstance(run_id, str) else None

    def close(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def record(self, record: CallRecord) -> None:
        run = self.get(record.metadata.get("run_id"))
        if run is not None:
            run.add(record)


#: One registry per process: run ids are fresh UUIDs.
runs = Runs()

#: The run whose tool is executing in this context: an agent started inside it joins it.
active_run: ContextVar[Run | None] = ContextVar("budgetguard_active_run", default=None)


class _Tap:
    """The guard's ``on_record``: the user's callback, then the open run's bill."""

    __slots__ = ("user",)

    def __init__(self, user: Callable[[CallRecord], None] | None) -> None:
        self.user = user

    def __call__(self, record: CallRecord) -> None:
        try:
            if self.user is not None:
                self.user(record)
        finally:
            runs.record(record)


def install_tap(engine: Engine) -> None:
    """Route the engine's records through the run registry too (once per engine)."""
    flows = engine.flows
    if not isinstance(flows.on_record, _Tap):
        flows.on_record = _Tap(flows.on_record)


def scope_values(context: object, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's calls fill scopes from, besides their metadata: the runtime context and thread id.

    A ``context`` that is a mapping or a dataclass gives its ``str``/``int``
    values (``user_id``...); ``configurable.thread_id`` gives ``thread_id``.
    """
    values: dict[str, Any] = {}
    items: Mapping[str, Any] | None = None
    if isinstance(context, Mapping):
        items = context
    elif dataclasses.is_dataclass(context) and not isinstance(context, type):
        items = {f.name: getattr(context, f.name) for f in dataclasses.fields(context)}
    for k, v in (items or {}).items():
        if isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool):
            values[k] = v
    thread = (config.get("configurable") or {}).get("thread_id")
    if isinstance(thread, (str, int)) and not isinstance(thread, bool):
        values["thread_id"] = str(thread)
    return values
