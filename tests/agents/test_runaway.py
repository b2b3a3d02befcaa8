"""Issue 10: a runaway agent (a model that calls a tool forever) is ended by its run budget.

The run ends with a final answer and its state, spends at least 90% of its
budget and never more; each run gets a budget of its own; the records add
up to exactly what the provider (the fake) reported.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from agent_fakes import PRICES, Runaway, reported_usd, web_search
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit
from budgetguard.agents import BUDGET_EXHAUSTED, BudgetMiddleware

BUDGET = Decimal("0.02")


def runaway_agent(**middleware: object) -> tuple[object, Runaway, BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=[Limit(usd=BUDGET, scope="run:{run_id}")],
        prices=PRICES,
        on_record=lambda r: records.append(r) if r.outcome != "refused" else None,
    )
    model = Runaway(max_tokens=200, output_tokens=40)
    agent = create_agent(model, [web_search], middleware=[BudgetMiddleware(guard, **middleware)])  # type: ignore[arg-type]
    return agent, model, guard, records


def run_spent(guard: BudgetGuard, run_id: str) -> Decimal:
    (row,) = [r for r in guard.remaining(run_id=run_id).rows if r.quantity == "usd"]
    assert row.reserved == 0
    return Decimal(row.spent)


def test_a_runaway_loop_ends_gracefully_with_at_least_90_percent_spent_and_never_more() -> None:
    agent, model, guard, records = runaway_agent()
    state = agent.invoke({"messages": [HumanMessage("research everything")]})  # type: ignore[attr-defined]

    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.text.startswith("I have to stop here: this run's budget is exhausted (run:")
    assert "$0.02 limit" in final.text
    assert final.response_metadata["finish_reason"] == BUDGET_EXHAUSTED
    budget = state["budget"]
    assert budget["ended_by_budget"] is True and "Budget exceeded for run:" in budget["reason"]
    spent = run_spent(guard, budget["run_id"])
    print(f"runaway utilization: {spent}/{BUDGET} = {spent / BUDGET:.4f} over {budget['calls']} calls")
    assert BUDGET * Decimal("0.9") <= spent <= BUDGET
    # the bill: state, store and records agree with what the provider reported, to the nano-dollar
    assert budget["spent_usd"] == spent == sum(r.cost_usd for r in records) == reported_usd(model)
    assert budget["calls"] == len(records) == len(model.reported) == model.calls.count
    assert sum(r.usage.input_tokens for r in records) == sum(u["input_tokens"] for u in model.reported)
    assert all(r.metadata["run_id"] == budget["run_id"] for r in records)
    # every message of the run is returned: each tool call answered, then the final answer
    assert sum(1 for m in state["messages"] if getattr(m, "tool_calls", None)) == budget["calls"]


def test_two_runs_in_a_row_each_get_their_own_budget() -> None:
    agent, model, guard, records = runaway_agent()
    first = agent.invoke({"messages": [HumanMessage("go")]})  # type: ignore[attr-defined]
    second = agent.invoke({"messages": [HumanMessage("go again")]})  # type: ignore[attr-defined]
    a, b = first["budget"], second["budget"]
    assert a["run_id"] != b["run_id"]
    for budget in (a, b):
        spent = run_spent(guard, budget["run_id"])
        assert budget["ended_by_budget"] and BUDGET * Decimal("0.9") <= spent <= BUDGET
        assert spent == sum(r.cost_usd for r in records if r.metadata["run_id"] == budget["run_id"])
    assert a["spent_usd"] + b["spent_usd"] == reported_usd(model)


def test_exit_behavior_error_raises_budget_exceeded() -> None:
    agent, model, _, records = runaway_agent(exit_behavior="error")
    with pytest.raises(BudgetExceeded) as info:
        agent.invoke({"messages": [HumanMessage("go")]})  # type: ignore[attr-defined]
    assert info.value.scope.startswith("run:")
    assert sum(r.cost_usd for r in records) == reported_usd(model) <= BUDGET


def test_a_run_limit_without_expire_after_is_given_one() -> None:
    guard = BudgetGuard(limits=[Limit(usd=1, scope="run:{run_id}"), Limit(usd=5)], prices=PRICES)
    BudgetMiddleware(guard)
    run_limit, global_limit = guard.limits
    assert run_limit.expire_seconds == 3600 and global_limit.expire_seconds is None
    refs = guard.engine.plan({"run_id": "r"}).refs
    assert refs[0].expire_after == 3600 and refs[1].expire_after is None


def test_a_run_ended_by_its_budget_logs_nothing_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    agent, _, _, _ = runaway_agent()
    with caplog.at_level("WARNING"):
        state = agent.invoke({"messages": [HumanMessage("go")]})  # type: ignore[attr-defined]
    assert state["budget"]["ended_by_budget"]
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []
