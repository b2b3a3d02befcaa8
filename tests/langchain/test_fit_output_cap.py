"""Fitting the output cap (``fit_max_tokens``): the lowered cap is in the request the provider gets.

Driven through the real ``ChatOpenAI`` and ``ChatAnthropic`` clients with HTTP
mocked by respx (the set-up of ``test_providers.py``): each test reads the
JSON body the "provider" received.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from test_providers import (  # the provider-shaped bodies and the respx set-up
    ANTHROPIC_URL,
    CUSTOM_BASE_URL,
    CUSTOM_OPENAI_URL,
    OPENAI_URL,
    SSE_HEADERS,
    anthropic_llm,
    anthropic_message,
    anthropic_sse,
    anthropic_through_respx,
    anthropic_usage,
    mock,
    no_network,
    openai_completion,
    openai_sse,
    openai_usage,
    recorder,
    sent_json,
)

from budgetguard import BudgetExceeded, BudgetGuard, ConfigError, Limit
from budgetguard.estimate import estimate_input_tokens
from budgetguard.testing import FakeChatModel

__all__ = ["anthropic_through_respx", "mock", "no_network"]  # fixtures, used by pytest

# gpt-4o: $2.50 in, $10 out per million tokens; profile max_output_tokens 16384 ($0.16384 of output)
GPT_4O_IN, GPT_4O_OUT = 2_500, 10_000  # nano-USD per token
# what a reply of 9 + 2 tokens costs: it says gpt-4o-mini served it ($0.15 in, $0.60 out per million)
SPENT = 9 * 150 + 2 * 600


def expected_cap(budget_nanos: int, text: str, in_rate: int, out_rate: int) -> int:
    """The largest output whose worst case fits: (budget - input worst case) // output rate."""
    inp = estimate_input_tokens([HumanMessage(text)])
    return (budget_nanos - inp * in_rate) // out_rate


