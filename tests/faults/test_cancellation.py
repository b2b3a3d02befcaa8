"""A cancelled call resolves at once and leaks nothing.

``asyncio.wait_for`` timeouts, ``task.cancel()`` and LangGraph's
``step_timeout`` cancel the task running ``llm.ainvoke``; LangChain's
``agenerate`` then sends no end or error event. A call cancelled while it
reserved never reached the model and is released. A call cancelled after that
is settled at once by the conservative rule (input estimate plus output cap,
flagged ``estimated``). Process memory stays flat: no call stays in
``guard.engine.pending`` and no reservation stays open in ``remaining()``.
"""

from __future__ import annotations

import asyncio
import gc
import operator
import uuid
from decimal import Decimal
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableSequence
from redis_servers import RedisServer

from budgetguard import BudgetGuard, CallRecord, Limit, MemoryStore, RedisStore, Store
from budgetguard.stores.base import ReserveRequest, ReserveResult
from budgetguard.testing import FakeChatModel

LIMITS = [Limit(usd=1000, tokens=10**9, requests=10**6)]


def held(guard: BudgetGuard) -> dict[str, tuple[Decimal | int, Decimal | int]]:
    return {r.quantity: (r.spent, r.reserved) for r in guard.remaining().rows}


def make_store(kind: str, server: RedisServer) -> Store:
    prefix = f"cancel-{uuid.uuid4().hex}:"
    return MemoryStore() if kind == "memory" else RedisStore.from_url(server.url, prefix=prefix)


def slow_model() -> FakeChatModel:
    return FakeChatModel(input_tokens=5, output_tokens=5, max_tokens=64, latency=5.0)


