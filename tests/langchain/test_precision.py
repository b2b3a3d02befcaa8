"""Guard-level precision: a growing thread reserves from what the provider reported; token_counter=."""

from __future__ import annotations

from decimal import Decimal

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, ConfigError
from budgetguard.testing import FakeChatModel

QUESTION = "Could you explain, in plain words, how a budget guard decides to admit a call? " * 3
ANSWER = "It estimates the worst case, reserves it, and settles to the real usage afterwards. " * 6


def thread(guard: BudgetGuard, turns: int, model: str = "gpt-4o") -> tuple[list[CallRecord], int]:
    """Run a growing conversation; the records of admitted calls and how many were admitted."""
    records: list[CallRecord] = []
    guard.engine.flows.on_record = records.append
    llm = guard.wrap(FakeChatModel(model_name=model, responses=[ANSWER], max_tokens=200))
    history: list[BaseMessage] = [SystemMessage(content="You are terse.")]
    admitted = 0
    for _ in range(turns):
        history.append(HumanMessage(content=QUESTION))
        try:
            reply = llm.invoke(history)
        except BudgetExceeded:
            return records, admitted
        admitted += 1
        assert isinstance(reply, AIMessage)
        history.append(reply)
    return records, admitted


def ratio(rec: CallRecord) -> Decimal:
    return rec.reserved_usd / rec.cost_usd


def test_a_thread_reserves_from_the_reported_prefix() -> None:
    records, admitted = thread(BudgetGuard(limit_usd=100), 10)
    assert admitted == 10
    assert all(r.reserved_usd >= r.cost_usd for r in records)  # never under-reserved
    assert not any(r.estimated for r in records)
    # the first call has only the byte bound; later ones reuse the reported prefix
    assert ratio(records[-1]) < ratio(records[0])
    assert ratio(records[-1]) < Decimal("1.5")


def test_a_thread_is_admitted_up_to_a_limit_its_real_usage_fits() -> None:
    records, _ = thread(BudgetGuard(limit_usd=100), 10)
    real = sum(r.usage.total_tokens for r in records)
    # byte-bound reservations alone refuse the last turns of this thread (4x the real input by then)
    _, admitted = thread(BudgetGuard(limit_tokens=real + 400), 10)
    assert admitted == 10


def test_a_thread_through_an_agent_tool_loop_stays_covered() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(limit_usd=100, on_record=records.append)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", tool_args={"q": "x"}, max_tokens=100))

    def lookup(q: str) -> str:
        """Look something up."""
        return "found " * 20

    bound = llm.bind_tools([lookup])
    history: list[BaseMessage] = [HumanMessage(content=QUESTION)]
    first = bound.invoke(history)
    assert isinstance(first, AIMessage) and first.tool_calls
    history += [first, ToolMessage(content="found " * 20, tool_call_id=first.tool_calls[0]["id"])]
    bound.invoke(history)
    assert len(records) == 2
    assert all(r.reserved_usd >= r.cost_usd for r in records)


@pytest.mark.parametrize("counter", ["o200k", "auto"])
def test_named_counter_reserves_less_for_its_models_only(counter: str) -> None:
    plain, _ = thread(BudgetGuard(limit_usd=100), 1)
    exact, _ = thread(BudgetGuard(limit_usd=100, token_counter=counter), 1)
    assert exact[0].cost_usd <= exact[0].reserved_usd < plain[0].reserved_usd
    other_plain, _ = thread(BudgetGuard(limit_usd=100), 1, model="claude-sonnet-4-5")
    other, _ = thread(BudgetGuard(limit_usd=100, token_counter=counter), 1, model="claude-sonnet-4-5")
    assert other[0].reserved_usd == other_plain[0].reserved_usd


def test_callable_counter_sizes_the_reservation() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limit_tokens=10_000, fit_max_tokens=False, on_record=records.append, token_counter=lambda m, t: 9_000
    )
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=1_001))
    with pytest.raises(BudgetExceeded):
        llm.invoke("hi")  # 9,000 + 1,001 > 10,000
    guard = BudgetGuard(
        limit_tokens=10_000, fit_max_tokens=False, on_record=records.append, token_counter=lambda m, t: 8_999
    )
    guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=1_001)).invoke("hi")
    assert [r.outcome for r in records] == ["refused", "settled"]


def test_bad_token_counter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="token_counter must be one of"):
        BudgetGuard(limit_usd=1, token_counter="gpt-4o")
