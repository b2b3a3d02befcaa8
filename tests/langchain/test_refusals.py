"""Refusals that help: why a call was refused, what to change, when to retry (issue 9, items 4-6)."""

from __future__ import annotations

import asyncio
import pickle
import time
from decimal import Decimal
from uuid import uuid4

import pytest

from budgetguard import BudgetExceeded, BudgetGuard, DegradeRequired, Limit
from budgetguard.adapter.candidates import FALLBACK, LAST_RESORT, PRIMARY, Candidates
from budgetguard.engine.refusals import RETRY_RESERVED
from budgetguard.errors import CandidateRefusal
from budgetguard.testing import FakeChatModel


def _gpt4o(**kw: object) -> FakeChatModel:
    return FakeChatModel(model_name="gpt-4o", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ item 4: refusals that help


def test_a_refusal_names_the_output_cap_it_assumed_and_how_to_change_it() -> None:
    # the figure: "Hello" to gpt-4o (profile: 16,384 output tokens) on a $0.10 budget
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.10")
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
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.10")
    llm = guard.wrap(_gpt4o(profile={"max_output_tokens": 16_384}))
    llm.invoke("Hello", max_tokens=1000)  # the fix the message names: admitted


def test_a_call_that_can_never_fit_says_so() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limits=[Limit(usd="0.0001", per="day")])
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(_gpt4o(max_tokens=1)).invoke("x" * 1000)  # 1,000+ input tokens alone cost > $0.0001
    e = info.value
    assert e.never_fits
    assert e.retry_after is None  # waiting for the window to reset would not help
    assert "can never fit" in str(e) and "shorten the prompt" in str(e)


def test_a_call_that_fits_once_the_budget_frees_is_not_never_fits() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.01")
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(_gpt4o(max_tokens=2000)).invoke("q")
    assert not info.value.never_fits and "never fit" not in str(info.value)


def test_each_fallback_candidate_says_why_it_was_refused() -> None:
    primary = _gpt4o(max_tokens=4000)
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=100_000)
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.01", fallback=cheap)
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(primary).invoke("q")
    e = info.value
    assert e.model == "gpt-4o"
    assert [(c.role, c.model) for c in e.candidates] == [("fallback", "gpt-4o-mini")]
    assert "output cap of 100,000 tokens" in e.candidates[0].reason
    msg = str(e)
    assert "Also refused, gpt-4o-mini (fallback): Budget exceeded" in msg and "gpt-4o call needs" in msg
    after = pickle.loads(pickle.dumps(e))
    assert after.candidates == e.candidates and str(after) == msg


def test_several_fallbacks_each_say_why_async_and_in_batches() -> None:
    primary = _gpt4o(max_tokens=4000)
    mini = FakeChatModel(model_name="gpt-4o-mini", max_tokens=100_000)
    nano = FakeChatModel(model_name="gpt-4.1-nano", max_tokens=1_000_000)
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.01", fallback=[mini, nano])
    llm = guard.wrap(primary)
    with pytest.raises(BudgetExceeded) as info:
        asyncio.run(llm.ainvoke("q"))
    assert [c.model for c in info.value.candidates] == ["gpt-4o-mini", "gpt-4.1-nano"]
    errors = llm.batch(["a", "b"], return_exceptions=True)  # batch returns the last candidate's error
    for err in errors:
        assert isinstance(err, BudgetExceeded) and err.model == "gpt-4.1-nano"
        assert [(c.role, c.model) for c in err.candidates] == [
            ("primary", "gpt-4o"),
            ("fallback", "gpt-4o-mini"),
        ]
    with pytest.raises(BudgetExceeded) as info:
        llm.batch(["a"])
    assert {info.value.model, *(c.model for c in info.value.candidates)} == {
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1-nano",
    }
    assert primary.calls.count == mini.calls.count == nano.calls.count == 0


def test_a_provider_error_is_not_handled_by_the_fallbacks() -> None:
    primary = _gpt4o(max_tokens=10, fail_with=lambda: RuntimeError("provider down"))
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=10)
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="1", fallback=cheap, degrade_at=0.5)
    with pytest.raises(RuntimeError, match="provider down"):
        guard.wrap(primary).invoke("q")
    assert cheap.calls.count == 0


def test_a_candidate_refusal_is_a_plain_value() -> None:
    c = CandidateRefusal("fallback", "gpt-4o-mini", "why")
    assert pickle.loads(pickle.dumps(c)) == c


# ------------------------------------------------------------------ item 5: when to retry


def test_retry_after_is_short_when_reservations_in_flight_stand_in_the_way() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015")
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000))
    stream = llm.stream("q")  # reserves about $0.01 and holds it while the stream is open
    next(stream)
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    assert info.value.retry_after == RETRY_RESERVED == 1.0
    for _ in stream:
        pass


def test_retry_after_is_the_time_until_the_window_resets_when_spent_money_stands_in_the_way() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limits=[Limit(usd="0.015", per="minute")])
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000))
    llm.invoke("q")
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    e = info.value
    assert e.resets_at is not None and e.retry_after is not None
    assert 0 <= e.retry_after <= 60
    assert abs(e.retry_after - (e.resets_at.timestamp() - time.time())) < 5


def test_retry_after_is_none_for_a_spent_lifetime_limit() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015")
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000))
    llm.invoke("q")
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    assert info.value.retry_after is None and not info.value.never_fits


