"""Every budgetguard error survives pickling: same class, same fields, same message, same bases.

Errors cross process pools (``concurrent.futures``, multiprocessing, Celery):
an error that comes back as another class, or without its fields, breaks the
caller's ``except`` clauses and its reports. Instances are built directly and
taken from real refusals of a guard.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from redis_servers import RedisServer

import budgetguard
from budgetguard import (
    BudgetError,
    BudgetExceeded,
    BudgetGuard,
    BudgetStoreUnavailable,
    ConfigError,
    DegradeRequired,
    Limit,
    MissingScope,
    UnknownModelPrice,
)
from budgetguard.errors import CandidateRefusal
from budgetguard.testing import FakeChatModel

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)

#: Each error class and the bases an ``except`` clause may name for it.
BASES: dict[type[BaseException], tuple[type[BaseException], ...]] = {
    BudgetError: (Exception,),
    BudgetExceeded: (BudgetError, Exception),
    DegradeRequired: (BudgetExceeded, BudgetError, Exception),
    BudgetStoreUnavailable: (BudgetError, Exception),
    ConfigError: (BudgetError, ValueError, Exception),
    MissingScope: (BudgetError, KeyError, LookupError, Exception),
    UnknownModelPrice: (BudgetError, LookupError, Exception),
}


def _exceeded(cls: type[BudgetExceeded] = BudgetExceeded, **over: object) -> BudgetExceeded:
    fields: dict[str, object] = {
        "scope": "user:ann",
        "limit": Limit(usd="1", per="day", scope="user:{user_id}"),
        "quantity": "usd",
        "window": "day",
        "spent": Decimal("0.75"),
        "reserved": Decimal("0.125"),
        "requested": Decimal("0.25"),
        "remaining": Decimal("0.125"),
        "resets_at": datetime(2031, 3, 13, tzinfo=timezone.utc),
        "model": "gpt-4o",
        "note": None,
    }
    fields.update(over)
    return cls(**fields)  # type: ignore[arg-type]


def _with_candidates() -> BudgetExceeded:
    e = _exceeded(DegradeRequired, note="it would pass degrade_at ($0.50)")
    e.add_candidate(CandidateRefusal("fallback", "gpt-4o-mini", "its output cap is 100,000 tokens"))
    return e


BUILT: list[tuple[str, BaseException]] = [
    ("BudgetError", BudgetError("something about a budget")),
    ("BudgetExceeded usd", _exceeded()),
    (
        "BudgetExceeded tokens, no reset",
        _exceeded(
            limit=Limit(tokens=1000),
            quantity="tokens",
            window="lifetime",
            spent=900,
            reserved=50,
            requested=100,
            remaining=50,
            resets_at=None,
            model=None,
        ),
    ),
    ("DegradeRequired", _exceeded(DegradeRequired, note="it would pass degrade_at ($0.50)")),
    (
        "BudgetExceeded with what it assumed and when to retry",
        _exceeded(input_tokens=19, output_tokens=16_384, retry_after=1.0, fix="pass max_tokens"),
    ),
    ("BudgetExceeded never fits", _exceeded(never_fits=True, input_tokens=10**6, output_tokens=1)),
    ("BudgetExceeded with candidates", _with_candidates()),
    ("BudgetStoreUnavailable", BudgetStoreUnavailable("redis://127.0.0.1:1/0", ConnectionError("refused"))),
    (
        "BudgetStoreUnavailable not sent",
        BudgetStoreUnavailable("memory://", None, problem="is down (it failed moments ago)", sent=False),
    ),
    ("ConfigError", ConfigError("lease_ttl must be a positive number of seconds, got -1")),
    ("MissingScope", MissingScope("user:{user_id}", "user_id")),
    ("MissingScope empty", MissingScope("org:{org_id}", "org_id", "is empty")),
    ("UnknownModelPrice", UnknownModelPrice("no-such-model", "openai")),
    ("UnknownModelPrice reason", UnknownModelPrice("m", None, reason="its price is negative")),
]


def assert_same_error(before: BaseException, after: BaseException) -> None:
    assert type(after) is type(before)
    assert after.__dict__ == before.__dict__, "the fields changed on the way"
    assert str(after) == str(before)
    assert after.args == before.args
    for base in BASES[type(before)]:
        assert isinstance(after, base), f"{type(after).__name__} is no longer a {base.__name__}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("name", "error"), BUILT, ids=[n for n, _ in BUILT])
def test_an_error_survives_a_pickle_round_trip(name: str, error: BaseException, protocol: int) -> None:
    assert error.__dict__ or isinstance(error, ConfigError) or type(error) is BudgetError, (
        f"{name} carries no fields: this test would not check any"
    )
    assert_same_error(error, pickle.loads(pickle.dumps(error, protocol=protocol)))


def test_every_public_error_class_is_covered() -> None:
    public = {
        obj
        for obj in vars(budgetguard.errors).values()
        if isinstance(obj, type) and issubclass(obj, BudgetError)
    }
    assert public == set(BASES)
    assert public == {type(e) for _, e in BUILT}


def test_a_round_tripped_error_is_still_caught_by_its_except_clauses() -> None:
    after = pickle.loads(pickle.dumps(MissingScope("user:{user_id}", "user_id")))
    with pytest.raises(KeyError):
        raise after
    after = pickle.loads(pickle.dumps(ConfigError("bad")))
    with pytest.raises(ValueError, match="bad"):
        raise after
    after = pickle.loads(pickle.dumps(_exceeded(DegradeRequired, note="n")))
    with pytest.raises(BudgetExceeded):
        raise after


# ------------------------------------------------------------------ errors raised by a real guard


def _raised(fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except BudgetError as e:
        return e
    pytest.fail(f"{fn} raised nothing")


def _real_errors(tmp_path: Path) -> dict[str, BaseException]:
    out: dict[str, BaseException] = {}
    out["BudgetExceeded"] = _raised(
        lambda: BudgetGuard(limits=[Limit(usd="0.000001", per="day")]).wrap(FakeChatModel()).invoke("hi")
    )
    primary = FakeChatModel(model_name="gpt-4o", max_tokens=100)
    cheap = FakeChatModel(model_name="gpt-4o-mini", max_tokens=100_000)
    degrading = BudgetGuard(limit_usd="0.0015", fallback=cheap, degrade_at=0.5, fit_max_tokens=False)
    # the guarded primary alone (the chain would serve it past degrade_at, as it fits the hard cap)
    out["DegradeRequired"] = _raised(lambda: degrading.wrap(primary).runnable.invoke("q"))  # type: ignore[attr-defined]
    scoped = BudgetGuard(limits=[Limit(requests=2, scope="user:{user_id}")])
    out["MissingScope"] = _raised(lambda: scoped.wrap(FakeChatModel()).invoke("hi"))
    out["UnknownModelPrice"] = _raised(
        lambda: BudgetGuard(limit_usd=1).wrap(FakeChatModel(model_name="no-such-model-x")).invoke("hi")
    )
    out["ConfigError"] = _raised(lambda: BudgetGuard(limit_usd=1, lease_ttl=-1))
    dead = RedisServer()  # never started: nothing listens on its port
    dead.stop()  # (only removes its empty data dir)
    out["BudgetStoreUnavailable"] = _raised(
        lambda: (
            BudgetGuard(limit_usd=1, store=dead.url, spool_dir=tmp_path).wrap(FakeChatModel()).invoke("hi")
        )
    )
    return out


def test_errors_from_real_refusals_survive_a_pickle_round_trip(tmp_path: Path) -> None:
    real = _real_errors(tmp_path)
    for name, error in real.items():
        assert type(error).__name__ == name, f"expected a {name}, the guard raised {error!r}"
        for protocol in PROTOCOLS:
            assert_same_error(error, pickle.loads(pickle.dumps(error, protocol=protocol)))
    exceeded = real["BudgetExceeded"]
    assert isinstance(exceeded, BudgetExceeded) and type(exceeded) is BudgetExceeded
    after = pickle.loads(pickle.dumps(exceeded))
    assert (after.limit, after.quantity, after.requested) == (exceeded.limit, "usd", exceeded.requested)
    assert after.requested > after.remaining
    degrade = pickle.loads(pickle.dumps(real["DegradeRequired"]))
    assert isinstance(degrade, DegradeRequired) and "degrade_at" in (degrade.note or "")
    assert pickle.loads(pickle.dumps(real["BudgetStoreUnavailable"])).sent is True


def _refuse_in_a_child() -> None:
    BudgetGuard(limits=[Limit(requests=0)]).wrap(FakeChatModel()).invoke("hi")


def test_a_refusal_in_a_worker_process_reaches_the_parent_intact() -> None:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        future = pool.submit(_refuse_in_a_child)
        with pytest.raises(BudgetExceeded) as info:
            future.result(timeout=120)
    e = info.value
    assert type(e) is BudgetExceeded
    assert (e.scope, e.quantity, e.window, e.spent, e.reserved, e.requested, e.remaining) == (
        "global",
        "requests",
        "lifetime",
        0,
        0,
        1,
        0,
    )
    assert e.limit == Limit(requests=0)
    assert str(e).startswith("Budget exceeded for global: lifetime limit 0 requests")
