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
from budgetguard.plain_usage import PLAIN, plain_totals
from budgetguard.pricing import Price, _ceil_nanos, resolve_rates
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
