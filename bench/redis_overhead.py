"""RedisStore guard overhead, measured against one Redis round trip, in one run.

Everything runs against the SAME redis-server, side by side: a raw PING
(sync ``redis.Redis`` and ``redis.asyncio``), a bare ``invoke``/``ainvoke``
of a fake chat model, the same through ``BudgetGuard`` with a ``RedisStore``,
and, for reference, through the default ``MemoryStore`` and the store's
``reserve`` + ``settle`` called directly. Variants are interleaved in rounds
(rotating their order) so machine noise hits them alike; figures are medians
over rounds, and overheads are medians of the per-round differences.

It prints the guard's overhead (guarded minus bare) in µs and in PING round
trips, against the target of at most 3 round trips per call, plus what the
guard sends to Redis per call and the server-side Lua time.

By default it starts its own redis-server on a free loopback port and stops
it at the end; ``--url redis://host:port/db`` uses an existing server (keys
go under a unique prefix and are deleted afterwards).

``--settle background`` measures the guard with ``settle="background"``
(``--settle both``: an inline and a background guard side by side);
``--gap-ms MS`` pauses (untimed) before each call and times each call alone,
as model calls, spaced by the model's own latency, are.

Run: ``python bench/redis_overhead.py [--url URL] [--rounds N] [--calls N]
[--settle background|both] [--gap-ms MS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any, Literal, cast

import redis
import redis.asyncio as aredis

from budgetguard import BudgetGuard
from budgetguard.reservation import Amount
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

TARGET_RTTS = 3.0
Settle = Literal["inline", "background"]
PROMPT = "Summarise the quarterly report in three bullet points, please."

SyncFn = Callable[[], object]
AsyncFn = Callable[[], Awaitable[object]]


# ------------------------------------------------------------------ redis-server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def own_redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (the start logic of tests/redis_servers.py)."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed; install it or pass --url redis://host:port/0")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix=f"bg-bench-redis-{port}-")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", workdir, "--protected-mode", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        probe = redis.Redis(port=port, socket_timeout=0.5)
        while True:
            try:
                if probe.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.02)
        probe.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ timing


#: seconds between calls (``--gap-ms``), untimed: a call spaced from the next, as model calls are
GAP = 0.0


def time_sync(fn: SyncFn, n: int) -> float:
    if GAP:
        return statistics.median(_timed(fn) for _ in range(n)) * 1e6
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _timed(fn: SyncFn) -> float:
    time.sleep(GAP)
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


async def time_async(fn: AsyncFn, n: int) -> float:
    if GAP:
        took = []
        for _ in range(n):
            await asyncio.sleep(GAP)
            t = time.perf_counter()
            await fn()
            took.append(time.perf_counter() - t)
        return statistics.median(took) * 1e6
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


def evalsha_stats(client: redis.Redis) -> tuple[int, int]:
    row = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(row.get("calls", 0)), int(row.get("usec", 0))


@contextmanager
def counting(store: RedisStore) -> Iterator[dict[str, list[str]]]:
    """Record every command each of the store's clients sends (for a calibration pass only)."""
    seen: dict[str, list[str]] = {"sync": [], "async": []}
    sync_client, async_client = store.client, store.async_client
    orig_sync = sync_client.execute_command
    orig_async = async_client.execute_command

    def sync_exec(*args: Any, **kw: Any) -> Any:
        seen["sync"].append(str(args[0]))
        return orig_sync(*args, **kw)

    async def async_exec(*args: Any, **kw: Any) -> Any:
        seen["async"].append(str(args[0]))
        return await orig_async(*args, **kw)

    sync_client.execute_command = sync_exec
    async_client.execute_command = async_exec
    try:
        yield seen
    finally:
        del sync_client.execute_command
        del async_client.execute_command


def summarize(cmds: list[str], calls: int) -> str:
    if not cmds:
        return "0"
    kinds = ", ".join(f"{k} x{cmds.count(k) / calls:g}" for k in sorted(set(cmds)))
    return f"{len(cmds) / calls:g} ({kinds})"


# ------------------------------------------------------------------ the run


