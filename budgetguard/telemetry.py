"""OpenTelemetry metrics and span attributes, through ``opentelemetry-api`` only (``[otel]`` extra).

Nothing here is imported until a guard is built, and without the package a
guard has no telemetry at all (``Telemetry.create()`` returns ``None``).
With the package but no SDK configured by the app, every instrument is the
API's no-op. Span attributes are set on the current span (the model call's,
when the app's LangChain instrumentation makes it current) only if it records.

Metrics (attributes: ``gen_ai.request.model``, ``gen_ai.provider.name``):

- ``budgetguard.cost`` (USD): what calls were charged.
- ``budgetguard.tokens`` ({token}), by ``gen_ai.token.type``: input, output,
  cache_read, cache_write, reasoning.
- ``budgetguard.calls`` ({call}), by ``budgetguard.outcome``: admitted, refused,
  degraded, estimated, overshoot, capped.
- ``budgetguard.latency`` (s), by ``budgetguard.phase`` (reserve, settle): the
  guard's own time, store round trips included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .units import to_usd
from .usage import TokenUsage

__all__ = ["METER_NAME", "Telemetry"]

METER_NAME = "budgetguard"
_TOKEN_KINDS = ("cache_read", "cache_write", "reasoning")
#: The API's own providers, in place until the app sets an SDK's (names, so no private import).
_NO_SDK = frozenset({"_ProxyMeterProvider", "NoOpMeterProvider", "ProxyTracerProvider", "NoOpTracerProvider"})


class Telemetry:
    """The guard's instruments, made once; each method is a few no-op calls without an SDK."""

    __slots__ = ("_calls", "_cost", "_globals", "_latency", "_live", "_metrics", "_tokens", "_trace")

    def __init__(self, metrics: Any, trace: Any) -> None:
        from . import __version__

        meter = metrics.get_meter(METER_NAME, __version__)
        self._cost = meter.create_counter("budgetguard.cost", unit="USD", description="charged to budgets")
        self._tokens = meter.create_counter("budgetguard.tokens", unit="{token}", description="tokens used")
        self._calls = meter.create_counter("budgetguard.calls", unit="{call}", description="calls by outcome")
        self._latency = meter.create_histogram(
            "budgetguard.latency", unit="s", description="the guard's own time per call phase"
        )
        self._trace = trace
        self._metrics = metrics
        self._live = False
        self._globals = _provider_globals(trace)

    def live(self) -> bool:
        """Whether the app has configured an SDK (a meter or tracer provider of its own).

        Until it does, the API's proxies drop everything, so the guard skips the work of
        building attributes; the instruments made here forward to the SDK once it is set.
        """
        if not self._live:
            g = self._globals  # no provider set yet, none to load from the environment: no SDK
            if g is not None and g[0]._METER_PROVIDER is None and g[1]._TRACER_PROVIDER is None:
                return False
            meter_provider = type(self._metrics.get_meter_provider()).__name__
            tracer_provider = type(self._trace.get_tracer_provider()).__name__
            self._live = meter_provider not in _NO_SDK or tracer_provider not in _NO_SDK
        return self._live

    @classmethod
    def create(cls) -> Telemetry | None:
        """The instruments, or ``None`` when ``opentelemetry-api`` is not installed."""
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            return None
        return cls(metrics, trace)

    def _span(self) -> Any:
        span = self._trace.get_current_span()
        return span if span.is_recording() else None

    def count(self, outcome: str, model: str | None, provider: str | None) -> None:
        self._calls.add(1, _attrs(model, provider, {"budgetguard.outcome": outcome}))

    def latency(self, phase: str, seconds: float, model: str | None, provider: str | None) -> None:
        self._latency.record(max(seconds, 0.0), _attrs(model, provider, {"budgetguard.phase": phase}))

    def reserved(
        self, model: str | None, provider: str | None, scopes: Sequence[str], nanos: int, max_tokens: int
    ) -> None:
        span = self._span()
        if span is not None:
            span.set_attributes(
                {
                    **_attrs(model, provider, {"gen_ai.operation.name": "chat"}),
                    "gen_ai.request.max_tokens": max_tokens,
                    "budgetguard.scope": list(scopes),
                    "budgetguard.reserved": str(to_usd(nanos)),
                }
            )

    def refused(self, model: str | None, scope: str, remaining: Decimal | int, degraded: bool) -> None:
        span = self._span()
        if span is not None:
            span.set_attributes(
                {
                    "budgetguard.outcome": "degraded" if degraded else "refused",
                    "budgetguard.refused_scope": scope,
                    "budgetguard.remaining": str(remaining),
                    **({"gen_ai.request.model": model} if model else {}),
                }
            )

    def settled(
        self, usage: TokenUsage, nanos: int, outcome: str, model: str | None, provider: str | None
    ) -> None:
        attrs = _attrs(model, provider, {})
        cost = to_usd(nanos)
        if nanos:
            self._cost.add(float(cost), attrs)
        for kind, n in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if n:
                self._tokens.add(n, {**attrs, "gen_ai.token.type": kind})
        for kind in _TOKEN_KINDS:
            n = getattr(usage, kind)
            if n:
                self._tokens.add(n, {**attrs, "gen_ai.token.type": kind})
        span = self._span()
        if span is not None:
            span.set_attributes(
                {
                    **attrs,
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "budgetguard.cost": str(cost),
                    "budgetguard.outcome": outcome,
                }
            )

    def remaining(self, scopes: Sequence[str], remaining: Sequence[str]) -> None:
        """What the counters a call touched have left, when they were read (alerts)."""
        span = self._span()
        if span is not None:
            span.set_attributes({"budgetguard.scope": list(scopes), "budgetguard.remaining": list(remaining)})


def _provider_globals(trace: Any) -> tuple[Any, Any] | None:
    """The API modules whose globals hold the providers an app set, for ``live``'s cheap test.

    ``get_meter_provider()`` reads the environment on every call until a provider is set;
    these globals say as much for free. ``None`` (always the public calls) if the API keeps
    them elsewhere, or if the environment names a provider for the API to load.
    """
    if "OTEL_PYTHON_METER_PROVIDER" in os.environ or "OTEL_PYTHON_TRACER_PROVIDER" in os.environ:
        return None
    internal = sys.modules.get("opentelemetry.metrics._internal")
    if internal is None or not hasattr(internal, "_METER_PROVIDER") or not hasattr(trace, "_TRACER_PROVIDER"):
        return None
    return internal, trace


def _attrs(model: str | None, provider: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    if model:
        extra["gen_ai.request.model"] = model
    if provider:
        extra["gen_ai.provider.name"] = provider
    return extra
