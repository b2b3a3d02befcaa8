"""Properties of the reserve/settle arithmetic and of the in-memory store."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from clock import FakeClock
from hypothesis import event, given, settings
from hypothesis import strategies as st

from budgetguard.reservation import (
    QUANTITIES,
    Amount,
    Caps,
    CounterRef,
    CounterSpec,
    CounterState,
    Violation,
    apply_expire,
    apply_release,
    apply_reserve,
    apply_settle,
    exceeds,
    first_violation,
)
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.memory import MemoryStore

SETTINGS = settings(max_examples=200, deadline=None)

small = st.integers(min_value=0, max_value=1_000)
big = st.integers(min_value=0, max_value=10**15)
caps_value = st.one_of(st.none(), small)


def amounts(hi: int = 300) -> st.SearchStrategy[Amount]:
    n = st.integers(0, hi)
    return st.builds(Amount, nanos=n, tokens=n, requests=st.integers(0, 3))


def leq(a: Amount) -> st.SearchStrategy[Amount]:
    """Amounts no larger than ``a`` in any quantity."""
    return st.builds(
        Amount,
        nanos=st.integers(0, a.nanos),
        tokens=st.integers(0, a.tokens),
        requests=st.integers(0, a.requests),
    )


# --------------------------------------------------------------------------- exceeds


@SETTINGS
@given(st.one_of(st.none(), big), big, big, big)
def test_exceeds_is_the_sum_rule(cap: int | None, spent: int, reserved: int, request: int) -> None:
    assert exceeds(cap, spent, reserved, request) == (cap is not None and spent + reserved + request > cap)


@SETTINGS
@given(big, big, big)
def test_reaching_the_cap_exactly_is_allowed(spent: int, reserved: int, request: int) -> None:
    cap = spent + reserved + request
    assert not exceeds(cap, spent, reserved, request)
    assert exceeds(cap, spent, reserved, request + 1)
    assert not exceeds(None, spent, reserved, request + 10**18)


def test_exceeds_examples() -> None:
    assert not exceeds(10, 3, 2, 5)
    assert exceeds(10, 3, 2, 6)
    assert exceeds(0, 0, 0, 1)
    assert not exceeds(0, 0, 0, 0)


# --------------------------------------------------------------------------- first_violation


@st.composite
def counters(draw: st.DrawFn) -> tuple[list[CounterSpec], list[CounterState], Amount]:
    n = draw(st.integers(1, 4))
    specs: list[CounterSpec] = []
    states: list[CounterState] = []
    for i in range(n):
        caps = Caps(draw(caps_value), draw(caps_value), draw(caps_value))
        soft = draw(st.one_of(st.none(), st.builds(Caps, caps_value, caps_value, caps_value)))
        specs.append(CounterSpec(CounterRef(f"s{i}", "day"), caps, soft))
        states.append(CounterState(spent=draw(amounts(500)), reserved=draw(amounts(500))))
    return specs, states, draw(amounts(500))


def _breaks(caps: Caps | None, st_: CounterState, req: Amount) -> list[str]:
    if caps is None:
        return []
    return [
        q
        for q in QUANTITIES
        if caps.get(q) is not None and st_.spent.get(q) + st_.reserved.get(q) + req.get(q) > caps.get(q)  # type: ignore[operator]
    ]


@settings(max_examples=400, deadline=None)
@given(counters())
def test_first_violation(case: tuple[list[CounterSpec], list[CounterState], Amount]) -> None:
    specs, states, req = case
    v = first_violation(specs, states, req)
    hard = [
        Violation(i, q)
        for i, (sp, s) in enumerate(zip(specs, states, strict=True))
        for q in _breaks(sp.caps, s, req)
    ]
    soft = [
        Violation(i, q, soft=True)
        for i, (sp, s) in enumerate(zip(specs, states, strict=True))
        for q in _breaks(sp.soft, s, req)
    ]
    # None iff every capped quantity fits, hard and soft
    assert (v is None) == (not hard and not soft)
    if hard:
        assert v == hard[0]  # hard caps are checked before any soft cap
    elif soft:
        assert v == soft[0]


def test_hard_before_soft() -> None:
    specs = [
        CounterSpec(CounterRef("a", "day"), Caps(tokens=1000), soft=Caps(tokens=10)),
        CounterSpec(CounterRef("b", "day"), Caps(tokens=50)),
    ]
    states = [CounterState(), CounterState()]
    assert first_violation(specs, states, Amount(tokens=100)) == Violation(1, "tokens", soft=False)
    assert first_violation(specs, states, Amount(tokens=20)) == Violation(0, "tokens", soft=True)
    assert first_violation(specs, states, Amount(tokens=10)) is None


# --------------------------------------------------------------------------- apply_* on one CounterState


@dataclass
class Book:
    """What a counter should hold, kept independently of the code under test."""

    open: dict[int, Amount] = field(default_factory=dict)
    expired: dict[int, Amount] = field(default_factory=dict)
    closed_spend: Amount = field(default_factory=Amount)

    def reserved(self) -> Amount:
        return sum(self.open.values(), Amount())

    def spent(self) -> Amount:
        return self.closed_spend + sum(self.expired.values(), Amount())


def _nonneg(a: Amount) -> bool:
    return a.nanos >= 0 and a.tokens >= 0 and a.requests >= 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_apply_sequence_keeps_books(data: st.DataObject) -> None:
    state = CounterState()
    book = Book()
    ids = itertools.count()
    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        choices = ["reserve"]
        if book.open:
            choices += ["settle", "release", "expire"]
        if book.expired:
            choices.append("late")
        op = data.draw(st.sampled_from(choices))
        if op == "reserve":
            amt = data.draw(amounts())
            apply_reserve(state, amt)
            book.open[next(ids)] = amt
        elif op in ("settle", "release", "expire"):
            lid = data.draw(st.sampled_from(sorted(book.open)))
            amt = book.open.pop(lid)
            if op == "settle":
                actual = data.draw(amounts(400))  # may overshoot
                apply_settle(state, amt, None, actual, data.draw(st.booleans()))
                book.closed_spend += actual
            elif op == "release":
                apply_release(state, amt)
            else:
                apply_expire(state, amt)
                book.expired[lid] = amt
        else:
            lid = data.draw(st.sampled_from(sorted(book.expired)))
            charged = book.expired.pop(lid)
            actual = data.draw(amounts(400))
            apply_settle(state, None, charged, actual, False)
            book.closed_spend += actual
        assert _nonneg(state.spent)
        assert _nonneg(state.reserved)
        assert state.reserved == book.reserved()
        assert state.spent == book.spent()
    # close everything still open
    for amt in list(book.open.values()):
        apply_release(state, amt)
    book.open.clear()
    assert state.reserved == Amount()
    assert state.spent == book.spent()


def test_settle_records_overshoot() -> None:
    st_ = CounterState()
    apply_reserve(st_, Amount(100, 10, 1))
    apply_settle(st_, Amount(100, 10, 1), None, Amount(150, 5, 1), estimated=False)
    assert st_.reserved == Amount()
    assert st_.spent == Amount(150, 5, 1)
    assert st_.overshoot_count == 1
    assert st_.overshoot == Amount(50, 0, 0)


def test_expire_then_late_settle_reconciles() -> None:
    st_ = CounterState()
    apply_reserve(st_, Amount(100, 10, 1))
    apply_expire(st_, Amount(100, 10, 1))
    assert st_.spent == Amount(100, 10, 1)
    assert st_.reserved == Amount()
    assert st_.estimated_count == 1
    apply_settle(st_, None, Amount(100, 10, 1), Amount(40, 4, 1), estimated=False)
    assert st_.spent == Amount(40, 4, 1)
    assert st_.estimated_count == 0


# --------------------------------------------------------------------------- MemoryStore


LIFETIME = CounterRef("global", "lifetime")
MINUTE = CounterRef("user:1", "minute")


@dataclass
class Lease:
    amount: Amount
    expires_at: float


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_memory_store_random_operations(data: st.DataObject) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    cap_life = Caps(
        nanos=data.draw(st.integers(0, 3000), label="cap nanos"),
        tokens=data.draw(st.one_of(st.none(), st.integers(0, 3000)), label="cap tokens"),
        requests=data.draw(st.one_of(st.none(), st.integers(0, 20)), label="cap requests"),
    )
    cap_min = Caps(tokens=data.draw(st.integers(0, 1500), label="cap minute tokens"))
    specs = (CounterSpec(LIFETIME, cap_life), CounterSpec(MINUTE, cap_min))
    refs = (LIFETIME, MINUTE)

    open_: dict[str, Lease] = {}
    expired: dict[str, Amount] = {}
    settled: set[str] = set()
    # the lifetime counter, modelled exactly
    spent = Amount()
    total_actual = Amount()
    ids = itertools.count()

    def fits(states: list[CounterState]) -> None:
        for spec, s in zip(specs, states, strict=True):
            for q in QUANTITIES:
                cap = spec.caps.get(q)
                if cap is not None:
                    assert s.spent.get(q) + s.reserved.get(q) <= cap, (q, s)
            assert _nonneg(s.spent)
            assert _nonneg(s.reserved)

    def sweep() -> None:
        nonlocal spent
        for lid, lease in list(open_.items()):
            if lease.expires_at <= clock.t:
                del open_[lid]
                expired[lid] = lease.amount
                spent = spent + lease.amount

    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        ops = ["reserve", "tick"]
        if open_:
            ops += ["settle", "release"]
        if expired:
            ops.append("late")
        if settled:
            ops += ["replay", "release_closed"]
        op = data.draw(st.sampled_from(ops), label="op")
        event(op)
        if op == "tick":
            clock.advance(data.draw(st.sampled_from([0.5, 1, 10, 59, 60, 61, 300]), label="dt"))
            sweep()
            fits(store.status(refs))
        elif op == "reserve":
            sweep()
            before = store.status(refs)
            amt = data.draw(amounts(), label="amount")
            ttl = data.draw(st.sampled_from([1.0, 30.0, 90.0, 600.0]), label="ttl")
            lid = f"lease-{next(ids)}"
            res = store.reserve(ReserveRequest(lid, specs, amt, ttl))
            life = before[0]
            would_break = any(
                exceeds(cap_life.get(q), life.spent.get(q), life.reserved.get(q), amt.get(q))
                for q in QUANTITIES
            )
            if would_break:
                assert not res.admitted
            if res.admitted:
                assert res.violation is None
                open_[lid] = Lease(amt, clock.t + ttl)
            else:
                assert res.violation is not None
                assert list(res.states) == before  # a refusal explains itself with the states it saw
                assert store.status(refs) == before  # and changes nothing
            fits(store.status(refs))
        elif op == "settle":
            sweep()
            lid = data.draw(st.sampled_from(sorted(open_)), label="lease")
            lease = open_.pop(lid)
            actual = data.draw(leq(lease.amount), label="actual")
            assert store.settle(SettleRequest(lid, refs, actual)) == "settled"
            spent = spent + actual
            total_actual = total_actual + actual
            settled.add(lid)
        elif op == "release":
            sweep()
            lid = data.draw(st.sampled_from(sorted(open_)), label="lease")
            del open_[lid]
            assert store.release(lid) is True
            settled.add(lid)
        elif op == "late":
            sweep()
            lid = data.draw(st.sampled_from(sorted(expired)), label="lease")
            charged = expired.pop(lid)
            actual = data.draw(leq(charged), label="actual")
            assert store.settle(SettleRequest(lid, refs, actual)) == "late"
            spent = spent - charged + actual
            total_actual = total_actual + actual
            settled.add(lid)
        elif op == "replay":
            sweep()
            lid = data.draw(st.sampled_from(sorted(settled)), label="lease")
            before = store.status(refs)
            assert store.settle(SettleRequest(lid, refs, Amount(999, 999, 9))) == "replay"
            assert store.status(refs) == before
        else:  # release_closed
            sweep()
            lid = data.draw(st.sampled_from(sorted(settled)), label="lease")
            before = store.status(refs)
            assert store.release(lid) is False
            assert store.status(refs) == before

        life = store.status([LIFETIME])[0]
        assert life.spent == spent
        assert life.reserved == sum((lease.amount for lease in open_.values()), Amount())
        assert store.active_leases() == len(open_)
        fits(store.status(refs))

    for lid in list(open_):
        assert store.release(lid)
    open_.clear()
    life = store.status([LIFETIME])[0]
    assert life.reserved == Amount()
    assert life.spent == total_actual + sum(expired.values(), Amount())


def _store() -> tuple[FakeClock, MemoryStore, tuple[CounterSpec, ...]]:
    clock = FakeClock()
    return clock, MemoryStore(clock=clock), (CounterSpec(LIFETIME, Caps(nanos=1000, tokens=100)),)


def test_memory_store_reaching_cap_exactly_is_admitted() -> None:
    _, store, specs = _store()
    assert store.reserve(ReserveRequest("a", specs, Amount(600, 60, 1), 60)).admitted
    assert store.reserve(ReserveRequest("b", specs, Amount(400, 40, 1), 60)).admitted
    res = store.reserve(ReserveRequest("c", specs, Amount(1, 0, 0), 60))
    assert not res.admitted
    assert res.violation == Violation(0, "nanos")


def test_memory_store_settle_is_idempotent() -> None:
    _, store, specs = _store()
    store.reserve(ReserveRequest("a", specs, Amount(600, 60, 1), 60))
    assert store.settle(SettleRequest("a", (LIFETIME,), Amount(100, 10, 1))) == "settled"
    after = store.status([LIFETIME])
    for _ in range(3):
        assert store.settle(SettleRequest("a", (LIFETIME,), Amount(100, 10, 1))) == "replay"
        assert store.settle(SettleRequest("a", (LIFETIME,), Amount(900, 90, 1))) == "replay"
    assert store.status([LIFETIME]) == after
    assert after[0].spent == Amount(100, 10, 1)
    assert after[0].reserved == Amount()


def test_memory_store_expired_lease_charged_then_late_settle_reconciles() -> None:
    clock, store, specs = _store()
    assert store.reserve(ReserveRequest("a", specs, Amount(600, 60, 1), ttl=30)).admitted
    clock.advance(29)
    assert store.status([LIFETIME])[0].reserved == Amount(600, 60, 1)
    clock.advance(1)  # expires_at reached
    st_ = store.status([LIFETIME])[0]
    assert st_.reserved == Amount()
    assert st_.spent == Amount(600, 60, 1)  # the estimate is charged
    assert st_.estimated_count == 1
    assert store.active_leases() == 0
    assert store.settle(SettleRequest("a", (LIFETIME,), Amount(250, 20, 1))) == "late"
    st_ = store.status([LIFETIME])[0]
    assert st_.spent == Amount(250, 20, 1)
    assert st_.estimated_count == 0
    assert store.settle(SettleRequest("a", (LIFETIME,), Amount(250, 20, 1))) == "replay"
    assert store.status([LIFETIME])[0].spent == Amount(250, 20, 1)


def test_memory_store_unreserved_settle_is_recorded() -> None:
    _, store, _ = _store()
    assert store.settle(SettleRequest("never-seen", (LIFETIME,), Amount(5, 5, 1))) == "unreserved"
    assert store.status([LIFETIME])[0].spent == Amount(5, 5, 1)
    assert store.settle(SettleRequest("never-seen", (LIFETIME,), Amount(5, 5, 1))) == "replay"
    assert store.status([LIFETIME])[0].spent == Amount(5, 5, 1)


def test_memory_store_release_frees_room() -> None:
    _, store, specs = _store()
    assert store.reserve(ReserveRequest("a", specs, Amount(1000, 0, 0), 60)).admitted
    assert not store.reserve(ReserveRequest("b", specs, Amount(1, 0, 0), 60)).admitted
    assert store.release("a") is True
    assert store.release("a") is False
    assert store.status([LIFETIME])[0] == CounterState(window_start=0)
    assert store.reserve(ReserveRequest("b", specs, Amount(1000, 0, 0), 60)).admitted


def test_memory_store_minute_window_rolls() -> None:
    clock, store, _ = _store()
    specs = (CounterSpec(MINUTE, Caps(tokens=10)),)
    clock.t = 1_700_000_070.5  # 30.5 s into a minute
    start = clock.t - clock.t % 60
    assert store.reserve(ReserveRequest("a", specs, Amount(tokens=10), 3600)).admitted
    assert not store.reserve(ReserveRequest("b", specs, Amount(tokens=1), 3600)).admitted
    clock.t = start + 60  # next minute: a fresh window
    assert store.reserve(ReserveRequest("b", specs, Amount(tokens=10), 3600)).admitted
    assert store.status([MINUTE])[0].window_start == start + 60
