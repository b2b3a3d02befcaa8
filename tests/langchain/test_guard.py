"""The guard in LangChain: wrap, stream, pipe, degrade, scopes, enforce, status."""

from __future__ import annotations

import asyncio
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableSequence
from pydantic import BaseModel, ValidationError

from budgetguard import (
    BudgetExceeded,
    BudgetGuard,
    CallRecord,
    ConfigError,
    DegradeRequired,
    Limit,
    MissingScope,
    cost,
    track_usage,
)
from budgetguard.testing import FakeChatModel


class Person(BaseModel):
    name: str


def recorder() -> tuple[list[CallRecord], Any]:
    records: list[CallRecord] = []
    return records, records.append


# ------------------------------------------------------------------ wrapping


def test_wrap_keeps_the_model_interface() -> None:
    llm = FakeChatModel(tool_args={"name": "Ann"})
    guarded = BudgetGuard(limit_usd=1).wrap(llm)
    assert isinstance(guarded, FakeChatModel) and isinstance(guarded, BaseChatModel)
    assert guarded.with_structured_output(Person).invoke("who?") == Person(name="Ann")
    msg = guarded.bind_tools([Person]).invoke("who?")
    assert msg.tool_calls[0]["args"] == {"name": "Ann"}
    assert llm.calls.count == 2  # copies share the call log


def test_invoke_records_exact_cost_from_usage_metadata() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    llm = guard.wrap(
        FakeChatModel(model_name="gpt-4o", input_tokens=1000, output_tokens=200, cache_read_tokens=800)
    )
    llm.invoke("hello")
    (rec,) = records
    expected = cost(
        {
            "input_tokens": 1000,
            "output_tokens": 200,
            "total_tokens": 1200,
            "input_token_details": {"cache_read": 800},
        },
        "gpt-4o",
    )
    assert rec.cost_usd == expected == Decimal("0.0035")
    assert rec.outcome == "settled" and not rec.estimated
    (row,) = guard.remaining().rows
    assert row.spent == expected and row.reserved == 0
    assert row.remaining == Decimal(1) - expected


def test_a_refused_call_never_reaches_the_provider_on_any_path() -> None:
    llm = FakeChatModel(model_name="gpt-4o", max_tokens=1000)
    guarded = BudgetGuard(limit_usd="0.001").wrap(llm)  # worst case is $0.01+
    with pytest.raises(BudgetExceeded):
        guarded.invoke("hi")
    with pytest.raises(BudgetExceeded):
        list(guarded.stream("hi"))
    with pytest.raises(BudgetExceeded):
        guarded.batch(["a", "b"])

    async def run() -> None:
        with pytest.raises(BudgetExceeded):
            await guarded.ainvoke("hi")
        with pytest.raises(BudgetExceeded):
            async for _ in guarded.astream("hi"):
                pass
        with pytest.raises(BudgetExceeded):
            await guarded.abatch(["a", "b"])

    asyncio.run(run())
    assert llm.calls.count == 0


def test_refusal_prints_no_callback_error_lines(caplog: pytest.LogCaptureFixture) -> None:
    guarded = BudgetGuard(limit_usd="0.000001").wrap(FakeChatModel(model_name="gpt-4o"))
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            with pytest.raises(BudgetExceeded):
                guarded.invoke("hi")
        with pytest.raises(BudgetExceeded):
            asyncio.run(guarded.ainvoke("hi"))
    assert not [r for r in caplog.records if "callback" in r.getMessage()]


def test_budget_exceeded_fields_and_message() -> None:
    guard = BudgetGuard(limits=[Limit(requests=1, per="day", scope="user:{user_id}")])
    llm = guard.wrap(FakeChatModel())
    llm.invoke("hi", config={"metadata": {"user_id": "ann"}})
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("hi", config={"metadata": {"user_id": "ann"}})
    e = info.value
    assert (e.scope, e.quantity, e.window) == ("user:ann", "requests", "day")
    assert (e.spent, e.reserved, e.requested, e.remaining) == (1, 0, 1, 0)
    assert e.limit == Limit(requests=1, per="day", scope="user:{user_id}")
    assert e.resets_at is not None and e.resets_at.hour == 0 and e.resets_at.minute == 0
    msg = str(e)
    assert "\n" not in msg
    assert msg.startswith("Budget exceeded for user:ann: per-day limit 1 requests, spent 1 requests")
    assert "resets" in msg


