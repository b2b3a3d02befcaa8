"""Threshold alerts (issue 11): once per scope, window and threshold, across processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis_servers import Cluster, RedisServer

from budgetguard import Alert, BudgetExceeded, BudgetGuard, ConfigError, Limit, MemoryStore, RedisStore
from budgetguard.stores.base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest, Store
from budgetguard.testing import FakeChatModel


def _model(**kw: Any) -> FakeChatModel:
    return FakeChatModel(input_tokens=5, output_tokens=5, max_tokens=16, **kw)


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alerts": [0.5]}, "alerts= needs on_alert="),
        ({"on_alert": print}, "on_alert= needs alerts="),
        ({"alerts": [0.5, 1.5], "on_alert": print}, "fraction in (0, 1]"),
        ({"alerts": [0, 0.5], "on_alert": print}, "fraction in (0, 1]"),
        ({"alerts": [True], "on_alert": print}, "fraction in (0, 1]"),
        ({"alerts": "0.5", "on_alert": print}, "list of fractions"),
        ({"alerts": [0.5, 0.5], "on_alert": print}, "threshold twice"),
        ({"alerts": [0.5], "on_alert": "not callable"}, "on_alert must be a function"),
    ],
)
def test_bad_alert_settings_name_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BudgetGuard(limit_usd=1, **kwargs)


class _NoAlertsStore(Store):
    def reserve(self, req: ReserveRequest) -> ReserveResult:  # pragma: no cover - never called
        raise NotImplementedError

    def settle(self, req: SettleRequest) -> SettleOutcome:  # pragma: no cover
        raise NotImplementedError

    def release(self, lease_id: str, counters: Any) -> bool:  # pragma: no cover
        raise NotImplementedError

    def status(self, refs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def reset(self, scope: str) -> int:  # pragma: no cover
        raise NotImplementedError


def test_a_store_that_cannot_deduplicate_is_refused_for_alerts() -> None:
    with pytest.raises(ConfigError, match="cannot deduplicate alerts"):
        BudgetGuard(limit_usd=1, store=_NoAlertsStore(), alerts=[0.5], on_alert=print)


# ------------------------------------------------------------------ one process


def test_each_threshold_fires_once_with_scope_window_spent_and_cap() -> None:
    alerts: list[Alert] = []
    guard = BudgetGuard(
        limits=[Limit(requests=10, per="day", scope="user:{user_id}")],
        alerts=[0.5, 0.8, 1.0],
        on_alert=alerts.append,
    )
    llm = guard.wrap(_model())
    for i in range(12):
        try:
            llm.invoke(f"q{i}", config={"metadata": {"user_id": "alice@example.com"}})
        except BudgetExceeded:
            pass
    assert [(a.threshold, a.spent, a.cap) for a in alerts] == [(0.5, 5, 10), (0.8, 8, 10), (1.0, 10, 10)]
    a = alerts[0]
    assert (a.scope, a.window, a.quantity) == ("user:alice@example.com", "day", "requests")
    assert a.window_start is not None and a.resets_at is not None and a.resets_at > a.window_start


def test_usd_alerts_carry_decimals_and_each_scope_its_own() -> None:
    alerts: list[Alert] = []
    guard = BudgetGuard(
        limits=[Limit(usd="0.001", scope="user:{user_id}")], alerts=[0.5], on_alert=alerts.append
    )
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", input_tokens=1000, output_tokens=500))
    for user in ("a", "b"):
        for _ in range(3):
            try:
                llm.invoke("q", config={"metadata": {"user_id": user}})
            except BudgetExceeded:
                pass
    assert [a.scope for a in alerts] == ["user:a", "user:b"]
    assert all(isinstance(a.spent, Decimal) and a.cap == Decimal("0.001") for a in alerts)
    assert all(a.spent >= Decimal("0.0005") and a.window == "lifetime" for a in alerts)
    assert alerts[0].window_start is None and alerts[0].resets_at is None


def test_a_new_window_fires_again() -> None:
    now = [1_700_000_000.0]
    alerts: list[Alert] = []
    guard = BudgetGuard(
        limits=[Limit(requests=2, per="minute")],
        store=MemoryStore(clock=lambda: now[0]),
        alerts=[1.0],
        on_alert=alerts.append,
    )
    llm = guard.wrap(_model())
    llm.invoke("a")
    llm.invoke("b")
    now[0] += 60
    llm.invoke("c")
    llm.invoke("d")
    assert len(alerts) == 2 and alerts[0].window_start != alerts[1].window_start


def test_a_callback_that_raises_never_breaks_a_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(alert: Alert) -> None:
        raise RuntimeError("the webhook is down")

    guard = BudgetGuard(limits=[Limit(requests=4)], alerts=[0.25, 0.5], on_alert=broken)
    llm = guard.wrap(_model(responses=["ok"]))
    assert [llm.invoke("q").content for _ in range(3)] == ["ok"] * 3
    errors = [r for r in caplog.records if r.name == "budgetguard" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "on_alert raised" in errors[0].getMessage()  # logged once, not per alert


async def test_an_async_callback_is_awaited_on_the_callers_loop() -> None:
    alerts: list[Alert] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_alert(alert: Alert) -> None:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        alerts.append(alert)

    guard = BudgetGuard(limits=[Limit(requests=2)], alerts=[0.5, 1.0], on_alert=on_alert)
    llm = guard.wrap(_model())
    await llm.ainvoke("a")
    await llm.ainvoke("b")
    await guard.engine.flows.watch.alerts.drain()  # type: ignore[union-attr]
    assert [a.threshold for a in alerts] == [0.5, 1.0]
    assert loops == [asyncio.get_running_loop()] * 2


def test_an_async_callback_runs_from_a_sync_call_too() -> None:
    got: list[float] = []

    async def on_alert(alert: Alert) -> None:
        got.append(alert.threshold)

    guard = BudgetGuard(limits=[Limit(requests=1)], alerts=[1.0], on_alert=on_alert)
    guard.wrap(_model()).invoke("a")
    assert got == [1.0]


# ------------------------------------------------------------------ the store's claim


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_claim_alert_is_won_once_and_lapses_with_its_ttl(kind: str, redis_server: RedisServer) -> None:
    prefix = f"al-{uuid.uuid4()}:"
    store: Store = MemoryStore() if kind == "memory" else RedisStore.from_url(redis_server.url, prefix=prefix)
    assert store.claim_alert("k\t1", 0.2) is True
    assert store.claim_alert("k\t1", 0.2) is False
    assert store.claim_alert("k\t2", None) is True  # another key
    assert asyncio.run(store.aclaim_alert("k\t2", None)) is False
    if kind == "redis":
        import time

        time.sleep(0.3)
    else:
        store._alerts["k\t1"] = 0  # type: ignore[attr-defined]  # lapsed
    assert store.claim_alert("k\t1", 0.2) is True


# ------------------------------------------------------------------ several processes, one Redis


def _worker(url: str, prefix: str, out: str, start: Any, calls: int) -> None:
    def on_alert(alert: Alert) -> None:
        with open(out, "a") as f:
            f.write(json.dumps({"t": alert.threshold, "spent": alert.spent, "scope": alert.scope}) + "\n")

    store = RedisStore.from_url(url, prefix=prefix)
    guard = BudgetGuard(
        limits=[Limit(requests=20, per="day", scope="team:{team}")],
        store=store,
        alerts=[0.5, 0.8, 1.0],
        on_alert=on_alert,
    )
    llm = guard.wrap(FakeChatModel(input_tokens=5, output_tokens=5, max_tokens=16))
    start.wait()
    for i in range(calls):
        try:
            llm.invoke(f"q{i}", config={"metadata": {"team": "core"}})
        except BudgetExceeded:
            pass


def test_each_threshold_fires_exactly_once_across_processes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = 4
    start = ctx.Barrier(procs)
    out = tmp_path / "alerts.jsonl"
    prefix = f"alerts-{uuid.uuid4().hex}:"
    args = (redis_server.url, prefix, str(out), start, 10)
    workers = [ctx.Process(target=_worker, args=args) for _ in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(x["t"] for x in lines) == [0.5, 0.8, 1.0], lines
    assert {x["scope"] for x in lines} == {"team:core"}
    assert all(x["spent"] >= x["t"] * 20 for x in lines)


async def test_alerts_on_redis_cluster_sync_and_async(redis_cluster: Cluster) -> None:
    alerts: list[Alert] = []
    store = RedisStore.from_url(redis_cluster.url, prefix=f"al-{uuid.uuid4().hex}:")
    guard = BudgetGuard(
        limits=[Limit(requests=4, scope="org:{org}")], store=store, alerts=[0.5, 1.0], on_alert=alerts.append
    )
    llm = guard.wrap(_model())
    for org in ("a", "b"):
        llm.invoke("q", config={"metadata": {"org": org}})
        await llm.ainvoke("q", config={"metadata": {"org": org}})
    assert sorted((a.scope, a.threshold) for a in alerts) == [("org:a", 0.5), ("org:b", 0.5)]
    assert await store.aclaim_alert("x", 5) is True and store.claim_alert("x", 5) is False
