"""A readiness probe's answer: is the budget store serving, how fast, and what to fix if not.

One round trip (``Store.ping``), bounded by the store's timeout, that never
raises for a down or misconfigured store: a probe wants a value, not a trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import BudgetError, BudgetStoreUnavailable
from .stores.base import Store

__all__ = ["Health", "acheck", "check"]


@dataclass(frozen=True, slots=True)
class Health:
    """``ok`` (also the truth value), the store's label, the seconds taken, and problem/fix if not ok."""

    ok: bool
    store: str
    latency: float
    problem: str | None = None
    fix: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def _label(store: Store) -> str:
    return str(getattr(store, "label", type(store).__name__))


def _failed(store: Store, t0: float, exc: Exception) -> Health:
    latency = time.monotonic() - t0
    if isinstance(exc, BudgetStoreUnavailable):
        return Health(False, _label(store), latency, exc.problem, exc.fix)
    if isinstance(exc, BudgetError):  # a ConfigError: its message names the fix
        return Health(False, _label(store), latency, str(exc))
    return Health(False, _label(store), latency, f"failed unexpectedly ({type(exc).__name__}: {exc})")


def check(store: Store) -> Health:
    """Ping ``store`` once (blocking); never raises for a store failure."""
    t0 = time.monotonic()
    try:
        store.ping()
    except Exception as exc:  # a probe reports, it does not raise
        return _failed(store, t0, exc)
    return Health(True, _label(store), time.monotonic() - t0)


async def acheck(store: Store) -> Health:
    """``check`` on the store's async twin: never blocks the event loop on a network store."""
    t0 = time.monotonic()
    try:
        await store.aping()
    except Exception as exc:  # a probe reports, it does not raise
        return _failed(store, t0, exc)
    return Health(True, _label(store), time.monotonic() - t0)
