"""Planner: a tenant's next call reuses its plan; nothing else shares one."""

from __future__ import annotations

import pytest

from budgetguard import Limit
from budgetguard.engine import plans
from budgetguard.engine.plans import Planner
from budgetguard.errors import MissingScope

LIMITS = [Limit(usd=1, scope="user:{user_id}"), Limit(tokens=100, per="day", scope="org:{org_id}")]


def test_a_tenants_plan_is_reused_and_others_get_their_own() -> None:
    planner = Planner(LIMITS)
    a = planner.plan({"user_id": "alice", "org_id": "acme"})
    assert planner.plan({"user_id": "alice", "org_id": "acme", "other": 1}) is a
    b = planner.plan({"user_id": "bob", "org_id": "acme"})
    assert b is not a
    assert [s.ref.scope for s in b.specs] == ["user:bob", "org:acme"]
    assert planner.plan({"user_id": "alice", "org_id": "acme"}, soft_ppm=500_000) is not a


def test_an_int_and_a_str_that_render_alike_give_equal_plans() -> None:
    planner = Planner(LIMITS)
    by_int = planner.plan({"user_id": 7, "org_id": "acme"})
    by_str = planner.plan({"user_id": "7", "org_id": "acme"})
    assert by_int.specs == by_str.specs


@pytest.mark.parametrize("bad", [None, True, 1.0, "", ["x"]])
def test_a_bad_or_missing_value_is_refused_every_time(bad: object) -> None:
    planner = Planner(LIMITS)
    for _ in range(2):  # the first refusal left nothing cached for the second
        with pytest.raises(MissingScope):
            planner.plan({"user_id": bad, "org_id": "acme"})
    with pytest.raises(MissingScope):
        planner.plan({"org_id": "acme"})


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plans, "PLAN_CACHE_SIZE", 8)
    planner = Planner(LIMITS)
    for i in range(20):
        plan = planner.plan({"user_id": f"u{i}", "org_id": "acme"})
        assert plan.specs[0].ref.scope == f"user:u{i}"
    assert len(planner._plans) <= 8


def test_a_static_plan_is_built_once() -> None:
    planner = Planner([Limit(usd=1)])
    assert planner.plan({}) is planner.plan({"user_id": "x"})
