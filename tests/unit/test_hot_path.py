"""The hot path's shortcuts give what the general code they skip gives.

Each shortcut (a plain ``UsageMetadata`` read without the shape interpreter,
the flat worst-case rates, the params digest cache, the inlined refusal rule)
is checked against the general code, on the inputs it takes and on the ones
it must leave alone.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from budgetguard.engine import prefixes
from budgetguard.plain_usage import DETAILED, PLAIN, detailed_counts, plain_totals
from budgetguard.pricing import Price, Rates, resolve_rates
from budgetguard.rates import _ceil_nanos, _Unit
from budgetguard.reservation import (
    QUANTITIES,
    Amount,
    Caps,
    CounterRef,
    CounterSpec,
    CounterState,
    Violation,
    exceeds,
    first_violation,
)
from budgetguard.usage import TokenUsage, _read_usage_metadata

VALUES = [0, 1, 7, 10_000_000_000, 10_000_000_001, -1, True, 1.0, None, "3"]


def test_the_bundled_usage_shape_takes_the_plain_shortcut() -> None:
    assert PLAIN
    assert TokenUsage.from_usage_metadata({"input_tokens": 3, "output_tokens": 4}) == TokenUsage(3, 4)
    um = {"input_tokens": 1200, "output_tokens": 300, "input_token_details": {"cache_read": 400}}
    assert detailed_counts(um, 10**10) == (1200, 300, 400, 0, 0, 0, 0, 0)  # the details shortcut


def test_plain_usage_reads_as_the_shape_interpreter() -> None:
    extras: list[dict[str, object]] = [
        {},
        {"total_tokens": 9},
        {"total_cost": 0},
        {"total_cost": 0.5},
        {"input_token_details": {}},
        {"input_token_details": {"cache_read": 2}},
        {"output_token_details": {"reasoning": 1}},
        {"input_token_details": None, "output_token_details": None},
    ]
    for i, o, extra in itertools.product(VALUES, VALUES, extras):
        um: dict[str, object] = {"input_tokens": i, "output_tokens": o, **extra}
        got = TokenUsage.from_usage_metadata(um)  # the shortcut where it applies, else the interpreter
        assert got == _read_usage_metadata(um), um
        if got is not None:
            assert type(got.estimated) is bool and type(got.cache_hit) is bool
    assert plain_totals({"input_tokens": 1, "output_tokens": 2, "total_cost": 0}, 10**10) is None
    assert plain_totals({"input_tokens": 1, "output_tokens": 2}, 10**10) == (1, 2)


DETAIL_VALUES = [None, 0, 1, 5, 400, 10_000_000_001, -1, True, "3"]
INPUT_KEYS = (
    "cache_read",
    "cache_creation",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "audio",
)


@given(
    st.sampled_from([0, 3, 1200, True, None]),
    st.sampled_from([0, 2, 300, -1]),
    st.one_of(
        st.none(),
        st.sampled_from([0, "", [], 7, {}]),
        st.dictionaries(st.sampled_from(INPUT_KEYS), st.sampled_from(DETAIL_VALUES)),
    ),
    st.one_of(
        st.none(),
        st.sampled_from([0, {}, "x"]),
        st.dictionaries(st.sampled_from(["reasoning", "audio", "other"]), st.sampled_from(DETAIL_VALUES)),
    ),
    st.sampled_from([None, 0, 0.5]),
)
def test_usage_with_details_reads_as_the_shape_interpreter(
    i: object, o: object, ins: object, outs: object, total_cost: object
) -> None:
    assert DETAILED
    um: dict[str, object] = {"input_tokens": i, "output_tokens": o}
    if ins is not None:
        um["input_token_details"] = ins
    if outs is not None:
        um["output_token_details"] = outs
    if total_cost is not None:
        um["total_cost"] = total_cost
    assert TokenUsage.from_usage_metadata(um) == _read_usage_metadata(um), um
    counts = detailed_counts(um, 10_000_000_000)
    if counts is not None:
        assert TokenUsage(*counts) == _read_usage_metadata(um), um


def _numerator(rates: Rates, u: TokenUsage) -> int:
    """``Rates.numerator`` as it was, with the counts in a dict by usage key."""
    counts = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
    if u.cache_read:
        counts["cache_read_tokens"] = u.cache_read
    if u.cache_write:
        counts["cache_write_tokens"] = u.cache_write
        counts["cache_write_5m_tokens"] = u.cache_write - u.cache_write_1h
        counts["cache_write_1h_tokens"] = u.cache_write_1h
    for key, n in (
        ("input_audio_tokens", u.input_audio),
        ("output_audio_tokens", u.output_audio),
        ("output_reasoning_tokens", u.reasoning),
    ):
        if n:
            counts[key] = n
    leaves: list[int] = []
    total = rates.per_request * 10**6
    for unit in rates.units:
        leaf = counts.get(unit.key, 0)
        for d in unit.descendants:
            leaf -= leaves[d]
        leaf = max(leaf, 0)
        leaves.append(leaf)
        rate = unit.base
        for start, tier_rate in unit.tiers:
            if u.input_tokens > start:
                rate = tier_rate
        total += rate * leaf
    return total


_TTL_SPLIT = Rates(  # no bundled model prices the 5-minute writes apart
    "x",
    None,
    0,
    (
        _Unit("cache_write_5m_tokens", "input", 3, (), ()),
        _Unit("cache_write_1h_tokens", "input", 5, (), ()),
        _Unit("cache_write_tokens", "input", 2, (), (0, 1)),
        _Unit("input_tokens", "input", 1, (), (2,)),
        _Unit("output_tokens", "output", 4, (), ()),
        _Unit("searches", None, 9, (), ()),
    ),
    0,
)


@given(
    st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-5", "gpt-realtime", "gemini-2.5-pro", "o3", ""]),
    st.builds(TokenUsage, *[st.sampled_from([0, 1, 7, 300, 250_000])] * 8),
)
def test_the_indexed_counts_price_as_the_usage_key_dict(model: str, u: TokenUsage) -> None:
    rates = resolve_rates(model) if model else _TTL_SPLIT
    assert rates.numerator(u) == _numerator(rates, u)


def test_flat_worst_rates_match_the_general_loop() -> None:
    for rates in (
        resolve_rates("gpt-4o-mini"),
        resolve_rates("claude-sonnet-4-5"),
        resolve_rates("x", prices={"x": Price(input_per_mtok="0.3", output_per_mtok="1.2")}),
    ):
        for inp, out in ((0, 0), (1, 1), (1200, 300), (300_000, 10)):
            assert rates._flat_worst in (None, rates._dearest(0))
            best_in, best_out = rates._dearest(inp)
            num = rates.per_request * 10**6 + best_in * inp + best_out * out
            assert rates.worst_nanos(inp, out) == _ceil_nanos(num, rates.scale)


def test_the_params_digest_cache_gives_the_digest_of_the_slow_path() -> None:
    cases = [
        {"model": "m", "temperature": 0.5, "max_tokens": 10},
        {"max_tokens": 10, "model": "m", "temperature": 0.5},  # another order: the same digest
        {"model": "m", "parallel_tool_calls": True},
        {"model": "m", "parallel_tool_calls": 1},  # equal to True, another digest
        {"model": "m", "tools": [{"type": "function", "function": {"name": "f"}}]},
    ]
    slow = []
    for params in cases:
        prefixes._SEEN.clear()
        prefixes._ROOTS.clear()
        slow.append(prefixes._root(params, "m"))
    for params, want in zip(cases, slow, strict=True):
        for _ in range(2):  # the first call fills the cache, the second reads it
            assert prefixes._root(params, "m") == want
    assert slow[0] == slow[1] and slow[2] != slow[3]


def test_the_link_cache_gives_the_hash_of_the_slow_path() -> None:
    import hashlib

    from langchain_core.messages import AIMessage, HumanMessage

    parent = b"p" * 16
    msgs = [HumanMessage("hi"), AIMessage("yo"), HumanMessage("x" * 5000), AIMessage("a", name="n")]
    prefixes._LINKS.clear()
    first = [prefixes._link(parent, m) for m in msgs]
    assert [prefixes._link(parent, m) for m in msgs] == first  # from the cache where it applies
    assert len(prefixes._LINKS) == 2  # plain text only, and not too long
    want = hashlib.blake2b(parent + b"human\0shi", digest_size=16).digest()
    assert first[0] == want and first[0] != prefixes._link(b"q" * 16, msgs[0])


def _reference(specs: list[CounterSpec], states: list[CounterState], request: Amount) -> Violation | None:
    for i, (spec, s) in enumerate(zip(specs, states, strict=True)):
        for j in range(3):
            if exceeds(spec.caps[j], s.spent[j], s.reserved[j], request[j]):
                return Violation(i, QUANTITIES[j])
    for i, (spec, s) in enumerate(zip(specs, states, strict=True)):
        for j in range(3):
            if spec.soft is not None and exceeds(spec.soft[j], s.spent[j], s.reserved[j], request[j]):
                return Violation(i, QUANTITIES[j], soft=True)
    return None


caps = st.builds(Caps, *[st.one_of(st.none(), st.integers(0, 50))] * 3)
amounts = st.builds(Amount, *[st.integers(0, 30)] * 3)


@given(
    st.lists(st.tuples(caps, st.one_of(st.none(), caps), amounts, amounts), min_size=1, max_size=4),
    amounts,
)
def test_the_inlined_refusal_rule_is_exceeds(
    rows: list[tuple[Caps, Caps | None, Amount, Amount]], req: Amount
) -> None:
    specs = [CounterSpec(CounterRef(f"s{i}", "day"), c, soft) for i, (c, soft, _, _) in enumerate(rows)]
    states = [CounterState(spent=spent, reserved=res) for _, _, spent, res in rows]
    assert first_violation(specs, states, req) == _reference(specs, states, req)