def test_status_says_when_not_even_a_minimal_call_fits() -> None:
    # remaining $0.000015 after one call: more than 0, less than a minimal gpt-4o call ($0.00003)
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.01004")
    llm = guard.wrap(_gpt4o(max_tokens=1000, output_tokens=1000, input_tokens=10))
    llm.invoke("q")
    status = guard.remaining()
    assert status.remaining_usd == Decimal("0.000015")
    assert not status.can_fit_minimal_call and status.exhausted
    with pytest.raises(BudgetExceeded):
        llm.invoke("q", max_tokens=1)


def test_status_with_room_for_a_minimal_call_is_not_exhausted() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="1")
    guard.wrap(_gpt4o(max_tokens=1000)).invoke("q")
    status = guard.remaining()
    assert status.can_fit_minimal_call and not status.exhausted


def test_a_tokens_limit_with_fewer_tokens_left_than_a_minimal_call_is_exhausted() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limit_tokens=20)
    llm = guard.wrap(_gpt4o(max_tokens=4, output_tokens=4, input_tokens=10))
    llm.invoke("q")
    status = guard.remaining()
    assert status.rows[0].remaining == 6 and status.exhausted  # a minimal call needs 9 tokens


# ------------------------------------------------------------------ item 6: degrade_at is a soft cap


def _served_until_refused(fallback_max: int) -> tuple[Decimal, int, int, BudgetExceeded]:
    primary = _gpt4o(max_tokens=1000, output_tokens=1000, input_tokens=10)
    cheap = FakeChatModel(
        model_name="gpt-4o-mini", max_tokens=fallback_max, output_tokens=1000, input_tokens=10
    )
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="1.00", fallback=cheap, degrade_at=0.5)
    llm = guard.wrap(primary)
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(1000):
            llm.invoke("q")
    spent = guard.remaining().rows[0].spent
    assert isinstance(spent, Decimal)
    return spent, primary.calls.count, cheap.calls.count, info.value


def test_the_primary_serves_past_degrade_at_when_no_fallback_fits() -> None:
    # the fallback's worst case ($0.60) is larger than what is left past 49%: it never fits.
    # Before: refused at $0.491225 spent (49.1%) with $0.51 left. Now the primary serves to the hard cap.
    spent, primary_calls, cheap_calls, e = _served_until_refused(1_000_000)
    assert spent > Decimal("0.98") and primary_calls == 99 and cheap_calls == 0
    assert not isinstance(e, DegradeRequired)


def test_a_fallback_that_fits_still_serves_past_degrade_at() -> None:
    spent, primary_calls, cheap_calls, e = _served_until_refused(100_000)
    assert 45 <= primary_calls <= 55 and cheap_calls > 700 and spent > Decimal("0.98")
    assert [c.model for c in e.candidates] == ["gpt-4o-mini"]  # the primary's hard refusal is not repeated


def _refusal(cls: type[BudgetExceeded], model: str) -> BudgetExceeded:
    return cls(
        scope="global",
        limit=Limit(usd="1"),
        quantity="usd",
        window="lifetime",
        spent=Decimal(0),
        reserved=Decimal(0),
        requested=Decimal(2),
        remaining=Decimal(1),
        resets_at=None,
        model=model,
    )


@pytest.mark.parametrize(("first_cls", "told"), [(DegradeRequired, 2), (BudgetExceeded, 1)])
def test_the_last_resort_refusal_is_told_only_when_the_primary_only_passed_degrade_at(
    first_cls: type[BudgetExceeded], told: int
) -> None:
    chains, parent = Candidates(), uuid4()
    first = _refusal(first_cls, "gpt-4o")
    chains.refused(PRIMARY, parent, first)
    chains.refused(FALLBACK, parent, _refusal(BudgetExceeded, "gpt-4o-mini"))
    chains.refused(LAST_RESORT, parent, _refusal(BudgetExceeded, "gpt-4o"))
    assert len(first.candidates) == told
    assert ("ignoring degrade_at" in str(first)) == (told == 2)
    chains.refused(FALLBACK, parent, _refusal(BudgetExceeded, "late"))  # the chain is closed
    assert len(first.candidates) == told


def test_an_admitted_candidate_closes_its_chain_and_calls_without_a_parent_are_left_alone() -> None:
    chains, parent = Candidates(), uuid4()
    first = _refusal(DegradeRequired, "gpt-4o")
    chains.refused(PRIMARY, parent, first)
    chains.admitted(FALLBACK, parent)
    chains.refused(FALLBACK, parent, _refusal(BudgetExceeded, "gpt-4o-mini"))
    chains.refused(PRIMARY, None, _refusal(BudgetExceeded, "x"))
    chains.refused(None, parent, _refusal(BudgetExceeded, "x"))
    assert first.candidates == []


def test_a_stream_through_fallbacks_tells_each_candidate_too() -> None:
    guard = BudgetGuard(
        fit_max_tokens=False,
        limit_usd="0.01",
        fallback=FakeChatModel(model_name="gpt-4o-mini", max_tokens=100_000),
    )
    with pytest.raises(BudgetExceeded) as info:
        list(guard.wrap(_gpt4o(max_tokens=4000)).stream("q"))
    assert [c.model for c in info.value.candidates] == ["gpt-4o-mini"]