def test_exactly_reaching_a_limit_is_allowed() -> None:
    guard = BudgetGuard(limits=[Limit(requests=3)])
    llm = guard.wrap(FakeChatModel())
    for _ in range(3):
        llm.invoke("hi")
    with pytest.raises(BudgetExceeded):
        llm.invoke("hi")
    (row,) = guard.remaining().rows
    assert (row.spent, row.remaining) == (3, 0)


# ------------------------------------------------------------------ streams


def test_stream_usage_is_summed_over_chunks() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", input_tokens=8, output_tokens=9))
    text = "".join(str(c.content) for c in llm.stream("hi"))
    assert text == "Hello! How can I help you today?"
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (8, 9)
    assert rec.cost_usd == Decimal("0.0000066") and not rec.estimated


async def test_astream_and_astream_events_are_guarded() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    llm = guard.wrap(FakeChatModel(input_tokens=8, output_tokens=9))
    chunks = [c async for c in llm.astream("hi")]
    assert chunks
    events = [e["event"] async for e in llm.astream_events("hi", version="v2")]
    assert "on_chat_model_end" in events
    assert [r.cost_usd for r in records] == [Decimal("0.0000066")] * 2


def test_abandoned_stream_is_charged_not_lost() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=100))
    stream = llm.stream("tell me a story")
    next(stream)
    stream.close()  # the consumer walks away
    (rec,) = records
    assert rec.estimated and rec.outcome == "estimated"
    assert rec.usage.output_tokens >= 100  # the unseen rest is charged at its worst case
    assert rec.cost_usd > 0
    (row,) = guard.remaining().rows
    assert row.reserved == 0 and row.spent == rec.cost_usd


def test_provider_error_before_output_releases_the_reservation() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    llm = guard.wrap(FakeChatModel(fail_with=lambda: ConnectionError("boom")))
    with pytest.raises(ConnectionError):
        llm.invoke("hi")
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (0, 0)
    assert records[0].outcome == "released"


def test_missing_usage_is_estimated_never_zero() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    guard.wrap(FakeChatModel(model_name="gpt-4o", usage_on_invoke=False)).invoke("hello there")
    guard.wrap(FakeChatModel(model_name="gpt-4o", usage_on_stream=False)).invoke("hello there")
    list(guard.wrap(FakeChatModel(model_name="gpt-4o", usage_on_stream=False)).stream("hello there"))
    assert [r.estimated for r in records] == [True, False, True]
    assert all(r.cost_usd > 0 for r in records)


def test_zero_input_for_a_non_empty_prompt_is_estimated() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=0, output_tokens=5)).invoke("x" * 300)
    (rec,) = records
    assert rec.estimated and rec.usage.input_tokens >= 100 and rec.usage.output_tokens == 5


def test_overshoot_is_recorded_in_full_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    guard = BudgetGuard(limit_usd=1, default_max_output_tokens=5)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=500))
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        llm.invoke("hi")
    (row,) = guard.remaining().rows
    assert row.spent == cost({"input_tokens": 10, "output_tokens": 500, "total_tokens": 510}, "gpt-4o")
    assert row.overshoots == 1
    assert any("more than reserved" in r.getMessage() for r in caplog.records)


def test_llm_cache_hit_costs_nothing() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=1, on_record=on_record)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10))
    set_llm_cache(InMemoryCache())
    try:
        llm.invoke("same prompt")
        llm.invoke("same prompt")
    finally:
        set_llm_cache(None)
    assert [r.outcome for r in records] == ["settled", "cache_hit"]
    assert records[1].cost_usd == 0
    assert llm.calls.count == 1


# ------------------------------------------------------------------ pipe form


