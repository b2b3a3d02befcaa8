"""The Redis scripts' codec, without a server: arguments, reply widths, reply decoding.

The scripts read ARGV by position and reply ``1 + len(FIELDS)`` integers per
counter; these tests pin that layout so a change on one side cannot pass
unnoticed on the other.
"""

from __future__ import annotations

from importlib import resources

import pytest

from budgetguard.errors import ConfigError
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec, CounterState, Violation
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import codec, scripts

REF = CounterRef("org:1/user:2", "day")


def values(st: CounterState) -> list[int]:
    """A counter as the scripts reply it: window start, then FIELDS, by field name."""
    by_name = {
        "sn": st.spent.nanos, "st": st.spent.tokens, "sr": st.spent.requests,
        "rn": st.reserved.nanos, "rt": st.reserved.tokens, "rr": st.reserved.requests,
        "oc": st.overshoot_count,
        "on": st.overshoot.nanos, "ot": st.overshoot.tokens, "orq": st.overshoot.requests,
        "ec": st.estimated_count,
    }  # fmt: skip
    return [st.window_start, *(by_name[f] for f in codec.FIELDS)]


STATES = [
    CounterState(86400, Amount(1, 2, 3), Amount(4, 5, 6), 7, Amount(8, 9, 10), 11),
    CounterState(0, Amount(2**53, 0, 1), Amount(), 0, Amount(), 0),
]


def test_the_width_is_one_window_start_plus_the_fields() -> None:
    assert codec.FIELDS == ("sn", "st", "sr", "rn", "rt", "rr", "oc", "on", "ot", "orq", "ec")
    assert codec.WIDTH == 1 + len(codec.FIELDS) == 12
    assert all(len(values(st)) == codec.WIDTH for st in STATES)


@pytest.mark.parametrize("st", STATES)
def test_a_state_decodes_from_its_fields_by_name(st: CounterState) -> None:
    assert codec.decode_state(values(st)) == st
    as_bytes = [str(v).encode() for v in values(st)]  # what redis-py returns for Lua numbers... or text
    assert codec.decode_state(as_bytes) == st


def test_states_are_read_width_by_width_from_an_offset() -> None:
    reply = [9, 9, 9, 9, *values(STATES[0]), *values(STATES[1])]
    assert codec.decode_states(reply, 4) == tuple(STATES)
    assert codec.decode_states([*values(STATES[1])], 0) == (STATES[1],)
    assert codec.decode_states([], 0) == ()


def test_an_admitted_reply_is_one_value() -> None:
    res = codec.decode_reserve([1])
    assert res.admitted and res.states == () and res.violation is None
    assert not codec.decode_reserve([0]).admitted


@pytest.mark.parametrize(
    ("head", "violation"),
    [
        ([0, 1, 1, 0], Violation(0, "nanos")),
        ([0, 2, 2, 0], Violation(1, "tokens")),
        ([0, 1, 3, 1], Violation(0, "requests", soft=True)),
    ],
)
def test_a_refused_reply_names_the_counter_and_quantity(head: list[int], violation: Violation) -> None:
    res = codec.decode_reserve([*head, *values(STATES[0]), *values(STATES[1])])
    assert not res.admitted
    assert res.violation == violation
    assert res.states == tuple(STATES)


def test_a_forced_reply_is_admitted_with_states_and_maybe_no_violation() -> None:
    res = codec.decode_reserve([1, 0, 0, 0, *values(STATES[0])])
    assert res.admitted and res.violation is None and res.states == (STATES[0],)
    forced_over = codec.decode_reserve([b"1", b"1", b"2", b"0", *values(STATES[1])])
    assert forced_over.admitted and forced_over.violation == Violation(0, "tokens")


def test_caps_encode_as_text_and_none_as_empty() -> None:
    assert codec.encode_cap(None) == ""
    assert codec.encode_cap(0) == "0"
    assert codec.encode_cap(10**15) == "1000000000000000"  # never "1e+15"