def chat_openai(model: str = "gpt-4o", **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("http_client", httpx.Client())
    return ChatOpenAI(model=model, api_key="sk-test-not-a-real-key", max_retries=0, **kwargs)


def gpt_4o(**kwargs: Any) -> ChatOpenAI:
    return chat_openai("gpt-4o", **kwargs)


def sent_cap(route: respx.Route, i: int = -1) -> int | None:
    """The output cap in the body the provider received (ChatOpenAI sends max_completion_tokens)."""
    body = sent_json(route, i)
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    assert cap is None or isinstance(cap, int)
    return cap


def ok_openai(mock: respx.MockRouter, url: str = OPENAI_URL) -> respx.Route:
    return mock.post(url).respond(json=openai_completion({"content": "Hi"}, openai_usage(9, 2)))


# ---------------------------------------------------------------- the figure of the issue


def test_hello_to_gpt_4o_on_ten_cents_is_served_with_its_cap_lowered(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    records, on_record = recorder()
    llm = BudgetGuard(limit_usd="0.10", on_record=on_record).wrap(gpt_4o())

    assert llm.invoke("Hello").content == "Hi"

    cap = expected_cap(100_000_000, "Hello", GPT_4O_IN, GPT_4O_OUT)
    assert cap == 9_995  # 19 input tokens at $2.50/M leave $0.0999525: 9,994 output tokens at $10/M
    assert sent_cap(route) == cap
    (rec,) = records
    assert rec.output_cap_fitted == cap
    assert rec.reserved_usd == Decimal(19 * GPT_4O_IN + cap * GPT_4O_OUT) / 10**9


def test_fit_max_tokens_false_refuses_as_before(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    llm = BudgetGuard(limit_usd="0.10", fit_max_tokens=False).wrap(gpt_4o())
    with pytest.raises(BudgetExceeded):
        llm.invoke("Hello")
    assert route.call_count == 0
    assert isinstance(llm, ChatOpenAI)


def test_a_call_that_fits_is_sent_unchanged(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    records, on_record = recorder()
    BudgetGuard(limit_usd=5, on_record=on_record).wrap(gpt_4o()).invoke("Hello")
    assert sent_cap(route) is None
    assert records[0].output_cap_fitted is None


def test_the_cap_is_the_largest_that_fits_and_the_budget_reaches_its_limit_exactly(
    mock: respx.MockRouter,
) -> None:
    route = ok_openai(mock)
    # a budget a cap of exactly 1,000 tokens fills to the nano-dollar
    budget = 19 * GPT_4O_IN + 1_000 * GPT_4O_OUT
    guard = BudgetGuard(limit_usd=Decimal(budget) / 10**9)
    guard.wrap(gpt_4o()).invoke("Hello")
    assert (
        sent_json(route)[
            "max_completion_tokens" if "max_completion_tokens" in sent_json(route) else "max_tokens"
        ]
        == 1_000
    )


def test_below_min_output_tokens_the_call_is_refused(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    budget = 19 * GPT_4O_IN + 255 * GPT_4O_OUT  # affords 255 output tokens, one short of the default 256
    guard = BudgetGuard(limit_usd=Decimal(budget) / 10**9)
    with pytest.raises(BudgetExceeded) as info:
        guard.wrap(gpt_4o()).invoke("Hello")
    assert route.call_count == 0
    assert info.value.requested == Decimal(19 * GPT_4O_IN + 16_384 * GPT_4O_OUT) / 10**9  # the full ask
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (0, 0)
    # a lower floor lets it through, at 255
    BudgetGuard(limit_usd=Decimal(budget) / 10**9, min_output_tokens=100).wrap(gpt_4o()).invoke("Hello")
    assert route.call_count == 1


def test_token_limits_are_fitted_too(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limits=[Limit(tokens=1_019)])
    guard.wrap(gpt_4o()).invoke("Hello")  # 19 input tokens: 1,000 output tokens fit
    assert sent_cap(route) == 1_000


def test_a_cap_bound_to_the_call_is_lowered(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    llm = BudgetGuard(limit_usd="0.10").wrap(gpt_4o())
    llm.bind(max_tokens=50_000).invoke("Hello")
    assert sent_cap(route) == 9_995


# ---------------------------------------------------------------- every path


def test_openai_stream_sends_the_fitted_cap(mock: respx.MockRouter) -> None:
    route = mock.post(CUSTOM_OPENAI_URL).respond(
        stream=httpx.ByteStream(openai_sse(["Hi"], openai_usage(9, 2))), headers=SSE_HEADERS
    )
    records, on_record = recorder()
    llm = BudgetGuard(limit_usd="0.10", on_record=on_record).wrap(gpt_4o(base_url=CUSTOM_BASE_URL))
    assert "".join(str(c.content) for c in llm.stream("Hello")) == "Hi"
    assert sent_json(route)["stream"] is True
    assert sent_cap(route) == 9_995
    assert records[0].output_cap_fitted == 9_995


async def test_openai_ainvoke_and_astream_send_the_fitted_cap(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    stream_route = mock.post(CUSTOM_OPENAI_URL).respond(
        stream=httpx.ByteStream(openai_sse(["Hi"], openai_usage(9, 2))), headers=SSE_HEADERS
    )
    guard = BudgetGuard(limit_usd="0.10")
    await guard.wrap(gpt_4o(http_async_client=httpx.AsyncClient())).ainvoke("Hello")
    llm = guard.wrap(gpt_4o(base_url=CUSTOM_BASE_URL, http_async_client=httpx.AsyncClient()))
    async for _ in llm.astream("Hello"):
        pass
    # the first call is fitted to the whole budget, the second to what the first left
    assert sent_cap(route) == 9_995
    assert sent_json(stream_route)["stream"] is True
    # the same prompt again: its input is estimated from what the provider reported (9 tokens, plus
    # the 8-token per-call margin), not from its 19-token byte bound
    assert sent_cap(stream_route) == (100_000_000 - SPENT - (9 + 8) * GPT_4O_IN) // GPT_4O_OUT


def test_batch_fits_each_call_to_what_is_left(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    llm = BudgetGuard(limit_usd="0.10").wrap(gpt_4o())
    llm.batch(["Hello", "Hello there"], config={"max_concurrency": 1})
    # the second is fitted to what the first left: its own 25-byte input bound, less the first's cost
    assert sent_cap(route, 0) == 9_995
    assert sent_cap(route, 1) == (100_000_000 - SPENT - 25 * GPT_4O_IN) // GPT_4O_OUT


def test_isinstance_bind_tools_and_structured_output_keep_working(mock: respx.MockRouter) -> None:
    class Weather(BaseModel):
        city: str

    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "Weather", "arguments": '{"city": "Oslo"}'},
    }
    reply = openai_completion({"content": None, "tool_calls": [call]}, openai_usage(40, 8), "tool_calls")
    route = mock.post(OPENAI_URL).respond(json=reply)
    llm = BudgetGuard(limit_usd="0.10").wrap(gpt_4o())
    assert isinstance(llm, ChatOpenAI) and type(llm).__name__ == "ChatOpenAI"
    assert isinstance(llm.model_copy(), ChatOpenAI)

    msg = llm.bind_tools([Weather]).invoke("Weather in Oslo?")
    assert msg.tool_calls[0]["args"] == {"city": "Oslo"}
    assert llm.with_structured_output(Weather, method="function_calling").invoke("Oslo?") == Weather(
        city="Oslo"
    )
    for i in (0, 1):
        assert sent_json(route, i)["tools"][0]["function"]["name"] == "Weather"
        cap = sent_cap(route, i)
        assert cap is not None and 0 < cap < 9_995


def test_enforce_is_not_fitted_and_refuses_as_before(mock: respx.MockRouter) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd="0.03")  # enforce() knows no profile: 4,096 output tokens, $0.04096
    with pytest.raises(BudgetExceeded), guard.enforce():
        gpt_4o().invoke("Hello")
    assert route.call_count == 0


def test_with_fallbacks_the_primary_degrades_and_only_the_last_fallback_is_fitted(
    mock: respx.MockRouter,
) -> None:
    route = ok_openai(mock)
    guard = BudgetGuard(limit_usd="0.10", fallback=gpt_4o())
    llm = guard.wrap(chat_openai("gpt-4o-mini"))  # fits at once: served by the primary as is
    llm.invoke("Hello")
    assert sent_json(route)["model"] == "gpt-4o-mini" and sent_cap(route) is None

    guard = BudgetGuard(limit_usd="0.10", fallback=chat_openai("gpt-4o-mini"))
    guard.wrap(gpt_4o()).invoke("Hello")  # the primary does not fit: the fallback serves, unfitted
    body = sent_json(route)
    assert body["model"] == "gpt-4o-mini" and sent_cap(route) is None

    guard = BudgetGuard(limit_usd="0.10", fallback=gpt_4o())
    guard.wrap(chat_openai("gpt-4o")).invoke("Hello")  # neither fits: the last fallback is fitted
    assert sent_cap(route) == 9_995


def test_a_concurrent_spend_between_refusal_and_fit_is_refused_not_overspent(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from budgetguard.engine import flows

    route = ok_openai(mock)
    # the other worker's reservation never settles here: without a wait, the refusal comes at once
    guard = BudgetGuard(limit_usd="0.10", contention_wait=0)
    real = flows.affordable_output

    def squeeze(*args: Any) -> int | None:
        cap = real(*args)
        # another worker takes almost everything before the second reserve lands
        guard.store.reserve(
            flows.ReserveRequest("other", guard.engine.plan({}).specs, flows.Amount(99_000_000, 0, 0), 60)
        )
        return cap

    monkeypatch.setattr(flows, "affordable_output", squeeze)
    with pytest.raises(BudgetExceeded):
        guard.wrap(gpt_4o()).invoke("Hello")
    assert route.call_count == 0


# ---------------------------------------------------------------- Anthropic


def test_anthropic_invoke_and_stream_send_the_fitted_max_tokens(mock: respx.MockRouter) -> None:
    usage = anthropic_usage(9, 2)
    route = mock.post(ANTHROPIC_URL).respond(json=anthropic_message("Hi", usage))
    records, on_record = recorder()
    # claude-3-5-haiku: $0.80 in ($1.60 a cache write), $4 out per million; 8,192 output tokens: $0.033
    llm = BudgetGuard(limit_usd="0.01", on_record=on_record).wrap(anthropic_llm(max_tokens=8_192))
    llm.invoke("Hello")
    cap = records[0].output_cap_fitted
    assert cap is not None and 256 <= cap < 8_192
    assert sent_json(route)["max_tokens"] == cap
    assert records[0].reserved_usd <= Decimal("0.01")

    route.respond(stream=httpx.ByteStream(anthropic_sse(["Hi"], usage)), headers=SSE_HEADERS)
    for _ in llm.stream("Hello"):
        pass
    body = sent_json(route)
    assert body["stream"] is True and body["max_tokens"] == records[1].output_cap_fitted
    assert isinstance(llm, ChatAnthropic)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fit_max_tokens": 1}, "fit_max_tokens must be True or False"),
        ({"min_output_tokens": 0}, "min_output_tokens must be a positive int"),
        ({"min_output_tokens": 1.5}, "min_output_tokens must be a positive int"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BudgetGuard(limit_usd=1, **kwargs)


def test_an_answer_cut_at_the_fitted_cap_ends_with_finish_reason_length() -> None:
    records, on_record = recorder()
    llm = BudgetGuard(limit_usd="0.10", on_record=on_record).wrap(
        FakeChatModel(model_name="gpt-4o", max_tokens=16_384, input_tokens=19, output_tokens=12_000)
    )
    msg = llm.invoke("Hello")
    assert msg.response_metadata["finish_reason"] == "length"
    (rec,) = records
    assert rec.output_cap_fitted == rec.usage.output_tokens == 9_995
    assert rec.cost_usd == rec.reserved_usd == Decimal("0.0999975")  # within the $0.10, exactly as reserved
