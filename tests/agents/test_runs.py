"""Issue 10: the scopes a run fills (run, thread, metadata, context), nesting, async, streams, cancels."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from agent_fakes import PRICES, Runaway, reported_usd, web_search
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from budgetguard import BudgetGuard, CallRecord, Limit
from budgetguard.agents import BudgetMiddleware
from budgetguard.testing import FakeChatModel

BUDGET = Decimal("0.02")


def guard_with(*limits: Limit, **kwargs: Any) -> tuple[BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    return BudgetGuard(
        limits=list(limits),
        prices=PRICES,
        on_record=lambda r: records.append(r) if r.outcome != "refused" else None,
        **kwargs,
    ), records


def spent(guard: BudgetGuard, **metadata: Any) -> Decimal:
    (row,) = [r for r in guard.remaining(**metadata).rows if r.quantity == "usd"]
    assert row.reserved == 0
    return Decimal(row.spent)


def test_import_budgetguard_loads_neither_langchain_nor_langgraph() -> None:
    code = "import sys, budgetguard; print(sorted(m for m in ('langchain', 'langgraph') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_thread_and_user_scopes_are_filled_from_configurable_and_metadata() -> None:
    guard, records = guard_with(
        Limit(usd="5", per="day", scope="thread:{thread_id}"), Limit(usd="5", scope="user:{user_id}")
    )
    model = FakeChatModel(tool_args={"query": "x"}, responses=["done"])
    agent = create_agent(
        model, [web_search], middleware=[BudgetMiddleware(guard)], checkpointer=InMemorySaver()
    )
    config: Any = {"configurable": {"thread_id": "t-1"}, "metadata": {"user_id": "alice"}}
    a = agent.invoke({"messages": [HumanMessage("one")]}, config)
    b = agent.invoke({"messages": [HumanMessage("two")]}, config)
    assert a["budget"]["run_id"] != b["budget"]["run_id"]
    total = sum(r.cost_usd for r in records)
    assert total > 0 and spent(guard, thread_id="t-1") == spent(guard, user_id="alice") == total
    assert {r.metadata["thread_id"] for r in records} == {"t-1"}
    assert a["budget"]["spent_usd"] + b["budget"]["spent_usd"] == total


@dataclass
class Context:
    user_id: str


def test_scopes_are_filled_from_the_runtime_context() -> None:
    guard, records = guard_with(Limit(usd="5", scope="user:{user_id}"))
    model = FakeChatModel(responses=["hi"])
    agent = create_agent(model, [], middleware=[BudgetMiddleware(guard)], context_schema=Context)
    agent.invoke({"messages": [HumanMessage("hi")]}, context=Context(user_id="bob"))
    assert spent(guard, user_id="bob") == records[0].cost_usd > 0


def test_a_nested_agent_spends_its_parent_runs_budget() -> None:
    guard, records = guard_with(Limit(usd=BUDGET, scope="run:{run_id}"))
    child_model = Runaway(max_tokens=200, output_tokens=40)
    child = create_agent(child_model, [web_search], middleware=[BudgetMiddleware(guard)])
    children: list[dict[str, Any]] = []

    @tool
    def delegate(query: str) -> str:
        """Hand a research question to a subagent."""
        state = child.invoke({"messages": [HumanMessage(query)]})
        children.append(state["budget"])
        return state["messages"][-1].text

    parent_model = Runaway(max_tokens=200, output_tokens=40)
    parent = create_agent(parent_model, [delegate], middleware=[BudgetMiddleware(guard)])
    state = parent.invoke({"messages": [HumanMessage("go")]})
    run_id = state["budget"]["run_id"]
    assert children and all(c["run_id"] == run_id for c in children)  # the child joined the run
    assert {r.metadata["run_id"] for r in records} == {run_id}
    total = spent(guard, run_id=run_id)
    assert total == sum(r.cost_usd for r in records) == reported_usd(child_model) + reported_usd(parent_model)
    assert BUDGET * Decimal("0.9") <= total <= BUDGET
    assert state["budget"]["ended_by_budget"] and state["budget"]["spent_usd"] == total


def test_a_model_called_inside_a_tool_counts_against_the_run_without_middleware_of_its_own() -> None:
    guard, records = guard_with(Limit(usd=BUDGET, scope="run:{run_id}"))
    inner = FakeChatModel(responses=["summary " * 50], output_tokens=300)

    @tool
    def summarize(text: str) -> str:
        """Summarize a text with a model."""
        return inner.invoke(text).text

    model = FakeChatModel(tool_args={"text": "x"}, responses=["done"])
    agent = create_agent(model, [summarize], middleware=[BudgetMiddleware(guard)])
    state = agent.invoke({"messages": [HumanMessage("go")]})
    run_id = state["budget"]["run_id"]
    assert inner.calls.count == 1 and len(records) == 3  # model, the tool's model, model
    assert {r.metadata["run_id"] for r in records} == {run_id}
    assert spent(guard, run_id=run_id) == sum(r.cost_usd for r in records) == state["budget"]["spent_usd"]


async def test_async_runaway_ends_gracefully_within_its_budget() -> None:
    guard, records = guard_with(Limit(usd=BUDGET, scope="run:{run_id}"))
    model = Runaway(max_tokens=200, output_tokens=40)
    agent = create_agent(
        model, [web_search], middleware=[BudgetMiddleware(guard, tool_costs={"web_search": "0"})]
    )
    state = await agent.ainvoke({"messages": [HumanMessage("go")]})
    budget = state["budget"]
    assert budget["ended_by_budget"] and not state["messages"][-1].tool_calls
    total = (await guard.aremaining(run_id=budget["run_id"])).rows[0].spent
    assert BUDGET * Decimal("0.9") <= total <= BUDGET
    model_records = [r for r in records if not r.model.startswith("tool:")]
    assert total == budget["spent_usd"] == sum(r.cost_usd for r in records) == reported_usd(model)
    assert budget["tool_calls"] == len(records) - len(model_records) == budget["calls"] == model.calls.count


@pytest.mark.parametrize("mode", ["messages", "updates"])
def test_a_streamed_runaway_is_guarded_the_same(mode: str) -> None:
    guard, records = guard_with(Limit(usd=BUDGET, scope="run:{run_id}"))
    model = Runaway(max_tokens=200, output_tokens=40)
    agent = create_agent(model, [web_search], middleware=[BudgetMiddleware(guard)])
    parts = list(agent.stream({"messages": [HumanMessage("go")]}, stream_mode=mode))
    if mode == "messages":
        chunks = [m for m, _ in parts if isinstance(m, AIMessageChunk)]
        assert len(chunks) > len(records)  # streamed token by token
        finals = [m for m, _ in parts if isinstance(m, AIMessage) and "budget is exhausted" in m.text]
    else:
        finals = [
            m for p in parts for u in p.values() if u for m in u.get("messages", ()) if "exhausted" in m.text
        ]
    assert len(finals) == 1 and not finals[0].tool_calls
    run_id = records[0].metadata["run_id"]
    total = spent(guard, run_id=run_id)
    assert BUDGET * Decimal("0.9") <= total <= BUDGET
    assert total == sum(r.cost_usd for r in records) == reported_usd(model)


@pytest.mark.parametrize("mode", ["messages", "updates"])
async def test_an_async_streamed_runaway_is_guarded_the_same(mode: str) -> None:
    guard, records = guard_with(Limit(usd=BUDGET, scope="run:{run_id}"))
    model = Runaway(max_tokens=200, output_tokens=40)
    agent = create_agent(model, [web_search], middleware=[BudgetMiddleware(guard)])
    parts = [p async for p in agent.astream({"messages": [HumanMessage("go")]}, stream_mode=mode)]
    assert parts
    total = spent(guard, run_id=records[0].metadata["run_id"])
    assert BUDGET * Decimal("0.9") <= total <= BUDGET
    assert total == sum(r.cost_usd for r in records) == reported_usd(model)


async def test_a_step_timeout_settles_the_cancelled_call_at_once() -> None:
    guard, records = guard_with(Limit(usd="1", scope="run:{run_id}"), Limit(usd="1"))
    model = FakeChatModel(latency=5.0, max_tokens=100)
    agent = create_agent(model, [], middleware=[BudgetMiddleware(guard)])
    agent.step_timeout = 0.2
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await agent.ainvoke({"messages": [HumanMessage("hi")]})
    await guard.engine.drain()
    (record,) = records
    assert record.outcome == "estimated"  # cancelled after its reservation: the conservative rule
    row = next(r for r in (await guard.aremaining()).rows if r.scope == "global")
    assert row.reserved == 0 and Decimal(row.spent) == record.cost_usd > 0
    assert len(guard.engine.pending) == 0


async def test_a_cancelled_run_releases_or_settles_at_once() -> None:
    guard, records = guard_with(Limit(usd="1"))
    model = FakeChatModel(latency=5.0, max_tokens=100)
    agent = create_agent(model, [], middleware=[BudgetMiddleware(guard)])
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await asyncio.wait_for(agent.ainvoke({"messages": [HumanMessage("hi")]}), 0.2)
    await guard.engine.drain()
    row = (await guard.aremaining()).rows[0]
    assert row.reserved == 0 and len(guard.engine.pending) == 0
    assert Decimal(row.spent) == sum(r.cost_usd for r in records)
