"""Soak: hundreds of concurrent asyncio callers through BudgetGuard + RedisStore.

At least ``--callers`` (default 200) coroutines each loop on
``await guarded.ainvoke(...)`` against a ``FakeChatModel`` with a small
latency, for ``--seconds`` (default 60), all through one guard on one
RedisStore. First, for reference, the same callers run unguarded for a short
while (side by side on the same machine and loop).

Reported: throughput (calls/s), p50 and p99 guard overhead (a guarded call's
wall time minus the fake's own latency; the unguarded run gives the same
figure for LangChain alone, and the difference is the guard's share), errors,
peak concurrency, what is still reserved at the end (must be 0) and whether
the store's spent equals the sum of the recorded costs.

By default it starts its own redis-server on a free loopback port (via
tests/redis_servers.py) and stops it at the end; ``--url`` uses an existing
server (keys go under a unique prefix and are deleted afterwards).

Run: ``python bench/soak.py [--seconds 60] [--callers 200] [--url URL] [--latency 0.005]``.
Exit status 1 if any check fails (errors, leftover reservations, totals mismatch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetguard import BudgetGuard, CallRecord, Limit
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

TESTS = Path(__file__).resolve().parent.parent / "tests"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def drive(runnable: Any, callers: int, seconds: float) -> dict[str, Any]:
    """``callers`` coroutines calling ``runnable.ainvoke`` until ``seconds`` have passed."""
    latencies: list[float] = []
    errors: list[str] = []
    inflight = peak = 0
    stop = time.monotonic() + seconds

    async def caller(i: int) -> None:
        nonlocal inflight, peak
        k = 0
        while time.monotonic() < stop:
            k += 1
            inflight += 1
            peak = max(peak, inflight)
            t0 = time.perf_counter()
            try:
                await runnable.ainvoke(f"caller {i} call {k}: hello")
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
            else:
                latencies.append(time.perf_counter() - t0)
            finally:
                inflight -= 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - t0
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "peak": peak}


def soak(
    url: str,
    *,
    seconds: float = 60,
    callers: int = 200,
    latency: float = 0.005,
    baseline: float = 3,
    timeout: float = 1.0,
) -> dict[str, Any]:
    """Run the soak against the Redis at ``url``; returns the figures and checks (no printing).

    ``timeout`` is the store's (``RedisStore.from_url``): how long a caller may queue for one of
    the pool's connections and its round trip before the store counts as down.
    """
    prefix = f"soak-{os.urandom(4).hex()}:"
    store = RedisStore.from_url(url, prefix=prefix, timeout=timeout)
    records: list[CallRecord] = []
    spool = tempfile.mkdtemp(prefix="bg-soak-spool-")
    guard = BudgetGuard(
        limits=[Limit(usd=10**6, tokens=10**12, requests=10**9)],
        store=store,
        on_record=records.append,
        spool_dir=spool,
    )
    llm = FakeChatModel(input_tokens=20, output_tokens=8, max_tokens=64, latency=latency)
    guarded = guard.wrap(llm)
    try:
        base = asyncio.run(drive(llm, callers, baseline)) if baseline > 0 else None
        run = asyncio.run(drive(guarded, callers, seconds))
        rows = {r.quantity: r for r in guard.remaining().rows}
        leases = store.client.zcard(f"{prefix}{{global}}:lx")
    finally:
        keys = list(store.client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            store.client.delete(*keys)
        store.close()

    ok_calls = len(run["latencies"])
    over = [max(t - latency, 0.0) for t in run["latencies"]]
    records = [r for r in records if r.outcome != "refused"]  # refusals are recorded too, at $0
    recorded = {
        "usd": sum((r.cost_usd for r in records), Decimal(0)),
        "tokens": sum(r.usage.total_tokens for r in records),
        "requests": len(records),
    }
    spent = {q: rows[q].spent for q in ("usd", "tokens", "requests")}
    out: dict[str, Any] = {
        "callers": callers,
        "peak_concurrency": run["peak"],
        "seconds": round(run["elapsed"], 2),
        "calls": ok_calls,
        "throughput": ok_calls / run["elapsed"],
        "overhead_p50_ms": pct(over, 0.50) * 1000,
        "overhead_p99_ms": pct(over, 0.99) * 1000,
        "errors": len(run["errors"]),
        "error_samples": sorted(set(run["errors"]))[:5],
        "reserved": {q: rows[q].reserved for q in ("usd", "tokens", "requests")},
        "live_leases": int(leases),
        "spent": spent,
        "recorded": recorded,
        "spent_matches_records": spent == recorded and recorded["requests"] == ok_calls,
    }
    if base is not None:
        bover = [max(t - latency, 0.0) for t in base["latencies"]]
        out["unguarded"] = {
            "seconds": round(base["elapsed"], 2),
            "calls": len(base["latencies"]),
            "throughput": len(base["latencies"]) / base["elapsed"],
            "overhead_p50_ms": pct(bover, 0.50) * 1000,
            "overhead_p99_ms": pct(bover, 0.99) * 1000,
            "errors": len(base["errors"]),
        }
        out["guard_share_p50_ms"] = out["overhead_p50_ms"] - out["unguarded"]["overhead_p50_ms"]
        out["guard_share_p99_ms"] = out["overhead_p99_ms"] - out["unguarded"]["overhead_p99_ms"]
    out["ok"] = (
        out["errors"] == 0
        and all(v == 0 for v in out["reserved"].values())
        and out["live_leases"] == 0
        and out["spent_matches_records"]
        and out["peak_concurrency"] >= callers
    )
    return out


@contextmanager
def own_server() -> Iterator[str]:
    sys.path.insert(0, str(TESTS))
    from redis_servers import RedisServer  # the suite's helper: a real redis-server on a free port

    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="guarded run length (default 60)")
    ap.add_argument("--callers", type=int, default=200, help="concurrent asyncio callers (default 200)")
    ap.add_argument("--url", default=None, help="an existing Redis (default: start our own redis-server)")
    ap.add_argument("--latency", type=float, default=0.005, help="the fake model's latency in s")
    ap.add_argument("--baseline", type=float, default=3.0, help="unguarded reference run, s (0: none)")
    ap.add_argument("--timeout", type=float, default=1.0, help="the store's timeout in s (default 1)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.callers < 1 or args.seconds <= 0:
        ap.error("--callers must be >= 1 and --seconds > 0")

    def go(url: str) -> dict[str, Any]:
        return soak(
            url,
            seconds=args.seconds,
            callers=args.callers,
            latency=args.latency,
            baseline=args.baseline,
            timeout=args.timeout,
        )

    if args.url:
        res = go(args.url)
    else:
        with own_server() as url:
            res = go(url)
    if args.json:
        print(json.dumps(res, default=str, indent=2))
    else:
        u = res.get("unguarded")
        print(
            f"soak: {res['callers']} callers (peak {res['peak_concurrency']} in flight), {res['seconds']} s"
        )
        print(f"  throughput       {res['throughput']:.0f} calls/s ({res['calls']} calls)")
        print(
            f"  overhead         p50 {res['overhead_p50_ms']:.2f} ms, p99 {res['overhead_p99_ms']:.2f} ms "
            f"(wall time minus the fake's {args.latency * 1000:.1f} ms)"
        )
        if u:
            print(
                f"  unguarded        {u['throughput']:.0f} calls/s; p50 {u['overhead_p50_ms']:.2f} ms, "
                f"p99 {u['overhead_p99_ms']:.2f} ms"
            )
            print(
                f"  guard's share    p50 {res['guard_share_p50_ms']:.2f} ms, "
                f"p99 {res['guard_share_p99_ms']:.2f} ms"
            )
        print(f"  errors           {res['errors']} {res['error_samples'] or ''}")
        print(f"  reserved at end  {res['reserved']} (live leases: {res['live_leases']})")
        print(f"  spent            {res['spent']}")
        print(f"  recorded         {res['recorded']} -> match: {res['spent_matches_records']}")
        print("OK" if res["ok"] else "FAILED")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
