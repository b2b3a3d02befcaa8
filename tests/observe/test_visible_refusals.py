"""Refusals are visible (issue 11): on_record, one INFO line, an ended run in traces, decisions as events."""

from __future__ import annotations

import asyncio
import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit, RedisStore
from budgetguard.testing import FakeChatModel

CALLBACK_LOGGER = "langchain_core.callbacks.manager"


class Runs(BaseTracer):
    """A tracer of langchain-core's base class (as LangSmith's is): every run it opened, as it left it."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        pass

    def _start_trace(self, run: Run) -> None:
        super()._start_trace(run)
        self.opened.append(run)

    def models(self) -> list[Run]:
        return [r for r in self.opened if r.run_type == "llm"]


class Events(BaseCallbackHandler):
    """Custom events and chat-model ends, as any handler of the run hears them."""

    def __init__(self) -> None:
        self.custom: list[dict[str, Any]] = []
        self.ends: list[str] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        if name == "budgetguard":
            self.custom.append(data)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends.append("end")

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.ends.append(type(error).__name__)


def _refusing(**kw: Any) -> tuple[BudgetGuard, list[CallRecord], FakeChatModel]:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=[Limit(usd="0.000001", scope="user:{user_id}")],
        fit_max_tokens=False,
        on_record=records.append,
        **kw,
    )
    return guard, records, FakeChatModel(model_name="gpt-4o")


def test_a_refusal_reaches_on_record_and_is_logged_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    guard, records, raw = _refusing()
    llm = guard.wrap(raw)
    run_id = uuid.uuid4()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(BudgetExceeded) as info:
            llm.invoke("hi", config={"metadata": {"user_id": "alice@example.com"}, "run_id": run_id})
    assert raw.calls.count == 0  # never sent
    (rec,) = records
    assert rec.outcome == "refused" and rec.cost_usd == 0 and rec.model == "gpt-4o"
    assert rec.scopes == ("user:alice@example.com",) and rec.run_id == run_id
    assert rec.metadata == {"user_id": "alice@example.com"}
    assert rec.started_at is not None and rec.ended_at is not None and rec.started_at <= rec.ended_at
    assert rec.reason == info.value.reason()
    ours = [r for r in caplog.records if r.name == "budgetguard" and r.levelno == logging.INFO]
    assert len(ours) == 1, [r.getMessage() for r in caplog.records]
    assert "user:alice@example.com" in ours[0].getMessage() and "Budget exceeded" in ours[0].getMessage()
    assert not [r for r in caplog.records if r.name == CALLBACK_LOGGER], "LangChain logged the refusal"


@pytest.mark.parametrize("how", ["invoke", "stream", "batch"])
def test_a_refused_run_ends_with_the_refusal_as_its_error(how: str) -> None:
    guard, _, raw = _refusing()
    llm = guard.wrap(raw)
    runs, events = Runs(), Events()
    config: Any = {"metadata": {"user_id": "u1"}, "callbacks": [runs, events]}
    with pytest.raises(BudgetExceeded) as info:
        if how == "invoke":
            llm.invoke("hi", config=config)
        elif how == "stream":
            list(llm.stream("hi", config=config))
        else:
            llm.batch(["hi"], config=config)
    (run,) = runs.models()
    assert run.end_time is not None, "the refused run was left open"
    assert run.error is not None and "Budget exceeded for user:u1" in run.error
    assert events.ends == ["BudgetExceeded"]
    assert info.value.scope == "user:u1"  # the caller still gets the guard's own exception
    assert [e["decision"] for e in events.custom] == ["refused"]
    assert events.custom[0]["scope"] == "user:u1" and events.custom[0]["remaining"] == "0.000001"
    assert raw.calls.count == 0


async def test_an_async_refused_run_ends_too() -> None:
    guard, records, raw = _refusing()
    llm = guard.wrap(raw)
    for call in ("ainvoke", "astream"):
        runs = Runs()
        config: Any = {"metadata": {"user_id": "u1"}, "callbacks": [runs]}
        with pytest.raises(BudgetExceeded):
            if call == "ainvoke":
                await llm.ainvoke("hi", config=config)
            else:
                async for _ in llm.astream("hi", config=config):
                    pass
        (run,) = runs.models()
        assert run.end_time is not None and run.error is not None, call
    assert [r.outcome for r in records] == ["refused", "refused"] and raw.calls.count == 0


async def test_astream_events_shows_the_refusal_and_not_an_open_run() -> None:
    guard, _, raw = _refusing()
    llm = guard.wrap(raw)
    seen: list[tuple[str, Any]] = []
    with pytest.raises(BudgetExceeded):
        async for ev in llm.astream_events("hi", version="v2", config={"metadata": {"user_id": "u1"}}):
            seen.append((ev["event"], ev["data"]))
    kinds = [k for k, _ in seen]
    assert kinds == ["on_chat_model_start", "on_custom_event"]
    assert seen[1][1]["decision"] == "refused" and seen[1][1]["scope"] == "user:u1"


async def test_in_astream_events_a_refusal_ends_like_a_provider_error_plus_its_event() -> None:
    """langchain-core's v2 event stream has no chat-model error event, for any error: a provider's
    error shows a start and then raises. A refusal shows the same, plus the ``refused`` event."""
    failing = BudgetGuard(limit_usd=1).wrap(FakeChatModel(fail_with=lambda: RuntimeError("provider down")))
    kinds: list[str] = []
    with pytest.raises(RuntimeError):
        async for ev in failing.astream_events("hi", version="v2"):
            kinds.append(ev["event"])
    assert kinds == ["on_chat_model_start", "on_custom_event"]  # the start, and the reservation's event
    guard, _, raw = _refusing()
    kinds = []
    with pytest.raises(BudgetExceeded):
        config: Any = {"metadata": {"user_id": "u"}}
        async for ev in guard.wrap(raw).astream_events("hi", version="v2", config=config):
            kinds.append(ev["event"])
    assert kinds == ["on_chat_model_start", "on_custom_event"]


async def test_astream_events_shows_the_reservation_of_an_admitted_call() -> None:
    guard = BudgetGuard(limit_usd="1")
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=100))
    kinds, data = [], []
    async for ev in llm.astream_events("hi", version="v2"):
        kinds.append(ev["event"])
        if ev["event"] == "on_custom_event":
            data.append(ev["data"])
    assert kinds[:2] == ["on_chat_model_start", "on_custom_event"] and kinds[-1] == "on_chat_model_end"
    (reserved,) = data
    assert reserved["decision"] == "reserved" and reserved["scopes"] == ["global"]
    assert Decimal(reserved["reserved_usd"]) > 0 and reserved["reserved_tokens"] > 100  # input + 100 out


def test_a_fitted_cap_and_the_reservation_are_trace_events_inside_a_chain() -> None:
    guard = BudgetGuard(limit_usd="0.01")  # gpt-4o's 4,096-token worst case does not fit; 900 or so do
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o"))
    chain = RunnableLambda(lambda x: x) | llm
    events, runs = Events(), Runs()
    chain.invoke("hi", config={"callbacks": [events, runs]})
    decisions = [e["decision"] for e in events.custom]
    assert decisions == ["reserved", "output_cap_fitted"]
    assert 256 <= events.custom[1]["max_tokens"] < 4096
    assert all(r.end_time is not None for r in runs.opened)


def test_a_degrade_is_an_event_and_the_fallback_serves() -> None:
    records: list[CallRecord] = []
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=100)
    guard = BudgetGuard(
        limit_usd="0.05", fallback=cheap, degrade_at=0.1, on_record=records.append, fit_max_tokens=False
    )
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=1000))  # ~$0.01 > 10% of $0.05
    events, runs = Events(), Runs()
    llm.invoke("hi", config={"callbacks": [events, runs]})
    assert [e["decision"] for e in events.custom] == ["degraded", "reserved"]
    assert [r.outcome for r in records] == ["settled"] and records[0].model == "gpt-4o-mini"
    assert all(r.end_time is not None for r in runs.models())


def test_no_event_is_built_when_no_handler_listens() -> None:
    guard = BudgetGuard(limit_usd="1")
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", max_tokens=10))

    class Deaf(BaseCallbackHandler):
        ignore_custom_event = True

        def on_custom_event(self, *a: Any, **k: Any) -> None:  # pragma: no cover - must not be called
            raise AssertionError("an ignoring handler got a custom event")

    assert llm.invoke("hi", config={"callbacks": [Deaf()]}).content


def test_a_second_guard_refusing_releases_the_first_guards_reservation() -> None:
    """The refusal is raised inside the model call, so LangChain tells every handler: nothing stays held."""
    first = BudgetGuard(limits=[Limit(requests=10)])
    second = BudgetGuard(limit_usd="0.000001", fit_max_tokens=False)
    raw = FakeChatModel(model_name="gpt-4o", max_tokens=100)
    llm = second.wrap(first.wrap(raw))
    with pytest.raises(BudgetExceeded):
        llm.invoke("hi")
    (row,) = first.remaining().rows
    assert (row.spent, row.reserved) == (0, 0), "the first guard's reservation stayed open"
    assert raw.calls.count == 0


def test_a_refusal_at_the_start_under_enforce_or_on_a_chain_still_ends_the_run() -> None:
    """Refused at the start (not inside the model call): the handlers that saw the start get its error."""
    guard, records, raw = _refusing()
    # a guard on a chain, inside an outer chain traced from the outside: the tracer sees the start first
    outer = RunnableLambda(lambda x: x) | guard.wrap(RunnableLambda(lambda x: raw.invoke(x)))
    for call in (
        lambda config: outer.invoke("hi", config=config),
        lambda config: _enforced(guard, raw, config),
    ):
        runs = Runs()
        with pytest.raises(BudgetExceeded):
            call({"metadata": {"user_id": "u1"}, "callbacks": [runs]})
        (run,) = runs.models()
        assert run.end_time is not None and run.error and "Budget exceeded" in run.error
        assert all(r.end_time is not None for r in runs.opened)
    assert [r.outcome for r in records] == ["refused", "refused"] and raw.calls.count == 0


def _enforced(guard: BudgetGuard, raw: FakeChatModel, config: Any) -> None:
    with guard.enforce(user_id="u1"):
        raw.invoke("hi", config=config)


@pytest.mark.parametrize("kind", ["memory", "redis"])  # the sync handler on the async path; the async twin
async def test_an_async_refusal_at_the_start_still_ends_the_run(kind: str, redis_server: RedisServer) -> None:
    prefix = f"o-{uuid.uuid4()}:"
    store = "memory://" if kind == "memory" else RedisStore.from_url(redis_server.url, prefix=prefix)
    guard, _, raw = _refusing(store=store)
    runs = Runs()
    runs.run_inline = True  # LangChain's async dispatch runs inline handlers first, in order
    with guard.enforce(user_id="u1"), pytest.raises(BudgetExceeded):
        await raw.ainvoke("hi", config={"callbacks": [runs]})
    await asyncio.sleep(0.05)  # a sync handler on the async path ends them in a task
    (run,) = runs.models()
    assert run.end_time is not None and run.error and "Budget exceeded" in run.error
