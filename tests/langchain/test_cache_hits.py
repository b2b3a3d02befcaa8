"""LangChain's LLM cache: a call the cache will answer reserves nothing and is never refused.

LangChain fires ``on_chat_model_start`` before it looks the cache up, so the
guarded model looks it up first (``adapter/fit.py``) and the start event
reserves nothing. If the cache misses after all, the call is reserved, or
refused, just before the provider would be called.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit
from budgetguard.testing import FakeChatModel


@pytest.fixture
def cache() -> Iterator[InMemoryCache]:
    c = InMemoryCache()
    set_llm_cache(c)
    try:
        yield c
    finally:
        set_llm_cache(None)


def one_request_guard() -> tuple[BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    return BudgetGuard(limits=[Limit(requests=1)], on_record=records.append), records


def test_a_cache_hit_is_served_on_a_spent_budget_and_reserves_nothing(cache: InMemoryCache) -> None:
    guard, records = one_request_guard()
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10))
    llm.invoke("same prompt")  # the one request the budget allows
    llm.invoke("same prompt")  # before: refused (requests 1 + 1 > 1); now the cache answers
    assert [r.outcome for r in records] == ["settled", "cache_hit"]
    assert records[1].cost_usd == records[1].reserved_usd == 0
    assert llm.calls.count == 1
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (1, 0)
    with pytest.raises(BudgetExceeded):
        llm.invoke("another prompt")  # not in the cache: refused as before
    assert llm.calls.count == 1


async def test_async_cache_hit_is_served_on_a_spent_budget(cache: InMemoryCache) -> None:
    guard, records = one_request_guard()
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10))
    await llm.ainvoke("same prompt")
    await llm.ainvoke("same prompt")
    assert [r.outcome for r in records] == ["settled", "cache_hit"]
    assert llm.calls.count == 1
    with pytest.raises(BudgetExceeded):
        await llm.ainvoke("another prompt")


def test_a_model_with_cache_false_is_checked_as_before(cache: InMemoryCache) -> None:
    guard, _ = one_request_guard()
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10, cache=False))
    llm.invoke("same prompt")
    with pytest.raises(BudgetExceeded):
        llm.invoke("same prompt")


class _Forgetful(InMemoryCache):
    """Answers the guard's look-up, then forgets before LangChain's own: a cache evicted in between."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def lookup(self, prompt: str, llm_string: str) -> Any:
        self.lookups += 1
        hit = super().lookup(prompt, llm_string)
        if self.lookups % 2 == 1:  # the guard looks first, LangChain second
            self.clear()
        return hit


def test_a_hit_that_misses_after_all_is_reserved_before_the_provider_and_refused() -> None:
    guard, records = one_request_guard()
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10))
    cache = _Forgetful()
    set_llm_cache(cache)
    try:
        llm.invoke("same prompt")  # guard: miss; LangChain: miss; the call is made and cached
        with pytest.raises(BudgetExceeded):
            llm.invoke("same prompt")  # guard: hit, reserves nothing; LangChain: miss -> reserved -> refused
    finally:
        set_llm_cache(None)
    assert llm.calls.count == 1  # the provider was never called for the second
    assert [r.outcome for r in records] == ["settled", "refused"]  # the refusal is recorded too
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (1, 0)


def test_a_hit_that_misses_after_all_is_charged_when_it_fits() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=[Limit(requests=5)], on_record=records.append)
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10))
    set_llm_cache(_Forgetful())
    try:
        llm.invoke("same prompt")
        llm.invoke("same prompt")  # predicted hit, then a miss: reserved late, then settled
    finally:
        set_llm_cache(None)
    assert [r.outcome for r in records] == ["settled", "settled"]
    assert llm.calls.count == 2
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (2, 0)


def test_native_streams_never_consult_the_cache_and_are_checked_as_before(cache: InMemoryCache) -> None:
    guard, _ = one_request_guard()
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10))
    llm.invoke("same prompt")
    with pytest.raises(BudgetExceeded):
        for _ in llm.stream("same prompt"):
            pass


def test_a_streaming_model_under_invoke_reserves_late_when_the_cache_misses() -> None:
    # stream=True: _generate_with_cache calls _stream (not _generate) after the cache misses
    guard, records = one_request_guard()
    raw = FakeChatModel(model_name="gpt-4o", input_tokens=10, output_tokens=10)
    llm = guard.wrap(raw).bind(stream=True)
    cache = _Forgetful()
    set_llm_cache(cache)
    try:
        llm.invoke("same prompt")
        with pytest.raises(BudgetExceeded):
            llm.invoke("same prompt")
    finally:
        set_llm_cache(None)
    assert cache.lookups == 4 and raw.calls.count == 1
    assert [r.outcome for r in records] == ["settled", "refused"]  # the refusal is recorded too
