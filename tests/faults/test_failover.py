"""Failover mid-run, on real servers: a Sentinel failover and a Redis Cluster failover.

The primary is SIGKILLed while calls keep coming; a replica is promoted.

- ``on_store_error="open"``: every call goes ahead and is recorded; what the
  store could not take is spooled and replayed, so the final totals equal the
  sum of every call that ran (nothing lost, nothing counted twice).
- ``on_store_error="closed"``: calls are refused only while no primary answers
  (from the kill until the promoted replica serves, plus the breaker's one
  store timeout), and every admitted call is counted.

Redis replicates asynchronously: a write the primary acknowledged moments
before it died may never reach the replica. That window is Redis's, not
budgetguard's, so each test waits for the replica to acknowledge (``WAIT``)
before the kill; the README's "Scaling out" section says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis_servers import Cluster, RedisServer, Sentinels

from budgetguard import BudgetGuard, BudgetStoreUnavailable, CallRecord, Limit
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis

TIMEOUT = 0.3  # store_timeout: also the breaker's cooldown
USERS = ("ann", "bob", "cy", "dee")


def fake() -> FakeChatModel:
    return FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=64)


def limits(multi_slot: bool) -> list[Limit]:
    if multi_slot:  # the global counters and the users' in different Cluster slots
        return [Limit(tokens=10**9, per="day"), Limit(usd=100, requests=10**6, scope="user:{user_id}")]
    return [Limit(usd=100, tokens=10**9, requests=10**6)]


@dataclass
class Run:
    """Calls made one after another while the primary dies and a replica takes over."""

    guard: BudgetGuard = field(init=False)
    records: list[CallRecord] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)  # monotonic times of refused calls
    admitted: list[float] = field(default_factory=list)
    n: int = 0

    def call(self) -> None:
        user = USERS[self.n % len(USERS)]
        self.n += 1
        llm = self.guard.wrap(fake())
        try:
            llm.invoke(f"call {self.n}", config={"metadata": {"user_id": user}})
        except BudgetStoreUnavailable:
            assert llm.calls.count == 0, "a refused call reached the model"
            self.refused.append(time.monotonic())
            return
        self.admitted.append(time.monotonic())

    def for_seconds(self, seconds: float) -> None:
        """Paced calls (a refusal is instant: unpaced, a run would be all breaker cooldown)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.call()
            time.sleep(0.02)

    def until(self, done: Callable[[], bool], limit: float) -> float:
        """Call until ``done()``; the monotonic time it first held."""
        deadline = time.monotonic() + limit
        while not done():
            assert time.monotonic() < deadline, "no replica was promoted in time"
            self.call()
            time.sleep(0.02)
        return time.monotonic()


def make_run(url: str, mode: str, tmp_path: Path, multi_slot: bool) -> Run:
    run = Run()
    run.guard = BudgetGuard(
        limits=limits(multi_slot),
        store=url,
        on_store_error=mode,  # type: ignore[arg-type]
        spool_dir=tmp_path / "spool",
        store_timeout=TIMEOUT,
        on_record=run.records.append,
    )
    return run


def totals(guard: BudgetGuard, user: str) -> dict[tuple[str, str], tuple[Decimal | int, Decimal | int]]:
    return {(r.scope, r.quantity): (r.spent, r.reserved) for r in guard.remaining(user_id=user).rows}


def check_nothing_lost(run: Run, multi_slot: bool) -> None:
    """The store's totals equal the sum of the recorded calls, per user and overall."""
    run.guard.replay_spool()
    spool = run.guard.engine.spool
    assert spool is not None and spool.pending() == 0
    by_user: dict[str, list[CallRecord]] = {u: [] for u in USERS}
    for rec in run.records:
        by_user[rec.metadata["user_id"]].append(rec)
    all_tokens = sum(r.usage.total_tokens for r in run.records)
    for user, recs in by_user.items():
        got = totals(run.guard, user)
        usd = sum((r.cost_usd for r in recs), Decimal(0))
        if multi_slot:
            assert got[(f"user:{user}", "usd")] == (usd, 0), user
            assert got[(f"user:{user}", "requests")] == (len(recs), 0), user
            assert got[("global", "tokens")] == (all_tokens, 0)
        else:
            assert got[("global", "requests")] == (len(run.records), 0)
            assert got[("global", "tokens")] == (all_tokens, 0)