def test_hand_built_pipe_invoke_records_and_warns_once() -> None:
    guard = BudgetGuard(limit_usd=1)
    chain = RunnableSequence(FakeChatModel(model_name="gpt-4o-mini", input_tokens=8, output_tokens=9), guard)
    with pytest.warns(UserWarning, match="cannot stop that call"):
        chain.invoke("hi")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain.invoke("hi")  # no second warning
    (row,) = guard.remaining().rows
    assert row.spent == Decimal("0.0000132")


def test_hand_built_pipe_refuses_later_work_once_exhausted() -> None:
    guard = BudgetGuard(limits=[Limit(requests=1)])
    llm = FakeChatModel()
    chain = RunnableSequence(llm, guard)  # not composed with |: the guard is a step after the model
    with pytest.warns(UserWarning):
        chain.invoke("hi")
    with pytest.raises(BudgetExceeded):
        chain.invoke("hi")  # the model ran (pipe cannot stop it), but the chain stops here
    assert llm.calls.count == 2
    (row,) = guard.remaining().rows
    assert row.spent == 2  # both calls recorded: nothing lost


def test_pipe_stream_checks_before_the_model_is_pulled() -> None:
    guard = BudgetGuard(limits=[Limit(requests=1)])
    llm = FakeChatModel(input_tokens=8, output_tokens=9)
    chain = llm | guard
    assert "".join(str(c.content) for c in chain.stream("hi"))
    with pytest.raises(BudgetExceeded):
        list(chain.stream("hi"))
    assert llm.calls.count == 1  # the refused stream never called the model
    rows = guard.remaining().rows
    assert rows[0].spent == 1


async def test_pipe_astream_records_usage() -> None:
    guard = BudgetGuard(limit_usd=1)
    chain = FakeChatModel(model_name="gpt-4o-mini", input_tokens=8, output_tokens=9) | guard
    assert [c async for c in chain.astream("hi")]
    (row,) = (await guard.aremaining()).rows
    assert row.spent == Decimal("0.0000066") and row.reserved == 0


# ------------------------------------------------------------------ degrade


def test_fallback_serves_when_the_primary_does_not_fit() -> None:
    records, on_record = recorder()
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=4000, tool_args={"name": "P"})
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=4000, tool_args={"name": "C"})
    guard = BudgetGuard(limit_usd="0.01", fallback=cheap, on_record=on_record)
    llm = guard.wrap(primary)  # gpt-4o worst case $0.04 > $0.01; gpt-4o-mini's fits
    assert llm.with_structured_output(Person).invoke("who?") == Person(name="C")
    assert llm.bind_tools([Person]).invoke("who?").tool_calls[0]["args"] == {"name": "C"}
    assert primary.calls.count == 0 and cheap.calls.count == 2
    assert {r.model for r in records if r.outcome != "refused"} == {"gpt-4o-mini"}
    assert {r.model for r in records if r.outcome == "refused"} == {"gpt-4o"}  # the primary's refusals
    records[:] = [r for r in records if r.outcome != "refused"]
    assert records[0].cost_usd == cost(records[0].usage.as_usage_metadata(), "gpt-4o-mini")


def test_degrade_at_switches_then_refuses_when_nothing_fits() -> None:
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=300, output_tokens=250)
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=2000, output_tokens=1500)
    guard = BudgetGuard(limit_usd="0.03", fallback=[cheap], degrade_at=0.5)
    llm = guard.wrap(primary)
    served = []
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(100):
            before = (primary.calls.count, cheap.calls.count)
            llm.invoke("q")
            served.append("primary" if primary.calls.count > before[0] else "cheap")
    assert served[0] == "primary" and served[-1] == "cheap"
    assert served == sorted(served, key=lambda s: s == "cheap")  # never back to the primary
    status = guard.remaining()
    assert status.rows[0].spent <= Decimal("0.03")
    assert isinstance(info.value, BudgetExceeded)


def test_degrade_signal_is_a_budget_exceeded_and_a_soft_cap_only() -> None:
    assert issubclass(DegradeRequired, BudgetExceeded)
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=100)
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=100_000)
    guard = BudgetGuard(limit_usd="0.0015", fallback=cheap, degrade_at=0.5)
    # the primary passes 50%, the fallback's worst case does not fit: the primary still fits the hard cap
    guard.wrap(primary).invoke("q")
    assert primary.calls.count == 1 and cheap.calls.count == 0


