"""Provider formats through the real LangChain clients, HTTP mocked with respx.

Every test drives ``ChatOpenAI`` / ``ChatAnthropic`` and the real ``openai`` /
``anthropic`` SDKs against provider-shaped JSON bodies and SSE streams served
by ``respx``; no hand-written ``AIMessage`` ever reaches the guard.

How the requests are intercepted (checked against the installed versions):

* ``openai`` 3.x and ``anthropic`` 2.x send through ``httpx2``, which respx
  does not patch: their default clients would bypass the mock entirely.
* ``openai`` 3.x still accepts a classic ``httpx.Client`` as ``http_client``,
  and respx intercepts that one, so ``ChatOpenAI`` gets ``http_client=httpx.Client()``.
  A custom client is also the case where ``ChatOpenAI`` leaves ``stream_usage``
  off, which the guard must turn on.
* ``anthropic`` 2.x rejects ``httpx`` objects, and ``ChatAnthropic`` has no
  ``http_client`` field. Its default ``httpx2`` client is therefore built with
  a transport that forwards each request to a classic ``httpx.Client``, and
  respx serves that client: the SDK, its SSE decoder and LangChain's conversion
  all run for real.

A socket guard makes any real connection attempt fail the test.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import httpx2
import langchain_anthropic.chat_models as anthropic_chat_models
import pytest
import respx
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, cost, track_usage

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
CUSTOM_BASE_URL = "http://llm.test/v1"
CUSTOM_OPENAI_URL = f"{CUSTOM_BASE_URL}/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"

OPENAI_SERVED = "gpt-4o-mini-2024-07-18"
ANTHROPIC_SERVED = "claude-3-5-haiku-20241022"

MTOK = Decimal(1_000_000)

# Rates in USD per million tokens, written out by hand (not read from budgetguard).
GPT_4O_MINI = {"input": Decimal("0.15"), "cache_read": Decimal("0.075"), "output": Decimal("0.60")}
HAIKU_35 = {
    "input": Decimal("0.80"),
    "output": Decimal("4"),
    "cache_read": Decimal("0.08"),
    "cache_write_5m": Decimal("1"),
    "cache_write_1h": Decimal("1.6"),
}


def usd(**tokens_at_rate: tuple[int, Decimal]) -> Decimal:
    """Sum of tokens x rate-per-million, exactly."""
    return sum((n * rate for n, rate in tokens_at_rate.values()), Decimal(0)) / MTOK


# ---------------------------------------------------------------- no network


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"test tried to open a real connection to {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# ---------------------------------------------------------------- transports


class _ForwardedBody(httpx2.SyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response.iter_raw()

    def close(self) -> None:
        self._response.close()


class HttpxBridge(httpx2.BaseTransport):
    """An ``httpx2`` transport that sends through a classic ``httpx.Client``.

    Under ``respx.mock`` that client is served by respx's routes; the body is
    streamed back unchanged, so SSE arrives as the SDK would read it.
    """

    def __init__(self) -> None:
        self._client = httpx.Client()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        forwarded = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.raw),
            content=request.read(),
        )
        response = self._client.send(forwarded, stream=True)
        return httpx2.Response(
            response.status_code,
            headers=list(response.headers.raw),
            stream=_ForwardedBody(response),
            request=request,
        )

    def close(self) -> None:
        self._client.close()


@pytest.fixture(autouse=True)
def anthropic_through_respx(monkeypatch: pytest.MonkeyPatch) -> None:
    """ChatAnthropic builds its SDK client over the bridge instead of a real socket."""

    def client(
        *, base_url: str | None, timeout: Any = None, anthropic_proxy: str | None = None
    ) -> httpx2.Client:
        return anthropic.DefaultHttpxClient(
            base_url=base_url or "https://api.anthropic.com", transport=HttpxBridge()
        )

    monkeypatch.setattr(anthropic_chat_models, "_get_default_httpx_client", client)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def openai_llm(**kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-test-not-a-real-key",
        http_client=httpx.Client(),
        max_retries=0,
        **kwargs,
    )


def anthropic_llm(**kwargs: Any) -> ChatAnthropic:
    return ChatAnthropic(
        model="claude-3-5-haiku-latest",
        api_key="sk-ant-test-not-a-real-key",
        max_retries=0,
        **kwargs,
    )


def recorder() -> tuple[list[CallRecord], Any]:
    records: list[CallRecord] = []
    return records, records.append


def spent_usd(guard: BudgetGuard) -> Decimal:
    (row,) = [r for r in guard.remaining().rows if r.quantity == "usd"]
    return Decimal(row.spent)


def sent_json(route: respx.Route, i: int = -1) -> dict[str, Any]:
    return json.loads(route.calls[i].request.content)


# ---------------------------------------------------------------- provider bodies


def openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_completion(
    message: dict[str, Any], usage: dict[str, Any], finish_reason: str = "stop"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-BbQ5rtEjXyTmZ3aW9s1ZkD2pYx7Lq",
        "object": "chat.completion",
        "created": 1748390400,
        "model": OPENAI_SERVED,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_34a54ae93c",
    }


def openai_sse(texts: list[str], usage: dict[str, Any]) -> bytes:
    """chat.completion.chunk events; the usage arrives after the finish_reason chunk."""
    base = {
        "id": "chatcmpl-BbQ6aKx2Wf0oQ4mN8rT1uVy3Zc5Hd",
        "object": "chat.completion.chunk",
        "created": 1748390460,
        "model": OPENAI_SERVED,
        "service_tier": "default",
        "system_fingerprint": "fp_34a54ae93c",
    }

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    chunks = [
        {**base, "choices": [choice({"role": "assistant", "content": "", "refusal": None})], "usage": None}
    ]
    chunks += [{**base, "choices": [choice({"content": t})], "usage": None} for t in texts]
    chunks.append({**base, "choices": [choice({}, "stop")], "usage": None})
    chunks.append({**base, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def anthropic_usage(
    input_tokens: int, output_tokens: int, cache_read: int = 0, cache_5m: int = 0, cache_1h: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def anthropic_message(text: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_SERVED,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_sse(texts: list[str], usage: dict[str, Any]) -> bytes:
    """Messages API events: usage in message_start, cumulative again in message_delta."""
    start_usage = {**usage, "output_tokens": 1}
    delta_usage = {
        k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }
    delta_usage["output_tokens"] = usage["output_tokens"]
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01Sm6ZfR8bQw3kEo7nJvTq2X",
                    "type": "message",
                    "role": "assistant",
                    "model": ANTHROPIC_SERVED,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in texts
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


# ---------------------------------------------------------------- interception itself


def test_sdks_send_through_httpx2_so_clients_must_be_routed_to_respx(mock: respx.MockRouter) -> None:
    # The premise of this module: without the explicit clients, respx would never see a request.
    assert isinstance(anthropic.DefaultHttpxClient(), httpx2.Client)
    assert not isinstance(anthropic.DefaultHttpxClient(), httpx.Client)
    route = mock.post(OPENAI_URL).respond(json=openai_completion({"content": "ok"}, openai_usage(9, 1)))
    ChatOpenAI(model="gpt-4o-mini", api_key="sk-test-not-a-real-key", http_client=httpx.Client()).invoke("hi")
    assert route.call_count == 1
    assert sent_json(route)["model"] == "gpt-4o-mini"


# ---------------------------------------------------------------- 1. OpenAI invoke


def test_openai_invoke_records_cache_and_reasoning_exactly(mock: respx.MockRouter) -> None:
    usage = openai_usage(prompt=2006, completion=300, cached=1920, reasoning=64)
    route = mock.post(OPENAI_URL).respond(json=openai_completion({"content": "Paris."}, usage))
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)

    msg = guard.wrap(openai_llm()).invoke("What is the capital of France?")

    assert msg.content == "Paris."
    assert route.call_count == 1
    (rec,) = records
    assert rec.model == OPENAI_SERVED
    assert rec.provider == "openai"
    assert rec.outcome == "settled"
    assert rec.usage.estimated is False
    assert rec.usage.input_tokens == 2006
    assert rec.usage.output_tokens == 300
    assert rec.usage.cache_read == 1920
    assert rec.usage.cache_write == 0
    assert rec.usage.reasoning == 64

    # 86 uncached input at 0.15, 1920 cached at 0.075, 300 output (reasoning included) at 0.60
    expected = usd(
        fresh=(2006 - 1920, GPT_4O_MINI["input"]),
        cached=(1920, GPT_4O_MINI["cache_read"]),
        out=(300, GPT_4O_MINI["output"]),
    )
    assert expected == Decimal("0.0003369")
    assert cost(msg.usage_metadata, OPENAI_SERVED, provider="openai") == expected
    assert rec.cost_usd == expected
    assert rec.reserved_usd >= rec.cost_usd
    assert spent_usd(guard) == expected
    assert guard.remaining().rows[0].reserved == 0


# ---------------------------------------------------------------- 2. OpenAI stream, usage after finish_reason


def test_openai_stream_custom_base_url_gets_usage_turned_on_and_recorded_exactly(
    mock: respx.MockRouter,
) -> None:
    usage = openai_usage(prompt=1200, completion=42, cached=1024)
    route = mock.post(CUSTOM_OPENAI_URL).respond(
        stream=httpx.ByteStream(openai_sse(["Once ", "upon ", "a time."], usage)), headers=SSE_HEADERS
    )
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)
    llm = openai_llm(base_url=CUSTOM_BASE_URL)
    assert not llm.stream_usage  # custom base_url + http_client: LangChain leaves it off

    guarded = guard.wrap(llm)
    assert guarded.stream_usage is True
    chunks = list(guarded.stream("Tell me a story."))

    assert "".join(str(c.content) for c in chunks) == "Once upon a time."
    assert route.call_count == 1
    body = sent_json(route)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}

    (rec,) = records
    assert rec.usage.estimated is False
    assert rec.outcome == "settled"
    assert rec.model == OPENAI_SERVED
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.cache_read) == (1200, 42, 1024)
    expected = usd(
        fresh=(1200 - 1024, GPT_4O_MINI["input"]),
        cached=(1024, GPT_4O_MINI["cache_read"]),
        out=(42, GPT_4O_MINI["output"]),
    )
    assert expected == Decimal("0.0001284")
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.usage_metadata["input_tokens"] == 1200
    assert cost(merged.usage_metadata, OPENAI_SERVED) == expected
    assert rec.cost_usd == expected
    assert spent_usd(guard) == expected


def test_openai_stream_without_the_guard_sends_no_stream_options(mock: respx.MockRouter) -> None:
    # The control for the test above: the switch really is the guard's doing.
    route = mock.post(CUSTOM_OPENAI_URL).respond(
        stream=httpx.ByteStream(openai_sse(["hi"], openai_usage(5, 1))), headers=SSE_HEADERS
    )
    list(openai_llm(base_url=CUSTOM_BASE_URL).stream("hi"))
    assert route.call_count == 1
    assert "stream_options" not in sent_json(route)


# ---------------------------------------------------------------- 3. Anthropic invoke with cache


@pytest.mark.parametrize(
    ("cache_5m", "cache_1h", "expected"),
    [
        # 21 input at 0.80, 3000 cache reads at 0.08, 1500 5m writes at 1.00, 120 output at 4
        (1500, 0, Decimal("0.0022368")),
        # the same with 1000 of the writes at the 1h rate (1.60)
        (500, 1000, Decimal("0.0028368")),
    ],
    ids=["5m-writes", "5m-and-1h-writes"],
)
def test_anthropic_invoke_counts_cache_reads_and_writes_as_input(
    mock: respx.MockRouter, cache_5m: int, cache_1h: int, expected: Decimal
) -> None:
    usage = anthropic_usage(21, 120, cache_read=3000, cache_5m=cache_5m, cache_1h=cache_1h)
    route = mock.post(ANTHROPIC_URL).respond(json=anthropic_message("Bonjour !", usage))
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)

    msg = guard.wrap(anthropic_llm()).invoke("Say hello in French.")

    assert msg.content == "Bonjour !"
    assert route.call_count == 1
    assert sent_json(route)["model"] == "claude-3-5-haiku-latest"
    (rec,) = records
    assert rec.provider == "anthropic"
    assert rec.model == ANTHROPIC_SERVED
    assert rec.outcome == "settled"
    assert rec.usage.estimated is False
    assert rec.usage.input_tokens == 21 + 3000 + 1500  # LangChain: input includes cache reads and writes
    assert rec.usage.output_tokens == 120
    assert rec.usage.cache_read == 3000
    assert rec.usage.cache_write == 1500
    assert rec.usage.cache_write_1h == cache_1h

    hand = usd(
        fresh=(21, HAIKU_35["input"]),
        read=(3000, HAIKU_35["cache_read"]),
        w5=(cache_5m, HAIKU_35["cache_write_5m"]),
        w1=(cache_1h, HAIKU_35["cache_write_1h"]),
        out=(120, HAIKU_35["output"]),
    )
    assert hand == expected
    assert cost(msg.usage_metadata, ANTHROPIC_SERVED, provider="anthropic") == expected
    assert rec.cost_usd == expected
    assert spent_usd(guard) == expected


# ---------------------------------------------------------------- 4. Anthropic stream with cache


def test_anthropic_stream_with_cache_records_exact_cost(mock: respx.MockRouter) -> None:
    usage = anthropic_usage(14, 57, cache_read=2048, cache_5m=1024)
    route = mock.post(ANTHROPIC_URL).respond(
        stream=httpx.ByteStream(anthropic_sse(["The ", "answer ", "is 42."], usage)), headers=SSE_HEADERS
    )
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)

    chunks = list(guard.wrap(anthropic_llm()).stream("What is the answer?"))

    assert "".join(str(c.content) for c in chunks) == "The answer is 42."
    assert route.call_count == 1
    assert sent_json(route)["stream"] is True
    (rec,) = records
    assert rec.usage.estimated is False
    assert rec.outcome == "settled"
    assert rec.model == ANTHROPIC_SERVED
    assert rec.usage.input_tokens == 14 + 2048 + 1024
    assert rec.usage.output_tokens == 57
    assert (rec.usage.cache_read, rec.usage.cache_write) == (2048, 1024)
    expected = usd(
        fresh=(14, HAIKU_35["input"]),
        read=(2048, HAIKU_35["cache_read"]),
        w5=(1024, HAIKU_35["cache_write_5m"]),
        out=(57, HAIKU_35["output"]),
    )
    assert expected == Decimal("0.00142704")
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert cost(merged.usage_metadata, ANTHROPIC_SERVED, provider="anthropic") == expected
    assert rec.cost_usd == expected
    assert spent_usd(guard) == expected


# ---------------------------------------------------------------- 5. refused calls never leave


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_refused_openai_call_never_reaches_the_provider(mock: respx.MockRouter, mode: str) -> None:
    route = mock.post(OPENAI_URL).respond(json=openai_completion({"content": "x"}, openai_usage(10, 1)))
    stream_route = mock.post(CUSTOM_OPENAI_URL).respond(
        stream=httpx.ByteStream(openai_sse(["x"], openai_usage(10, 1))), headers=SSE_HEADERS
    )
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd="0.000001", on_record=on_record)

    if mode == "invoke":
        llm = guard.wrap(openai_llm())
        with pytest.raises(BudgetExceeded) as info:
            llm.invoke("hello")
    else:
        llm = guard.wrap(openai_llm(base_url=CUSTOM_BASE_URL))
        with pytest.raises(BudgetExceeded) as info:
            for _ in llm.stream("hello"):
                pass

    assert route.call_count == 0
    assert stream_route.call_count == 0
    assert len(mock.calls) == 0
    assert info.value.quantity == "usd"
    assert [(r.outcome, r.cost_usd) for r in records] == [("refused", 0)]  # recorded, charged nothing
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (0, 0)


# ---------------------------------------------------------------- 6. track_usage


def test_track_usage_sums_openai_and_anthropic_calls(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_URL).respond(
        json=openai_completion({"content": "Paris."}, openai_usage(2006, 300, cached=1920, reasoning=64))
    )
    mock.post(ANTHROPIC_URL).respond(
        json=anthropic_message("Bonjour !", anthropic_usage(21, 120, cache_read=3000, cache_5m=1500))
    )
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)

    with track_usage() as tracker:
        guard.wrap(openai_llm()).invoke("Capital of France?")
        guard.wrap(anthropic_llm()).invoke("Say hello in French.")

    openai_cost, anthropic_cost = Decimal("0.0003369"), Decimal("0.0022368")
    total_cost = Decimal("0.0025737")
    assert openai_cost + anthropic_cost == total_cost
    assert tracker.successful_requests == 2
    assert tracker.prompt_tokens == 2006 + 4521 == 6527
    assert tracker.completion_tokens == 300 + 120 == 420
    assert tracker.total_tokens == 6947
    assert tracker.cached_tokens == 1920 + 3000
    assert tracker.cache_write_tokens == 1500
    assert tracker.reasoning_tokens == 64
    assert tracker.total_cost == total_cost
    assert set(tracker.by_model) == {OPENAI_SERVED, ANTHROPIC_SERVED}
    assert tracker.by_model[OPENAI_SERVED].cost_usd == openai_cost
    assert tracker.by_model[ANTHROPIC_SERVED].cost_usd == anthropic_cost
    assert [r.cost_usd for r in records] == [openai_cost, anthropic_cost]
    assert spent_usd(guard) == total_cost

    assert str(tracker).splitlines() == [
        "Tokens Used: 6947",
        "\tPrompt Tokens: 6527",
        "\t\tPrompt Tokens Cached: 4920",
        "\t\tPrompt Tokens Cache Write: 1500",
        "\tCompletion Tokens: 420",
        "\t\tReasoning Tokens: 64",
        "Successful Requests: 2",
        "Total Cost (USD): $0.0025737",
    ]


# ---------------------------------------------------------------- 7. structured output


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_through_the_guard_with_a_tool_call(mock: respx.MockRouter) -> None:
    tool_call = {
        "content": None,
        "tool_calls": [
            {
                "id": "call_Qm3v8XkP2sLr5TyN9wBzA1cD",
                "type": "function",
                "function": {"name": "Person", "arguments": '{"name":"Ada Lovelace","age":36}'},
            }
        ],
    }
    route = mock.post(OPENAI_URL).respond(
        json=openai_completion(tool_call, openai_usage(85, 12), finish_reason="tool_calls")
    )
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)

    structured = guard.wrap(openai_llm()).with_structured_output(Person, method="function_calling")
    person = structured.invoke("Ada Lovelace died at 36. Extract the person.")

    assert person == Person(name="Ada Lovelace", age=36)
    assert route.call_count == 1
    body = sent_json(route)
    assert [t["function"]["name"] for t in body["tools"]] == ["Person"]
    assert body["tool_choice"]["function"]["name"] == "Person"
    (rec,) = records
    assert rec.usage.estimated is False
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (85, 12)
    expected = usd(inp=(85, GPT_4O_MINI["input"]), out=(12, GPT_4O_MINI["output"]))
    assert expected == Decimal("0.00001995")
    assert rec.cost_usd == expected
    assert spent_usd(guard) == expected


def test_structured_output_default_json_schema_through_the_guard(mock: respx.MockRouter) -> None:
    # LangChain's default method for gpt-4o-mini: response_format + the SDK's parse path.
    content = {"content": '{"name":"Grace Hopper","age":85}'}
    route = mock.post(OPENAI_URL).respond(json=openai_completion(content, openai_usage(90, 11)))
    records, on_record = recorder()
    guard = BudgetGuard(limit_usd=5, on_record=on_record)

    person = guard.wrap(openai_llm()).with_structured_output(Person).invoke("Grace Hopper, 85.")

    assert person == Person(name="Grace Hopper", age=85)
    assert route.call_count == 1
    assert sent_json(route)["response_format"]["type"] == "json_schema"
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (90, 11)
    expected = usd(inp=(90, GPT_4O_MINI["input"]), out=(11, GPT_4O_MINI["output"]))
    assert rec.cost_usd == expected == Decimal("0.0000201")
    assert spent_usd(guard) == expected
