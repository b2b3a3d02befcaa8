"""What the ledger costs a settle on Redis, measured side by side in one run.

Two RedisStores on the SAME redis-server, one with the ledger (the default
retention) and one with ``ledger_maxlen=0``, run reserve + settle pairs in
interleaved rounds (their order alternating) so machine noise hits both
alike. Printed: the median client-side time per pair, and the server's own
microseconds per script call (``INFO commandstats``), for each, and the ratios.

Starts its own redis-server on a free loopback port and stops it at the end.

Run: ``python bench/ledger_overhead.py [--rounds N] [--pairs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid

import redis

from budgetguard.ledger import LedgerNote
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import RedisStore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_overhead import own_redis_server

SPECS = (
    CounterSpec(CounterRef("org:acme", "day"), Caps(nanos=10**15)),
    CounterSpec(CounterRef("org:acme/user:u1", "lifetime"), Caps(tokens=10**12)),
)
NOTE = LedgerNote("gpt-4o-mini", "openai", (("input", 400), ("output", 120)), str(uuid.uuid4()))


def pairs(store: RedisStore, n: int) -> float:
    refs = tuple(s.ref for s in SPECS)
    t0 = time.perf_counter()
    for _ in range(n):
        lid = uuid.uuid4().hex
        store.reserve(ReserveRequest(lid, SPECS, Amount(5000, 600, 1), 60))
        store.settle(SettleRequest(lid, refs, Amount(4100, 520, 1), note=NOTE))
    return (time.perf_counter() - t0) / n


def server_us(client: redis.Redis) -> float:
    stats = client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--pairs", type=int, default=500)
    a = ap.parse_args()
    with own_redis_server() as url:
        client = redis.Redis.from_url(url)
        stores = {
            "ledger on": RedisStore.from_url(url, prefix="on:"),
            "ledger off": RedisStore.from_url(url, prefix="off:", ledger_maxlen=0),
        }
        wall: dict[str, list[float]] = {k: [] for k in stores}
        lua: dict[str, list[float]] = {k: [] for k in stores}
        for store in stores.values():
            pairs(store, 50)  # warm up: scripts loaded, eviction checked
        for r in range(a.rounds):
            order = list(stores) if r % 2 == 0 else list(reversed(stores))
            for name in order:
                client.config_resetstat()
                wall[name].append(pairs(stores[name], a.pairs))
                lua[name].append(server_us(client))
        on, off = (statistics.median(wall[k]) * 1e6 for k in ("ledger on", "ledger off"))
        lon, loff = (statistics.median(lua[k]) for k in ("ledger on", "ledger off"))
        print(f"{a.rounds} rounds x {a.pairs} reserve+settle pairs, two counters, one redis-server")
        print(f"  client time per pair:   ledger on {on:7.1f} us   off {off:7.1f} us   ratio {on / off:.3f}")
        print(
            f"  server us per script:   ledger on {lon:7.1f} us   off {loff:7.1f} us   ratio {lon / loff:.3f}"
        )


if __name__ == "__main__":
    main()
