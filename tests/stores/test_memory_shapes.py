"""The memory store files a reserve's counters once per specs tuple (a static plan sends the same
one on every call): its window keys must still follow the clock, forwards and back."""

from __future__ import annotations

from clock import FakeClock

from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import MemoryStore
from budgetguard.stores.base import ReserveRequest, SettleRequest

DAY = 86400
T0 = 20_000 * DAY  # a day's start


def test_one_specs_tuple_follows_the_windows_it_is_reserved_in() -> None:
    clock = FakeClock(T0 + DAY - 5)
    store = MemoryStore(clock=clock)
    specs = (
        CounterSpec(CounterRef("s", "day"), Caps(tokens=10)),
        CounterSpec(CounterRef("s", "minute"), Caps()),
        CounterSpec(CounterRef("s", "lifetime"), Caps()),
    )
    refs = tuple(sp.ref for sp in specs)

    def spend(lease: str, tokens: int) -> bool:
        admitted = store.reserve(ReserveRequest(lease, specs, Amount(tokens=tokens), 60)).admitted
        if admitted:
            assert store.settle(SettleRequest(lease, refs, Amount(tokens=tokens))) == "settled"
        return admitted

    assert spend("a", 8)
    assert not spend("b", 3)  # the same day: 8 + 3 > 10
    clock.t = T0 + DAY + 5  # the next day
    assert spend("c", 9)
    day, minute, life = store.status(refs)
    assert (day.window_start, day.spent.tokens) == (T0 + DAY, 9)
    assert (minute.window_start, minute.spent.tokens) == (T0 + DAY, 9)
    assert life.spent.tokens == 17
    clock.t = T0 + DAY - 1  # back into the first day (an injected clock may go back)
    assert spend("d", 2)
    assert not spend("e", 1)
    day, _, life = store.status(refs)
    assert (day.window_start, day.spent.tokens) == (T0, 10)
    assert life.spent.tokens == 19
    assert store.reserve(ReserveRequest("d", specs, Amount(tokens=1), 60)).admitted  # a closed id: a replay
    assert store.status(refs)[0].reserved == Amount()