def check_refused_only_while_down(run: Run, killed: float, served: float) -> None:
    """Refusals only between the kill and the promoted primary serving (+ two store timeouts:
    one call's timeout, then the breaker's cooldown); after that, none."""
    assert run.refused, "the kill refused nothing: the test proved nothing"
    slack = 2 * TIMEOUT + 1.5  # plus the client finding the new primary, on a loaded 2-core box
    assert all(killed <= t <= served + slack for t in run.refused), (killed, served, run.refused)
    assert len(run.records) == len(run.admitted)


def wait_replicated(primary: RedisServer) -> None:
    """Redis replicates asynchronously: let the replica acknowledge everything so far."""
    assert int(primary.client().execute_command("WAIT", 1, 2000)) >= 1


# ------------------------------------------------------------------ Sentinel


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_sentinel_failover_mid_run(tmp_path: Path, mode: str) -> None:
    sentinels = Sentinels(down_after_ms=1000).start()
    try:
        run = make_run(sentinels.url, mode, tmp_path, multi_slot=False)
        for _ in range(20):
            run.call()
        assert not run.refused
        old = sentinels.primary
        wait_replicated(old)
        old.kill()
        killed = time.monotonic()

        def promoted() -> bool:
            try:
                if sentinels.master_port() != sentinels.replica.port:
                    return False
                return sentinels.replica.client().info("replication")["role"] == "master"
            except Exception:
                return False

        served = run.until(promoted, 30)
        run.for_seconds(1.5)
        if mode == "open":
            assert not run.refused, "fail-open refused a call"
            spooled = [r for r in run.records if r.outcome == "spooled"]
            assert spooled, "no call met the outage"
        else:
            check_refused_only_while_down(run, killed, served)
        assert run.admitted[-1] > served and len(run.records) == run.n - len(run.refused)
        check_nothing_lost(run, multi_slot=False)
        print(f"\nsentinel {mode}: {run.n} calls, {len(run.refused)} refused, {served - killed:.1f}s down")
    finally:
        sentinels.stop()


# ------------------------------------------------------------------ Cluster


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_cluster_failover_mid_run(tmp_path: Path, mode: str) -> None:
    """The primary serving the ``global`` counters (every call touches them) dies; the users'
    counters live in other slots too, so the calls are multi-slot reservations."""
    cluster = Cluster(3, replicas=1, node_timeout=1000).start()
    try:
        run = make_run(cluster.url, mode, tmp_path, multi_slot=True)
        store: Any = run.guard.store
        plan = store._plan(["global", *(f"user:{u}" for u in USERS)])
        assert plan is not None and len(plan) > 1, "the run is not multi-slot"
        for _ in range(20):
            run.call()
        assert not run.refused
        victim = cluster.primary_for(f"{store.prefix}{{global}}:")
        wait_replicated(victim)
        victim.kill()
        killed = time.monotonic()

        def serving() -> bool:
            try:
                cluster.wait_ok(timeout=0.05)
                cluster.primary_for(f"{store.prefix}{{global}}:")
                return True
            except RuntimeError:
                return False

        served = run.until(serving, 30)
        run.for_seconds(1.5)
        if mode == "open":
            assert not run.refused, "fail-open refused a call"
            assert any(r.outcome == "spooled" for r in run.records), "no call met the outage"
        else:
            check_refused_only_while_down(run, killed, served)
        assert run.admitted[-1] > served
        check_nothing_lost(run, multi_slot=True)
        print(f"\ncluster {mode}: {run.n} calls, {len(run.refused)} refused, {served - killed:.1f}s down")
    finally:
        cluster.stop()
