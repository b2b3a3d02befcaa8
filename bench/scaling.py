"""Cost per call as the work grows: more tenants, more limits per call; and Redis memory per tenant.

One run, one table. For the MemoryStore and a RedisStore side by side:

- **tenants**: the store is filled with 1, 1,000, ... up to 1,000,000 tenants
  (each one counter, ``Limit(usd=..., scope="user:{user_id}")``), and a guarded
  ``invoke`` plus the store's own ``reserve`` + ``settle`` are timed on random
  existing tenants. Filling uses the store's real scripts (reserve, then
  settle, for each tenant) sent in pipelines, not a million guarded calls,
  so every tenant holds exactly what a real one holds (its counter, its scope
  list, its closed-lease tombstone, its entry in the roots list).
- **limits**: 1 to 6 limits per call (user, user per day, user per minute, org
  per month, org/user per hour, global per day), at the largest tenant count.
- **memory**: Redis ``used_memory`` before and after filling, per tenant, and
  ``MEMORY USAGE`` of one tenant's keys; with 3 windows per tenant, the
  marginal bytes of one more tenant-window.

Figures are medians over ``--rounds`` rounds of ``--calls`` calls, variants
interleaved; ratios are to the first row of each column.

By default it starts its own redis-server on a free loopback port; ``--url
redis://host:port/db`` uses an existing one (keys under a unique prefix,
deleted afterwards; the memory figures then include other clients' noise).

Run: ``python bench/scaling.py [--url URL] [--tenants 1,1000,100000,1000000] [--calls N] [--rounds N]``
Quick: ``python bench/scaling.py --tenants 1,200 --calls 20 --rounds 1 --memory-tenants 200``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import redis

from budgetguard import BudgetGuard, Limit, Price
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import MemoryStore
from budgetguard.stores.base import ReserveRequest, SettleRequest, Store
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_overhead import own_redis_server

PROMPT = "Summarise the quarterly report in three bullet points, please."
PRICES = {"test-model": Price(input_per_mtok=1, output_per_mtok=2)}
BIG = 10**15
#: The six limits of the limits axis, in the order they are added, and the counters they make.
LIMITS = [
    Limit(usd=BIG, scope="user:{user_id}"),
    Limit(tokens=BIG, per="day", scope="user:{user_id}"),
    Limit(requests=BIG, per="minute", scope="user:{user_id}"),
    Limit(usd=BIG, per="month", scope="org:{org_id}"),
    Limit(tokens=BIG, per="hour", scope="org:{org_id}/user:{user_id}"),
    Limit(requests=BIG, per="day"),
]


def refs_for(tenant: int, k: int) -> tuple[CounterRef, ...]:
    org = tenant % 1000
    refs = (
        CounterRef(f"user:t{tenant}", "lifetime"),
        CounterRef(f"user:t{tenant}", "day"),
        CounterRef(f"user:t{tenant}", "minute"),
        CounterRef(f"org:o{org}", "month"),
        CounterRef(f"org:o{org}/user:t{tenant}", "hour"),
        CounterRef("global", "day"),
    )
    return refs[:k]


def specs_for(tenant: int, k: int) -> tuple[CounterSpec, ...]:
    return tuple(CounterSpec(r, Caps(BIG, BIG, BIG)) for r in refs_for(tenant, k))


# ------------------------------------------------------------------ filling


def fill_redis(store: RedisStore, url: str, start: int, stop: int, k: int = 1, batch: int = 1000) -> None:
    """Tenants ``start..stop-1``, each reserved then settled by the real scripts, pipelined
    (on a client of its own: the store's short socket timeout is for single calls)."""
    client = redis.Redis.from_url(url, socket_timeout=120)
    shas = {name: client.script_load(store._sync_scripts[name].script) for name in ("reserve", "settle")}
    for lo in range(start, stop, batch):
        pipe = client.pipeline(transaction=False)
        roots: dict[str, float] = {}
        for t in range(lo, min(lo + batch, stop)):
            lease = f"fill-{t}"
            rkeys, rargs = store._reserve_args(ReserveRequest(lease, specs_for(t, k), Amount(9, 9, 1), 600))
            pipe.evalsha(shas["reserve"], len(rkeys), *rkeys, *rargs)
            skeys, sargs = store._settle_args(SettleRequest(lease, refs_for(t, k), Amount(7, 7, 1)), "settle")
            pipe.evalsha(shas["settle"], len(skeys), *skeys, *sargs)
            for base in rkeys:
                roots[base] = float("inf")
        pipe.zadd(store._roots.key, {b: "inf" for b in roots}, gt=True)  # as the store lists its roots
        pipe.execute()
    client.close()
    store._tails.clear()  # the filler's argument cache is not the timed calls' business


def fill_memory(store: MemoryStore, start: int, stop: int, k: int = 1) -> None:
    for t in range(start, stop):
        lease = f"fill-{t}"
        store.reserve(ReserveRequest(lease, specs_for(t, k), Amount(9, 9, 1), 600))
        store.settle(SettleRequest(lease, refs_for(t, k), Amount(7, 7, 1)))


# ------------------------------------------------------------------ timing


class Subject:
    """One store, with a guard per limit count: what is timed."""

    def __init__(self, name: str, store: Store) -> None:
        self.name = name
        self.store = store
        self.guards = {
            k: BudgetGuard(limits=LIMITS[:k], store=store, prices=PRICES).wrap(
                FakeChatModel(model_name="test-model", input_tokens=10, output_tokens=20, max_tokens=64)
            )
            for k in range(1, len(LIMITS) + 1)
        }
        self.n = 0

    def invoke(self, tenants: int, k: int, rnd: random.Random) -> Callable[[], object]:
        model = self.guards[k]

        def call() -> object:
            t = rnd.randrange(tenants)
            return model.invoke(PROMPT, config={"metadata": {"user_id": f"t{t}", "org_id": f"o{t % 1000}"}})

        return call

    def direct(self, tenants: int, k: int, rnd: random.Random) -> Callable[[], object]:
        store = self.store

        def call() -> object:
            t = rnd.randrange(tenants)
            self.n += 1
            lease = f"{self.name}-{self.n}"
            store.reserve(ReserveRequest(lease, specs_for(t, k), Amount(9, 9, 1), 600))
            return store.settle(SettleRequest(lease, refs_for(t, k), Amount(7, 7, 1)))

        return call


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def measure(fns: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict[str, float]:
    """Medians over rounds, the variants' order rotated each round."""
    for fn in fns.values():  # warm
        per_call_us(fn, max(5, calls // 5))
    got: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            got[n].append(per_call_us(fns[n], calls))
    return {n: statistics.median(v) for n, v in got.items()}


# ------------------------------------------------------------------ memory


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def tenant_keys(client: redis.Redis, prefix: str, tenant: int) -> dict[str, int]:
    """``MEMORY USAGE`` of each key of one tenant's root, by its kind (the part after the tag)."""
    out: dict[str, int] = {}
    for key in client.scan_iter(match=f"{prefix}{{user:t{tenant}}}:*", count=1000):
        kind = key.decode().split("}:", 1)[1]
        kind = "counter " + kind.split(":")[1] if kind.startswith("c:") else kind
        out[kind] = int(client.memory_usage(key, samples=0) or 0)
    return out


def memory_figures(url: str, tenants: int) -> list[str]:
    """Bytes per tenant (1 window) and per extra tenant-window (3 windows), on fresh prefixes."""
    client = redis.Redis.from_url(url)
    lines = []
    per: dict[int, float] = {}
    for k in (1, 3):
        prefix = f"bench-mem{k}-{secrets.token_hex(4)}:"
        store = RedisStore.from_url(url, prefix=prefix, allow_eviction=True)
        before = used_memory(client)
        fill_redis(store, url, 0, tenants, k)
        per[k] = (used_memory(client) - before) / tenants
        usage = tenant_keys(client, prefix, 1)
        keys = ", ".join(f"{n} {b} B" for n, b in sorted(usage.items()))
        lines.append(f"  {k} window(s) per tenant: {per[k]:.0f} B per tenant (used_memory)")
        lines.append(f"    MEMORY USAGE of one tenant's keys: {keys}")
        drop(client, prefix)
        store.close()
    lines.append(f"  one more window of a tenant: {(per[3] - per[1]) / 2:.0f} B (marginal, from the two)")
    return lines


def drop(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# ------------------------------------------------------------------ the run


def run(url: str, own: bool, tenant_steps: list[int], calls: int, rounds: int, mem_tenants: int) -> None:
    """Every tenant count gets stores of its own, filled first; then every cell of the table is
    timed in the same rounds, interleaved, so machine noise hits every row alike."""
    admin = redis.Redis.from_url(url)
    rnd = random.Random(7)
    prefixes: list[str] = []
    by_n: dict[int, list[Subject]] = {}
    fill_s = 0.0
    try:
        for n in tenant_steps:
            prefixes.append(f"bench-scale-{secrets.token_hex(4)}-{n}:")
            mstore = MemoryStore()
            rstore = RedisStore.from_url(url, prefix=prefixes[-1], allow_eviction=True)
            t0 = time.perf_counter()
            fill_memory(mstore, 0, n)
            fill_redis(rstore, url, 0, n)
            fill_s += time.perf_counter() - t0
            by_n[n] = [Subject("memory", mstore), Subject("redis", rstore)]
        most = tenant_steps[-1]
        plan = [(f"{n:,} tenants, 1 limit", n, 1) for n in tenant_steps]
        plan += [(f"{most:,} tenants, {k} limits", most, k) for k in range(2, len(LIMITS) + 1)]
        fns: dict[str, Callable[[], object]] = {}
        for label, n, k in plan:
            for sub in by_n[n]:
                fns[f"{label}|{sub.name} invoke"] = sub.invoke(n, k, rnd)
                fns[f"{label}|{sub.name} store"] = sub.direct(n, k, rnd)
        got = measure(fns, calls, rounds)
        rows = [
            (label, {c.split("|")[1]: v for c, v in got.items() if c.startswith(label + "|")})
            for label, *_ in plan
        ]
        keys_total = int(admin.dbsize())
        for subs in by_n.values():
            subs[1].store.close()
        memory = memory_figures(url, mem_tenants)
    finally:
        for prefix in prefixes:
            drop(admin, prefix)
    filled = sum(tenant_steps)
    server = admin.info("server")
    print(
        f"redis-server {server.get('redis_version')} at {url} "
        f"({'started by this script' if own else 'existing server'}); python {platform.python_version()}, "
        f"redis-py {version('redis')}, {platform.machine()}; {rounds} rounds x {calls} calls per cell; "
        f"filling {filled:,} tenants (in each store) took {fill_s:.0f} s; "
        f"{keys_total:,} keys in Redis at the end"
    )
    print("µs per call (median); x = ratio to the first row. invoke = a guarded FakeChatModel.invoke;")
    print("store = the store's reserve + settle alone (the guard's own I/O, no LangChain).\n")
    cols = ["memory invoke", "memory store", "redis invoke", "redis store"]
    head = f"{'':32}" + "".join(f"{c:>22}" for c in cols)
    print(head)
    print("-" * len(head))
    base = rows[0][1]
    for label, got in rows:
        cells = "".join(f"{got[c]:>12.1f} ({got[c] / base[c]:>5.2f}x)" for c in cols)
        print(f"{label:32}{cells}")
    print(f"\nRedis memory ({mem_tenants:,} tenants filled on a fresh prefix, each reserved and settled):")
    for line in memory:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an existing Redis (default: start one)")
    ap.add_argument("--tenants", default="1,1000,100000,1000000", help="tenant counts, ascending")
    ap.add_argument("--calls", type=int, default=300, help="calls per cell per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory-tenants", type=int, default=100_000, help="tenants for the memory figures")
    a = ap.parse_args()
    steps = [int(x) for x in a.tenants.split(",")]
    if steps != sorted(steps) or steps[0] < 1:
        sys.exit("--tenants must be ascending positive counts, e.g. 1,1000,1000000")
    if a.url:
        run(a.url, False, steps, a.calls, a.rounds, a.memory_tenants)
        return
    with own_redis_server() as url:
        run(url, True, steps, a.calls, a.rounds, a.memory_tenants)


if __name__ == "__main__":
    main()
