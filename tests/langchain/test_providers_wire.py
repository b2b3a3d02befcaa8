"""Gemini, Ollama, Mistral and Azure through their real LangChain clients, against local servers.

Each test drives the real integration (``langchain-google-genai`` over the
``google-genai`` SDK, ``langchain-ollama`` over ``ollama``, ``langchain-mistralai``
over ``httpx``, ``AzureChatOpenAI`` over ``openai``) against a server on
127.0.0.1 that answers in the provider's own wire format (``tests/wire_server.py``):
Gemini's ``generateContent`` JSON and ``streamGenerateContent`` SSE, Ollama's
``/api/chat`` NDJSON, Mistral's chat completions JSON and SSE, Azure's
deployment URL. Nothing reaches budgetguard that the client did not parse.
A socket guard fails any connection that is not to loopback.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_mistralai import ChatMistralAI
from langchain_ollama import ChatOllama
from langchain_openai import AzureChatOpenAI
from wire_server import WireServer, ndjson, sse, wire_server

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Price, UnknownModelPrice
from budgetguard.engine import flows

MTOK = Decimal(1_000_000)

# Rates in USD per million tokens, written out by hand (not read from budgetguard).
GEMINI_25_FLASH = {"input": Decimal("0.30"), "audio": Decimal("1.00"), "output": Decimal("2.50")}
MISTRAL_LARGE_2512 = {"input": Decimal("0.5"), "cache_read": Decimal("0.05"), "output": Decimal("1.5")}
MISTRAL_LARGE_LATEST = {"input": Decimal("2"), "output": Decimal("6")}  # genai-prices' "mistral-large"
AZURE_GPT_4O = {"input": Decimal("2.5"), "output": Decimal("10")}


def usd(*tokens_at_rate: tuple[int, Decimal]) -> Decimal:
    return sum((n * rate for n, rate in tokens_at_rate), Decimal(0)) / MTOK


_real_connect = socket.socket.connect


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: socket.socket, address: Any) -> Any:
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")):
            raise AssertionError(f"test tried to open a real connection to {address!r}")
        return _real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.delenv("MISTRAL_BASE_URL", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    flows._unpriced_served.clear()
    yield
    flows._unpriced_served.clear()


@pytest.fixture
def server() -> Iterator[WireServer]:
    with wire_server() as s:
        yield s


def recorded(**kwargs: Any) -> tuple[BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    return BudgetGuard(on_record=records.append, **kwargs), records


def spent_usd(guard: BudgetGuard) -> Decimal:
    (row,) = [r for r in guard.remaining().rows if r.quantity == "usd"]
    return Decimal(row.spent)


# ---------------------------------------------------------------- Gemini

GEMINI_GENERATE = "/v1/models/gemini-2.5-flash:generateContent"
GEMINI_STREAM = "/v1/models/gemini-2.5-flash:streamGenerateContent"


def gemini_usage(text: int, audio: int, output: int) -> dict[str, Any]:
    details = [{"modality": "TEXT", "tokenCount": text}]
    if audio:
        details.append({"modality": "AUDIO", "tokenCount": audio})
    return {
        "promptTokenCount": text + audio,
        "candidatesTokenCount": output,
        "totalTokenCount": text + audio + output,
        "promptTokensDetails": details,
    }


def gemini_response(text: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "Rk9PQkFSQkFa",
    }


def gemini(server: WireServer, model: str = "gemini-2.5-flash") -> ChatGoogleGenerativeAI:
    return ChatGoogleGenerativeAI(model=model, google_api_key="test-not-a-real-key", base_url=server.url)


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_gemini_models_prefix_is_priced_as_the_bare_name(server: WireServer, mode: str) -> None:
    # Before: UnknownModelPrice for 'models/gemini-2.5-flash', raised before the call.
    server.json("POST", GEMINI_GENERATE, gemini_response("Hi!", gemini_usage(1000, 0, 10)))
    server.route(
        "POST",
        GEMINI_STREAM,
        sse(
            [
                {
                    **gemini_response("Hi", gemini_usage(1000, 0, 4)),
                    "candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}],
                },
                gemini_response("!", gemini_usage(1000, 0, 10)),
            ]
        ),
    )
    guard, records = recorded(limit_usd=5)
    llm = guard.wrap(gemini(server, "models/gemini-2.5-flash"))

    if mode == "invoke":
        assert llm.invoke("Say hi.").content == "Hi!"
    else:
        assert "".join(str(c.content) for c in llm.stream("Say hi.")) == "Hi!"

    assert [s.path.split("?")[0] for s in server.seen] == [
        GEMINI_GENERATE if mode == "invoke" else GEMINI_STREAM
    ]
    (rec,) = records
    assert rec.model == "gemini-2.5-flash"
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.estimated) == (1000, 10, False)
    expected = usd((1000, GEMINI_25_FLASH["input"]), (10, GEMINI_25_FLASH["output"]))
    assert rec.cost_usd == expected == Decimal("0.000325")
    assert spent_usd(guard) == expected


AUDIO_PROMPT = [
    (
        "human",
        [
            {"type": "text", "text": "Transcribe this."},
            {
                "type": "audio",
                "base64": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=",
                "mime_type": "audio/wav",
            },
        ],
    )
]


def test_gemini_audio_input_is_charged_at_the_audio_rate_and_flagged(server: WireServer) -> None:
    # The server says 900 of the 1000 prompt tokens were audio, but langchain-google-genai keeps
    # only promptTokenCount: the split never reaches the guard, so all 1000 are charged as audio.
    server.json("POST", GEMINI_GENERATE, gemini_response("Hello there.", gemini_usage(100, 900, 10)))
    guard, records = recorded(limit_usd=5)

    msg = guard.wrap(gemini(server)).invoke(AUDIO_PROMPT)

    sent = server.seen[0].json()["contents"][0]["parts"]
    assert sent[1]["inlineData"]["data"] == AUDIO_PROMPT[0][1][1]["base64"]
    assert msg.usage_metadata is not None
    assert "input_token_details" not in msg.usage_metadata or not msg.usage_metadata[
        "input_token_details"
    ].get("audio")
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.input_audio, rec.usage.output_tokens) == (1000, 1000, 10)
    assert rec.usage.estimated is True
    assert rec.outcome == "estimated"
    text_priced = usd((1000, GEMINI_25_FLASH["input"]), (10, GEMINI_25_FLASH["output"]))
    exact = usd(
        (100, GEMINI_25_FLASH["input"]), (900, GEMINI_25_FLASH["audio"]), (10, GEMINI_25_FLASH["output"])
    )
    all_audio = usd((1000, GEMINI_25_FLASH["audio"]), (10, GEMINI_25_FLASH["output"]))
    assert (text_priced, exact, all_audio) == (Decimal("0.000325"), Decimal("0.000955"), Decimal("0.001025"))
    assert rec.cost_usd == all_audio >= exact  # before: 0.000325, below what Google bills
    assert spent_usd(guard) == all_audio


def test_gemini_text_only_prompt_stays_exact(server: WireServer) -> None:
    server.json("POST", GEMINI_GENERATE, gemini_response("Hi!", gemini_usage(1000, 0, 10)))
    guard, records = recorded(limit_usd=5)
    guard.wrap(gemini(server)).invoke("Say hi.")
    (rec,) = records
    assert (rec.usage.input_audio, rec.usage.estimated) == (0, False)
    assert rec.cost_usd == Decimal("0.000325")


# ---------------------------------------------------------------- Ollama


def ollama_stream(model: str, eval_count: int, prompt_eval_count: int | None = None) -> Any:
    final: dict[str, Any] = {
        "model": model,
        "created_at": "2025-07-08T19:33:57.1Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 9823256129,
        "load_duration": 28036792,
        "eval_count": eval_count,
        "eval_duration": 9816383241,
    }
    if prompt_eval_count is not None:
        final["prompt_eval_count"] = prompt_eval_count
        final["prompt_eval_duration"] = 40171834
    return ndjson(
        [
            {
                "model": model,
                "created_at": "2025-07-08T19:33:55.8Z",
                "message": {"role": "assistant", "content": "", "thinking": "Count the r's: three."},
                "done": False,
            },
            {
                "model": model,
                "created_at": "2025-07-08T19:33:56.9Z",
                "message": {"role": "assistant", "content": "Three."},
                "done": False,
            },
            final,
        ]
    )


def ollama(server: WireServer, model: str = "deepseek-r1:8b", **kwargs: Any) -> ChatOllama:
    return ChatOllama(model=model, base_url=server.url, **kwargs)


LOCAL_FREE = {"deepseek-r1:8b": Price(input_per_mtok=0, output_per_mtok=0)}
LOCAL_PRICED = {"deepseek-r1:8b": Price(input_per_mtok=1, output_per_mtok=1)}  # $1 per million, either way


def test_ollama_thinking_model_without_prompt_eval_count_keeps_eval_count(server: WireServer) -> None:
    # Before: usage read as missing, output charged as 1 token (the visible text, estimated).
    server.route("POST", "/api/chat", ollama_stream("deepseek-r1:8b", eval_count=300))
    guard, records = recorded(limit_tokens=100_000, limit_usd=5, prices=LOCAL_PRICED)

    msg = guard.wrap(ollama(server, reasoning=True)).invoke("How many r's in strawberry?")

    assert msg.content == "Three."
    assert server.seen[0].json()["think"] is True
    (rec,) = records
    assert rec.usage.output_tokens == 300
    assert rec.usage.input_tokens > 0  # not reported: the prompt's estimate
    assert rec.usage.estimated is True
    assert rec.cost_usd == usd((rec.usage.input_tokens, Decimal(1)), (300, Decimal(1)))


def test_ollama_reported_counts_are_exact(server: WireServer) -> None:
    server.route("POST", "/api/chat", ollama_stream("deepseek-r1:8b", eval_count=300, prompt_eval_count=10))
    guard, records = recorded(limit_usd=5, prices=LOCAL_PRICED)
    guard.wrap(ollama(server)).invoke("How many r's in strawberry?")
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.estimated) == (10, 300, False)
    assert rec.cost_usd == Decimal("0.00031")


@pytest.mark.parametrize("where", ["configured", "per-call options"])
def test_ollama_num_predict_caps_the_reservation(server: WireServer, where: str) -> None:
    # Before: 4,096 output tokens were reserved whatever num_predict said, so a 300-token budget
    # refused a call capped at 256 tokens. The prompt "hi" is estimated at 8 + 6 + 2 = 16 tokens.
    server.route("POST", "/api/chat", ollama_stream("deepseek-r1:8b", eval_count=120, prompt_eval_count=10))
    guard, records = recorded(limit_tokens=300)
    if where == "configured":
        guard.wrap(ollama(server, num_predict=256)).invoke("hi")
    else:
        guard.wrap(ollama(server)).invoke("hi", options={"num_predict": 256})

    assert server.seen[0].json()["options"]["num_predict"] == 256
    (rec,) = records
    assert rec.usage.total_tokens == 130
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (130, 0)


def test_ollama_without_num_predict_still_reserves_the_default(server: WireServer) -> None:
    server.route("POST", "/api/chat", ollama_stream("deepseek-r1:8b", eval_count=120, prompt_eval_count=10))
    guard, _records = recorded(limit_tokens=300, fit_max_tokens=False)
    with pytest.raises(BudgetExceeded):
        guard.wrap(ollama(server)).invoke("hi")
    assert server.seen == []


def test_ollama_gets_its_num_predict_fitted_to_a_tokens_budget(server: WireServer) -> None:
    server.route("POST", "/api/chat", ollama_stream("deepseek-r1:8b", eval_count=120, prompt_eval_count=10))
    guard, records = recorded(limit_tokens=300)
    guard.wrap(ollama(server)).invoke("hi")
    # 16 input tokens reserved ("hi" plus framing): 284 of the 300 are left for the output
    assert records[0].output_cap_fitted == 284
    assert server.seen[0].json()["options"]["num_predict"] == 284


def test_ollama_local_model_needs_no_price_under_a_tokens_only_budget(server: WireServer) -> None:
    # Before: deepseek-r1:8b was priced at the hosted DeepSeek API's rates; an unknown local
    # model raised UnknownModelPrice even though no USD limit applied.
    server.route("POST", "/api/chat", ollama_stream("my-finetune:3b", eval_count=40, prompt_eval_count=12))
    guard, records = recorded(limit_tokens=10_000)

    guard.wrap(ollama(server, "deepseek-r1:8b")).invoke("hi")
    guard.wrap(ollama(server, "my-finetune:3b")).invoke("hi")

    assert [r.model for r in records] == ["deepseek-r1:8b", "my-finetune:3b"]
    assert [r.cost_usd for r in records] == [0, 0]
    assert [r.usage.total_tokens for r in records] == [52, 52]
    (row,) = guard.remaining().rows
    assert row.spent == 104


def test_ollama_local_model_under_a_usd_limit_asks_for_a_price(server: WireServer) -> None:
    server.route("POST", "/api/chat", ollama_stream("deepseek-r1:8b", eval_count=40, prompt_eval_count=12))
    guard, _records = recorded(limit_usd=1)

    with pytest.raises(UnknownModelPrice) as info:
        guard.wrap(ollama(server)).invoke("hi")

    assert server.seen == []  # refused before the call
    assert "local model" in str(info.value)
    assert "prices={'deepseek-r1:8b'" in str(info.value)
    assert info.value.provider == "ollama"

    free, free_records = recorded(limit_usd=1, prices=LOCAL_FREE)
    free.wrap(ollama(server)).invoke("hi")
    assert [r.cost_usd for r in free_records] == [0]


# ---------------------------------------------------------------- Mistral


def mistral_usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def mistral_completion(usage: dict[str, Any], served: str = "mistral-large-2512") -> dict[str, Any]:
    return {
        "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
        "object": "chat.completion",
        "created": 1765000000,
        "model": served,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "tool_calls": None, "prefix": False},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def mistral_sse(usage: dict[str, Any], served: str = "mistral-large-2512") -> Any:
    base = {"id": "cmpl-0b5b2d8d7b3e4f4f9a3c", "object": "chat.completion.chunk", "created": 1765000001}
    return sse(
        [
            {
                **base,
                "model": served,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            },
            {
                **base,
                "model": served,
                "choices": [{"index": 0, "delta": {"content": "Paris."}, "finish_reason": None}],
            },
            {
                **base,
                "model": served,
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                "usage": usage,
            },
        ],
        done=True,
    )


def mistral(server: WireServer, model: str) -> ChatMistralAI:
    return ChatMistralAI(
        model=model, api_key="test-not-a-real-key", base_url=f"{server.url}/v1", max_retries=0
    )


def test_mistral_invoke_charges_cache_reads_at_the_cache_rate(server: WireServer) -> None:
    # Before: 0.000168, every prompt token at the full input rate.
    server.json("POST", "/v1/chat/completions", mistral_completion(mistral_usage(300, 12, cached=270)))
    guard, records = recorded(limit_usd=5)

    msg = guard.wrap(mistral(server, "mistral-large-2512")).invoke("Capital of France?")

    assert msg.content == "Paris."
    assert msg.usage_metadata is not None and "input_token_details" not in msg.usage_metadata
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.cache_read, rec.usage.output_tokens) == (300, 270, 12)
    assert rec.usage.estimated is False
    full = usd((300, MISTRAL_LARGE_2512["input"]), (12, MISTRAL_LARGE_2512["output"]))
    expected = usd(
        (30, MISTRAL_LARGE_2512["input"]),
        (270, MISTRAL_LARGE_2512["cache_read"]),
        (12, MISTRAL_LARGE_2512["output"]),
    )
    assert (full, expected) == (Decimal("0.000168"), Decimal("0.0000465"))
    assert rec.cost_usd == expected
    assert spent_usd(guard) == expected


def test_mistral_alias_is_priced_the_same_on_invoke_and_stream(server: WireServer) -> None:
    # Before: invoke priced the alias (0.000672), stream the served mistral-large-2512 (0.000168).
    # ChatMistralAI names the served model on streams only, so both price the requested name.
    usage = mistral_usage(300, 12, cached=0)
    server.json("POST", "/v1/chat/completions", mistral_completion(usage))
    guard, records = recorded(limit_usd=5)
    guard.wrap(mistral(server, "mistral-large-latest")).invoke("Capital of France?")
    server.route("POST", "/v1/chat/completions", mistral_sse(usage))
    chunks = list(guard.wrap(mistral(server, "mistral-large-latest")).stream("Capital of France?"))

    assert any(c.response_metadata.get("model_name") == "mistral-large-2512" for c in chunks)
    assert [s.json().get("stream", False) for s in server.seen] == [False, True]
    expected = usd((300, MISTRAL_LARGE_LATEST["input"]), (12, MISTRAL_LARGE_LATEST["output"]))
    assert expected == Decimal("0.000672")
    assert [r.model for r in records] == ["mistral-large-latest", "mistral-large-latest"]
    assert [r.cost_usd for r in records] == [expected, expected]


# ---------------------------------------------------------------- Azure

AZURE_PATH = "/openai/deployments/my-deploy/chat/completions"


def azure_completion(served: str = "gpt-4o-2024-11-20") -> dict[str, Any]:
    return {
        "id": "chatcmpl-AzUr3D3pl0ym3nt",
        "object": "chat.completion",
        "created": 1748390400,
        "model": served,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "refusal": None},
                "finish_reason": "stop",
                "content_filter_results": {},
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        "prompt_filter_results": [],
        "system_fingerprint": "fp_ee1d74bde0",
    }


def azure(server: WireServer, **kwargs: Any) -> AzureChatOpenAI:
    return AzureChatOpenAI(
        azure_deployment="my-deploy",
        azure_endpoint=server.url,
        api_version="2024-10-21",
        api_key="test-not-a-real-key",
        http_client=httpx.Client(),
        max_retries=0,
        **kwargs,
    )


def test_azure_deployment_without_a_model_says_how_to_name_it(server: WireServer) -> None:
    server.json("POST", AZURE_PATH, azure_completion())
    guard, _records = recorded(limit_usd=5)

    with pytest.raises(UnknownModelPrice) as info:
        guard.wrap(azure(server)).invoke("Capital of France?")

    assert server.seen == []
    assert "AzureChatOpenAI(azure_deployment='my-deploy', model='gpt-4o')" in str(info.value)


def test_azure_deployment_with_its_base_model_is_priced(server: WireServer) -> None:
    server.json("POST", AZURE_PATH, azure_completion())
    guard, records = recorded(limit_usd=5)

    guard.wrap(azure(server, model="gpt-4o")).invoke("Capital of France?")

    assert server.seen[0].path.startswith(AZURE_PATH)
    (rec,) = records
    assert (rec.model, rec.provider) == ("gpt-4o-2024-11-20", "azure")
    assert (
        rec.cost_usd == usd((100, AZURE_GPT_4O["input"]), (10, AZURE_GPT_4O["output"])) == Decimal("0.00035")
    )


def test_served_model_without_a_price_is_warned_once_per_model(
    server: WireServer, caplog: pytest.LogCaptureFixture
) -> None:
    # AzureChatOpenAI appends model_version to the served name: 'gpt-4o-2024-11-20-1120' has no price.
    server.json("POST", AZURE_PATH, azure_completion())
    guard, records = recorded(limit_usd=5)
    llm = guard.wrap(azure(server, model="gpt-4o", model_version="1120"))

    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        for _ in range(3):
            llm.invoke("Capital of France?")

    warned = [r.getMessage() for r in caplog.records if "has no price" in r.getMessage()]
    assert warned == [
        "budgetguard: served model 'gpt-4o-2024-11-20-1120' has no price; charged at 'gpt-4o''s rates"
    ]
    assert [r.cost_usd for r in records] == [Decimal("0.00035")] * 3
