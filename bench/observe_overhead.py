"""What observability costs a guarded call: OpenTelemetry without and with an SDK, and alerts.

Variants, interleaved in rounds so machine noise hits them alike (medians
over rounds), all on the memory store and one fake model:

- guard, nothing listening (no telemetry, no alerts: the flows skip the hook);
- guard with ``opentelemetry-api`` installed but no SDK (the default when the
  package is there: every instrument is the API's no-op);
- guard with ``alerts=`` (one status read after each settle; with telemetry too when the API is there);
- then, in a second phase after an SDK is configured (it cannot be undone),
  the guard with telemetry recording into an in-memory reader, against the
  guard with nothing listening measured again in that phase.

Run: ``python bench/observe_overhead.py [--rounds N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from budgetguard import BudgetGuard
from budgetguard.engine.watch import make_watch
from budgetguard.testing import FakeChatModel

PROMPT = "Summarise the quarterly report in three bullet points, please."


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def guarded(watch: bool, alerts: bool = False) -> Callable[[], object]:
    kw: dict[str, object] = {"alerts": [0.999], "on_alert": lambda a: None} if alerts else {}
    guard = BudgetGuard(limit_usd=10**9, **kw)  # type: ignore[arg-type]
    if not watch:
        guard.engine.flows.watch = None
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", max_tokens=256))
    return lambda: llm.invoke(PROMPT)


def measure(variants: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    for fn in variants.values():
        per_call_us(fn, 100)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each variant in every position
            samples[name].append(per_call_us(variants[name], calls))
    return {k: statistics.median(v) for k, v in samples.items()}


def table(title: str, medians: dict[str, float], base: str) -> None:
    print(f"\n{title}")
    print(f"{'variant':<44} {'median us/call':>15} {'x quiet':>8}")
    for name, med in medians.items():
        print(f"{name:<44} {med:>15.1f} {med / medians[base]:>8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    has_api = make_watch((), None) is not None
    quiet = "guard, nothing listening"
    phase1 = {quiet: guarded(watch=False), "guard + alerts (memory store)": guarded(False, alerts=True)}
    if has_api:
        phase1["guard + opentelemetry-api, no SDK"] = guarded(watch=True)
    table("phase 1: no SDK configured", measure(phase1, args.rounds, args.calls), quiet)
    if not has_api:
        print("\nopentelemetry-api is not installed: pip install 'budgetguard[otel]' opentelemetry-sdk")
        return
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    phase2 = {quiet: guarded(watch=False), "guard + OpenTelemetry SDK (in-memory reader)": guarded(True)}
    table("phase 2: an SDK configured", measure(phase2, args.rounds, args.calls), quiet)


if __name__ == "__main__":
    main()
