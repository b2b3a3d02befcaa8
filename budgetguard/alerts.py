"""Threshold alerts: ``BudgetGuard(alerts=[0.5, 0.8, 1.0], on_alert=callback)``.

After a settle, the counters the call touched are read (one status read, only
when ``alerts=`` is set) and every threshold their spend has reached is
claimed in the store (``Store.claim_alert``: SET NX in Redis, until the
window's end). Only the claimer calls ``on_alert``, so each threshold fires
once per scope, window and threshold, however many processes cross it at the
same moment. Each process also remembers what it has claimed or seen
claimed, so a counter past a threshold costs one claim per process, not one
per call. A callback that raises, or a store that cannot be reached, never
breaks a call: it is logged, once per kind.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Union

from .errors import BudgetStoreUnavailable
from .reservation import CounterSpec, CounterState
from .units import Quantity, quantity_of, to_usd
from .windows import as_datetime, window_end

__all__ = ["Alert", "AlertCallback", "Alerts"]

logger = logging.getLogger("budgetguard")

#: What ``on_alert`` may be: a function, or a coroutine function (awaited on the caller's loop).
AlertCallback = Callable[["Alert"], Union[Awaitable[None], None]]  # noqa: UP007 - a runtime alias
#: How long a claim outlives its window (clocks differ between processes and the store).
_MARGIN = 3600.0
#: Thresholds remembered per process before the memory is cleared (claims in the store stay).
_MAX_SEEN = 100_000


@dataclass(frozen=True, slots=True)
class Alert:
    """A budget passed ``threshold`` (a fraction of ``cap``) in one scope and window.

    ``spent`` and ``cap`` are a ``Decimal`` for USD and an ``int`` for tokens
    and requests; ``scope`` is written as in the limit (``user:alice``).
    """

    scope: str
    window: str
    threshold: float
    quantity: Quantity
    spent: Decimal | int
    cap: Decimal | int
    window_start: datetime | None
    resets_at: datetime | None


class Alerts:
    """A guard's thresholds and callback, and what this process has already claimed."""

    def __init__(self, thresholds: Sequence[float], callback: AlertCallback) -> None:
        #: (threshold, the same in parts per million), ascending: exact integer comparisons
        self.thresholds = tuple((t, round(t * 1_000_000)) for t in sorted(thresholds))
        self.callback = callback
        self._seen: set[tuple[str, str, int, str, int]] = set()
        self._lock = threading.Lock()
        self._logged: set[type[BaseException]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def due(
        self, specs: Sequence[CounterSpec], labels: Sequence[str], states: Sequence[CounterState]
    ) -> list[tuple[Alert, str, float | None]]:
        """The alerts these states reached that this process has not claimed yet: (alert, key, ttl)."""
        out: list[tuple[Alert, str, float | None]] = []
        for spec, label, st in zip(specs, labels, states, strict=True):
            ref = spec.ref
            for q in ("nanos", "tokens", "requests"):
                cap = spec.caps.get(q)
                if not cap:
                    continue
                spent = st.spent.get(q)
                for t, ppm in self.thresholds:
                    if spent * 1_000_000 < cap * ppm:
                        break  # ascending: the higher ones are not reached either
                    memo = (ref.scope, ref.per, st.window_start, q, ppm)
                    with self._lock:
                        if memo in self._seen:
                            continue
                        if len(self._seen) >= _MAX_SEEN:
                            self._seen.clear()
                        self._seen.add(memo)
                    conv = to_usd if q == "nanos" else int
                    end = window_end(ref.per, st.window_start)
                    alert = Alert(
                        scope=label,
                        window=ref.per,
                        threshold=t,
                        quantity=quantity_of(q),
                        spent=conv(spent),
                        cap=conv(cap),
                        window_start=None if ref.per == "lifetime" else as_datetime(st.window_start),
                        resets_at=as_datetime(end),
                    )
                    key = f"{ref.scope}\t{ref.per}\t{st.window_start}\t{q}\t{ppm}"
                    out.append((alert, key, _ttl(end, ref.expire_after)))
        return out

    def forget(self, key: str) -> None:
        """A claim that could not be made (store down): try it again on a later settle."""
        scope, per, start, q, ppm = key.split("\t")
        with self._lock:
            self._seen.discard((scope, per, int(start), q, int(ppm)))

    def unreachable(self, exc: BudgetStoreUnavailable) -> None:
        self._log_once(exc, "budgetguard: alerts could not be checked: %s (retried on later calls)")

    def fire(self, alert: Alert) -> None:
        """Call ``on_alert``; a coroutine it returns runs on the running loop (or on a loop of its own)."""
        try:
            result: Any = self.callback(alert)
        except Exception as exc:
            self._log_once(exc, "budgetguard: on_alert raised %r; the call goes on", exc_info=True)
            return
        if not inspect.isawaitable(result):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._await(result))  # a sync caller: nothing else runs its coroutine
            return
        task = loop.create_task(self._await(result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for async ``on_alert`` callbacks still running."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _await(self, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception as exc:
            self._log_once(exc, "budgetguard: on_alert raised %r; the call goes on", exc_info=True)

    def _log_once(self, exc: BaseException, msg: str, exc_info: bool = False) -> None:
        with self._lock:
            first = type(exc) not in self._logged
            self._logged.add(type(exc))
        if first:
            logger.error(msg, exc, exc_info=exc_info)
        else:
            logger.debug(msg, exc)


def _ttl(end: int | None, expire_after: float | None) -> float | None:
    """How long a claim is kept: past its window's end; a lifetime one as long as its counter."""
    if end is not None:
        return max(end - time.time(), 0.0) + _MARGIN
    return None if expire_after is None else expire_after + _MARGIN
