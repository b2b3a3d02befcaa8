"""Issue 10: wrap-up, paid tools, degrade through ``override``, fitted output caps, no double count."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from agent_fakes import PRICES, Runaway, reported_usd, web_search
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, wrap_model_call
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from budgetguard import BudgetGuard, CallRecord, ConfigError, Limit
from budgetguard.agents import BudgetMiddleware
from budgetguard.testing import FakeChatModel


def guard_with(*limits: Limit, **kwargs: Any) -> tuple[BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    return BudgetGuard(
        limits=list(limits),
        prices=PRICES,
        on_record=lambda r: records.append(r) if r.outcome != "refused" else None,
        **kwargs,
    ), records


def usd_row(guard: BudgetGuard, **metadata: Any) -> Any:
    (row,) = [r for r in guard.remaining(**metadata).rows if r.quantity == "usd"]
    return row


def test_wrap_up_sends_the_next_call_without_tools_and_with_an_instruction_to_conclude() -> None:
    guard, records = guard_with(Limit(usd="0.02", scope="run:{run_id}"))
    model = Runaway(max_tokens=200, output_tokens=40, responses=["Here is my best answer."])
    mw = BudgetMiddleware(guard, wrap_up_at=0.5)
    agent = create_agent(model, [web_search], system_prompt="You research.", middleware=[mw])
    state = agent.invoke({"messages": [HumanMessage("research everything")]})

    budget = state["budget"]
    assert budget["wrapped_up"] is True and budget["ended_by_budget"] is False
    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and final.text == "Here is my best answer." and not final.tool_calls
    # every call but the last had tools; the last had none and was told to conclude
    assert all("tools" in kw for kw in model.seen_kwargs[:-1]) and "tools" not in model.seen_kwargs[-1]
    system = model.seen_messages[-1][0]
    assert isinstance(system, SystemMessage) and system.text.startswith("You research.")
    assert "Conclude now" in system.text and "50%" in system.text
    assert "Conclude now" not in model.seen_messages[-2][0].text
    spent = Decimal(usd_row(guard, run_id=budget["run_id"]).spent)
    assert Decimal("0.01") <= spent <= Decimal("0.02")
    assert budget["spent_usd"] == spent == sum(r.cost_usd for r in records) == reported_usd(model)


def test_wrap_up_at_must_be_a_fraction() -> None:
    guard, _ = guard_with(Limit(usd=1))
    for bad in (0, 1, 1.5, True, "0.9"):
        with pytest.raises(ConfigError, match="wrap_up_at"):
            BudgetMiddleware(guard, wrap_up_at=bad)  # type: ignore[arg-type]


def counting_search() -> tuple[Any, list[str]]:
    ran: list[str] = []

    @tool
    def web_search(query: str) -> str:
        """Search the web."""
        ran.append(query)
        return "a result"

    return web_search, ran


def test_a_paid_tool_is_charged_and_refused_before_it_runs_when_it_does_not_fit() -> None:
    guard, records = guard_with(Limit(usd="0.015"))
    search, ran = counting_search()
    model = FakeChatModel(tool_args={"query": "budgets"}, responses=["Done."])
    mw = BudgetMiddleware(guard, tool_costs={"web_search": "0.01"})
    agent = create_agent(model, [search], middleware=[mw])

    first = agent.invoke({"messages": [HumanMessage("search")]})
    assert ran == ["budgets"] and first["budget"]["tool_calls"] == 1
    (tool_record,) = [r for r in records if r.model == "tool:web_search"]
    assert tool_record.cost_usd == Decimal("0.01") and tool_record.usage.total_tokens == 0
    assert tool_record.metadata["run_id"] == first["budget"]["run_id"]

    second = agent.invoke({"messages": [HumanMessage("search again")]})
    assert ran == ["budgets"]  # refused before it ran
    refusal = [m for m in second["messages"] if isinstance(m, ToolMessage)][-1]
    assert refusal.status == "error" and "The budget refused this web_search call" in refusal.text
    assert "Budget exceeded for global" in refusal.text
    assert isinstance(second["messages"][-1], AIMessage) and second["messages"][-1].text == "Done."
    assert second["budget"]["tool_calls"] == 0 and not second["budget"]["ended_by_budget"]
    # the store holds the model calls and the one charged tool call, nothing reserved
    row = usd_row(guard)
    assert row.reserved == 0 and Decimal(row.spent) == sum(r.cost_usd for r in records)


def test_tool_costs_are_checked() -> None:
    guard, _ = guard_with(Limit(usd=1))
    for bad in ({"t": "-1"}, {"t": "abc"}, {"t": True}, {"": "1"}):
        with pytest.raises(ConfigError, match="tool_costs"):
            BudgetMiddleware(guard, tool_costs=bad)  # type: ignore[arg-type]


def test_a_primary_that_does_not_fit_is_served_by_the_fallback_through_override() -> None:
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=4000, responses=["from the big model"])
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=4000, responses=["from the cheap model"])
    guard, records = guard_with(Limit(usd="0.01"), fallback=cheap)
    agent = create_agent(primary, [], middleware=[BudgetMiddleware(guard)])
    state = agent.invoke({"messages": [HumanMessage("hi")]})
    assert state["messages"][-1].text == "from the cheap model"
    assert primary.calls.count == 0 and cheap.calls.count == 1
    assert [r.model for r in records] == ["gpt-4o-mini"]


def test_degrade_at_is_a_soft_cap_served_by_the_fallback() -> None:
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=100, output_tokens=80, responses=["big"])
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=100, output_tokens=80, responses=["cheap"])
    guard, records = guard_with(Limit(usd="0.004"), fallback=cheap, degrade_at=0.5)
    agent = create_agent(primary, [], middleware=[BudgetMiddleware(guard)])
    served = [agent.invoke({"messages": [HumanMessage("hi")]})["messages"][-1].text for _ in range(3)]
    # each big call costs $0.0008 and may cost $0.00105: the third would pass $0.002, half the budget
    assert served == ["big", "big", "cheap"]
    assert [r.model for r in records] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]


def test_a_fallback_that_is_not_a_chat_model_is_refused_at_construction() -> None:
    cheap = FakeChatModel(model_name="gpt-4o-mini").bind(temperature=0)
    guard, _ = guard_with(Limit(usd=1), fallback=cheap)
    with pytest.raises(ConfigError, match=r"request\.override"):
        BudgetMiddleware(guard)


def test_the_output_cap_from_model_settings_is_fitted_to_what_the_budget_affords() -> None:
    @wrap_model_call
    def long_answers(request: ModelRequest[Any], handler: Any) -> Any:
        return handler(request.override(model_settings={"max_tokens": 4000}))

    guard, records = guard_with(Limit(usd="0.0006"))
    model = Runaway(output_tokens=40, responses=["ok"])
    agent = create_agent(model, [], middleware=[BudgetMiddleware(guard), long_answers])
    agent.invoke({"messages": [HumanMessage("hi")]})
    sent = model.seen_kwargs[0]["max_tokens"]
    assert 40 <= sent < 4000  # 4000 output tokens would cost $0.0024: lowered to fit $0.0006
    (record,) = records
    assert record.output_cap_fitted == sent


def test_an_already_wrapped_model_is_counted_once() -> None:
    guard, records = guard_with(Limit(usd="0.02", scope="run:{run_id}"))
    model = Runaway(max_tokens=200, output_tokens=40)
    agent = create_agent(guard.wrap(model), [web_search], middleware=[BudgetMiddleware(guard)])
    state = agent.invoke({"messages": [HumanMessage("go")]})
    budget = state["budget"]
    assert budget["ended_by_budget"]
    assert len(records) == model.calls.count == budget["calls"]
    spent = Decimal(usd_row(guard, run_id=budget["run_id"]).spent)
    assert spent == sum(r.cost_usd for r in records) == reported_usd(model) <= Decimal("0.02")


def test_wrap_up_with_the_store_down_leaves_the_call_to_the_guards_failure_mode(tmp_path: Any) -> None:
    guard = BudgetGuard(
        limits=[Limit(usd=1, scope="run:{run_id}")],
        prices=PRICES,
        store="redis://127.0.0.1:1/0",
        store_timeout=0.2,
        on_store_error="open",
        spool_dir=tmp_path,
    )
    model = FakeChatModel(responses=["answered"])
    agent = create_agent(model, [], middleware=[BudgetMiddleware(guard, wrap_up_at=0.9)])
    state = agent.invoke({"messages": [HumanMessage("hi")]})
    assert state["messages"][-1].text == "answered" and not state["budget"]["wrapped_up"]
    assert model.calls.count == 1 and any(tmp_path.iterdir())  # fail open: the call went ahead, spooled


async def test_a_paid_tool_is_charged_and_refused_on_the_async_path_too() -> None:
    guard, records = guard_with(Limit(usd="0.015"))
    search, ran = counting_search()
    model = FakeChatModel(tool_args={"query": "budgets"}, responses=["Done."])
    agent = create_agent(
        model, [search], middleware=[BudgetMiddleware(guard, tool_costs={"web_search": "0.01"})]
    )
    first = await agent.ainvoke({"messages": [HumanMessage("search")]})
    second = await agent.ainvoke({"messages": [HumanMessage("search again")]})
    assert ran == ["budgets"] and first["budget"]["tool_calls"] == 1 and second["budget"]["tool_calls"] == 0
    refusal = [m for m in second["messages"] if isinstance(m, ToolMessage)][-1]
    assert refusal.status == "error" and "The budget refused this web_search call" in refusal.text
    row = (await guard.aremaining()).rows[0]
    assert row.reserved == 0 and Decimal(row.spent) == sum(r.cost_usd for r in records)
