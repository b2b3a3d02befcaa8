"""A short soak (about 5 s, 200 concurrent asyncio callers) through bench/soak.py on a real Redis.

The full run is ``python bench/soak.py`` (60 s). Here: zero errors, all 200
callers in flight at once, nothing reserved at the end, and the store's spent
equal to the sum of the costs the guard recorded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from redis_servers import RedisServer

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("budgetguard_bench_soak", BENCH)
    assert spec is not None and spec.loader is not None, f"cannot load {BENCH}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_200_async_callers_against_redis(redis_server: RedisServer) -> None:
    soak = load_bench().soak
    # 200 callers share the pool's 50 connections: on a loaded 2-core CI machine the queue for one
    # can outlast the default 1 s store timeout. This test is about exact totals, not latency.
    res = soak(redis_server.url, seconds=5, callers=200, latency=0.005, baseline=1, timeout=5.0)
    u = res["unguarded"]
    print(
        f"\n[soak] {res['calls']} calls in {res['seconds']} s = {res['throughput']:.0f} calls/s "
        f"(unguarded {u['throughput']:.0f}/s); overhead p50 {res['overhead_p50_ms']:.1f} ms, "
        f"p99 {res['overhead_p99_ms']:.1f} ms (unguarded p50 {u['overhead_p50_ms']:.1f}, "
        f"p99 {u['overhead_p99_ms']:.1f}); errors {res['errors']}; reserved {res['reserved']}; "
        f"spent {res['spent']}"
    )
    assert res["errors"] == 0, res["error_samples"]
    assert res["peak_concurrency"] == 200, "all 200 callers were in flight at once"
    assert res["calls"] > 200, "every caller completed calls"
    assert all(v == 0 for v in res["reserved"].values()), res["reserved"]
    assert res["live_leases"] == 0
    assert res["spent"] == res["recorded"], "spent == the sum of the recorded costs"
    assert res["recorded"]["requests"] == res["calls"]
    assert res["ok"]
