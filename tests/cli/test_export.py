"""The ledger export on the memory store: exact against status, and its time arguments.

(The CLI itself refuses ``memory://``, which no other process can read; the
export and status functions it runs are checked here on a MemoryStore.)
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from clock import FakeClock

from budgetguard import BudgetGuard, Limit, MemoryStore
from budgetguard.cli.common import CliError
from budgetguard.cli.counters import collect
from budgetguard.cli.export import parse_time, record_rows, write
from budgetguard.pricing import Price
from budgetguard.testing import FakeChatModel

PRICES = {"m": Price(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.6"))}


def test_the_export_sums_to_status_on_the_memory_store() -> None:
    clock = FakeClock(1_800_000_000)  # a day boundary is crossed below: two day windows
    store = MemoryStore(clock=clock)
    guard = BudgetGuard(
        limits=[Limit(usd=5, per="day", scope="team:{team}"), Limit(tokens=10**6, scope="user:{user}")],
        store=store,
        prices=PRICES,
    )
    model = guard.wrap(FakeChatModel(model_name="m", output_tokens=33, max_tokens=40))
    for i in range(12):
        model.invoke("question " * i, config={"metadata": {"team": "red team", "user": f"u{i % 3}@x"}})
        clock.advance(9000)
    guard.reset("user:u1@x")
    rows = collect(store)
    defs = store.limit_definitions()
    charged: dict[tuple[str, str, str], Decimal] = {}
    tokens: dict[tuple[str, str, str], int] = {}
    for r in record_rows(store.ledger_records(), defs):
        k = (r["scope"], r["per"], r["window_start"])
        charged[k] = charged.get(k, Decimal(0)) + Decimal(r["charged_usd"])
        tokens[k] = tokens.get(k, 0) + int(r["charged_tokens"])
    assert {r.quantity for r in rows} == {"usd", "tokens"}
    for row in rows:  # the current windows
        k = (row.scope, row.per, "" if row.window_start is None else row.window_start.isoformat())
        if row.quantity == "usd":
            assert charged.get(k, Decimal(0)) == row.spent, k
        else:
            assert tokens.get(k, 0) == row.spent, k
    team = next(r for r in rows if r.scope == "team:red team")
    assert team.spent > 0 and team.cap == Decimal(5)
    windows = {k[2] for k in charged if k[0] == "team:red team"}
    assert len(windows) == 2  # the earlier day's records are still there, under their own window
    assert sum(v for k, v in charged.items() if k[0] == "team:red team") == sum(
        (Decimal(r.cost.nanos) / 10**9 for r in store.ledger_records()), Decimal(0)
    )
    out = io.StringIO()
    n = write(out, "jsonl", store.ledger_records(), defs, "user:u1")
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(objs) == 5 and objs[-1]["outcome"] == "reset"  # 4 calls, then the reset
    assert sum(Decimal(o["scopes"][0]["usd"]) for o in objs) == 0
    out = io.StringIO()
    write(out, "csv", store.ledger_records(), defs, None)
    assert {r["outcome"] for r in csv.DictReader(io.StringIO(out.getvalue()))} == {"settled", "reset"}


def test_times_are_iso_epoch_or_an_age() -> None:
    now = 1_800_000_000.0
    assert parse_time(None) is None
    assert parse_time("24h", now) == now - 86400 and parse_time("90m", now) == now - 5400
    assert parse_time("1700000000") == 1_700_000_000.0
    day = datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()
    assert parse_time("2026-12-01") == day == parse_time("2026-12-01T00:00:00Z")
    assert parse_time("2026-12-01T01:00:00+01:00") == day
    with pytest.raises(CliError, match="ISO 8601"):
        parse_time("yesterday")
