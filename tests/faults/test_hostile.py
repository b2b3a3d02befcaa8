"""Hostile inputs: fuzzed usage reports, crafted scope values, bad configuration.

(a) Usage metadata a provider (or a proxy, or a bug) may send: negative,
    None, str, float, bool, huge counts, missing keys, details of the wrong
    type, cache tokens above input tokens, unknown ``response_metadata``
    shapes. The parser and the guard never raise, never record a negative or
    NaN cost, and flag what they estimate.
(b) Scope values from request metadata: every distinct value is its own
    counter (in MemoryStore and in Redis, keys checked), no crafted value
    reaches another tenant's budget, empty and oversized values are refused
    before the model is called.
(c) Configuration errors are raised at construction and say what to fix.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from redis_servers import RedisServer

from budgetguard import (
    BudgetError,
    BudgetExceeded,
    BudgetGuard,
    CallRecord,
    ConfigError,
    Limit,
    MemoryStore,
    MissingScope,
    Price,
    UnknownModelPrice,
)
from budgetguard.limits import MAX_SCOPE_VALUE, ScopeTemplate
from budgetguard.stores import store_from_url
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel
from budgetguard.usage import TokenUsage, usage_from_message

# ------------------------------------------------------------------ (a) fuzzed usage

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), -1),
    st.integers(10**10 + 1, 10**18),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(0, 5), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2),
)
count = st.one_of(st.integers(0, 5_000), st.integers(0, 10**10), junk)
DETAIL_KEYS = (
    "cache_read",
    "cache_creation",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "audio",
    "reasoning",
    "cached_tokens",
    "surprise",
)
details = st.one_of(junk, st.dictionaries(st.sampled_from(DETAIL_KEYS), count, max_size=5))
usage_metadata = st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": count,
        "output_tokens": count,
        "total_tokens": count,
        "input_token_details": details,
        "output_token_details": details,
        "total_cost": junk,
    },
)
# cache (or reasoning) counts above the total they belong to, in otherwise valid reports
contradictory = st.builds(
    lambda i, o, cr, cw, r: {
        "input_tokens": i,
        "output_tokens": o,
        "total_tokens": i + o,
        "input_token_details": {"cache_read": cr, "cache_creation": cw},
        "output_token_details": {"reasoning": r},
    },
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
)
PROVIDER_KEYS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
)
provider_usage = st.dictionaries(st.sampled_from(PROVIDER_KEYS), st.one_of(count, details), max_size=6)
model_names = st.one_of(
    st.text(max_size=24), junk, st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku-latest", "o1"])
)
response_metadata = st.builds(
    lambda fixed, extra: {**extra, **fixed},
    st.fixed_dictionaries(
        {},
        optional={
            "token_usage": st.one_of(provider_usage, junk),
            "usage": st.one_of(provider_usage, junk),
            "amazon-bedrock-invocationMetrics": st.one_of(
                st.dictionaries(st.sampled_from(["inputTokenCount", "outputTokenCount"]), count), junk
            ),
            "prompt_eval_count": count,
            "eval_count": count,
            "model_name": model_names,
            "model": model_names,
            "model_id": model_names,
        },
    ),
    st.dictionaries(st.text(max_size=8), junk, max_size=3),
)
any_usage = st.one_of(usage_metadata, contradictory, junk)

FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "output_audio",
    "reasoning",
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def assert_sane(u: TokenUsage) -> None:
    for f in FIELDS:
        v = getattr(u, f)
        assert type(v) is int and v >= 0, f"{f}={v!r} in {u}"
    assert type(u.estimated) is bool and type(u.cache_hit) is bool
    assert u.cache_write_1h <= u.cache_write


def message(um: Any, rm: Any) -> AIMessage:
    """An AIMessage carrying exactly what a provider sent (no validation on the way in)."""
    msg = AIMessage(content="a reply")
    msg.usage_metadata = um
    msg.response_metadata = rm
    return msg


@FUZZ
@given(um=any_usage)
def test_usage_metadata_parser_never_raises_nor_goes_negative(um: Any) -> None:
    u = TokenUsage.from_usage_metadata(um)
    if u is not None:
        assert_sane(u)


@FUZZ
@given(um=st.one_of(usage_metadata, contradictory))
def test_parsed_usage_keeps_langchains_convention_and_flags_repairs(um: dict[str, Any]) -> None:
    """input_tokens includes cache and audio input; output_tokens includes reasoning and audio output.

    A report that contradicts this is repaired upward (never undercharged) and flagged.
    """
    u = TokenUsage.from_usage_metadata(um)
    if u is None:
        return
    assert u.input_tokens >= u.cache_read + u.cache_write + u.input_audio, u
    assert u.output_tokens >= u.reasoning + u.output_audio, (
        f"output_tokens {u.output_tokens} < reasoning {u.reasoning} + audio {u.output_audio}: "
        f"the report {um} was charged below what it says was produced"
    )
    raw_in, raw_out = um["input_tokens"], um["output_tokens"]
    if u.input_tokens != raw_in or u.output_tokens != raw_out:
        assert u.estimated, "a repaired report must be flagged as an estimate"


@FUZZ
@given(um=any_usage, rm=response_metadata)
def test_usage_from_message_never_raises_nor_goes_negative(um: Any, rm: dict[str, Any]) -> None:
    u = usage_from_message(message(um, rm))
    if u is not None:
        assert_sane(u)


class HostileModel(FakeChatModel):
    """Answers with whatever usage report it is given, as a provider integration would."""

    report: Any = None
    meta: Any = None

    def _reply(self, messages: Any, **kwargs: Any) -> Any:
        msg, _ = super()._reply(messages, **kwargs)
        msg.response_metadata = self.meta
        return msg, self.report


@FUZZ
@given(um=any_usage, rm=response_metadata)
def test_the_guard_survives_any_usage_report(um: Any, rm: dict[str, Any]) -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(limit_usd=10**6, store=MemoryStore(), on_record=records.append)
    llm = HostileModel(report=um, meta=rm)
    guard.wrap(llm).invoke("What is the capital of France?")  # no error of any kind
    assert llm.calls.count == 1
    (rec,) = records
    assert_sane(rec.usage)
    assert isinstance(rec.cost_usd, Decimal) and rec.cost_usd.is_finite() and rec.cost_usd >= 0
    parsed = usage_from_message(message(um, rm))
    if parsed is None:
        assert rec.estimated and rec.outcome == "estimated", "no usable report: charged an estimate, flagged"
        assert rec.usage.input_tokens > 0 and rec.usage.output_tokens > 0
    elif parsed.cache_hit:
        assert rec.outcome == "cache_hit" and rec.cost_usd == 0
    elif parsed.input_tokens == 0:
        assert rec.estimated, "zero input tokens for a non-empty prompt: our estimate, flagged"
    else:
        assert rec.usage == parsed and rec.estimated == parsed.estimated
    (row,) = guard.remaining().rows
    assert row.spent == rec.cost_usd and row.reserved == 0
    assert row.estimated == int(rec.estimated)


# ------------------------------------------------------------------ (b) crafted scope values

TEMPLATE = "user:{user_id}"
CRAFTED = [
    "A",
    "a:b",
    "a/x",
    "a}",
    "a{",
    "{x}",
    "{user_id}",
    "{}",
    "*",
    "?",
    "a*",
    "a?",
    "a%00",
    "a\x00",
    "a\n",
    "line1\nline2",
    "\r\n",
    "\t",
    "\x1b[31m",
    "\x7f",
    "a ",
    " a",
    " ",
    "%61",
    "a%",
    "ü",
    unicodedata.normalize("NFD", "ü"),
    "日本語",
    "🙂",
    "\u202ea",  # right-to-left override
    "a" * MAX_SCOPE_VALUE,
]
OWNER = "a"


def render(value: Any) -> str:
    return ScopeTemplate.parse(TEMPLATE).render({"user_id": value})


def test_every_crafted_value_renders_to_its_own_safe_scope() -> None:
    scopes = [render(v) for v in [OWNER, *CRAFTED]]
    assert len(set(scopes)) == len(scopes), "two distinct values share a counter"
    for v, s in zip([OWNER, *CRAFTED], scopes, strict=True):
        assert s.startswith("user:")
        tail = s[len("user:") :]
        assert tail.isascii() and all(c.isalnum() or c == "%" for c in tail), (v, s)


@settings(max_examples=300, deadline=None, database=None)
@given(a=st.text(min_size=1, max_size=MAX_SCOPE_VALUE), b=st.text(min_size=1, max_size=MAX_SCOPE_VALUE))
def test_distinct_values_never_share_a_counter(a: str, b: str) -> None:
    if a != b:
        assert render(a) != render(b)
    for s in (render(a), render(b)):
        assert "{" not in s and "}" not in s and "/" not in s and "\n" not in s


@pytest.fixture(params=["memory", "redis"])
def scoped(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[BudgetGuard, Any, RedisStore | None]]:
    limit = Limit(requests=2, tokens=10**6, scope=TEMPLATE)
    redis_store = None
    if request.param == "memory":
        store: Any = MemoryStore()
    else:
        redis_store = store = RedisStore.from_url(redis_server.url, prefix=f"hostile-{os.urandom(4).hex()}:")
    guard = BudgetGuard(limits=[limit], store=store, spool_dir=tmp_path)
    yield guard, store, redis_store
    if redis_store is not None:
        keys = list(redis_store.client.scan_iter(match=f"{redis_store.prefix}*"))
        if keys:
            redis_store.client.delete(*keys)


def spent_requests(guard: BudgetGuard, value: Any) -> tuple[int, int]:
    (row,) = [r for r in guard.remaining(user_id=value).rows if r.quantity == "requests"]
    return int(row.spent), int(row.reserved)


def test_crafted_scope_values_never_reach_another_tenants_budget(
    scoped: tuple[BudgetGuard, Any, RedisStore | None],
) -> None:
    guard, _, redis_store = scoped
    llm = FakeChatModel(input_tokens=5, output_tokens=5, max_tokens=16)
    guarded = guard.wrap(llm)

    def call(value: Any) -> Any:
        return guarded.invoke("hi", config={"metadata": {"user_id": value}})

    call(OWNER)
    call(OWNER)
    with pytest.raises(BudgetExceeded) as info:
        call(OWNER)
    assert info.value.scope == "user:a"
    assert llm.calls.count == 2 and spent_requests(guard, OWNER) == (2, 0)

    for v in CRAFTED:
        assert spent_requests(guard, v) == (0, 0), f"{v!r} can read {OWNER!r}'s spend"
        call(v)  # admitted: its own budget is untouched
        assert spent_requests(guard, v) == (1, 0), f"{v!r} was charged elsewhere"
    assert llm.calls.count == 2 + len(CRAFTED)
    assert spent_requests(guard, OWNER) == (2, 0), "a crafted value spent the owner's budget"
    with pytest.raises(BudgetExceeded):
        call(OWNER)

    if redis_store is not None:
        client, prefix = redis_store.client, redis_store.prefix
        counters: dict[str, int] = {}
        for raw in client.scan_iter(match=f"{prefix}*"):
            key = raw.decode()
            if ":c:lifetime:0:" not in key:
                continue
            scope = key.split(":c:lifetime:0:", 1)[1]
            base = key.split(":c:lifetime:0:", 1)[0]
            assert base == f"{prefix}{{{scope}}}", f"counter {key!r} is not under its own hash tag"
            counters[scope] = int(client.hget(raw, "sr") or 0)
        want = {render(OWNER): 2, **{render(v): 1 for v in CRAFTED}}
        assert counters == want, "every value has exactly one Redis counter, holding only its own spend"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("x" * (MAX_SCOPE_VALUE + 1), f"longer than {MAX_SCOPE_VALUE}"),
        ("y" * 10_000, f"longer than {MAX_SCOPE_VALUE}"),
        (None, "is missing"),
        (True, "must be a str or int"),
        (1.5, "must be a str or int"),
        (["a"], "must be a str or int"),
        ({"a": 1}, "must be a str or int"),
    ],
)
def test_empty_oversized_or_odd_scope_values_are_refused_before_the_call(
    scoped: tuple[BudgetGuard, Any, RedisStore | None], value: Any, problem: str
) -> None:
    guard, _, redis_store = scoped
    llm = FakeChatModel()
    with pytest.raises(MissingScope) as info:
        guard.wrap(llm).invoke("hi", config={"metadata": {"user_id": value}})
    msg = str(info.value)
    assert problem in msg and "metadata['user_id']" in msg
    assert "config={'metadata'" in msg and "guard.enforce(user_id=" in msg, "the message names the fix"
    assert llm.calls.count == 0
    if redis_store is not None:
        assert not list(redis_store.client.scan_iter(match=f"{redis_store.prefix}*")), "nothing written"


# ------------------------------------------------------------------ (c) configuration errors


def raises(fn: Any, *phrases: str, exc: type[BaseException] = ValueError) -> str:
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for p in phrases:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


@pytest.mark.parametrize(
    ("kwargs", "phrases"),
    [
        ({}, ["at least one of usd=, tokens= or requests="]),
        ({"usd": -1}, ["usd", "greater than or equal to 0"]),
        ({"usd": True}, ["usd must be a number of dollars, not a bool"]),
        ({"usd": "ten"}, ["usd", "valid decimal"]),
        ({"usd": float("nan")}, ["usd", "finite"]),
        ({"usd": float("inf")}, ["usd", "finite"]),
        ({"tokens": 1.5}, ["tokens", "valid integer"]),
        ({"tokens": -1}, ["tokens", "greater than or equal to 0"]),
        ({"requests": "5"}, ["requests", "valid integer"]),
        (
            {"tokens": 1, "per": "fortnight"},
            ["per", "'minute', 'hour', 'day', 'week', 'month' or 'lifetime'"],
        ),
        ({"tokens": 1, "scope": ""}, ["is empty", "'user:{user_id}'"]),
        ({"tokens": 1, "scope": "user:{id"}, ["not a valid template", "{name}"]),
        ({"tokens": 1, "scope": "{a}{b}"}, ["need a separator", "'{org_id}/{user_id}'"]),
        ({"tokens": 1, "scope": "user:{0}"}, ["plain metadata key such as {user_id}"]),
        ({"tokens": 1, "scope": "user:{id!r}"}, ["plain metadata key"]),
        ({"tokens": 1, "usd_limit": 5}, ["usd_limit", "Extra inputs are not permitted"]),
    ],
)
def test_bad_limits_are_refused_at_construction(kwargs: dict[str, Any], phrases: list[str]) -> None:
    raises(lambda: Limit(**kwargs), *phrases)


@pytest.mark.parametrize(
    ("kwargs", "phrases"),
    [
        ({}, ["needs a limit", "limit_usd=", "limits=[Limit(...)]"]),
        ({"limit_usd": -5}, ["usd", "greater than or equal to 0"]),
        ({"limits": [{"usd": 1}]}, ["limits must hold budgetguard.Limit objects", "dict"]),
        ({"limit_usd": 1, "lease_ttl": 0}, ["lease_ttl must be a positive number of seconds"]),
        ({"limit_usd": 1, "lease_ttl": "600"}, ["lease_ttl must be a positive number of seconds"]),
        ({"limit_usd": 1, "store_timeout": -1}, ["store_timeout must be a positive number of seconds"]),
        ({"limit_usd": 1, "store_timeout": True}, ["store_timeout must be a positive number of seconds"]),
        ({"limit_usd": 1, "on_store_error": "maybe"}, ["on_store_error must be 'closed'", "'open'"]),
        (
            {"limit_usd": 1, "default_max_output_tokens": 0},
            ["default_max_output_tokens must be a positive int"],
        ),
        ({"limit_usd": 1, "degrade_at": 1.5}, ["degrade_at must be a fraction in (0, 1]"]),
        ({"limit_usd": 1, "degrade_at": 0.8}, ["degrade_at needs fallback="]),
        ({"limit_usd": 1, "store": 42}, ["store must be a budgetguard Store or a URL", "'memory://'"]),
        (
            {"limit_usd": 1, "prices": {"my-model": {"input": 1, "output": 2}}},
            ["prices['my-model'] must be budgetguard.Price(input_per_mtok=..., output_per_mtok=...)"],
        ),
        ({"limit_usd": 1, "default_price": 0.5}, ["default_price must be a budgetguard.Price"]),
    ],
)
def test_bad_guard_arguments_are_refused_at_construction(kwargs: dict[str, Any], phrases: list[str]) -> None:
    raises(lambda: BudgetGuard(**kwargs), *phrases)


@pytest.mark.parametrize(
    ("kwargs", "phrases"),
    [
        ({"input_per_mtok": -1, "output_per_mtok": 1}, ["input_per_mtok", "greater than or equal to 0"]),
        ({"input_per_mtok": "cheap", "output_per_mtok": 1}, ["input_per_mtok", "valid decimal"]),
        ({"input_per_mtok": 1}, ["output_per_mtok", "Field required"]),
        ({"input_per_mtok": 1, "output_per_mtok": float("nan")}, ["output_per_mtok", "finite"]),
        ({"input_per_mtok": 1, "output_per_mtok": 2, "per_request": 1}, ["per_request", "Extra inputs"]),
    ],
)
def test_bad_prices_are_refused_at_construction(kwargs: dict[str, Any], phrases: list[str]) -> None:
    raises(lambda: Price(**kwargs), *phrases)


def test_an_unpriced_model_is_refused_before_the_call_with_the_fix() -> None:
    llm = FakeChatModel(model_name="my-private-model-v0")
    raises(
        lambda: BudgetGuard(limit_usd=1).wrap(llm).invoke("hi"),
        "my-private-model-v0",
        "prices={'my-private-model-v0': budgetguard.Price(input_per_mtok=..., output_per_mtok=...)}",
        "default_price=Price(...)",
        exc=UnknownModelPrice,
    )
    assert llm.calls.count == 0


@pytest.mark.parametrize(
    ("url", "phrases"),
    [
        ("ftp://cache.internal:6379", ["unknown store URL scheme", "'redis://'", "'memory://'"]),
        ("http://cache.internal", ["unknown store URL scheme", "'redis://'"]),
        ("cache.internal:6379", ["unknown store URL scheme", "'redis://'"]),
        ("redis:/cache.internal", ["unknown store URL scheme", "'redis://'"]),
        (
            "redis://cache.internal:notaport",
            ["bad Redis URL", "notaport", "redis://[user:password@]host:6379/0"],
        ),
        ("redis://cache.internal:99999", ["bad Redis URL", "99999", "redis://[user:password@]host:6379/0"]),
        ("redis://cache.internal:-1/0", ["bad Redis URL", "redis://[user:password@]host:6379/0"]),
        ("redis+cluster://h1:7000,h2:notaport", ["bad Redis URL", "notaport"]),
        ("redis+sentinel://s1:x/mymaster", ["bad Redis URL", "'x'"]),
        ("redis://cache.internal:6379/notadb", ["notadb", "redis://[user:password@]host:6379/0"]),
        ("redis://cache.internal:6379/0?socket_timeout=soon", ["socket_timeout", "soon"]),
    ],
)
def test_bad_store_urls_are_refused_at_construction(url: str, phrases: list[str]) -> None:
    """Refused when the guard is built (no connection is tried), naming the part to fix."""
    raises(lambda: BudgetGuard(limit_usd=1, store=url), *phrases, exc=ConfigError)
    raises(lambda: store_from_url(url), *phrases, exc=ConfigError)


def test_a_bad_url_never_echoes_its_password() -> None:
    for url in (
        "rediss+clustr://user:s3cret-pw@h:1",  # a typo in the scheme
        "redis://user:s3cret-pw@h:notaport/0",
        "redis+cluster://:s3cret-pw@h1:1,h2:notaport",
        "rediss+clustr://s3cret-pw@h:1",  # password-only form: RedisStore reads a lone user as the password
    ):
        with pytest.raises(BudgetError) as info:
            BudgetGuard(limit_usd=1, store=url)
        assert "s3cret-pw" not in str(info.value), f"{url}: {info.value}"
