"""``guard.enforce()``: every chat-model call in a context checked by the guards active in it.

The guards are held in a ContextVar that LangChain's configure hook reads for
every run; the hook is registered once, at import, never per entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.tracers.context import register_configure_hook

from ..engine import Engine, ModelHint
from .composite import AsyncFanOut, FanOut
from .handler import BudgetGuardCallback, guard_callback
from .logs import quiet_refusals

__all__ = ["enforcing"]


@quiet_refusals
class _EnforceCallback(BudgetGuardCallback):
    """Every guard active through ``enforce()`` in this context, applied in order.

    If a later guard refuses, the earlier ones' reservations are released, so
    nothing leaks for a call that never happened.
    """

    def __init__(self, members: tuple[BudgetGuardCallback, ...]) -> None:
        self.members = members
        super().__init__(
            FanOut([m.sync_twin for m in members], release=True),
            AsyncFanOut([m.async_twin for m in members], release=True),
            blocking=any(m.blocking for m in members),
            waits=any(m.waits for m in members),
        )


_enforce_var: ContextVar[_EnforceCallback | None] = ContextVar("budgetguard_enforce", default=None)
register_configure_hook(_enforce_var, True)  # once, at import: never per entry


@contextmanager
def enforcing(engine: Engine, model: str | None, metadata: Mapping[str, Any]) -> Iterator[None]:
    """Adds a guard's handler after those already active in this context, for the block."""
    member = guard_callback(engine, ModelHint(model=model), metadata)
    current = _enforce_var.get()
    token = _enforce_var.set(_EnforceCallback((*(current.members if current else ()), member)))
    try:
        yield
    finally:
        _enforce_var.reset(token)
