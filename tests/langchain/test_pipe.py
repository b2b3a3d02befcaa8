"""The pipe form: ``llm | guard`` refuses before the provider in every call style (issue 8: 0, 16, 17)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableBinding, RunnableLambda, RunnableSequence

from budgetguard import BudgetExceeded, BudgetGuard, ConfigError, Limit
from budgetguard.adapter import compose
from budgetguard.testing import FakeChatModel


def _invoke(chain: Runnable[Any, Any], x: Any) -> Any:
    return chain.invoke(x)


def _batch(chain: Runnable[Any, Any], x: Any) -> Any:
    return chain.batch([x])


def _stream(chain: Runnable[Any, Any], x: Any) -> Any:
    return list(chain.stream(x))


def _ainvoke(chain: Runnable[Any, Any], x: Any) -> Any:
    return asyncio.run(chain.ainvoke(x))


def _abatch(chain: Runnable[Any, Any], x: Any) -> Any:
    return asyncio.run(chain.abatch([x]))


def _astream(chain: Runnable[Any, Any], x: Any) -> Any:
    async def run() -> list[Any]:
        return [c async for c in chain.astream(x)]

    return asyncio.run(run())


def _astream_events(chain: Runnable[Any, Any], x: Any) -> Any:
    async def run() -> list[Any]:
        return [e async for e in chain.astream_events(x, version="v2")]

    return asyncio.run(run())


STYLES: dict[str, Callable[[Runnable[Any, Any], Any], Any]] = {
    "invoke": _invoke,
    "ainvoke": _ainvoke,
    "batch": _batch,
    "abatch": _abatch,
    "stream": _stream,
    "astream": _astream,
    "astream_events": _astream_events,
}


# ------------------------------------------------------------------ item 0: composed with |


@pytest.mark.parametrize("style", list(STYLES))
def test_llm_pipe_guard_refuses_before_the_provider_in_every_call_style(style: str) -> None:
    guard = BudgetGuard(limits=[Limit(requests=1)])
    llm = FakeChatModel()
    chain = llm | guard
    call = STYLES[style]
    call(chain, "hi")
    with pytest.raises(BudgetExceeded):
        call(chain, "hi")
    assert llm.calls.count == 1, f"{style}: the refused call reached the provider"
    (row,) = guard.remaining().rows
    assert row.spent == 1 and row.reserved == 0


def test_thirty_invokes_on_a_tiny_budget_never_spend_past_the_cap() -> None:
    """The issue's measurement: before, 30 provider calls, 14 answers, $0.0002295 (2.3x the cap)."""
    guard = BudgetGuard(limit_usd="0.0001")
    llm = FakeChatModel(input_tokens=11, output_tokens=10, max_tokens=10)
    chain = llm | guard
    answered = 0
    for _ in range(30):
        try:
            chain.invoke("hi")
            answered += 1
        except BudgetExceeded:
            pass
    (row,) = guard.remaining().rows
    assert llm.calls.count == answered, "every call that reached the provider must have been answered"
    assert row.spent <= row.cap, f"spent ${row.spent} of a ${row.cap} cap"
    assert answered == 12 and row.spent == Decimal("0.0000918")


def test_guard_after_a_parser_guards_every_model_call_of_the_chain() -> None:
    guard = BudgetGuard(limits=[Limit(requests=3)])
    first, second = FakeChatModel(responses=["draft"]), FakeChatModel(responses=["final"])
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | first
        | StrOutputParser()
        | (lambda text: f"improve: {text}")
        | second
        | StrOutputParser()
        | guard
    )
    assert chain.invoke({"q": "hi"}) == "final"
    with pytest.raises(BudgetExceeded):
        chain.invoke({"q": "hi"})  # the first model takes request 3; the second is refused before it runs
    assert (first.calls.count, second.calls.count) == (2, 1)
    (row,) = guard.remaining().rows
    assert row.spent == 3 and row.reserved == 0


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda llm, g: llm.pipe(g, StrOutputParser()), id="pipe-method"),
        pytest.param(lambda llm, g: {"answer": llm} | g, id="dict-on-the-left"),
        pytest.param(lambda llm, g: (lambda x: x) | llm | g, id="function-then-model"),
        pytest.param(lambda llm, g: RunnableLambda(lambda x: llm.invoke(x)) | g, id="model-inside-a-lambda"),
    ],
)
def test_every_way_of_composing_refuses_before_the_provider(
    build: Callable[[FakeChatModel, BudgetGuard], Runnable[Any, Any]],
) -> None:
    guard = BudgetGuard(limits=[Limit(requests=1)])
    llm = FakeChatModel()
    chain = build(llm, guard)
    chain.invoke("hi")
    with pytest.raises(BudgetExceeded):
        chain.invoke("hi")
    assert llm.calls.count == 1


