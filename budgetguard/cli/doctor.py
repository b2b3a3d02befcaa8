"""``doctor``: is this Redis fit to hold budgets? Each finding comes with its fix.

Checks connectivity and round-trip latency, the eviction policy (an evicted
counter is a budget reset to zero), persistence (without AOF or RDB a
restart forgets every budget), and whether Lua scripts and ``TIME`` inside
scripts work (budgetguard's atomic steps are scripts; ``TIME`` gives every
app server one clock).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from ..errors import BudgetStoreUnavailable, ConfigError
from .common import EXIT_OK, EXIT_PROBLEM, EXIT_STORE, CliError, open_store, store_parent

__all__ = ["Finding", "add_commands", "diagnose"]

OK, WARN, PROBLEM = "ok", "warn", "problem"


class Finding(NamedTuple):
    level: str  # ok | warn | problem
    check: str
    detail: str
    fix: str = ""


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[store_parent()],
        help="check the store: latency, eviction, persistence, scripts, TIME",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=doctor)


def _nodes(info: Any) -> Iterator[Mapping[str, Any]]:
    """Each node's INFO section (a Cluster client answers {node: info})."""
    if isinstance(info, Mapping) and any(isinstance(v, Mapping) for v in info.values()):
        for v in info.values():
            if isinstance(v, Mapping):
                yield v
    elif isinstance(info, Mapping):
        yield info


def _latency(client: Any) -> Finding:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - t0)
    ms = statistics.median(samples) * 1000
    if ms > 5:
        return Finding(
            WARN,
            "latency",
            f"PING median {ms:.2f} ms over 5 round trips",
            "each guarded call makes two round trips (reserve, settle): put Redis near the app",
        )
    return Finding(OK, "latency", f"PING median {ms:.2f} ms over 5 round trips")


def _eviction(client: Any) -> Finding:
    policies = sorted({str(n.get("maxmemory_policy", "?")) for n in _nodes(client.info("memory"))})
    if policies == ["noeviction"]:
        return Finding(OK, "eviction", "maxmemory-policy noeviction")
    if not policies or policies == ["?"]:
        return Finding(
            WARN,
            "eviction",
            "the server does not report maxmemory_policy",
            "make sure it is noeviction (the provider's parameter group)",
        )
    return Finding(
        PROBLEM,
        "eviction",
        f"maxmemory-policy {', '.join(policies)}: under memory pressure Redis evicts budget counters, "
        "silently resetting budgets (guards refuse such a server unless allow_eviction=True)",
        "CONFIG SET maxmemory-policy noeviction (and in redis.conf or the provider's parameter group)",
    )


def _persistence(client: Any) -> Finding:
    nodes = list(_nodes(client.info("persistence")))
    aof = bool(nodes) and all(str(n.get("aof_enabled", 0)) == "1" for n in nodes)
    save = ""
    try:
        got = client.config_get("save")
        save = str(next(iter(got.values()), "")) if isinstance(got, Mapping) else ""
    except Exception:  # CONFIG is often disabled on managed Redis
        save = "?"
    if aof:
        return Finding(
            OK, "persistence", "AOF enabled" + (f"; RDB save {save!r}" if save not in ("", "?") else "")
        )
    if save and save != "?":
        return Finding(
            WARN,
            "persistence",
            f"RDB snapshots only (save {save!r}): a crash loses the spend since the last snapshot",
            "CONFIG SET appendonly yes (appendfsync everysec)",
        )
    if save == "?":
        return Finding(
            WARN,
            "persistence",
            "AOF off; RDB unknown (CONFIG GET is refused)",
            "enable AOF (appendonly yes) or the provider's backups",
        )
    return Finding(
        WARN,
        "persistence",
        "neither AOF nor RDB: a restart forgets every budget and the ledger",
        "CONFIG SET appendonly yes (appendfsync everysec), and persist it in redis.conf",
    )


def _scripts(client: Any) -> list[Finding]:
    try:
        ok = client.eval("return 1", 0)
    except Exception as e:
        return [
            Finding(
                PROBLEM,
                "scripts",
                f"EVAL refused ({type(e).__name__}: {e})",
                "use a server that runs Lua scripts; the user needs +@scripting",
            )
        ]
    found = [Finding(OK, "scripts", "Lua scripts run")] if int(ok) == 1 else []
    try:
        t = client.eval("return redis.call('TIME')", 0)
        skew = abs(int(t[0]) + int(t[1]) / 1e6 - time.time())
        found.append(
            Finding(OK, "time", f"TIME works inside scripts (server clock {skew:.3f} s from this host)")
        )
    except Exception as e:
        found.append(
            Finding(
                PROBLEM,
                "time",
                f"TIME is refused inside scripts ({e})",
                "use RedisStore(..., server_time=False): windows then follow the app's clocks",
            )
        )
    return found


def diagnose(store: Any) -> list[Finding]:
    """Every finding for a Redis store (``BudgetStoreUnavailable`` when it cannot be reached)."""
    client = getattr(store, "client", None)
    if client is None:
        raise CliError(f"doctor checks Redis stores; {store!r} has no sync Redis client")
    from ..stores.redis.calls import FAILURES, failure

    try:
        found = [_latency(client)]
        version = sorted({str(n.get("redis_version", "?")) for n in _nodes(client.info("server"))})
        found.append(Finding(OK, "server", f"Redis {', '.join(version)} at {store.label}"))
        found.append(_eviction(client))
        found.append(_persistence(client))
        found += _scripts(client)
    except FAILURES as e:
        err = failure(store.label, e, "doctor")
        if isinstance(err, ConfigError):
            return [Finding(PROBLEM, "connect", str(err))]
        raise err from None
    return found


def doctor(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        found = diagnose(store)
    except BudgetStoreUnavailable as e:
        sys.stdout.write(f"problem  connect      {e}\n")
        return EXIT_STORE
    for f in found:
        sys.stdout.write(f"{f.level:<8} {f.check:<12} {f.detail}\n")
        if f.fix:
            sys.stdout.write(f"{'':<8} {'':<12} fix: {f.fix}\n")
    problems = sum(f.level == PROBLEM for f in found)
    warns = sum(f.level == WARN for f in found)
    sys.stdout.write(f"\n{problems} problem(s), {warns} warning(s)\n")
    return EXIT_PROBLEM if problems else EXIT_OK
