"""Usage details the integrations drop, with the real packages against the local wire server.

Mistral: langchain-mistralai's streamed chunks keep totals only; the guard
keeps the raw usage of its streams, sync and async (``adapter/rawusage.py``), so
their cache reads are priced at the cache-read rate, as invoke's are. Gemini: langchain-google-genai
passes no per-modality counts on anywhere, so audio input stays a flagged,
conservative estimate; the canary below fails the day it does, to read them then.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from langchain_core.messages import convert_to_messages
from test_providers_wire import (
    AUDIO_PROMPT,
    GEMINI_GENERATE,
    MISTRAL_LARGE_2512,
    fresh_warnings,
    gemini,
    gemini_response,
    gemini_usage,
    loopback_only,
    mistral,
    mistral_completion,
    mistral_sse,
    mistral_usage,
    recorded,
    server,
    spent_usd,
    usd,
)
from wire_server import WireServer

__all__ = ["fresh_warnings", "loopback_only", "server"]  # fixtures, used by pytest

CACHED = usd(
    (30, MISTRAL_LARGE_2512["input"]),
    (270, MISTRAL_LARGE_2512["cache_read"]),
    (12, MISTRAL_LARGE_2512["output"]),
)
FULL = usd((300, MISTRAL_LARGE_2512["input"]), (12, MISTRAL_LARGE_2512["output"]))


def test_mistral_stream_charges_cache_reads_at_the_cache_rate_like_invoke(server: WireServer) -> None:
    assert (FULL, CACHED) == (Decimal("0.000168"), Decimal("0.0000465"))
    usage = mistral_usage(300, 12, cached=270)
    server.route("POST", "/v1/chat/completions", mistral_sse(usage))
    guard, records = recorded(limit_usd=5)
    llm = guard.wrap(mistral(server, "mistral-large-2512"))

    chunks = list(llm.stream("Capital of France?"))

    assert "".join(str(c.content) for c in chunks) == "Paris."
    assert server.seen[0].json()["stream"] is True
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.cache_read, rec.usage.output_tokens) == (300, 270, 12)
    assert rec.usage.estimated is False
    assert rec.cost_usd == CACHED  # before: 0.000168, every prompt token at the full input rate
    assert spent_usd(guard) == CACHED

    server.json("POST", "/v1/chat/completions", mistral_completion(usage))
    llm.invoke("Capital of France?")
    assert [r.cost_usd for r in records] == [CACHED, CACHED]  # the same on invoke and stream


def test_mistral_stream_without_cache_reads_is_unchanged(server: WireServer) -> None:
    server.route("POST", "/v1/chat/completions", mistral_sse(mistral_usage(300, 12, cached=0)))
    guard, records = recorded(limit_usd=5)
    list(guard.wrap(mistral(server, "mistral-large-2512")).stream("Capital of France?"))
    (rec,) = records
    assert (rec.usage.cache_read, rec.cost_usd, rec.usage.estimated) == (0, FULL, False)


def test_mistral_async_stream_charges_cache_reads_at_the_cache_rate_too(server: WireServer) -> None:
    server.route("POST", "/v1/chat/completions", mistral_sse(mistral_usage(300, 12, cached=270)))
    guard, records = recorded(limit_usd=5)
    llm = guard.wrap(mistral(server, "mistral-large-2512"))

    async def main() -> str:
        return "".join([str(c.content) async for c in llm.astream("Capital of France?")])

    assert asyncio.run(main()) == "Paris."
    (rec,) = records
    assert (rec.usage.input_tokens, rec.usage.cache_read, rec.usage.output_tokens) == (300, 270, 12)
    assert (rec.cost_usd, rec.usage.estimated) == (CACHED, False)
    assert spent_usd(guard) == CACHED


def test_mistral_async_invoke_is_unchanged(server: WireServer) -> None:
    server.json("POST", "/v1/chat/completions", mistral_completion(mistral_usage(300, 12, cached=270)))
    guard, records = recorded(limit_usd=5)
    llm = guard.wrap(mistral(server, "mistral-large-2512"))
    assert asyncio.run(llm.ainvoke("Capital of France?")).content == "Paris."
    assert [r.cost_usd for r in records] == [CACHED]


def test_gemini_per_modality_counts_do_not_reach_langchain_yet(server: WireServer) -> None:
    """A canary: langchain-google-genai drops ``promptTokensDetails`` from usage_metadata,
    response_metadata and llm_output. If this fails, it passes them on: read them (usage.py)."""
    server.json("POST", GEMINI_GENERATE, gemini_response("Hello there.", gemini_usage(100, 900, 10)))
    guard, records = recorded(limit_usd=5)
    result = guard.wrap(gemini(server)).generate([convert_to_messages(AUDIO_PROMPT)])

    (gen,) = result.generations[0]
    msg = gen.message  # type: ignore[attr-defined]
    visible = repr((msg.usage_metadata, msg.response_metadata, result.llm_output, gen.generation_info))
    assert "900" not in visible and "AUDIO" not in visible.upper().replace("'AUDIO/WAV'", "")
    (rec,) = records
    assert (rec.usage.input_audio, rec.usage.estimated) == (1000, True)  # all of it, flagged
