"""What listens to a guard's decisions: OpenTelemetry and threshold alerts, behind one hook.

The flows call a ``Watch`` only when a guard has one (``Flows.watch``), so a
guard with neither telemetry nor alerts does no work for them at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..alerts import AlertCallback, Alerts
from ..errors import BudgetExceeded, BudgetStoreUnavailable, DegradeRequired
from ..telemetry import Telemetry
from ..units import to_usd
from ..usage import TokenUsage
from . import ops
from .ops import Flow
from .pending import Pending

__all__ = ["Watch", "make_watch"]


def _yes() -> bool:
    return True


def _no() -> bool:
    return False


def make_watch(alerts: Sequence[float], on_alert: AlertCallback | None) -> Watch | None:
    """The hook a guard's flows call: ``None`` when nothing listens (no OpenTelemetry, no alerts)."""
    telemetry = Telemetry.create()
    checker = Alerts(alerts, on_alert) if alerts and on_alert is not None else None
    if telemetry is None and checker is None:
        return None
    return Watch(telemetry, checker)


class Watch:
    """Telemetry (if ``opentelemetry-api`` is installed) and alerts (if ``alerts=`` is set)."""

    __slots__ = ("active", "alerts", "telemetry")

    def __init__(self, telemetry: Telemetry | None, alerts: Alerts | None) -> None:
        self.telemetry = telemetry
        self.alerts = alerts
        #: Whether a call has anything to tell: alerts are set, or the app configured an OTel SDK
        #: (asked up to three times a call: the answer's own function, no frame of the watch's between).
        self.active: Callable[[], bool] = (
            _yes if alerts is not None else _no if telemetry is None else telemetry.live
        )

    def refused(self, p: Pending, exc: BudgetExceeded) -> None:
        t = self.telemetry
        if t is not None:
            degraded = isinstance(exc, DegradeRequired)
            t.count("degraded" if degraded else "refused", p.rates.model, p.provider)
            t.latency("reserve", time.time() - p.started, p.rates.model, p.provider)
            t.refused(p.rates.model, exc.scope, exc.remaining, degraded)

    def admitted(self, p: Pending) -> None:
        t = self.telemetry
        if t is not None:
            model, provider = p.rates.model, p.provider
            t.count("admitted", model, provider)
            if p.fitted is not None:
                t.count("capped", model, provider)
            t.latency("reserve", time.time() - p.started, model, provider)
            t.reserved(model, provider, p.labels, p.amount.nanos, p.output_cap)

    def settled(
        self, p: Pending, usage: TokenUsage, nanos: int, outcome: str, model: str, began: float
    ) -> None:
        t = self.telemetry
        if t is not None and outcome != "replay":  # a replayed settle was counted when it first landed
            if usage.estimated:
                t.count("estimated", model, p.provider)
            if not p.probe and nanos > p.amount.nanos:
                t.count("overshoot", model, p.provider)
            t.settled(usage, nanos, outcome, model, p.provider)
            t.latency("settle", time.time() - began, model, p.provider)

    def after_settle(
        self, p: Pending, usage: TokenUsage, nanos: int, label: str, model: str, began: float, stored: str
    ) -> Flow[None]:
        """A settle, told to telemetry; then the alerts its counters reached (not for a replay or
        a spooled settle, which the store has not applied now, nor for a cache hit, which costs nothing)."""
        self.settled(p, usage, nanos, label, model, began)
        if stored not in ("replay", "spooled") and not usage.cache_hit:
            yield from self.check_alerts(p)

    def check_alerts(self, p: Pending) -> Flow[None]:
        """After a settle: read the call's counters, claim the thresholds they reached, fire the claimed."""
        alerts = self.alerts
        if alerts is None or not p.specs:
            return
        try:
            states = yield from ops.status(p.refs)
        except BudgetStoreUnavailable as exc:
            alerts.unreachable(exc)
            return
        if self.telemetry is not None:
            left = [
                (label, str(to_usd(max(s.caps.nanos - st.spent.nanos - st.reserved.nanos, 0))))
                for s, label, st in zip(p.specs, p.labels, states, strict=True)
                if s.caps.nanos is not None
            ]
            if left:
                self.telemetry.remaining([a for a, _ in left], [b for _, b in left])
        for alert, key, ttl in alerts.due(p.specs, p.labels, states):
            try:
                claimed = yield from ops.claim_alert(key, ttl)
            except BudgetStoreUnavailable as exc:
                alerts.forget(key)
                alerts.unreachable(exc)
                continue
            if claimed:
                alerts.fire(alert)