# ------------------------------------------------------------------ scopes and enforce


def test_per_user_quota_from_metadata_and_missing_scope() -> None:
    guard = BudgetGuard(limits=[Limit(requests=2, per="day", scope="user:{user_id}")])
    llm_raw = FakeChatModel()
    llm = guard.wrap(llm_raw)
    for user in ("ann", "bob"):
        for _ in range(2):
            llm.invoke("hi", config={"metadata": {"user_id": user}})
    with pytest.raises(BudgetExceeded):
        llm.invoke("hi", config={"metadata": {"user_id": "ann"}})
    with pytest.raises(MissingScope, match="user_id"):
        llm.invoke("hi")
    assert llm_raw.calls.count == 4
    assert guard.remaining(user_id="ann").rows[0].remaining == 0
    assert guard.remaining(user_id="cat").rows[0].remaining == 2


def test_reservation_is_all_or_nothing_across_limits() -> None:
    guard = BudgetGuard(
        limits=[
            Limit(requests=10, per="day", scope="user:{user_id}"),
            Limit(requests=1, per="month", scope="org:{org_id}"),
        ]
    )
    llm = guard.wrap(FakeChatModel())
    meta = {"metadata": {"user_id": "ann", "org_id": "acme"}}
    llm.invoke("hi", config=meta)  # type: ignore[arg-type]
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("hi", config=meta)  # type: ignore[arg-type]
    assert info.value.scope == "org:acme"
    user_row = guard.remaining(user_id="ann", org_id="acme").for_scope("user:ann")[0]
    assert (user_row.spent, user_row.reserved) == (1, 0)  # the refused call took nothing


def test_hostile_scope_values_map_to_distinct_keys() -> None:
    guard = BudgetGuard(limits=[Limit(requests=1, scope="user:{user_id}")])
    llm = guard.wrap(FakeChatModel())
    for uid in ("a:b", "a%3Ab", "{x}", "a", "a\nb", "ü"):
        llm.invoke("hi", config={"metadata": {"user_id": uid}})  # each its own budget
    with pytest.raises(MissingScope, match="empty"):
        llm.invoke("hi", config={"metadata": {"user_id": ""}})


def test_enforce_applies_without_wrapping() -> None:
    guard = BudgetGuard(limits=[Limit(requests=1, scope="user:{user_id}")])
    plain = FakeChatModel()
    with guard.enforce(user_id="ann"):
        plain.invoke("hi")
        with pytest.raises(BudgetExceeded):
            plain.invoke("hi")
    plain.invoke("hi")  # outside the block nothing is enforced
    assert plain.calls.count == 2
    assert guard.remaining(user_id="ann").rows[0].spent == 1


async def test_enforce_in_asyncio_tasks() -> None:
    guard = BudgetGuard(limits=[Limit(requests=3, scope="user:{user_id}")])
    plain = FakeChatModel()

    async def user_calls(uid: str) -> int:
        ok = 0
        with guard.enforce(user_id=uid):
            for _ in range(5):
                try:
                    await plain.ainvoke("hi")
                    ok += 1
                except BudgetExceeded:
                    pass
        return ok

    assert await asyncio.gather(user_calls("a"), user_calls("b")) == [3, 3]


def test_nested_enforce_releases_earlier_reservations_on_refusal() -> None:
    outer = BudgetGuard(limit_usd=1)
    inner = BudgetGuard(limits=[Limit(requests=0)])
    with outer.enforce(), inner.enforce(), pytest.raises(BudgetExceeded):
        FakeChatModel().invoke("hi")
    (row,) = outer.remaining().rows
    assert (row.spent, row.reserved) == (0, 0)


def test_wrapping_a_chain_guards_nested_model_calls() -> None:
    llm = FakeChatModel(model_name="gpt-4o-mini", input_tokens=8, output_tokens=9)
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    inner = prompt | llm
    chain = RunnableLambda(lambda x: inner.invoke(x)) | RunnableLambda(lambda m: m.content)
    guard = BudgetGuard(limits=[Limit(requests=2)])
    guarded = guard.wrap(chain)
    assert guarded.invoke({"q": "a"}) == "Hello! How can I help you today?"
    guarded.invoke({"q": "b"})
    with pytest.raises(BudgetExceeded):
        guarded.invoke({"q": "c"})
    assert llm.calls.count == 2


