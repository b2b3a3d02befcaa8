"""Issue 10: a wrapped model also guards langchain-classic's ``AgentExecutor`` (one test)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from agent_fakes import PRICES, Runaway, reported_usd, web_search
from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
from langchain_core.prompts import ChatPromptTemplate

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit


def test_a_wrapped_model_guards_every_call_of_an_agent_executor() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=[Limit(usd="0.01")],
        prices=PRICES,
        on_record=lambda r: records.append(r) if r.outcome != "refused" else None,
    )
    model = Runaway(max_tokens=200, output_tokens=40)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You research."), ("human", "{input}"), ("placeholder", "{agent_scratchpad}")]
    )
    agent = create_tool_calling_agent(guard.wrap(model), [web_search], prompt)
    executor = AgentExecutor(agent=agent, tools=[web_search], max_iterations=1000)
    with pytest.raises(BudgetExceeded) as info:
        executor.invoke({"input": "research everything"})
    assert info.value.scope == "global"
    (row,) = guard.remaining().rows
    spent = Decimal(row.spent)
    assert row.reserved == 0 and Decimal("0.008") <= spent <= Decimal("0.01")  # stopped near the cap
    assert spent == sum(r.cost_usd for r in records) == reported_usd(model)
    assert len(records) == model.calls.count > 10
