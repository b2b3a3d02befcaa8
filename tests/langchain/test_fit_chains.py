"""Fitting the output cap beyond a wrapped model: a guard on a whole chain, and ``fallback=``'s primary.

Each test reads the request the "provider" received (real ``ChatOpenAI`` over
respx, as in ``test_fit_output_cap.py``), or the cap a ``FakeChatModel`` was
called with. ``enforce()`` cannot fit (its handler never sees the model
object, only LangChain's serialized description of it): it refuses as before.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from test_fit_output_cap import GPT_4O_IN, GPT_4O_OUT, chat_openai, expected_cap, gpt_4o, ok_openai, sent_cap
from test_providers import mock, no_network, recorder, sent_json

from budgetguard import BudgetExceeded, BudgetGuard
from budgetguard.testing import FakeChatModel

__all__ = ["mock", "no_network"]  # fixtures, used by pytest

PROMPT = ChatPromptTemplate.from_messages([("human", "{q}")])
Q = {"q": "Hello"}
#: the cap that fits "Hello" to gpt-4o on $0.10 (test_fit_output_cap.py)
CAP_10_CENTS = 9_995


def test_a_guard_on_a_chain_fits_the_model_the_chain_is_made_of(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd="0.10", on_record=on_record)
    chain = guard.wrap(PROMPT | gpt_4o() | StrOutputParser())
    assert chain.invoke(Q) == "Hi"
    assert expected_cap(100_000_000, "Hello", GPT_4O_IN, GPT_4O_OUT) == CAP_10_CENTS
    assert sent_cap(route) == CAP_10_CENTS
    (rec,) = records  # reserved once: the chain's handler leaves the call to the model's
    assert rec.output_cap_fitted == CAP_10_CENTS


def test_the_composed_form_on_a_chain_fits_too(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    chain = PROMPT | gpt_4o() | StrOutputParser() | BudgetGuard(limit_usd="0.10")
    assert chain.invoke(Q) == "Hi"
    assert sent_cap(route) == CAP_10_CENTS


def test_models_in_parallel_bound_and_fallback_composites_are_reached(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd="0.10")
    inner = gpt_4o().bind(stop=["\n\n"]).with_fallbacks([chat_openai("gpt-4o-mini")])
    chain = guard.wrap(RunnableParallel(answer=PROMPT | inner, echo=RunnableLambda(lambda x: x["q"])))
    out = chain.invoke(Q)
    assert out["echo"] == "Hello" and out["answer"].content == "Hi"
    body = sent_json(route)
    assert body["model"] == "gpt-4o" and body["stop"] == ["\n\n"]
    assert sent_cap(route) == CAP_10_CENTS


async def test_a_chain_is_fitted_on_the_async_path(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    chain = BudgetGuard(limit_usd="0.10").wrap(PROMPT | gpt_4o(http_async_client=httpx.AsyncClient()))
    assert (await chain.ainvoke(Q)).content == "Hi"
    assert sent_cap(route) == CAP_10_CENTS


def test_a_model_hidden_in_a_function_cannot_be_reached_and_is_refused_as_before(
    mock: respx.MockRouter,
) -> None:
    route = ok_openai(mock)
    llm = gpt_4o()
    # a chain's handler knows no profile: 4,096 output tokens, $0.04096
    chain = BudgetGuard(limit_usd="0.03").wrap(RunnableLambda(lambda x: llm.invoke(x)))
    with pytest.raises(BudgetExceeded):
        chain.invoke("Hello")
    assert route.call_count == 0


def test_fit_max_tokens_false_leaves_a_chain_as_it_was(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    chain = BudgetGuard(limit_usd="0.03", fit_max_tokens=False).wrap(PROMPT | gpt_4o())
    with pytest.raises(BudgetExceeded):
        chain.invoke(Q)
    assert route.call_count == 0


def test_a_fake_model_in_a_chain_is_called_with_the_fitted_cap() -> None:
    fake = FakeChatModel(model_name="gpt-4o", output_tokens=5_000)  # no max_tokens: 4,096 reserved
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd="0.02", on_record=on_record)  # 4,096 output tokens cost $0.04096
    reply = guard.wrap(PROMPT | fake).invoke(Q)
    assert isinstance(reply, AIMessage)
    (rec,) = records
    assert rec.output_cap_fitted is not None and 256 <= rec.output_cap_fitted < 4_096
    # the fake answers with as many tokens as the cap it was sent lets it
    assert rec.usage.output_tokens == rec.output_cap_fitted
    assert reply.response_metadata["finish_reason"] == "length"
    assert rec.cost_usd <= Decimal("0.02")


def test_enforce_still_refuses_what_it_cannot_fit(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd="0.03")
    with pytest.raises(BudgetExceeded), guard.enforce():
        (PROMPT | gpt_4o()).invoke(Q)
    assert route.call_count == 0


# ---------------------------------------------------------------- fallback=: the primary is fitted last


def test_the_primary_is_fitted_when_no_fallback_fits_even_fitted(mock: respx.MockRouter) -> None:
    """gpt-4o-mini's worst case ($0.0098) and gpt-4o's do not fit $0.002; gpt-4o's least fitted
    form (256 output tokens, $0.00256) does not either; gpt-4o-mini fitted does."""
    route = ok_openai(mock)
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd="0.002", fallback=gpt_4o(), on_record=on_record)
    llm = guard.wrap(chat_openai("gpt-4o-mini"))
    assert llm.invoke("Hello").content == "Hi"
    assert route.call_count == 1
    assert sent_json(route)["model"] == "gpt-4o-mini"
    cap = expected_cap(2_000_000, "Hello", 150, 600)
    assert sent_cap(route) == cap
    (rec,) = [r for r in records if r.outcome != "refused"]  # the refusals on the way are recorded too
    assert rec.output_cap_fitted == cap


def test_the_last_fallback_is_still_fitted_before_the_primary(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd="0.10", fallback=gpt_4o())
    guard.wrap(chat_openai("gpt-4o")).invoke("Hello")
    assert route.call_count == 1 and sent_cap(route) == CAP_10_CENTS


def test_when_nothing_fits_the_refusal_tells_each_candidate(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd="0.0001", fallback=gpt_4o())
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(chat_openai("gpt-4o-mini")).invoke("Hello")
    assert route.call_count == 0
    models: list[Any] = [info.value.model, *(c.model for c in info.value.candidates)]
    assert set(models) == {"gpt-4o-mini", "gpt-4o"}


def test_a_bound_model_is_guarded_as_a_model_with_fallbacks_too(mock: respx.MockRouter) -> None:
    """``llm.bind(...)`` is a ``_ChatModelBinding`` (a RunnableBinding subclass) in langchain-core 1.x:
    ``fallback=`` and ``degrade_at=`` take it as the model it binds (they refused it as a chain)."""
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd=5, fallback=chat_openai("gpt-4o-mini"), degrade_at=0.99)
    guard.wrap(gpt_4o().bind(stop=["\n\n"])).invoke("Hello")  # $0.164 worst case fits: the primary
    assert (sent_json(route)["model"], sent_json(route)["stop"]) == ("gpt-4o", ["\n\n"])

    guard = BudgetGuard(limit_usd="0.10", fallback=chat_openai("gpt-4o-mini"), degrade_at=0.99)
    guard.wrap(gpt_4o().bind(stop=["\n\n"])).invoke("Hello")  # it does not: gpt-4o-mini serves
    assert sent_json(route)["model"] == "gpt-4o-mini" and "stop" not in sent_json(route)
    assert route.call_count == 2
