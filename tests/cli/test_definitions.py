"""Limit definitions: the text kept in the store, and store keys back to scopes as written."""

from __future__ import annotations

from decimal import Decimal

from budgetguard import Limit
from budgetguard.definitions import (
    LimitDef,
    caps_for,
    decode_def,
    definitions_of,
    encode_def,
    keys_for,
    label_of,
)
from budgetguard.limits import ScopeTemplate

DEFS = definitions_of(
    [
        Limit(usd=Decimal("0.5"), per="day", scope="org:{org}"),
        Limit(usd=Decimal("0.2"), per="day", scope="org:acme"),  # tighter, on one counter
        Limit(tokens=1000, scope="org:{org}/user:{user}"),
        Limit(requests=9),
    ]
)


def test_each_quantity_of_each_limit_is_one_definition_and_round_trips() -> None:
    assert LimitDef("org:{org}", "day", "usd", 500_000_000) in DEFS
    assert LimitDef("global", "lifetime", "requests", 9) in DEFS
    for d in DEFS:
        assert decode_def(encode_def(d)) == d
    assert decode_def("not json") is None and decode_def('["s","day","gold","1",null]') is None


def test_keys_turn_back_into_scopes_as_written() -> None:
    tpl = ScopeTemplate.parse("org:{org}/user:{user}")
    for org, user in (("acme", "alice@example.com"), ("a/b", "x:y{z}"), ("ünï", "100%")):
        key, label = tpl.render_both({"org": org, "user": user})
        assert label_of(key, DEFS) == label == f"org:{org}/user:{user}"
    assert label_of("global", DEFS) == "global"
    assert label_of("team%3Ax", []) == "team:x"  # no definition: percent-decoded


def test_caps_are_the_tightest_of_the_definitions_on_a_counter() -> None:
    assert caps_for("org:acme", "day", DEFS) == {"usd": 200_000_000}
    assert caps_for("org:beta", "day", DEFS) == {"usd": 500_000_000}
    assert caps_for("org:beta", "month", DEFS) == {}
    key = ScopeTemplate.parse("org:{org}/user:{user}").render({"org": "acme", "user": "a@b"})
    assert caps_for(key, "lifetime", DEFS) == {"tokens": 1000}


def test_a_scope_written_plainly_names_its_store_keys() -> None:
    # every template that can render it gives a candidate (the CLI keeps those the store holds)
    keys = keys_for("org:acme/user:a@b.c", DEFS)
    assert "org:acme/user:a%40b%2Ec" in keys and "org:acme%2Fuser%3Aa%40b%2Ec" in keys
    assert keys_for("global", DEFS) == ["global"]


def test_a_changed_cap_counts_with_its_newest_definition_only() -> None:
    newest_first = [LimitDef("org:{org}", "day", "usd", 300), LimitDef("org:{org}", "day", "usd", 100)]
    assert caps_for("org:x", "day", newest_first) == {"usd": 300}