def test_the_reserve_arguments_hold_force_amount_then_per_counter_caps_and_soft_caps() -> None:
    hard = CounterSpec(REF, Caps(100, None, 5))
    soft = CounterSpec(CounterRef("org:1", "lifetime"), Caps(None, 50, None), soft=Caps(80, None, None))
    req = ReserveRequest("lease-1", (hard, soft), Amount(10, 20, 1), ttl=1.5, force=True)
    head = codec.reserve_head(req, "")
    assert head == ["", "lease-1", 1500, "1", 2, 10, 20, 1]
    assert codec.reserve_head(req._replace(force=False), "123")[:4] == ["123", "lease-1", 1500, "0"]
    tail = codec.reserve_tail(req.counters, [1, 2], 86400, 60)
    assert tail == [
        b"86400", b"60",
        b"1", b"org:1/user:2", b"day", b"0", b"100", b"", b"5", b"", b"", b"",
        b"2", b"org:1", b"lifetime", b"0", b"", b"50", b"", b"80", b"", b"",
    ]  # fmt: skip
    # the script reads the counters from ARGV[11] on, 10 values each
    assert len(head) + 2 == 10 and (len(tail) - 2) % 10 == 0


def test_settle_release_and_status_arguments() -> None:
    req = SettleRequest("l", (REF, CounterRef("org:1", "lifetime")), Amount(3, 4, 1), estimated=True)
    args = codec.settle_args(req, "settle", [1, 1], "", 86400, 60, 500)
    assert args == [
        "", "l", 3, 4, 1, "1", "1", 86400, 60, "settle", 2, 500,
        1, "org:1/user:2", "day", "0", 1, "org:1", "lifetime", "0",
    ]  # fmt: skip
    probe = req._replace(count_overshoot=False, estimated=False, actual=Amount())
    assert codec.settle_args(probe, "release", [1, 1], "7", 1, 2, 3)[:11] == [
        "7",
        "l",
        0,
        0,
        0,
        "0",
        "0",
        1,
        2,
        "release",
        2,
    ]
    assert codec.status_args([REF], [1], "", 86400, 60) == ["", 86400, 60, 1, 1, "org:1/user:2", "day", "0"]


def test_key_bases_group_scopes_by_root_and_keep_braces_out_of_the_tag() -> None:
    bases, index = codec.key_bases("p:", ["org:1/user:2", "org:1", "team:{x}"], cluster=False)
    assert bases == ["p:{org:1}:", "p:{team:%7Bx%7D}:"]
    assert index == [1, 1, 2]
    with pytest.raises(ConfigError, match="one slot"):
        codec.key_bases("p:", ["org:1", "org:2"], cluster=True)
    assert codec.key_bases("p:", ["org:1/a", "org:1/b"], cluster=True) == (["p:{org:1}:"], [1, 1])


def test_reply_text_decodes_bytes_or_str() -> None:
    assert codec.decode_text(b"settled") == codec.decode_text("settled") == "settled"


def test_the_scripts_get_their_fields_line_from_the_codec() -> None:
    lua = resources.files("budgetguard.stores.redis") / "lua"
    names = sorted(p.name for p in lua.iterdir() if p.name.endswith(".lua"))
    assert names == [
        "common.lua",
        "define.lua",
        "reserve.lua",
        "reset.lua",
        "settle.lua",
        "status.lua",
        "unreserve.lua",
    ]
    assert "local FIELDS" not in (lua / "common.lua").read_text(encoding="utf-8")
    line = "local FIELDS = {'sn', 'st', 'sr', 'rn', 'rt', 'rr', 'oc', 'on', 'ot', 'orq', 'ec'}"
    assert scripts.fields_line() == line
    for name in scripts.NAMES:
        src = scripts.SOURCES[name]
        assert src.splitlines()[0] == line
        assert src.count("local FIELDS") == 1
        assert src.endswith((lua / f"{name}.lua").read_text(encoding="utf-8"))
