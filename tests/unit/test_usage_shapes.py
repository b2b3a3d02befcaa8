"""The usage-shape tables and their interpreter (``budgetguard/providers.py``, ``usage.read_shape``).

Unit tests pin what each ``need`` level means and how nested details resolve;
the property tests check the interpreter against the hand-written parsers it
replaced, which are kept below verbatim in behaviour as the reference oracle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetguard import providers
from budgetguard.providers import RESPONSE_ROOTS, SHAPES, Row, Shape, load_tables
from budgetguard.usage import MAX_TOKENS, RULES, SCRATCH, TokenUsage, lookup, read_shape

# ----------------------------------------------------------- the oracle
# The parsers as they stood at eecfe85 (budgetguard/usage.py), kept verbatim in
# behaviour so the table interpreter can be checked against them.

_MAX = 10_000_000_000
_OLD_IN_KEYS = (
    "cache_read",
    "cache_creation",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "audio",
)


def _old_count(value: Any) -> int | None:
    if type(value) is not int or value < 0 or value > _MAX:
        return None
    return value


def _old_detail(details: Mapping[str, Any], key: str) -> int | None:
    value = details.get(key)
    return 0 if value is None else _old_count(value)


def _old_pair(inp: Any, out: Any) -> TokenUsage | None:
    i, o = _old_count(inp), _old_count(out)
    if i is None or o is None:
        return None
    return TokenUsage(input_tokens=i, output_tokens=o)


def _old_consistent(u: TokenUsage) -> TokenUsage:
    cached = u.cache_read + u.cache_write
    if cached + u.input_audio > u.input_tokens:
        u = u._replace(input_tokens=u.input_tokens + cached + u.input_audio, estimated=True)
    if u.reasoning + u.output_audio > u.output_tokens:
        u = u._replace(output_tokens=u.output_tokens + u.reasoning + u.output_audio, estimated=True)
    return u


def old_from_usage_metadata(usage: Any) -> TokenUsage | None:
    if not isinstance(usage, Mapping):
        return None
    get = usage.get
    inp, out = get("input_tokens"), get("output_tokens")
    if type(inp) is not int or type(out) is not int or not (0 <= inp <= _MAX and 0 <= out <= _MAX):
        return None
    idet, odet = get("input_token_details"), get("output_token_details")
    cache_read = cache_write = e5 = e1 = audio_in = reasoning = audio_out = 0
    if idet:
        if not isinstance(idet, Mapping):
            return None
        vals = [_old_detail(idet, k) for k in _OLD_IN_KEYS]
        if None in vals:
            return None
        cache_read, cache_write, e5, e1, audio_in = vals  # type: ignore[assignment]
        cache_write = max(cache_write, e5 + e1)
    if odet:
        if not isinstance(odet, Mapping):
            return None
        reasoning_v, audio_out_v = _old_detail(odet, "reasoning"), _old_detail(odet, "audio")
        if reasoning_v is None or audio_out_v is None:
            return None
        reasoning, audio_out = reasoning_v, audio_out_v
    u = TokenUsage(
        inp, out, cache_read, cache_write, e1, audio_in, audio_out, reasoning, False, get("total_cost") == 0
    )
    if cache_read + cache_write + audio_in > inp or reasoning + audio_out > out:
        return _old_consistent(u)
    return u


def _old_provider_usage(raw: Mapping[str, Any]) -> TokenUsage | None:
    if "prompt_tokens" in raw or "completion_tokens" in raw:
        base = _old_pair(raw.get("prompt_tokens"), raw.get("completion_tokens"))
        if base is None:
            return None
        pdet = raw.get("prompt_tokens_details") or {}
        cdet = raw.get("completion_tokens_details") or {}
        if not isinstance(pdet, Mapping) or not isinstance(cdet, Mapping):
            return base.flagged()
        vals = [_old_detail(pdet, "cached_tokens"), _old_detail(pdet, "audio_tokens")]
        vals += [_old_detail(cdet, "reasoning_tokens"), _old_detail(cdet, "audio_tokens")]
        if any(v is None for v in vals):
            return base.flagged()
        c_read, a_in, reas, a_out = (v or 0 for v in vals)
        return _old_consistent(
            base._replace(cache_read=c_read, input_audio=a_in, reasoning=reas, output_audio=a_out)
        )
    if "input_tokens" in raw or "output_tokens" in raw:
        base = _old_pair(raw.get("input_tokens"), raw.get("output_tokens"))
        if base is None:
            return None
        cr = _old_detail(raw, "cache_read_input_tokens")
        cw = _old_detail(raw, "cache_creation_input_tokens")
        creation = raw.get("cache_creation")
        e1: int | None = 0
        if isinstance(creation, Mapping):
            e1 = _old_detail(creation, "ephemeral_1h_input_tokens")
        if cr is None or cw is None or e1 is None:
            return base.flagged()
        return base._replace(
            input_tokens=base.input_tokens + cr + cw,
            cache_read=cr,
            cache_write=cw,
            cache_write_1h=min(e1, cw),
        )
    if "inputTokens" in raw or "outputTokens" in raw:
        base = _old_pair(raw.get("inputTokens"), raw.get("outputTokens"))
        if base is None:
            return None
        b_read = _old_detail(raw, "cacheReadInputTokens")
        b_write = _old_detail(raw, "cacheWriteInputTokens")
        if b_read is None or b_write is None:
            return base.flagged()
        return base._replace(
            input_tokens=base.input_tokens + b_read + b_write, cache_read=b_read, cache_write=b_write
        )
    return None


def old_from_response_metadata(meta: Any) -> TokenUsage | None:
    if not isinstance(meta, Mapping):
        return None
    for key in ("token_usage", "usage"):
        raw = meta.get(key)
        if isinstance(raw, Mapping):
            parsed = _old_provider_usage(raw)
            if parsed is not None:
                return parsed
    metrics = meta.get("amazon-bedrock-invocationMetrics")
    if isinstance(metrics, Mapping):
        return _old_pair(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))
    if "prompt_eval_count" in meta or "eval_count" in meta:
        # Changed on purpose (issue 9, item 8): Ollama leaves prompt_eval_count out when it
        # evaluated no prompt (thinking models, a cached prompt); eval_count still counts.
        prompt = meta.get("prompt_eval_count")
        return _old_pair(0 if prompt is None else prompt, meta.get("eval_count"))
    return None


# ----------------------------------------------------------- interpreter units


def shape(*rows: tuple[str, str, str], rules: tuple[str, ...] = (), loose: bool = False) -> Shape:
    return Shape(
        "t",
        (),
        tuple(Row(tuple(p.split(".")), to, need) for p, to, need in rows),  # type: ignore[arg-type]
        rules,
        loose_details=loose,
    )


BASE = (("i", "input_tokens", "required"), ("o", "output_tokens", "required"))


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0),
        (7, 7),
        (MAX_TOKENS, MAX_TOKENS),
        (None, None),
        (MAX_TOKENS + 1, "invalid"),
        (-1, "invalid"),
        (True, "invalid"),
        (1.0, "invalid"),
        ("3", "invalid"),
    ],
)
def test_lookup_reads_only_plain_bounded_ints(value: Any, expected: Any) -> None:
    got = lookup({"k": value}, ("k",))
    assert (got if got is None or type(got) is int else "invalid") == expected


@pytest.mark.parametrize(
    "details, strict, loose",
    [
        (None, None, None),
        ({}, None, None),
        (0, None, None),
        ("", None, None),
        ([], None, None),
        ("x", "invalid", None),
        ([1], "invalid", None),
        (5, "invalid", None),
        ({"n": 4}, 4, 4),
        ({"n": -4}, "invalid", "invalid"),
    ],
)
def test_nested_details_falsy_is_absent_other_non_mappings_invalid_unless_loose(
    details: Any, strict: Any, loose: Any
) -> None:
    def norm(v: Any) -> Any:
        return v if v is None or type(v) is int else "invalid"

    assert norm(lookup({"d": details}, ("d", "n"))) == strict
    assert norm(lookup({"d": details}, ("d", "n"), loose=True)) == loose
    assert lookup({}, ("d", "n")) is None


def test_required_row_absent_or_invalid_means_no_reading() -> None:
    s = shape(*BASE)
    assert read_shape(s, {"i": 3, "o": 4}) == TokenUsage(3, 4)
    assert read_shape(s, {"i": 3}) is None
    assert read_shape(s, {"i": 3, "o": None}) is None
    assert read_shape(s, {"i": 3, "o": -1}) is None


def test_checked_row_absent_is_zero_invalid_means_no_reading() -> None:
    s = shape(*BASE, ("d.r", "reasoning", "checked"))
    assert read_shape(s, {"i": 3, "o": 4}) == TokenUsage(3, 4)
    assert read_shape(s, {"i": 3, "o": 4, "d": {"r": 2}}) == TokenUsage(3, 4, reasoning=2)
    assert read_shape(s, {"i": 3, "o": 4, "d": {"r": "2"}}) is None
    assert read_shape(s, {"i": 3, "o": 4, "d": "junk"}) is None


def test_optional_row_invalid_drops_every_optional_count_and_flags() -> None:
    s = shape(*BASE, ("c", "cache_read", "optional"), ("d.r", "reasoning", "optional"))
    assert read_shape(s, {"i": 9, "o": 4, "c": 2, "d": {"r": 1}}) == TokenUsage(
        9, 4, cache_read=2, reasoning=1
    )
    assert read_shape(s, {"i": 9, "o": 4, "c": 2, "d": {"r": 1.5}}) == TokenUsage(9, 4, estimated=True)
    assert read_shape(s, {"i": 9, "o": 4, "c": 2, "d": "junk"}) == TokenUsage(9, 4, estimated=True)
    assert read_shape(
        shape(*BASE, ("c", "cache_read", "optional"), loose=True), {"i": 9, "o": 4, "c": {}}
    ) == (TokenUsage(9, 4, estimated=True))
    # a bad required count still wins over a bad optional one
    assert read_shape(s, {"i": 9, "o": "4", "c": "2"}) is None


def test_loose_shape_ignores_non_mapping_details() -> None:
    s = shape(*BASE, ("d.r", "reasoning", "optional"), loose=True)
    assert read_shape(s, {"i": 3, "o": 4, "d": "junk"}) == TokenUsage(3, 4)
    assert read_shape(s, {"i": 3, "o": 4, "d": {"r": "x"}}) == TokenUsage(3, 4, estimated=True)


def test_rules_apply_in_order_and_see_scratch_counts() -> None:
    s = shape(
        *BASE,
        ("w", "cache_write", "checked"),
        ("w5", "cache_write_5m", "checked"),
        ("w1", "cache_write_1h", "checked"),
        rules=("cache_write_covers_ttls", "input_excludes_cache"),
    )
    u = read_shape(s, {"i": 10, "o": 1, "w": 2, "w5": 3, "w1": 4})
    assert u == TokenUsage(17, 1, cache_write=7, cache_write_1h=4)


def test_each_rule() -> None:
    u = TokenUsage(10, 5, cache_read=3, cache_write=2, cache_write_1h=6)
    assert RULES["input_excludes_cache"](u, {}, {}).input_tokens == 15
    assert RULES["cache_write_1h_within_cache_write"](u, {}, {}).cache_write_1h == 2
    assert RULES["cache_write_covers_ttls"](u, {"cache_write_5m": 1}, {}).cache_write == 7
    assert RULES["cache_write_covers_ttls"](u, {}, {}).cache_write == 6
    assert RULES["zero_total_cost_is_cache_hit"](u, {}, {"total_cost": 0}).cache_hit is True
    assert RULES["zero_total_cost_is_cache_hit"](u, {}, {"total_cost": 0.5}).cache_hit is False
    assert RULES["zero_total_cost_is_cache_hit"](u, {}, {}).cache_hit is False
    repaired = RULES["repair_contradictions"](TokenUsage(1, 1, cache_read=4, reasoning=2), {}, {})
    assert repaired == TokenUsage(5, 3, cache_read=4, reasoning=2, estimated=True)


def test_claims_by_detect_keys_or_any_mapping_when_empty() -> None:
    openai, invoke = SHAPES["openai"], SHAPES["bedrock_invoke"]
    assert openai.claims({"prompt_tokens": None}) and not openai.claims({"input_tokens": 1})
    assert invoke.claims({})


# ----------------------------------------------------------- the shipped tables


def test_tables_cover_every_root_and_shape() -> None:
    assert [root for root, _ in RESPONSE_ROOTS] == [
        "token_usage",
        "usage",
        "amazon-bedrock-invocationMetrics",
        None,
    ]
    assert {s.name for _, shapes in RESPONSE_ROOTS for s in shapes} | {"langchain"} == set(SHAPES)
    assert providers.USAGE_METADATA_SHAPE is SHAPES["langchain"]
    for s in SHAPES.values():
        assert set(s.rules) <= set(RULES)
        assert all(r.to in TokenUsage._fields or r.to in SCRATCH for r in s.rows)
        # Ollama omits prompt_eval_count when it evaluated no prompt: only its output is required.
        expected = ["checked", "required"] if s.name == "ollama" else ["required", "required"]
        assert [r.need for r in s.rows[:2]] == expected


def test_provider_aliases_and_bedrock_prefixes_are_the_old_constants() -> None:
    assert providers.PROVIDER_ALIASES == {
        "amazon_bedrock": "aws",
        "bedrock": "aws",
        "bedrock_converse": "aws",
        "aws": "aws",
        "google_genai": "google",
        "google_vertexai": "google",
        "google_anthropic_vertex": "anthropic",
        "vertexai": "google",
        "azure": "azure",
        "azure_openai": "azure",
        "mistralai": "mistral",
        "fireworks": "fireworks",
        "together": "together",
        "xai": "x-ai",
    }
    assert providers.BEDROCK_REGION_PREFIXES == (
        "us.",
        "eu.",
        "apac.",
        "global.",
        "us-gov.",
        "jp.",
        "au.",
        "ca.",
    )


def _shipped() -> dict[str, Any]:
    text = (resources.files("budgetguard") / "data" / "providers.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["shapes"]["openai"]["rows"][0].update(need="maybe"), "bad row"),
        (lambda d: d["shapes"]["openai"]["rows"][0].update(path=""), "bad row"),
        (lambda d: d["shapes"]["openai"]["rows"][1].update(to="input_tokens"), "two rows"),
        (lambda d: d["response_metadata"][0]["shapes"].append("gemini"), "unknown shape"),
        (lambda d: d.update(usage_metadata_shape="nope"), "unknown shape"),
        (lambda d: d["shapes"]["anthropic"].update(non_mapping_details="zero"), "non_mapping_details"),
    ],
)
def test_load_tables_rejects_a_damaged_file(damage: Any, message: str) -> None:
    data = _shipped()
    damage(data)
    with pytest.raises(ValueError, match=message):
        load_tables(json.dumps(data))


def test_ollama_without_prompt_eval_count_keeps_its_output() -> None:
    assert TokenUsage.from_response_metadata({"eval_count": 300}) == TokenUsage(0, 300)
    assert TokenUsage.from_response_metadata({"prompt_eval_count": 5}) is None
    assert TokenUsage.from_response_metadata({"prompt_eval_count": "x", "eval_count": 300}) is None


def test_bedrock_invoke_metrics_end_the_search_even_when_bad() -> None:
    meta = {
        "amazon-bedrock-invocationMetrics": {"inputTokenCount": "x"},
        "prompt_eval_count": 3,
        "eval_count": 4,
    }
    assert TokenUsage.from_response_metadata(meta) is None
    assert TokenUsage.from_response_metadata({"prompt_eval_count": 3, "eval_count": 4}) == TokenUsage(3, 4)


def test_a_bad_root_moves_on_to_the_next_root() -> None:
    meta = {
        "token_usage": {"prompt_tokens": "x", "input_tokens": 5},
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    assert TokenUsage.from_response_metadata(meta) == TokenUsage(5, 2)


def test_anthropic_cache_is_added_to_input_and_1h_capped() -> None:
    raw = {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_creation": {"ephemeral_1h_input_tokens": 50},
    }
    assert TokenUsage.from_response_metadata({"usage": raw}) == TokenUsage(
        130, 3, cache_read=100, cache_write=20, cache_write_1h=20
    )


# ----------------------------------------------------------- equivalence with the oracle

MISSING = object()
count_like = st.one_of(
    st.integers(min_value=0, max_value=3000),
    st.integers(min_value=-3, max_value=-1),
    st.sampled_from([MAX_TOKENS, MAX_TOKENS + 1, 0]),
    st.none(),
    st.booleans(),
    st.sampled_from(["", "7", 1.0, 0.0, [], {}, [1]]),
)
DETAIL_KEYS = (
    "cached_tokens",
    "audio_tokens",
    "reasoning_tokens",
    "ephemeral_1h_input_tokens",
    "ephemeral_5m_input_tokens",
    "cache_read",
    "cache_creation",
    "audio",
    "reasoning",
)
details_like = st.one_of(
    st.dictionaries(st.sampled_from(DETAIL_KEYS), count_like, max_size=5),
    st.sampled_from([None, 0, "", [], {}, False, "junk", 3, [1], True]),
)
PROVIDER_KEYS = {
    "prompt_tokens": count_like,
    "completion_tokens": count_like,
    "prompt_tokens_details": details_like,
    "completion_tokens_details": details_like,
    "input_tokens": count_like,
    "output_tokens": count_like,
    "cache_read_input_tokens": count_like,
    "cache_creation_input_tokens": count_like,
    "cache_creation": details_like,
    "inputTokens": count_like,
    "outputTokens": count_like,
    "cacheReadInputTokens": count_like,
    "cacheWriteInputTokens": count_like,
    "inputTokenCount": count_like,
    "outputTokenCount": count_like,
}
provider_raw = st.one_of(
    st.fixed_dictionaries({}, optional=PROVIDER_KEYS),
    st.sampled_from([None, 0, "junk", [], {}]),
)
response_meta = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "token_usage": provider_raw,
            "usage": provider_raw,
            "amazon-bedrock-invocationMetrics": provider_raw,
            "prompt_eval_count": count_like,
            "eval_count": count_like,
            "model_name": st.text(max_size=3),
        },
    ),
    st.sampled_from([None, "junk", [], 0]),
)
usage_meta = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": count_like,
            "output_tokens": count_like,
            "total_tokens": count_like,
            "input_token_details": details_like,
            "output_token_details": details_like,
            "total_cost": st.sampled_from([0, 0.0, 1, None, "0", False, 0.5]),
        },
    ),
    st.sampled_from([None, "junk", [], 0, {}]),
)
# Dense, per-shape inputs: mostly-valid counts so the rarer branches are reached.
good = st.integers(min_value=0, max_value=3000)
cnt = st.one_of(good, good, good, count_like)
junk_details = st.sampled_from([None, 0, "", [], {}, False, "junk", 3, [1], True])


def dets(*keys: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(st.sampled_from(keys), cnt), st.dictionaries(st.sampled_from(keys), cnt), junk_details
    )


def raw_with(
    required: tuple[str, str], **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({k: cnt for k in required}, optional=optional)


openai_raw = raw_with(
    ("prompt_tokens", "completion_tokens"),
    prompt_tokens_details=dets("cached_tokens", "audio_tokens"),
    completion_tokens_details=dets("reasoning_tokens", "audio_tokens"),
)
anthropic_raw = raw_with(
    ("input_tokens", "output_tokens"),
    cache_read_input_tokens=cnt,
    cache_creation_input_tokens=cnt,
    cache_creation=dets("ephemeral_1h_input_tokens", "ephemeral_5m_input_tokens"),
)
converse_raw = raw_with(("inputTokens", "outputTokens"), cacheReadInputTokens=cnt, cacheWriteInputTokens=cnt)
dense_meta = st.fixed_dictionaries(
    {},
    optional={
        "token_usage": st.one_of(openai_raw, anthropic_raw, converse_raw, junk_details),
        "usage": st.one_of(openai_raw, anthropic_raw, converse_raw, junk_details),
        "amazon-bedrock-invocationMetrics": st.one_of(
            raw_with(("inputTokenCount", "outputTokenCount")),
            st.dictionaries(st.just("x"), cnt),
            junk_details,
        ),
        "prompt_eval_count": cnt,
        "eval_count": cnt,
    },
)
dense_usage_meta = raw_with(
    ("input_tokens", "output_tokens"),
    input_token_details=dets(
        "cache_read", "cache_creation", "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "audio"
    ),
    output_token_details=dets("reasoning", "audio"),
    total_cost=st.sampled_from([0, 0.0, 1, None, "0", False, 0.5]),
)
EQUIV = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def typed(u: TokenUsage | None) -> Any:
    """Compare field types too: ``True == 1`` must not hide a bool where an int belongs."""
    return None if u is None else tuple((type(v), v) for v in u)


@EQUIV
@given(meta=st.one_of(response_meta, dense_meta))
def test_response_metadata_matches_the_old_parser(meta: Any) -> None:
    assert typed(TokenUsage.from_response_metadata(meta)) == typed(old_from_response_metadata(meta))


@EQUIV
@given(um=st.one_of(usage_meta, dense_usage_meta))
def test_usage_metadata_matches_the_old_parser(um: Any) -> None:
    assert typed(TokenUsage.from_usage_metadata(um)) == typed(old_from_usage_metadata(um))


@EQUIV
@given(
    raw=st.one_of(st.fixed_dictionaries({}, optional=PROVIDER_KEYS), openai_raw, anthropic_raw, converse_raw),
    root=st.sampled_from(["token_usage", "usage"]),
)
def test_each_provider_shape_matches_the_old_parser_at_either_root(raw: dict[str, Any], root: str) -> None:
    meta = {root: raw}
    assert typed(TokenUsage.from_response_metadata(meta)) == typed(old_from_response_metadata(meta))
