"""Limit validation, UTC calendar windows, and scope templates."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from budgetguard import ConfigError, Limit, MissingScope
from budgetguard.limits import MAX_SCOPE_VALUE, ScopeTemplate
from budgetguard.windows import PERIODS, window_end, window_start

UTC = timezone.utc
SETTINGS = settings(max_examples=200, deadline=None)


def ts(*args: int) -> int:
    return calendar.timegm(datetime(*args, tzinfo=UTC).utctimetuple())  # type: ignore[misc]


def dt(t: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t)


# --------------------------------------------------------------------------- Limit validation


@pytest.mark.parametrize(
    "usd",
    [-1, -0.01, Decimal("-0.000000001"), float("nan"), float("inf"), "NaN", "Infinity", Decimal("-Infinity")],
)
def test_limit_rejects_bad_usd(usd: Any) -> None:
    with pytest.raises(ValidationError, match="usd"):
        Limit(usd=usd)


def test_limit_rejects_bool_usd() -> None:
    with pytest.raises(ValidationError, match="not a bool"):
        Limit(usd=True)


@pytest.mark.parametrize("field", ["tokens", "requests"])
@pytest.mark.parametrize("bad", [-1, -1000, 1.5, "10", True, float("inf")])
def test_limit_rejects_bad_counts(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        Limit(**{field: bad})


@pytest.mark.parametrize("per", ["fortnight", "Day", "daily", "", "year"])
def test_limit_rejects_unknown_period(per: str) -> None:
    with pytest.raises(ValidationError) as ei:
        Limit(usd=1, per=per)  # type: ignore[arg-type]
    msg = str(ei.value)
    for p in ("minute", "hour", "day", "week", "month", "lifetime"):
        assert p in msg  # the message lists what is allowed


@pytest.mark.parametrize("kwargs", [{}, {"per": "day"}, {"scope": "user:{user_id}"}, {"usd": None}])
def test_limit_needs_a_quantity(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"at least one of usd=, tokens= or requests="):
        Limit(**kwargs)


def test_limit_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="dollars"):
        Limit(usd=1, dollars=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("scope", "fix"),
    [
        ("user:{0}", r"plain metadata key such as \{user_id\}"),
        ("user:{a.b}", r"plain metadata key such as \{user_id\}"),
        ("user:{a[0]}", r"plain metadata key such as \{user_id\}"),
        ("{x!r}", r"plain metadata key such as \{user_id\}"),
        ("user:{x:>10}", r"plain metadata key such as \{user_id\}"),
        ("user:{}", r"plain metadata key such as \{user_id\}"),
        ("user:{", r"write fields as \{name\}, and double braces"),
        ("user:}", r"write fields as \{name\}, and double braces"),
        ("", r"use e\.g\. 'global' or 'user:\{user_id\}'"),
        ("   ", r"use e\.g\. 'global' or 'user:\{user_id\}'"),
    ],
)
def test_limit_rejects_bad_scope_template(scope: str, fix: str) -> None:
    with pytest.raises((ValidationError, ConfigError), match=fix):
        Limit(usd=1, scope=scope)
    with pytest.raises(ConfigError, match=fix):
        ScopeTemplate.parse(scope)


def test_limit_good_values() -> None:
    lim = Limit(usd=0.1, per="day", scope="org:{org_id}/user:{user_id}")
    assert lim.usd == Decimal("0.1")  # floats are taken at face value
    assert lim.usd_nanos == 100_000_000
    assert Limit(usd=0).usd_nanos == 0  # a zero cap is allowed (blocks everything)
    assert Limit(tokens=0).tokens == 0
    assert Limit(requests=5).usd_nanos is None
    # nanos are rounded down so the cap is never loosened
    assert Limit(usd=Decimal("0.0000000019")).usd_nanos == 1
    assert Limit(scope="{{literal}}:{user_id}", tokens=1).scope == "{{literal}}:{user_id}"


def test_limit_is_frozen() -> None:
    lim = Limit(usd=1)
    with pytest.raises(ValidationError):
        lim.usd = Decimal(2)  # type: ignore[misc]


# --------------------------------------------------------------------------- windows

# 1900-01-01 .. 3000-01-01
timestamps = st.integers(min_value=ts(1900, 1, 1), max_value=ts(3000, 1, 1))
float_timestamps = st.floats(
    min_value=float(ts(1900, 1, 1)), max_value=float(ts(3000, 1, 1)), allow_nan=False
)
CAL_PERIODS = ["minute", "hour", "day", "week", "month"]


@SETTINGS
@given(st.one_of(timestamps, float_timestamps), st.sampled_from(CAL_PERIODS))
def test_window_holds_now(t: float, per: str) -> None:
    start = window_start(per, t)
    end = window_end(per, start)
    assert isinstance(start, int)
    assert end is not None
    assert start <= t < end
    # windows tile time: the next one starts where this one ends
    assert window_start(per, end) == end
    assert window_start(per, end - 1) == start
    assert window_start(per, start) == start


@SETTINGS
@given(timestamps, st.sampled_from(CAL_PERIODS))
def test_windows_align_to_utc_calendar(t: int, per: str) -> None:
    start = window_start(per, t)
    end = window_end(per, start)
    assert end is not None
    s, e, now = dt(start), dt(end), dt(t)
    assert s.second == 0
    if per in ("hour", "day", "week", "month"):
        assert s.minute == 0
    if per in ("day", "week", "month"):
        assert s.hour == 0
        assert e.hour == e.minute == e.second == 0
    if per == "minute":
        assert end - start == 60
        assert (s.year, s.month, s.day, s.hour, s.minute) == (
            now.year,
            now.month,
            now.day,
            now.hour,
            now.minute,
        )
    elif per == "hour":
        assert end - start == 3600
        assert (s.date(), s.hour) == (now.date(), now.hour)
    elif per == "day":
        assert end - start == 86400
        assert s.date() == now.date()
    elif per == "week":
        assert end - start == 7 * 86400
        assert s.weekday() == 0  # Monday
        assert e.weekday() == 0
        assert s.isocalendar()[:2] == now.isocalendar()[:2]
    else:
        assert s.day == 1
        assert (s.year, s.month) == (now.year, now.month)
        assert e.day == 1
        assert (end - start) // 86400 == calendar.monthrange(s.year, s.month)[1]
        assert (e.year * 12 + e.month) - (s.year * 12 + s.month) == 1


@SETTINGS
@given(st.one_of(timestamps, float_timestamps))
def test_lifetime_window(t: float) -> None:
    assert window_start("lifetime", t) == 0
    assert window_end("lifetime", 0) is None


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        # December -> January
        (ts(2023, 12, 31, 23, 59, 59), ts(2023, 12, 1), ts(2024, 1, 1)),
        (ts(2024, 1, 1), ts(2024, 1, 1), ts(2024, 2, 1)),
        # February, leap and not
        (ts(2024, 2, 29, 12), ts(2024, 2, 1), ts(2024, 3, 1)),
        (ts(2023, 2, 28, 23, 59, 59), ts(2023, 2, 1), ts(2023, 3, 1)),
        (ts(2000, 2, 29), ts(2000, 2, 1), ts(2000, 3, 1)),
        (ts(2100, 2, 28), ts(2100, 2, 1), ts(2100, 3, 1)),
        (ts(1969, 12, 31, 23, 59, 59), ts(1969, 12, 1), ts(1970, 1, 1)),
    ],
)
def test_month_windows(now: int, start: int, end: int) -> None:
    assert window_start("month", now) == start
    assert window_end("month", start) == end


def test_month_lengths() -> None:
    assert window_end("month", ts(2024, 2, 1)) - ts(2024, 2, 1) == 29 * 86400  # type: ignore[operator]
    assert window_end("month", ts(2023, 2, 1)) - ts(2023, 2, 1) == 28 * 86400  # type: ignore[operator]
    assert window_end("month", ts(2100, 2, 1)) - ts(2100, 2, 1) == 28 * 86400  # type: ignore[operator]


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        (0, ts(1969, 12, 29)),  # 1970-01-01 was a Thursday
        (ts(2024, 1, 7, 23, 59, 59), ts(2024, 1, 1)),  # Sunday night -> that week's Monday
        (ts(2024, 1, 8), ts(2024, 1, 8)),  # Monday 00:00 starts a new week
        (ts(2024, 12, 31, 12), ts(2024, 12, 30)),  # weeks cross year ends
        (ts(1960, 3, 3, 3), ts(1960, 2, 29)),  # before the epoch
    ],
)
def test_week_starts_monday_utc(now: int, monday: int) -> None:
    assert window_start("week", now) == monday
    assert window_end("week", monday) == monday + 7 * 86400
    assert dt(monday).weekday() == 0


def test_fractional_seconds_floor() -> None:
    t = ts(2024, 5, 5, 10, 0, 0)
    assert window_start("minute", t - 0.25) == t - 60
    assert window_start("minute", t + 0.999) == t


@pytest.mark.parametrize("per", ["fortnight", "year", ""])
def test_unknown_period_is_config_error(per: str) -> None:
    with pytest.raises(ConfigError, match="use one of minute, hour, day, week, month, lifetime"):
        window_start(per, 0)


def test_periods_constant() -> None:
    assert set(PERIODS) == {*CAL_PERIODS, "lifetime"}


# --------------------------------------------------------------------------- scope templates

# fragments that could confuse a naive key: separators, braces, escapes, control and non-ASCII
tricky = st.sampled_from(
    [":", "{", "}", "%", "\n", "/", " ", "%3A", "%25", "{x}", "\x00", "é", "用", "🙂", "-", "."]
)
values = (
    st.lists(st.one_of(tricky, st.characters(exclude_categories=("Cs",))), min_size=1, max_size=60)
    .map("".join)
    .filter(lambda s: len(s) <= MAX_SCOPE_VALUE)
)


@SETTINGS
@given(values, values)
def test_distinct_values_never_collide(a: str, b: str) -> None:
    assume(a != b)
    tpl = ScopeTemplate.parse("user:{user_id}")
    ra, rb = tpl.render({"user_id": a}), tpl.render({"user_id": b})
    assert ra != rb


@SETTINGS
@given(values)
def test_rendered_value_round_trips(a: str) -> None:
    tpl = ScopeTemplate.parse("user:{user_id}")
    out = tpl.render({"user_id": a})
    assert out.startswith("user:")
    body = out[len("user:") :]
    assert unquote(body) == a
    # the encoded value holds none of the template's structural characters
    assert not set(body) & set(":{}/\n ")
    assert body.isascii()


@SETTINGS
@given(values, values, values, values)
def test_two_fields_with_encoded_separators_never_collide(a: str, b: str, c: str, d: str) -> None:
    assume((a, b) != (c, d))
    tpl = ScopeTemplate.parse("org:{org_id}/user:{user_id}")
    assert tpl.render({"org_id": a, "user_id": b}) != tpl.render({"org_id": c, "user_id": d})


@pytest.mark.parametrize(
    "template", ["{org}-{user}", "{org}.{user}", "{org}_{user}", "{org}@{user}", "{org}~{user}"]
)
def test_fields_separated_by_unencoded_characters_never_collide(template: str) -> None:
    """Two different users must never share a counter, whatever the separator.

    '-', '.', '_', '~' and '@' are left unencoded in values, so a template that
    uses one of them between fields makes ("a-b", "c") and ("a", "b-c") the same key.
    """
    sep = template[len("{org}")]
    tpl = ScopeTemplate.parse(template)
    one = tpl.render({"org": f"a{sep}b", "user": "c"})
    two = tpl.render({"org": "a", "user": f"b{sep}c"})
    assert one != two


def test_render_examples() -> None:
    tpl = ScopeTemplate.parse("org:{org_id}/user:{user_id}")
    assert tpl.fields == ("org_id", "user_id")
    assert tpl.render({"org_id": "acme", "user_id": 42}) == "org:acme/user:42"
    assert tpl.render({"org_id": "a:b", "user_id": "x/y"}) == "org:a%3Ab/user:x%2Fy"
    assert tpl.render({"org_id": "50%", "user_id": "{u}"}) == "org:50%25/user:%7Bu%7D"
    assert tpl.render({"org_id": "l\nf", "user_id": "ü"}) == "org:l%0Af/user:%C3%BC"
    assert ScopeTemplate.parse("global").render({}) == "global"
    # extra metadata is ignored
    assert ScopeTemplate.parse("u:{user_id}").render({"user_id": "x", "other": object()}) == "u:x"


def test_max_length_value_is_accepted() -> None:
    tpl = ScopeTemplate.parse("user:{user_id}")
    assert tpl.render({"user_id": "x" * MAX_SCOPE_VALUE}) == "user:" + "x" * MAX_SCOPE_VALUE


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({}, "is missing"),
        ({"other": "x"}, "is missing"),
        ({"user_id": None}, "is missing"),
        ({"user_id": ""}, "is empty"),
        ({"user_id": "x" * (MAX_SCOPE_VALUE + 1)}, f"is longer than {MAX_SCOPE_VALUE} characters"),
        ({"user_id": "é" * (MAX_SCOPE_VALUE + 1)}, f"is longer than {MAX_SCOPE_VALUE} characters"),
        ({"user_id": True}, "is a bool"),
        ({"user_id": False}, "is a bool"),
        ({"user_id": {"id": 1}}, "is a dict"),
        ({"user_id": ["a"]}, "is a list"),
        ({"user_id": 1.5}, "is a float"),
        ({"user_id": b"abc"}, "is a bytes"),
    ],
)
def test_bad_scope_values_raise_missing_scope(metadata: dict[str, Any], problem: str) -> None:
    tpl = ScopeTemplate.parse("user:{user_id}")
    with pytest.raises(MissingScope) as ei:
        tpl.render(metadata)
    msg = str(ei.value)
    assert problem in msg
    assert "metadata['user_id']" in msg
    assert "config={'metadata': {'user_id': ...}}" in msg  # how to pass it
    assert "user:{user_id}" in msg
    assert ei.value.key == "user_id"
    assert ei.value.template == "user:{user_id}"
    assert isinstance(ei.value, KeyError)


def test_missing_scope_names_the_first_missing_field() -> None:
    tpl = ScopeTemplate.parse("org:{org_id}/user:{user_id}")
    with pytest.raises(MissingScope) as ei:
        tpl.render({"org_id": "acme"})
    assert ei.value.key == "user_id"