def test_composed_chain_behaves_like_the_unguarded_sequence() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    llm = FakeChatModel(responses=["one two three"])
    guard = BudgetGuard(limit_usd=5)
    plain = prompt | llm | StrOutputParser()
    guarded = prompt | llm | StrOutputParser() | guard
    x = {"q": "hi"}
    assert guarded.invoke(x) == plain.invoke(x)
    assert guarded.batch([x, x]) == plain.batch([x, x])
    assert list(guarded.stream(x)) == list(plain.stream(x))
    assert guarded.get_name() == plain.get_name() == "RunnableSequence"

    async def names(chain: Runnable[Any, Any]) -> list[tuple[str, str]]:
        events = [(e["event"], e["name"]) async for e in chain.astream_events(x, version="v2")]
        return [e for e in events if e != ("on_custom_event", "budgetguard")]  # the guard's decisions

    assert asyncio.run(names(guarded)) == asyncio.run(names(plain))
    # It still composes, and LangChain's flattening still applies around a guarded model.
    longer = guarded | (lambda s: s.upper())
    assert isinstance(longer, RunnableSequence) and longer.invoke(x) == "ONE TWO THREE"
    flat = prompt | (llm | guard) | StrOutputParser()
    assert isinstance(flat, RunnableSequence) and len(flat.steps) == 3
    assert flat.first is prompt and isinstance(flat.last, StrOutputParser)
    assert isinstance(flat.steps[1], FakeChatModel)  # llm | guard is the guarded model itself
    assert isinstance(guarded.with_config(tags=["t"]), RunnableBinding)
    assert guarded.with_config(tags=["t"]).invoke(x) == "one two three"
    assert (llm | guard).bind_tools([]).invoke("hi").content == "one two three"
    (row,) = guard.remaining().rows
    assert row.reserved == 0 and row.spent > 0


def test_composition_without_a_guard_is_langchains_own() -> None:
    a, b, c = RunnableLambda(lambda x: x + 1), RunnableLambda(lambda x: x * 2), RunnableLambda(str)
    originals = compose.originals()
    assert repr(a | b) == repr(originals["Runnable.__or__"](a, b))
    seq = a | b
    assert repr(seq | c) == repr(originals["RunnableSequence.__or__"](seq, c))
    assert (seq | (b | c)).steps == [a, b, b, c]  # flattening
    assert repr(a.pipe(b, c, name="n")) == repr(originals["Runnable.pipe"](a, b, c, name="n"))
    assert a.pipe(b, c, name="n").name == "n"
    # A guard around a runnable of its own is an ordinary step, not a pipe guard.
    own = BudgetGuard(FakeChatModel(), limit_usd=1)
    assert isinstance(a | own, RunnableSequence) and (a | own).last is own
    # Installed once: installing again wraps nothing twice.
    before = (Runnable.__dict__["__or__"], RunnableSequence.__dict__["__or__"], Runnable.__dict__["pipe"])
    compose.install(BudgetGuard)
    after = (Runnable.__dict__["__or__"], RunnableSequence.__dict__["__or__"], Runnable.__dict__["pipe"])
    assert before == after
    assert not hasattr(originals["Runnable.__or__"], "__budgetguard_original__")


def test_fallback_guard_composed_after_a_model_degrades() -> None:
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=4000, responses=["cheap"])
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=4000, responses=["dear"])
    guard = BudgetGuard(limit_usd="0.01", fallback=cheap)
    assert (primary | guard).invoke("hi").content == "cheap"
    assert primary.calls.count == 0 and cheap.calls.count == 1


# ------------------------------------------------------------------ item 17: a step of its own


