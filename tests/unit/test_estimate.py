"""Pre-call token estimates must never undercount real BPE tokenizers.

A reservation is only a hard cap if the estimate is an upper bound: a call
whose prompt is under-estimated is admitted with too small a reservation.
Real counts come from bpe-openai's cl100k_base and o200k_base (offline).
"""

from __future__ import annotations

import string
from typing import Any

import bpe_openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately

from budgetguard.estimate import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    estimate_input_tokens,
    estimate_text_tokens,
    max_output_tokens,
)

ENCODINGS = {name: bpe_openai.get_encoding(name) for name in ("cl100k_base", "o200k_base")}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def real(text: str, encoding: str) -> int:
    return len(ENCODINGS[encoding].encode(text))


def chars(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.characters(min_codepoint=lo, max_codepoint=hi, exclude_categories=("Cs",))


ALPHABETS: dict[str, st.SearchStrategy[str]] = {
    "ascii": st.sampled_from(string.printable),
    "latin_accents": st.one_of(chars(0xC0, 0x17F), st.sampled_from(string.ascii_letters + " ,.")),
    "cjk": chars(0x4E00, 0x9FFF),
    "kana": chars(0x3040, 0x30FF),
    "hangul": chars(0xAC00, 0xD7A3),
    "emoji": chars(0x1F300, 0x1FAFF),
}
ALPHABETS["mixed"] = st.one_of(*ALPHABETS.values(), st.sampled_from(" \n"))


def texts(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=ALPHABETS[alphabet], min_size=0, max_size=120)


# --------------------------------------------------------------------------- estimate_text_tokens


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@SETTINGS
@given(data=st.data())
def test_text_estimate_never_undercounts(alphabet: str, encoding: str, data: st.DataObject) -> None:
    text = data.draw(texts(alphabet), label="text")
    assert real(text, encoding) <= estimate_text_tokens(text)


# Everyday strings, not adversarial ones: a budget check sees these all the time.
SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog. Budgets must never be exceeded, not by a cent!",
    "french": "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë au delà des îles.",
    "german": "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg. Straßenbahnhaltestelle.",
    "chinese": "我们今天去公园散步，天气非常好。人工智能正在改变世界，预算控制非常重要。",  # noqa: RUF001
    "japanese": "今日はとても良い天気ですね。東京で桜を見に行きましょう。カタカナとひらがな。",
    "korean": "안녕하세요, 오늘 날씨가 정말 좋네요. 예산을 초과하면 안 됩니다.",
    "emoji": "I love it 😀🎉👍🏽❤️🔥🚀",
    "python": "def f(x):\n    return {'a': [1, 2, 3], 'b': x ** 2}  # comment\n",
    "json": '{"a":1,"b":[1,2,3],"c":{"d":null}}',
    "uuid": "3f2b9c1e-8d4a-4e6b-9f0a-1c2d3e4f5a6b",
    "numbers": "0 1 2 3 4 5 6 7 8 9 10 11 12",
    "rare_cjk": "".join(chr(c) for c in range(0x9F00, 0x9F40)),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_text_estimate_on_everyday_samples(name: str, encoding: str) -> None:
    text = SAMPLES[name]
    assert real(text, encoding) <= estimate_text_tokens(text)


def test_text_estimate_basics() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("a") >= 1
    assert estimate_text_tokens("用") >= 1
    # monotone in concatenation: more text never estimates fewer tokens
    assert estimate_text_tokens("hello world" * 10) >= estimate_text_tokens("hello world")


# --------------------------------------------------------------------------- estimate_input_tokens

ROLES = (HumanMessage, AIMessage, SystemMessage)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("alphabet", ["ascii", "latin_accents", "cjk", "mixed"])
@SETTINGS
@given(data=st.data())
def test_input_estimate_covers_message_contents(alphabet: str, encoding: str, data: st.DataObject) -> None:
    contents = data.draw(st.lists(texts(alphabet), min_size=1, max_size=5), label="contents")
    kinds = data.draw(st.lists(st.sampled_from(ROLES), min_size=len(contents), max_size=len(contents)))
    messages: list[BaseMessage] = [k(content=c) for k, c in zip(kinds, contents, strict=True)]
    assert estimate_input_tokens(messages) >= sum(real(c, encoding) for c in contents)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_input_estimate_on_everyday_samples(name: str, encoding: str) -> None:
    text = SAMPLES[name]
    messages: list[BaseMessage] = [SystemMessage(content=text), HumanMessage(content=text)]
    assert estimate_input_tokens(messages) >= 2 * real(text, encoding)


def test_input_estimate_counts_blocks_images_and_tools() -> None:
    text_only = [HumanMessage(content="hello there")]
    with_image = [
        HumanMessage(
            content=[
                {"type": "text", "text": "hello there"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]
        )
    ]
    assert estimate_input_tokens(with_image) >= estimate_input_tokens(text_only) + 765
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert estimate_input_tokens(text_only, tools=tools) > estimate_input_tokens(text_only)
    call = AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}])
    assert estimate_input_tokens([call]) > estimate_input_tokens([AIMessage(content="")])
    assert estimate_input_tokens([]) > 0  # the call's own framing