def test_same_guard_on_model_and_chain_reserves_once() -> None:
    guard = BudgetGuard(limits=[Limit(requests=5)])
    llm = guard.wrap(FakeChatModel())
    guard.wrap(RunnableLambda(lambda x: llm.invoke(x))).invoke("hi")
    assert guard.remaining().rows[0].spent == 1


def test_budgetguard_with_runnable_delegates() -> None:
    guarded = BudgetGuard(FakeChatModel(tool_args={"name": "Z"}), limit_usd=1)
    assert guarded.invoke("hi").content
    assert guarded.with_structured_output(Person).invoke("x") == Person(name="Z")
    assert "gpt-4o-mini" in repr(guarded.model_name)


# ------------------------------------------------------------------ remaining / tracking


def test_remaining_matches_enforcement() -> None:
    guard = BudgetGuard(limits=[Limit(usd="0.05", tokens=50_000, per="hour")])
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=1000, output_tokens=700))
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(100):
            llm.invoke("hello")
    usd_row = next(r for r in guard.remaining().rows if r.quantity == "usd")
    assert usd_row.remaining == info.value.remaining
    assert usd_row.spent + usd_row.reserved + usd_row.remaining == usd_row.cap
    assert usd_row.remaining < info.value.requested  # the refused estimate really did not fit
    assert guard.remaining().skipped == ()


def test_remaining_lists_limits_it_cannot_fill() -> None:
    guard = BudgetGuard(limit_usd=1, limits=[Limit(usd=1, scope="org:{org_id}")])
    status = guard.remaining()
    assert [r.scope for r in status.rows] == ["global"]
    assert len(status.skipped) == 1 and "org:{org_id}" in status.skipped[0]
    assert "org:{org_id}" in str(status)


async def test_track_usage_sync_and_async_per_model() -> None:
    from langchain_core.tracers.context import _configure_hooks

    hooks = len(_configure_hooks)
    with track_usage() as t:
        FakeChatModel(model_name="gpt-4o", input_tokens=100, output_tokens=10, cache_read_tokens=50).invoke(
            "a"
        )
    async with track_usage() as ta:
        await FakeChatModel(model_name="gpt-4o-mini", input_tokens=8, output_tokens=9).ainvoke("b")
        await FakeChatModel(
            model_name="gpt-4o-mini", input_tokens=8, output_tokens=9, reasoning_tokens=3
        ).ainvoke("c")
    assert len(_configure_hooks) == hooks  # no hook registered per entry
    assert t.total_cost == cost(
        {
            "input_tokens": 100,
            "output_tokens": 10,
            "total_tokens": 110,
            "input_token_details": {"cache_read": 50},
        },
        "gpt-4o",
    )
    assert ta.successful_requests == 2 and set(ta.by_model) == {"gpt-4o-mini"}
    assert ta.reasoning_tokens == 3
    text = str(t).splitlines()
    assert text[0] == "Tokens Used: 110"
    assert "\tPrompt Tokens: 100" in text and "\tCompletion Tokens: 10" in text
    assert "\t\tPrompt Tokens Cached: 50" in text
    assert "Successful Requests: 1" in text and text[-1].startswith("Total Cost (USD): $")


def test_track_usage_flags_unpriced_models_instead_of_zero() -> None:
    with track_usage() as t:
        FakeChatModel(model_name="my-finetune-v7").invoke("a")
    assert t.unpriced_models == ["my-finetune-v7"]
    assert "Unpriced models" in str(t)


# ------------------------------------------------------------------ concurrency


def test_threads_never_admit_more_than_fits() -> None:
    guard = BudgetGuard(limits=[Limit(requests=50)])
    llm_raw = FakeChatModel(latency=0.001)
    llm = guard.wrap(llm_raw)

    def call(_: int) -> bool:
        try:
            llm.invoke("hi")
            return True
        except BudgetExceeded:
            return False

    with ThreadPoolExecutor(16) as pool:
        admitted = sum(pool.map(call, range(200)))
    assert admitted == 50 == llm_raw.calls.count
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (50, 0)