def test_hand_built_sequence_stream_reserves_the_worst_case_of_model() -> None:
    """Before, a 1-nano probe: five $0.012 calls on a $0.05 budget, $0.06 spent (20% over)."""
    guard = BudgetGuard(limit_usd="0.05", model="gpt-4o-mini")
    llm = FakeChatModel(input_tokens=40_000, output_tokens=10_000)  # $0.012 a call
    chain = RunnableSequence(llm, guard)
    answered = 0
    for _ in range(8):
        try:
            list(chain.stream("hi"))
            answered += 1
        except BudgetExceeded:
            pass
    (row,) = guard.remaining().rows
    assert row.spent <= row.cap, f"spent ${row.spent} of a ${row.cap} cap"
    # worst case: 128k input + 4096 output tokens of gpt-4o-mini = $0.0216576; admitted while it fits
    assert (answered, llm.calls.count, row.spent, row.reserved) == (3, 3, Decimal("0.036"), 0)


def test_hand_built_sequence_stream_without_model_is_a_config_error() -> None:
    llm = FakeChatModel()
    chain = RunnableSequence(llm, BudgetGuard(limit_usd=1))
    with pytest.raises(ConfigError, match=r"model='<model name>'.*llm \| guard"):
        list(chain.stream("hi"))
    assert llm.calls.count == 0


def test_standalone_stream_of_a_message_reserves_what_it_costs() -> None:
    message = AIMessage(
        "hi",
        response_metadata={"model_name": "gpt-4o-mini"},
        usage_metadata={"input_tokens": 1000, "output_tokens": 1000, "total_tokens": 2000},
    )  # $0.00075
    guard = BudgetGuard(limit_usd="0.001")
    assert list(guard.stream(message)) == [message]
    with pytest.raises(BudgetExceeded):
        list(guard.stream(message))  # $0.00025 left: it does not fit, so it is not recorded
    (row,) = guard.remaining().rows
    assert row.spent == Decimal("0.00075") and row.reserved == 0


def test_hand_built_sequence_invoke_still_warns_it_cannot_stop_the_call() -> None:
    guard = BudgetGuard(limit_usd=1)
    chain = RunnableSequence(FakeChatModel(), guard)
    with pytest.warns(UserWarning, match=r"cannot stop that call.*llm \| guard"):
        chain.invoke("hi")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (FakeChatModel() | guard).invoke("hi")  # the composed form has nothing to warn about


# ------------------------------------------------------------------ item 16: stream_events v3


def _v3_guarded(form: str, guard: BudgetGuard, latency: float = 0.0) -> Any:
    llm = FakeChatModel(responses=["one two three four five six"], max_tokens=50, latency=latency)
    return guard.wrap(llm) if form == "wrap" else llm | guard


@pytest.mark.parametrize("form", ["wrap", "pipe"])
def test_abandoned_sync_v3_stream_is_settled(form: str) -> None:
    guard = BudgetGuard(limit_usd=1)
    stream = _v3_guarded(form, guard).stream_events("hi", version="v3")
    for i, _event in enumerate(stream):
        if i == 2:
            break
    (row,) = guard.remaining().rows
    reserved = row.reserved
    assert reserved > 0  # still running: it may be resumed
    del stream, _event
    gc.collect()  # the stream and its pump refer to each other: freed by the cycle collector
    (row,) = guard.remaining().rows
    assert row.reserved == 0, "an abandoned v3 stream stayed reserved until its lease expires"
    assert row.spent == reserved and row.estimated == 1  # charged as abandoned: the worst case


@pytest.mark.parametrize("form", ["wrap", "pipe"])
def test_finished_sync_v3_stream_is_settled_once(form: str) -> None:
    guard = BudgetGuard(limit_usd=1)
    stream = _v3_guarded(form, guard).stream_events("hi", version="v3")
    assert str(stream.text) == "one two three four five six"
    usage = stream.output.usage_metadata
    del stream
    gc.collect()
    (row,) = guard.remaining().rows
    assert usage is not None and row.reserved == 0 and row.estimated == 0
    assert row.spent == Decimal(usage["input_tokens"] * 15 + usage["output_tokens"] * 60) / 10**8


@pytest.mark.parametrize("form", ["wrap", "pipe"])
async def test_closed_async_v3_stream_is_charged_as_abandoned(form: str) -> None:
    guard = BudgetGuard(limit_usd=1)
    llm = _v3_guarded(form, guard, latency=0.01)  # still streaming when it is closed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # v3 is a beta API
        stream = await llm.astream_events("hi", version="v3")
    seen = 0
    async for _event in stream:
        seen += 1
        if seen == 3:
            break
    reserved = (await guard.aremaining()).rows[0].reserved
    await stream.aclose()
    (row,) = (await guard.aremaining()).rows
    assert row.reserved == 0 and row.spent == reserved and row.estimated == 1
