"""A prompt extending a reported one is estimated from the report: still an upper bound, far tighter.

The "provider" here reports what OpenAI's chat format really costs, counted
with bpe-openai's cl100k/o200k (``test_token_counters.provider_count``); the
reply's output tokens are the reply's real tokens.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from test_estimate import ALPHABETS, SAMPLES, texts
from test_token_counters import ENCODERS, MODEL, provider_count

from budgetguard.engine.prefixes import InputEstimator
from budgetguard.estimate import estimate_input_tokens
from budgetguard.tokencount import bytes_counter, resolve_counter
from budgetguard.usage import TokenUsage

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def result(reply: BaseMessage) -> LLMResult:
    return LLMResult(generations=[[ChatGeneration(message=reply)]])


def run_conversation(
    estimator: InputEstimator, turns: list[tuple[str, str]], encoding: str, system: str = "Be brief."
) -> list[tuple[int, int, int]]:
    """(estimate, real input, byte bound) of each turn of a conversation the provider reports on."""
    history: list[BaseMessage] = [SystemMessage(content=system)]
    params = {"model": MODEL[encoding], "max_tokens": 256}
    seen = []
    for question, answer in turns:
        history.append(HumanMessage(content=question))
        est, key = estimator.estimate(history, params, MODEL[encoding])
        real_in = provider_count(history, encoding)
        seen.append((est, real_in, estimate_input_tokens(history)))
        reply = AIMessage(content=answer)
        usage = TokenUsage(input_tokens=real_in, output_tokens=len(ENCODERS[encoding].encode(answer)))
        estimator.learn(key, usage, result(reply))
        history.append(reply)
    return seen


@pytest.mark.parametrize("counter", ["bytes", "auto"])
@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@SETTINGS
@given(data=st.data())
def test_extended_conversations_never_undercount(
    alphabet: str, encoding: str, counter: str, data: st.DataObject
) -> None:
    turns = data.draw(st.lists(st.tuples(texts(alphabet), texts(alphabet)), min_size=1, max_size=6))
    for est, real_in, bound in run_conversation(InputEstimator(resolve_counter(counter)), turns, encoding):
        assert real_in <= est <= bound


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_everyday_threads_never_undercount(name: str, encoding: str) -> None:
    text = SAMPLES[name]
    turns = [(text, text * 3)] * 8
    for est, real_in, bound in run_conversation(InputEstimator(bytes_counter), turns, encoding):
        assert real_in <= est <= bound


def test_a_long_english_thread_is_estimated_close_to_its_real_count() -> None:
    turns = [(SAMPLES["english"] * 2, SAMPLES["english"] * 6)] * 12
    seen = run_conversation(InputEstimator(bytes_counter), turns, "o200k")
    est, real_in, bound = seen[-1]
    assert bound / real_in > 3.5  # the byte bound alone
    assert est / real_in < 1.25  # reported prefix + its reply + the new question


def test_a_retry_costs_the_reported_input_plus_a_call_margin() -> None:
    e = InputEstimator(bytes_counter)
    prompt: list[BaseMessage] = [HumanMessage(content=SAMPLES["english"] * 10)]
    est, key = e.estimate(prompt, {}, "gpt-4o")
    assert est == estimate_input_tokens(prompt)
    e.learn(key, TokenUsage(input_tokens=250, output_tokens=10), result(AIMessage(content="x")))
    again, same = e.estimate(prompt, {"max_tokens": 9, "temperature": 0.3}, "gpt-4o")
    assert same == key
    assert again == 250 + estimate_input_tokens([])


def learned(e: InputEstimator, params: dict[str, Any], model: str = "gpt-4o") -> list[BaseMessage]:
    prompt: list[BaseMessage] = [SystemMessage(content="sys " * 50), HumanMessage(content="hello " * 50)]
    _, key = e.estimate(prompt, params, model)
    e.learn(key, TokenUsage(input_tokens=100, output_tokens=20), result(AIMessage(content="hi " * 20)))
    return [*prompt, AIMessage(content="hi " * 20), HumanMessage(content="more")]


def test_the_reply_counts_its_reported_output_and_a_margin() -> None:
    e = InputEstimator(bytes_counter)
    nxt = learned(e, {"tools": TOOLS})
    est, _ = e.estimate(nxt, {"tools": TOOLS}, "gpt-4o")
    assert est == 100 + (20 + 20 // 8 + 6) + estimate_input_tokens(nxt[-1:])


@pytest.mark.parametrize(
    "change",
    [
        {"tools": []},  # other tools
        {"tools": TOOLS, "response_format": {"type": "json_object"}},
        {"tools": TOOLS, "tool_choice": "required"},
    ],
)
def test_other_tools_or_input_params_fall_back_to_the_full_bound(change: dict[str, Any]) -> None:
    e = InputEstimator(bytes_counter)
    nxt = learned(e, {"tools": TOOLS})
    est, _ = e.estimate(nxt, change, "gpt-4o")
    assert est == estimate_input_tokens(nxt, change.get("tools"))


def test_another_model_falls_back_to_the_full_bound() -> None:
    e = InputEstimator(bytes_counter)
    nxt = learned(e, {})
    assert e.estimate(nxt, {}, "gpt-4o-mini")[0] == estimate_input_tokens(nxt)


def test_an_edited_earlier_message_falls_back_to_the_full_bound() -> None:
    e = InputEstimator(bytes_counter)
    nxt = learned(e, {})
    edited = [SystemMessage(content="sys " * 49), *nxt[1:]]
    assert e.estimate(edited, {}, "gpt-4o")[0] == estimate_input_tokens(edited)
    other_reply = [*nxt[:2], AIMessage(content="hi " * 19), nxt[3]]
    est, _ = e.estimate(other_reply, {}, "gpt-4o")
    assert est == 100 + estimate_input_tokens(other_reply[2:])  # the reported prompt still matches


def test_a_streamed_reply_matches_the_message_sent_back() -> None:
    e = InputEstimator(bytes_counter)
    prompt: list[BaseMessage] = [HumanMessage(content="hello " * 50)]
    _, key = e.estimate(prompt, {}, "gpt-4o")
    e.learn(key, TokenUsage(input_tokens=60, output_tokens=5), result(AIMessageChunk(content="yes")))
    nxt = [*prompt, AIMessage(content="yes"), HumanMessage(content="ok")]
    assert e.estimate(nxt, {}, "gpt-4o")[0] == 60 + 5 + 0 + 6 + estimate_input_tokens(nxt[-1:])


@pytest.mark.parametrize(
    "usage",
    [
        TokenUsage(input_tokens=10, output_tokens=1, estimated=True),
        TokenUsage(cache_hit=True),
        TokenUsage(input_tokens=0, output_tokens=3),
    ],
)
def test_estimated_or_empty_usage_is_not_learned(usage: TokenUsage) -> None:
    e = InputEstimator(bytes_counter)
    _, key = e.estimate([HumanMessage(content="hi")], {}, "m")
    e.learn(key, usage, result(AIMessage(content="x")))
    assert len(e) == 0


def test_several_generations_learn_the_prompt_only() -> None:
    e = InputEstimator(bytes_counter)
    _, key = e.estimate([HumanMessage(content="hi")], {"n": 2}, "m")
    two = LLMResult(generations=[[ChatGeneration(message=AIMessage(content=s)) for s in "ab"]])
    e.learn(key, TokenUsage(input_tokens=5, output_tokens=2), two)
    assert len(e) == 1


def test_memory_is_bounded_least_recently_used_first() -> None:
    e = InputEstimator(bytes_counter, capacity=4)
    keys = []
    for i in range(10):
        prompt = [HumanMessage(content=f"prompt {i} " * 20)]
        _, key = e.estimate(prompt, {}, "m")
        e.learn(key, TokenUsage(input_tokens=7, output_tokens=1), result(AIMessage(content="r")))
        keys.append(prompt)
        assert len(e) <= 4
    assert e.estimate(keys[-1], {}, "m")[0] == 7 + estimate_input_tokens([])
    assert e.estimate(keys[0], {}, "m")[0] == estimate_input_tokens(keys[0])


def test_concurrent_use_stays_bounded_and_consistent() -> None:
    e = InputEstimator(bytes_counter, capacity=64)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            history: list[BaseMessage] = [SystemMessage(content="shared system prompt " * 10)]
            for t in range(30):
                history.append(HumanMessage(content=f"worker {w} turn {t} " * 5))
                est, key = e.estimate(history, {}, "m")
                assert est <= estimate_input_tokens(history)
                reply = AIMessage(content=f"answer {t}")
                e.learn(key, TokenUsage(input_tokens=max(1, est // 3), output_tokens=4), result(reply))
                history.append(reply)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(e) <= 64