async def test_asyncio_never_admits_more_than_fits_in_usd() -> None:
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd="0.05", on_record=on_record)
    llm_raw = FakeChatModel(model_name="gpt-4o", max_tokens=1000, output_tokens=1000, latency=0.002)
    llm = guard.wrap(llm_raw)

    async def call() -> bool:
        try:
            await llm.ainvoke("hi")
            return True
        except BudgetExceeded:
            return False

    results = await asyncio.gather(*(call() for _ in range(100)))
    assert [r.outcome for r in records].count("refused") == 100 - sum(results)
    records[:] = [r for r in records if r.outcome != "refused"]
    (row,) = guard.remaining().rows
    assert row.spent <= Decimal("0.05") and row.reserved == 0
    assert sum(results) == llm_raw.calls.count == len(records)
    # each call's worst case is ~$0.01: four fit, the fifth is sent with its cap fitted to what is left
    # once they settle (the others wait for them: contention_wait), at their actual $0.01001 each
    assert sum(results) == 5
    assert [r.output_cap_fitted for r in records].count(None) == 4
    (fitted,) = [r for r in records if r.output_cap_fitted is not None]
    assert (
        fitted.usage.output_tokens == fitted.output_cap_fitted == 992
    )  # ($0.05 - 4 x $0.01001 - $0.00004) / $10/M


# ------------------------------------------------------------------ configuration


def test_bad_configuration_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="needs a limit"):
        BudgetGuard()
    with pytest.raises(ValidationError):
        BudgetGuard(limit_usd=-1)
    with pytest.raises(ValidationError):
        BudgetGuard(limit_usd=float("nan"))
    with pytest.raises(ConfigError, match="fallback"):
        BudgetGuard(limit_usd=1, degrade_at=0.8)
    with pytest.raises(ConfigError, match="degrade_at"):
        BudgetGuard(limit_usd=1, fallback=FakeChatModel(), degrade_at=1.5)
    with pytest.raises(ConfigError, match="Price"):
        BudgetGuard(limit_usd=1, prices={"m": {"input": 1}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="store"):
        BudgetGuard(limit_usd=1, store="nosuch://x")


def test_unknown_model_is_refused_before_the_call() -> None:
    llm = FakeChatModel(model_name="my-finetune-v7")
    with pytest.raises(LookupError, match="prices="):
        BudgetGuard(limit_usd=1).wrap(llm).invoke("hi")
    assert llm.calls.count == 0
    from budgetguard import Price

    guard = BudgetGuard(limit_usd=1, prices={"my-finetune-v7": Price(input_per_mtok=1, output_per_mtok=2)})
    guard.wrap(llm).invoke("hi")
    assert guard.remaining().rows[0].spent > 0


# ------------------------------------------------------------------ agents


def _lookup_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def lookup(name: str) -> str:
        """Look a person up."""
        return f"{name} is 36"

    return lookup


def test_agent_with_a_wrapped_model_is_guarded_on_every_turn() -> None:
    from langchain.agents import create_agent

    llm = FakeChatModel(tool_args={"name": "Ada"}, responses=["Ada is 36."])
    guard = BudgetGuard(limits=[Limit(requests=10)])
    out = create_agent(guard.wrap(llm), tools=[_lookup_tool()]).invoke(
        {"messages": [("user", "age of Ada?")]}
    )
    assert out["messages"][-1].content == "Ada is 36."
    assert guard.remaining().rows[0].spent == 2 == llm.calls.count  # tool turn + answer turn


def test_a_runaway_agent_is_stopped_before_the_next_model_call() -> None:
    from langchain.agents import create_agent

    llm = FakeChatModel(tool_args={"name": "Ada"}, responses=["Ada is 36."])
    guard = BudgetGuard(limits=[Limit(requests=1)])
    agent = guard.wrap(create_agent(llm, tools=[_lookup_tool()]))  # the whole agent, not the model
    with pytest.raises(BudgetExceeded):
        agent.invoke({"messages": [("user", "age of Ada?")]})
    assert llm.calls.count == 1
