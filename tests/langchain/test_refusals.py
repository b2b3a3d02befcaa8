"""Refusals that help: why a call was refused, what to change, when to retry (issue 9, items 4-6)."""

from __future__ import annotations

import pickle
import time
from decimal import Decimal

import pytest

from budgetguard import BudgetExceeded, BudgetGuard, Limit
from budgetguard.engine.refusals import RETRY_RESERVED
from budgetguard.errors import CandidateRefusal
from budgetguard.testing import FakeChatModel


def _gpt4o(**kw: object) -> FakeChatModel:
    return FakeChatModel(model_name="gpt-4o", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ item 4: refusals that help


def test_a_refusal_names_the_output_cap_it_assumed_and_how_to_change_it() -> None:
    # the figure: "Hello" to gpt-4o (profile: 16,384 output tokens) on a $0.10 budget
    guard = BudgetGuard(limit_usd="0.10")
    llm = guard.wrap(_gpt4o(profile={"max_output_tokens": 16_384}))
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("Hello")
    e = info.value
    assert e.output_tokens == 16_384 and e.input_tokens is not None and 0 < e.input_tokens < 100
    assert e.requested > Decimal("0.1638")
    assert not e.never_fits
    msg = str(e)
    assert "output cap of 16,384 tokens" in msg and "$0.16384 of output" in msg
    for knob in ("max_tokens", "min_output_tokens", "default_max_output_tokens"):
        assert knob in msg
    # the old fields stay
    assert e.quantity == "usd" and e.remaining == Decimal("0.10") and e.model == "gpt-4o"


def test_max_tokens_is_what_the_refusal_tells_and_it_works() -> None:
    guard = BudgetGuard(limit_usd="0.10")
    llm = guard.wrap(_gpt4o(profile={"max_output_tokens": 16_384}))
    llm.invoke("Hello", max_tokens=1000)  # the fix the message names: admitted


def test_a_call_that_can_never_fit_says_so() -> None:
    guard = BudgetGuard(limits=[Limit(usd="0.0001", per="day")])
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(_gpt4o(max_tokens=1)).invoke("x" * 1000)  # 1,000+ input tokens alone cost > $0.0001
    e = info.value
    assert e.never_fits
    assert e.retry_after is None  # waiting for the window to reset would not help
    assert "can never fit" in str(e) and "shorten the prompt" in str(e)


def test_a_call_that_fits_once_the_budget_frees_is_not_never_fits() -> None:
    guard = BudgetGuard(limit_usd="0.01")
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(_gpt4o(max_tokens=2000)).invoke("q")
    assert not info.value.never_fits and "never fit" not in str(info.value)


def test_a_candidate_refusal_is_a_plain_value() -> None:
    c = CandidateRefusal("fallback", "gpt-4o-mini", "why")
    assert pickle.loads(pickle.dumps(c)) == c


# ------------------------------------------------------------------ item 5: when to retry


def test_retry_after_is_short_when_reservations_in_flight_stand_in_the_way() -> None:
    guard = BudgetGuard(limit_usd="0.015")
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000))
    stream = llm.stream("q")  # reserves about $0.01 and holds it while the stream is open
    next(stream)
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    assert info.value.retry_after == RETRY_RESERVED == 1.0
    for _ in stream:
        pass


def test_retry_after_is_the_time_until_the_window_resets_when_spent_money_stands_in_the_way() -> None:
    guard = BudgetGuard(limits=[Limit(usd="0.015", per="minute")])
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000))
    llm.invoke("q")
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    e = info.value
    assert e.resets_at is not None and e.retry_after is not None
    assert 0 <= e.retry_after <= 60
    assert abs(e.retry_after - (e.resets_at.timestamp() - time.time())) < 5


def test_retry_after_is_none_for_a_spent_lifetime_limit() -> None:
    guard = BudgetGuard(limit_usd="0.015")
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000))
    llm.invoke("q")
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    assert info.value.retry_after is None and not info.value.never_fits


def test_status_says_when_not_even_a_minimal_call_fits() -> None:
    # remaining $0.000015 after one call: more than 0, less than a minimal gpt-4o call ($0.00003)
    guard = BudgetGuard(limit_usd="0.01004")
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000, input_tokens=10))
    llm.invoke("q")
    status = guard.remaining()
    assert status.remaining_usd == Decimal("0.000015")
    assert not status.can_fit_minimal_call and status.exhausted
    with pytest.raises(BudgetExceeded):
        llm.invoke("q", max_tokens=1)


def test_status_with_room_for_a_minimal_call_is_not_exhausted() -> None:
    guard = BudgetGuard(limit_usd="1")
    guard.wrap(_gpt4o(max_tokens=1000)).invoke("q")
    status = guard.remaining()
    assert status.can_fit_minimal_call and not status.exhausted


def test_a_tokens_limit_with_fewer_tokens_left_than_a_minimal_call_is_exhausted() -> None:
    guard = BudgetGuard(limit_tokens=20)
    llm = guard.wrap(_gpt4o(max_tokens=4, output_tokens=4, input_tokens=10))
    llm.invoke("q")
    status = guard.remaining()
    assert status.rows[0].remaining == 6 and status.exhausted  # a minimal call needs 9 tokens