async def settled(guard: BudgetGuard, within: float = 1.0) -> None:
    """Give the cancelled tasks' done callbacks and the guard's background closes ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if not guard.engine.pending and all(reserved == 0 for _, reserved in held(guard).values()):
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_timeouts_leave_nothing_pending_and_charge_the_conservative_rule(
    redis_server: RedisServer, kind: str
) -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, store=make_store(kind, redis_server), on_record=records.append)
    llm = guard.wrap(slow_model())
    n = 50
    for i in range(n):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm.ainvoke(f"q{i}"), 0.02)
    await settled(guard)
    assert len(guard.engine.pending) == 0, f"{len(guard.engine.pending)} cancelled calls still in memory"
    now = held(guard)
    # A timeout that came while the call was still reserving (a Redis round trip) released it: the
    # model was never called, and it is on the record as released, free. Every other call was
    # charged, and recorded, by the conservative rule.
    assert await guard.aflush(timeout=5)
    assert len(records) == n, f"{len(records)} records for {n} calls"
    released = [r for r in records if r.outcome == "released"]
    assert all(r.cost_usd == 0 for r in released)
    records = [r for r in records if r.outcome != "released"]
    charged = len(records)
    assert charged >= n // 2, f"only {charged} of {n} timeouts came after the reservation"
    assert now["requests"] == (charged, 0), f"(spent, reserved) requests: {now['requests']}"
    assert now["usd"][1] == 0 and now["tokens"][1] == 0, "a reservation stayed open"
    assert {r.outcome for r in records} == {"estimated"}
    # The rule: the input estimate plus the output cap (64), as much as was reserved in tokens.
    assert all(r.usage.output_tokens == 64 and r.usage.input_tokens > 0 for r in records)
    assert now["tokens"][0] == sum(r.usage.input_tokens + 64 for r in records)


async def test_task_cancel_settles_the_call_at_once() -> None:
    guard = BudgetGuard(limits=LIMITS)
    llm = guard.wrap(slow_model())
    task = asyncio.ensure_future(llm.ainvoke("hi"))
    await asyncio.sleep(0.02)  # the reservation is held, the model is being called
    assert held(guard)["requests"] == (0, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the task's done callbacks
    assert held(guard)["requests"] == (1, 0), "the cancelled call was not settled at once"
    assert len(guard.engine.pending) == 0


async def test_a_timeout_the_task_survives_is_settled_by_the_tasks_next_call() -> None:
    """``asyncio.timeout`` (and ``wait_for`` from Python 3.12) cancel the call but not the task."""
    guard = BudgetGuard(limits=LIMITS)
    model = slow_model()
    llm = guard.wrap(model)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await llm.ainvoke("slow")
    model.latency = 0
    await llm.ainvoke("fast")
    assert held(guard)["requests"] == (2, 0)
    assert len(guard.engine.pending) == 0


class SlowReserveRedisStore(RedisStore):
    """A reserve that lands in Redis, then takes its time to answer (or waits before sending)."""

    land_first = True

    async def areserve(self, req: ReserveRequest) -> ReserveResult:
        if not self.land_first:
            await asyncio.sleep(1.0)
        result = await super().areserve(req)
        await asyncio.sleep(1.0)
        return result


@pytest.mark.parametrize("land_first", [True, False], ids=["reserve-landed", "reserve-not-sent"])
async def test_a_cancel_during_the_reserve_releases_it(redis_server: RedisServer, land_first: bool) -> None:
    store = SlowReserveRedisStore.from_url(redis_server.url, prefix=f"cancel-{uuid.uuid4().hex}:")
    store.land_first = land_first
    guard = BudgetGuard(limits=LIMITS, store=store)
    model = slow_model()
    llm = guard.wrap(model)
    for i in range(5):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm.ainvoke(f"q{i}"), 0.1)
    await settled(guard)
    assert model.calls.count == 0
    assert held(guard)["requests"] == (0, 0), "a call that never reached the model was charged or held"
    assert len(guard.engine.pending) == 0


@pytest.mark.parametrize("land_first", [True, False], ids=["reserve-landed", "reserve-not-sent"])
async def test_a_cancel_during_a_pipe_probe_releases_it(redis_server: RedisServer, land_first: bool) -> None:
    """A hand-built sequence's stream reserves its worst case before it pulls the model (``aprobe``,
    which tool costs use too); cancelled meanwhile, its caller never sees the lease: released."""
    store = SlowReserveRedisStore.from_url(redis_server.url, prefix=f"cancel-{uuid.uuid4().hex}:")
    store.land_first = land_first
    guard = BudgetGuard(limits=LIMITS, store=store, model="gpt-4o-mini")
    model = slow_model()
    chain = RunnableSequence(model, guard)

    async def pull() -> list[Any]:
        return [c async for c in chain.astream("q")]

    for _ in range(3):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pull(), 0.1)
    assert await guard.aflush(timeout=5)
    assert model.calls.count == 0
    assert held(guard)["requests"] == (0, 0), "a probe whose caller was cancelled was charged or held"
    assert held(guard)["usd"] == (0, 0)


class SwallowingRedisStore(RedisStore):
    """A reserve that lands, then swallows a cancel that comes while it answers: what Python 3.11's
    ``asyncio.wait_for`` does inside redis-py's asyncio client when its inner await finished just as
    the cancel came (it returns the inner result instead of raising)."""

    async def areserve(self, req: ReserveRequest) -> ReserveResult:
        result = await super().areserve(req)
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            pass
        return result


async def test_a_cancel_swallowed_below_the_reserve_is_still_honoured(redis_server: RedisServer) -> None:
    store = SwallowingRedisStore.from_url(redis_server.url, prefix=f"cancel-{uuid.uuid4().hex}:")
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, store=store, on_record=records.append)
    model = slow_model()
    llm = guard.wrap(model)
    for i in range(3):
        with pytest.raises(asyncio.TimeoutError):  # not the model's answer, 5 s later
            await asyncio.wait_for(llm.ainvoke(f"q{i}"), 0.1)
    assert await guard.aflush(timeout=5)
    assert model.calls.count == 0, "the model was called after its caller had cancelled"
    assert held(guard)["requests"] == (0, 0), "a call that never reached the model was charged or held"
    assert len(guard.engine.pending) == 0
    # each withdrawn call is on the record, as released and free
    assert [(r.outcome, r.cost_usd) for r in records] == [("released", 0)] * 3


async def test_langgraph_step_timeout_leaves_nothing_pending() -> None:
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        out: list[Any]

    guard = BudgetGuard(limits=LIMITS)
    llm = guard.wrap(slow_model())

    async def call_model(state: State) -> dict[str, Any]:
        return {"out": [await llm.ainvoke("hi")]}

    builder = StateGraph(State)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    graph = builder.compile()
    graph.step_timeout = 0.05
    with pytest.raises(asyncio.TimeoutError):
        await graph.ainvoke({"out": []})
    await settled(guard)
    assert held(guard)["requests"] == (1, 0)
    assert len(guard.engine.pending) == 0


async def test_memory_stays_flat_under_repeated_cancellation() -> None:
    guard = BudgetGuard(limits=LIMITS)
    llm = guard.wrap(slow_model())
    for i in range(300):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm.ainvoke(f"q{i}"), 0.001)
    await settled(guard)
    gc.collect()
    assert len(guard.engine.pending) == 0
    assert guard.engine.pending._tasks == {}  # no task is still watched
    assert sum(map(operator.itemgetter(1), held(guard).values())) == 0
