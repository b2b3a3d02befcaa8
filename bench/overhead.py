"""Guard overhead on one fake model, measured side by side in one run.

Prints the time of a bare ``invoke``, the same with LangChain's tracking-only
``UsageMetadataCallbackHandler``, the same through the guard (memory store),
and the median of a warm ``budgetguard.cost()``. The variants are interleaved
in rounds so machine noise hits them alike; each figure is the median over
rounds. Run: ``python bench/overhead.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from langchain_core.callbacks import UsageMetadataCallbackHandler

from budgetguard import BudgetGuard, cost
from budgetguard.testing import FakeChatModel


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()

    bare = FakeChatModel(model_name="gpt-4o-mini", max_tokens=256)
    tracked = bare.model_copy(update={"callbacks": [UsageMetadataCallbackHandler()]})
    guard = BudgetGuard(limit_usd=10**9)
    guarded = guard.wrap(bare)
    prompt = "Summarise the quarterly report in three bullet points, please."

    variants: dict[str, Callable[[], object]] = {
        "bare invoke": lambda: bare.invoke(prompt),
        "+ UsageMetadataCallbackHandler": lambda: tracked.invoke(prompt),
        "+ BudgetGuard (memory store)": lambda: guarded.invoke(prompt),
    }
    for fn in variants.values():  # warm up
        per_call_us(fn, 200)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            samples[name].append(per_call_us(fn, args.calls))

    usage = {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
        "input_token_details": {"cache_read": 400},
    }
    cost(usage, "gpt-4o-mini")
    cost_samples = []
    for _ in range(20_000):
        t0 = time.perf_counter_ns()
        cost(usage, "gpt-4o-mini")
        cost_samples.append((time.perf_counter_ns() - t0) / 1000)

    base = statistics.median(samples["bare invoke"])
    print(f"{'variant':<34} {'median us/call':>15} {'x bare':>8}")
    for name, vals in samples.items():
        med = statistics.median(vals)
        print(f"{name:<34} {med:>15.1f} {med / base:>8.3f}")
    tracking = statistics.median(samples["+ UsageMetadataCallbackHandler"])
    guard_t = statistics.median(samples["+ BudgetGuard (memory store)"])
    print(f"\nguard / tracking-only handler: {guard_t / tracking:.3f}x")
    print(f"guard overhead over bare: {guard_t - base:.1f} us; tracking handler's: {tracking - base:.1f} us")
    p99 = sorted(cost_samples)[int(len(cost_samples) * 0.99)]
    print(f"cost() warm median: {statistics.median(cost_samples):.2f} us (p99 {p99:.2f} us)")


if __name__ == "__main__":
    main()