def run(url: str, rounds: int, calls: int, own: bool, settle: str = "inline") -> None:
    prefix = f"bgbench:{os.getpid()}-{secrets.token_hex(4)}:"
    ping_sync = redis.Redis.from_url(url)
    ping_async = aredis.Redis.from_url(url)
    store = RedisStore.from_url(url, prefix=prefix)
    admin = redis.Redis.from_url(url)

    bare = FakeChatModel(model_name="gpt-4o-mini", max_tokens=256)
    both = settle == "both"
    redis_guard = BudgetGuard(limit_usd=10**9, store=store, settle=cast(Settle, "inline" if both else settle))
    guarded = redis_guard.wrap(bare)
    bg_store = RedisStore.from_url(url, prefix=prefix + "bg:")
    bg_guard = BudgetGuard(limit_usd=10**9, store=bg_store, settle="background")
    bg_guarded = bg_guard.wrap(bare)
    handlers = getattr(guarded, "callbacks", None) or []
    mem_guarded = BudgetGuard(limit_usd=10**9).wrap(bare)

    # the store alone: the same two scripts the guard runs, without LangChain or the engine
    specs = redis_guard.engine.plan({}).specs
    refs = tuple(s.ref for s in specs)
    lease_ids = (f"direct-{secrets.token_hex(4)}-{i}" for i in itertools.count())
    reserved, actual = Amount(100_000, 300, 1), Amount(60_000, 200, 1)

    def direct_sync() -> None:
        lid = next(lease_ids)
        store.reserve(ReserveRequest(lid, specs, reserved, 600.0))
        store.settle(SettleRequest(lid, refs, actual, False))

    async def direct_async() -> None:
        lid = next(lease_ids)
        await store.areserve(ReserveRequest(lid, specs, reserved, 600.0))
        await store.asettle(SettleRequest(lid, refs, actual, False))

    variants: dict[str, SyncFn | AsyncFn] = {
        "PING round trip, sync": ping_sync.ping,
        "PING round trip, async": ping_async.ping,
        "bare invoke": lambda: bare.invoke(PROMPT),
        "bare ainvoke": lambda: bare.ainvoke(PROMPT),
        "guarded invoke, RedisStore": lambda: guarded.invoke(PROMPT),
        "guarded ainvoke, RedisStore": lambda: guarded.ainvoke(PROMPT),
        "guarded invoke, MemoryStore": lambda: mem_guarded.invoke(PROMPT),
        "guarded ainvoke, MemoryStore": lambda: mem_guarded.ainvoke(PROMPT),
        "store reserve+settle, sync": direct_sync,
        "store areserve+asettle, async": direct_async,
    }
    if both:  # side by side with the inline guard: the same server, the same rounds
        variants["guarded invoke, RedisStore bg"] = lambda: bg_guarded.invoke(PROMPT)
        variants["guarded ainvoke, RedisStore bg"] = lambda: bg_guarded.ainvoke(PROMPT)
    guards = {"RedisStore": redis_guard, "RedisStore bg": bg_guard}
    is_async = {name: ("async" in name or "ainvoke" in name) for name in variants}

    loop = asyncio.new_event_loop()  # one loop for the whole run (not asyncio.Runner: Python 3.10)

    def sample(name: str, n: int) -> float:
        fn = variants[name]
        if is_async[name]:
            per_call = loop.run_until_complete(time_async(cast(AsyncFn, fn), n))
        else:
            per_call = time_sync(fn, n)
        guard = guards.get(name.split(", ", 1)[-1])
        settler = None if guard is None else guard.engine.settler
        if guard is not None and settler is not None and not settler.idle:
            # background settles still queued are this sample's work: timed (back to back, a backlog
            # builds up; with --gap-ms they ran in the gaps and this is nearly free)
            t = time.perf_counter()
            guard.flush()
            per_call += (time.perf_counter() - t) / n * 1e6
        return per_call

    try:
        server = admin.info("server")
        # warm-up: connections, EVALSHA script load, LangChain caches, the executor's threads
        for name in variants:
            sample(name, max(50, calls // 4))

        # calibration (untimed): what one guarded call sends, on which client
        probe_calls = 50
        with counting(store) as seen:
            for _ in range(probe_calls):
                guarded.invoke(PROMPT)
            redis_guard.flush()  # settle="background": count the settles still under way too
        sync_path = dict(seen)
        with counting(store) as seen:
            loop.run_until_complete(_repeat(lambda: guarded.ainvoke(PROMPT), probe_calls))
            redis_guard.flush()
        async_path = dict(seen)

        gc.collect()
        gc.freeze()  # LangChain's import-time objects: keeps the per-sample collections below cheap
        names = list(variants)
        samples: dict[str, list[float]] = {name: [] for name in names}
        ev0 = evalsha_stats(admin)
        t0 = time.perf_counter()
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                gc.collect()
                samples[name].append(sample(name, calls))
        elapsed = time.perf_counter() - t0
        ev1 = evalsha_stats(admin)
    finally:
        gc.unfreeze()
        loop.run_until_complete(ping_async.aclose())
        loop.run_until_complete(store.async_client.aclose())
        loop.run_until_complete(bg_store.async_client.aclose())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    report(
        samples,
        sync_path,
        async_path,
        probe_calls,
        ev1[0] - ev0[0],
        ev1[1] - ev0[1],
        own=own,
        guarded_run_inline=all(getattr(h, "run_inline", True) for h in handlers),
        header=(
            f"redis-server {server.get('redis_version')} at {url} "
            f"({'started by this script' if own else 'existing server'}); "
            f"{rounds} rounds x {calls} calls per variant, {elapsed:.1f} s timed; settle={settle!r}"
            + (f", {GAP * 1000:g} ms untimed gap before each call (median per call)" if GAP else "")
            + "\n"
            f"python {platform.python_version()}, redis-py {version('redis')}, "
            f"langchain-core {version('langchain-core')}, {os.cpu_count()} CPUs"
        ),
    )

    if not own:  # leave an existing server as we found it
        keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            admin.unlink(*keys[i : i + 1000])
    for c in (ping_sync, admin):
        c.close()
    store.close()
    bg_store.close()


async def _repeat(fn: AsyncFn, n: int) -> None:
    for _ in range(n):
        await fn()


def report(
    samples: dict[str, list[float]],
    sync_path: dict[str, list[str]],
    async_path: dict[str, list[str]],
    probe_calls: int,
    evalsha_calls: int,
    evalsha_usec: int,
    *,
    own: bool,
    guarded_run_inline: bool,
    header: str,
) -> None:
    med = {name: statistics.median(vals) for name, vals in samples.items()}

    def q(vals: list[float], p: float) -> float:
        s = sorted(vals)
        return s[min(len(s) - 1, round(p * (len(s) - 1)))]

    def paired(a: str, b: str) -> float:
        return statistics.median(x - y for x, y in zip(samples[a], samples[b], strict=True))

    print(header)
    print()
    print(f"{'variant':<32} {'median us/call':>15} {'p25..p75 over rounds':>22}")
    for name, vals in samples.items():
        print(f"{name:<32} {med[name]:>15.1f} {q(vals, 0.25):>10.1f}..{q(vals, 0.75):<10.1f}")

    rtt = {"sync": med["PING round trip, sync"], "async": med["PING round trip, async"]}
    print()
    print("guard overhead = guarded minus bare (median of per-round differences)")
    print(f"{'':<32} {'us/call':>10} {'PING RTTs':>10}   target <= {TARGET_RTTS:g} RTTs")
    verdicts = []
    stores = ("RedisStore", "RedisStore bg", "MemoryStore")
    for store_name in (s for s in stores if f"guarded invoke, {s}" in samples):
        for mode, call in (("sync", "invoke"), ("async", "ainvoke")):
            over = paired(f"guarded {call}, {store_name}", f"bare {call}")
            rtts = over / rtt[mode]
            label = f"{mode} {call}, {store_name}"
            if store_name.startswith("RedisStore"):
                ok = rtts <= TARGET_RTTS
                verdicts.append(ok)
                verdict = "MEETS" if ok else "MISSES"
            else:
                verdict = "(reference)"
            print(f"{label:<32} {over:>10.1f} {rtts:>10.2f}   {verdict}")
    print("for comparison, the store alone (reserve + settle called directly, no LangChain, no engine):")
    for label, name, mode in (
        ("sync reserve+settle", "store reserve+settle, sync", "sync"),
        ("async areserve+asettle", "store areserve+asettle, async", "async"),
    ):
        print(f"{label:<32} {med[name]:>10.1f} {med[name] / rtt[mode]:>10.2f}")

    print()
    print(f"commands sent per guarded call (calibration pass, {probe_calls} calls each):")
    for label, path in (("invoke", sync_path), ("ainvoke", async_path)):
        print(
            f"  {label + ':':<9} sync client {summarize(path['sync'], probe_calls)}; "
            f"async client {summarize(path['async'], probe_calls)}"
        )
    if not guarded_run_inline:
        print(
            "  the guard's callback has run_inline=False with RedisStore: on ainvoke LangChain runs its "
            "start and end\n  events in the default thread-pool executor (two thread hops per call)"
        )
    if evalsha_calls:
        per = evalsha_usec / evalsha_calls
        print(
            f"server-side Lua (INFO commandstats): {per:.1f} us per EVALSHA on average, "
            f"~{2 * per:.1f} us per reserve+settle = {2 * per / rtt['sync']:.2f} sync PING RTTs"
            + ("" if own else " (a shared server: other clients' EVALSHAs count too)")
        )
    sent = max(sum(map(len, sync_path.values())), sum(map(len, async_path.values())))
    sent_per_call = sent / probe_calls
    print()
    verdict = "meets" if all(verdicts) else "MISSES"
    print(
        f"RESULT: in time, the RedisStore guard {verdict} the target of "
        f"<= {TARGET_RTTS:g} round trips per call"
    )
    print(
        f"        (by count it sends {sent_per_call:g} commands per call: "
        f"{'within' if sent_per_call <= TARGET_RTTS else 'over'} the target)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="use this Redis (redis://host:port/db) instead of starting one")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--calls", type=int, default=200, help="calls per variant per round (default 200)")
    ap.add_argument(
        "--settle",
        choices=("inline", "background", "both"),
        default="inline",
        help="the RedisStore guard's settle= (default inline, the guard's default); both: an inline "
        "and a background guard side by side ('RedisStore bg')",
    )
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="untimed pause before each call, timing each call alone (default 0: back to back)",
    )
    args = ap.parse_args()
    if args.rounds < 1 or args.calls < 1 or args.gap_ms < 0:
        ap.error("--rounds and --calls must be >= 1, --gap-ms >= 0")
    global GAP
    GAP = args.gap_ms / 1000
    if args.url:
        run(args.url, args.rounds, args.calls, own=False, settle=args.settle)
    else:
        with own_redis_server() as url:
            run(url, args.rounds, args.calls, own=True, settle=args.settle)


if __name__ == "__main__":
    main()
