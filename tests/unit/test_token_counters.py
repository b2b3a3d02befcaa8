"""``token_counter=``: the named exact counters stay upper bounds, and tighter than the byte bound.

The provider-style count is OpenAI's own recipe for chat prompts (3 tokens a
message, the role, the content, 3 to prime the reply; tokens of the real
cl100k/o200k encodings from bpe-openai, offline).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import bpe_openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from test_estimate import ALPHABETS, SAMPLES, texts

from budgetguard import BudgetGuard, ConfigError
from budgetguard.estimate import estimate_input_tokens
from budgetguard.tokencount import encoding_for_model, resolve_counter

ENCODERS = {"o200k": bpe_openai.get_encoding("o200k_base"), "cl100k": bpe_openai.get_encoding("cl100k_base")}
MODEL = {"o200k": "gpt-4o-mini", "cl100k": "gpt-4"}
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def provider_count(messages: list[BaseMessage], encoding: str) -> int:
    """OpenAI's chat-format count: what the provider reports for these messages."""
    enc = ENCODERS[encoding]
    total = 3
    for m in messages:
        assert isinstance(m.content, str)
        total += 3 + len(enc.encode(ROLES[m.type])) + len(enc.encode(m.content))
    return total


def conversation(contents: list[str]) -> list[BaseMessage]:
    kinds = (SystemMessage, HumanMessage, AIMessage)
    return [(kinds[0] if i == 0 else kinds[1 + (i - 1) % 2])(content=c) for i, c in enumerate(contents)]


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@SETTINGS
@given(data=st.data())
def test_exact_counter_is_an_upper_bound_and_within_bytes(
    alphabet: str, encoding: str, data: st.DataObject
) -> None:
    messages = conversation(data.draw(st.lists(texts(alphabet), min_size=1, max_size=6)))
    n = resolve_counter(encoding)(messages, None, MODEL[encoding])
    assert provider_count(messages, encoding) <= n <= estimate_input_tokens(messages)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_exact_counter_on_everyday_chats(name: str, encoding: str) -> None:
    text = SAMPLES[name]
    messages = conversation([text, text, "Sure: " + text, text])
    n = resolve_counter("auto")(messages, None, MODEL[encoding])
    assert provider_count(messages, encoding) <= n <= estimate_input_tokens(messages)


def test_exact_counter_is_much_tighter_on_english() -> None:
    messages = conversation([SAMPLES["english"] * 20] * 5)
    exact = resolve_counter("o200k")(messages, None, "gpt-4o")
    assert estimate_input_tokens(messages) / exact > 3


def test_exact_counter_counts_tool_calls_images_and_tools() -> None:
    calls = [{"name": "lookup", "args": {"q": "weather in Paris"}, "id": "c1", "type": "tool_call"}]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages: list[BaseMessage] = [
        HumanMessage(content=[{"type": "text", "text": "What is this?"}, image]),
        AIMessage(content="", tool_calls=calls),
        ToolMessage(content="sunny", tool_call_id="c1"),
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    counter = resolve_counter("o200k")
    with_tools = counter(messages, tools, "gpt-4o")
    assert with_tools > counter(messages, None, "gpt-4o") > 1_600  # the image's flat amount
    assert with_tools <= estimate_input_tokens(messages, tools)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k"),
        ("gpt-4o-mini-2024-07-18", "o200k"),
        ("gpt-4.1-nano", "o200k"),
        ("gpt-5", "o200k"),
        ("o1-mini", "o200k"),
        ("o3", "o200k"),
        ("o4-mini", "o200k"),
        ("ft:gpt-4o-mini:org::abc", "o200k"),
        ("openai/gpt-4o", "o200k"),
        ("gpt-4", "cl100k"),
        ("gpt-4-turbo", "cl100k"),
        ("gpt-3.5-turbo", "cl100k"),
        ("claude-sonnet-4-5", None),
        ("gemini-2.5-flash", None),
        ("llama3", None),
        (None, None),
        ("", None),
    ],
)
def test_encoding_for_model(model: str | None, encoding: str | None) -> None:
    assert encoding_for_model(model) == encoding


def test_named_counters_apply_only_to_their_models() -> None:
    messages = conversation([SAMPLES["english"]] * 3)
    bound = estimate_input_tokens(messages)
    assert resolve_counter("o200k")(messages, None, "claude-sonnet-4-5") == bound
    assert resolve_counter("o200k")(messages, None, "gpt-4") == bound  # a cl100k model
    assert resolve_counter("cl100k")(messages, None, "gpt-4o") == bound
    assert resolve_counter("cl100k")(messages, None, "gpt-4") < bound
    assert resolve_counter("auto")(messages, None, "gpt-4") < bound
    assert resolve_counter("auto")(messages, None, "gpt-4o") < bound
    assert resolve_counter("auto")(messages, None, None) == bound
    assert resolve_counter("bytes")(messages, None, "gpt-4o") == bound
    assert resolve_counter(None)(messages, None, "gpt-4o") == bound


def test_callable_counter_is_used_for_every_model() -> None:
    seen: list[Any] = []

    def count(messages: Any, tools: Any) -> int:
        seen.append(tools)
        return 42

    counter = resolve_counter(count)
    assert counter([HumanMessage(content="hi")], ["t"], "claude-x") == 42
    assert seen == [["t"]]


@pytest.mark.parametrize("bad", [-1, 1.5, "12", None])
def test_callable_counter_must_return_a_count(bad: Any) -> None:
    counter = resolve_counter(lambda messages, tools: bad)
    with pytest.raises(ConfigError, match="non-negative int"):
        counter([HumanMessage(content="hi")], None, None)


@pytest.mark.parametrize("bad", ["o200k_base", "tiktoken", "", 3, b"bytes"])
def test_bad_counter_raises_naming_the_choices(bad: Any) -> None:
    with pytest.raises(ConfigError, match="'bytes', 'o200k', 'cl100k', 'auto' or a callable"):
        BudgetGuard(limit_usd=1, token_counter=bad)


def test_missing_bpe_openai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bpe_openai", None)
    for name in ("o200k", "cl100k", "auto"):
        with pytest.raises(ConfigError, match=r"pip install 'langchain-budgetguard\[tokenizers\]'"):
            BudgetGuard(limit_usd=1, token_counter=name)


def test_import_and_default_guard_need_no_bpe_openai() -> None:
    code = (
        "import sys; sys.modules['bpe_openai'] = None\n"
        "import budgetguard\n"
        "budgetguard.BudgetGuard(limit_usd=1)\n"
        "budgetguard.BudgetGuard(limit_usd=1, token_counter='bytes')\n"
        "assert 'bpe_openai' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