CJK_PROSE = "我们今天去公园散步，天气非常好。人工智能正在改变世界，预算控制非常重要。" * 5  # noqa: RUF001


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_langchain_approximate_count_undercounts_cjk(encoding: str) -> None:
    """Why budgetguard does not use ``count_tokens_approximately``.

    It assumes 4 characters a token, but a CJK character is about one token
    (often more), so it undercounts CJK several times over: a budget built on
    it would admit calls that cost far more than reserved.
    """
    messages: list[BaseMessage] = [HumanMessage(content=CJK_PROSE)]
    true_count = real(CJK_PROSE, encoding)
    approx = count_tokens_approximately(messages)
    assert approx < true_count
    assert approx * 2 < true_count  # not a rounding slip: less than half
    assert estimate_input_tokens(messages) >= true_count


# --------------------------------------------------------------------------- max_output_tokens

CALL_KEYS = ["max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict"]


@pytest.mark.parametrize("key", CALL_KEYS)
def test_call_max_tokens_wins(key: str) -> None:
    assert max_output_tokens({key: 123}, 789, 1000) == 123


def test_call_keys_in_order() -> None:
    params = {"num_predict": 4, "max_output_tokens": 3, "max_completion_tokens": 2, "max_tokens": 1}
    assert max_output_tokens(params, None, 1000) == 1
    del params["max_tokens"]
    assert max_output_tokens(params, None, 1000) == 2
    del params["max_completion_tokens"]
    assert max_output_tokens(params, None, 1000) == 3


def test_profile_then_default() -> None:
    assert max_output_tokens({"model": "x"}, 789, 1000) == 789
    assert max_output_tokens({}, None, 1000) == 1000
    assert max_output_tokens(None, None, DEFAULT_MAX_OUTPUT_TOKENS) == DEFAULT_MAX_OUTPUT_TOKENS


def test_ls_max_tokens_is_metadata_not_a_request_parameter() -> None:
    """``ls_max_tokens`` lives in run metadata, which callers can write: it never sets the cap."""
    assert max_output_tokens({"ls_max_tokens": 77}, 789, 1000) == 789


@pytest.mark.parametrize("bad", [None, 0, -5, True, False, "100", 1.5])
def test_unusable_values_are_skipped(bad: Any) -> None:
    assert max_output_tokens({"max_tokens": bad}, 789, 1000) == 789
    assert max_output_tokens({"max_tokens": bad}, None, 1000) == 1000


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from(CALL_KEYS), st.one_of(st.none(), st.integers(-10, 10**6)), max_size=4),
    st.one_of(st.none(), st.integers(1, 10**6)),
    st.integers(1, 10**6),
)
def test_precedence_property(params: dict[str, Any], profile: int | None, default: int) -> None:
    got = max_output_tokens(params, profile, default)
    call = [params[k] for k in CALL_KEYS if isinstance(params.get(k), int) and params[k] > 0]
    if call:
        assert got == call[0]
    elif profile:
        assert got == profile
    else:
        assert got == default
