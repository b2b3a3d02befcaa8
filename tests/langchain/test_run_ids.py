"""A LangChain run id is not a call id: calls that share one are each checked and recorded.

Apps, retries and LangGraph/LangSmith callers pass ``config={"run_id": ...}``
and reuse it. The guard must still reserve, check and settle every call,
sequential or concurrent, on MemoryStore and on a real Redis, while the same
guard attached to a model and to the chain around it still reserves once.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from decimal import Decimal

import pytest
from langchain_core.prompts import ChatPromptTemplate
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit, RedisStore, Store
from budgetguard.stores import MemoryStore
from budgetguard.testing import FakeChatModel


def make_store(kind: str, server: RedisServer) -> Store:
    if kind == "memory":
        return MemoryStore()
    return RedisStore.from_url(server.url, prefix=f"runids-{uuid.uuid4().hex}:")


def held(guard: BudgetGuard) -> dict[str, tuple[Decimal | int, Decimal | int]]:
    return {r.quantity: (r.spent, r.reserved) for r in guard.remaining().rows}


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_sequential_calls_sharing_a_run_id_are_each_checked_and_recorded(
    redis_server: RedisServer, kind: str
) -> None:
    """A budget of 3 requests admits 3 of 6 calls that share one run id, and records each."""
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=[Limit(requests=3)], store=make_store(kind, redis_server), on_record=records.append
    )
    llm = FakeChatModel(input_tokens=5, output_tokens=5, max_tokens=16)
    guarded = guard.wrap(llm)
    run_id = uuid.uuid4()
    admitted = 0
    for i in range(6):
        try:
            guarded.invoke(f"call {i}", config={"run_id": run_id})
            admitted += 1
        except BudgetExceeded:
            pass
    assert admitted == 3, f"a 3-request budget admitted {admitted} calls sharing one run id"
    assert llm.calls.count == 3
    assert [r.outcome for r in records] == ["settled"] * 3 + ["refused"] * 3
    assert held(guard)["requests"] == (3, 0)


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_concurrent_async_calls_sharing_a_run_id_are_each_recorded(
    redis_server: RedisServer, kind: str
) -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=[Limit(requests=100, tokens=10**6)],
        store=make_store(kind, redis_server),
        on_record=records.append,
    )
    llm = FakeChatModel(input_tokens=7, output_tokens=3, max_tokens=16, latency=0.05)
    guarded = guard.wrap(llm)
    run_id = uuid.uuid4()
    await asyncio.gather(*(guarded.ainvoke(f"c{i}", config={"run_id": run_id}) for i in range(4)))
    assert llm.calls.count == 4
    assert len(records) == 4 and {r.outcome for r in records} == {"settled"}
    assert held(guard) == {"requests": (4, 0), "tokens": (40, 0)}
    assert len(guard.engine.pending) == 0


def test_concurrent_threads_sharing_a_run_id_are_each_recorded() -> None:
    guard = BudgetGuard(limits=[Limit(requests=100, tokens=10**6)])
    llm = FakeChatModel(input_tokens=7, output_tokens=3, max_tokens=16, latency=0.05)
    guarded = guard.wrap(llm)
    run_id = uuid.uuid4()
    threads = [
        threading.Thread(target=guarded.invoke, args=(f"t{i}",), kwargs={"config": {"run_id": run_id}})
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert llm.calls.count == 4
    assert held(guard) == {"requests": (4, 0), "tokens": (40, 0)}


def test_same_guard_on_model_and_chain_reserves_with_the_models_own_output_cap() -> None:
    """The model's handler knows its profile (100 output tokens); the chain's does not (4096)."""
    guard = BudgetGuard(limits=[Limit(tokens=10**6)])
    llm = FakeChatModel(input_tokens=5, output_tokens=5, profile={"max_output_tokens": 100})
    chain = guard.wrap(ChatPromptTemplate.from_messages([("human", "{q}")]) | guard.wrap(llm))
    during: list[int] = []
    for _ in chain.stream({"q": "hi"}):
        if not during:
            during.append(int(guard.remaining().rows[0].reserved))
    (reserved,) = during
    assert 100 < reserved < 200, f"reserved {reserved} tokens for a model whose output cap is 100"
    assert held(guard)["tokens"] == (10, 0)
