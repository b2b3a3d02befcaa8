"""Issue 11, the CLI: run in-process against a real Redis that a guarded app wrote to.

A BudgetGuard drives FakeChatModel calls into a private prefix of a real
redis-server; ``main([...])`` then reads it back. Checked: the output, the
exit codes (0 ok, 1 a finding, 2 usage, 3 store unavailable), ``--json``
money as strings, and that the ledger export sums to what status shows.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis_servers import RedisServer, free_port

from budgetguard import BudgetGuard, Limit
from budgetguard.cli import common, main
from budgetguard.pricing import Price
from budgetguard.reservation import Amount, CounterRef
from budgetguard.spool import Spool, encode_settle
from budgetguard.stores.base import SettleRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

PRICES = {"test-model": Price(input_per_mtok=1, output_per_mtok=2)}
USERS = ("alice@example.com", "bob@example.com", "alice@example.com", "carol.x@example.com")


class App:
    """A guarded app's store, written through a BudgetGuard, and the URL the CLI reads it from."""

    def __init__(self, server: RedisServer) -> None:
        self.prefix = f"cli-{uuid.uuid4().hex[:10]}:"
        self.url = f"{server.url}?prefix={self.prefix}"
        self.store = RedisStore.from_url(server.url, prefix=self.prefix)
        self.guard = BudgetGuard(
            limits=[
                Limit(usd=Decimal("0.01"), per="day", scope="org:{org}"),
                Limit(tokens=1000, requests=50, scope="org:{org}/user:{user}"),
            ],
            store=self.store,
            prices=PRICES,
        )
        model = self.guard.wrap(FakeChatModel(model_name="test-model", output_tokens=40, max_tokens=50))
        for user in USERS:
            model.invoke("hello", config={"metadata": {"org": "initech", "user": user}})
        model.invoke("hello", config={"metadata": {"org": "hooli", "user": "dave@example.com"}})


@pytest.fixture()
def app(redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("BUDGETGUARD_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("BUDGETGUARD_STORE", raising=False)
    return App(redis_server)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status_json(capsys: Any, url: str, *more: str) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "status", "--store", url, "--json", *more)
    assert code == 0
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_status_shows_every_scope_as_written_with_its_cap(app: App, capsys: Any) -> None:
    code, out, _ = run(capsys, "status", "--store", app.url)
    assert code == 0
    for scope in (
        "org:initech",
        "org:hooli",
        "org:initech/user:alice@example.com",
        "org:initech/user:carol.x@example.com",
    ):
        assert scope in out
    assert "%40" not in out  # never the store's percent-encoded key
    assert "$0.01" in out and "1,000" in out and "never" in out  # caps; lifetime never resets


def test_status_json_rows_carry_money_as_strings_and_match_the_guard(app: App, capsys: Any) -> None:
    rows = status_json(capsys, app.url)
    org = next(r for r in rows if r["scope"] == "org:initech" and r["quantity"] == "usd")
    assert isinstance(org["spent"], str) and isinstance(org["cap"], str) and org["cap"] == "0.01"
    shown = app.guard.remaining(org="initech", user="alice@example.com")
    by = {(r.scope, r.quantity): r for r in shown.rows}
    assert Decimal(org["spent"]) == by[("org:initech", "usd")].spent
    assert Decimal(org["remaining"]) == by[("org:initech", "usd")].remaining
    alice = [r for r in rows if r["scope"] == "org:initech/user:alice@example.com"]
    assert {r["quantity"] for r in alice} == {"tokens", "requests"}
    tokens = next(r for r in alice if r["quantity"] == "tokens")
    assert (
        tokens["spent"] == by[("org:initech/user:alice@example.com", "tokens")].spent
        and tokens["cap"] == 1000
    )
    assert tokens["resets_at"] is None and org["resets_at"].endswith("+00:00")
    only = status_json(capsys, app.url, "--scope", "org:initech/user:a")
    assert {r["scope"] for r in only} == {"org:initech/user:alice@example.com"}


def test_the_plain_text_fallback_without_rich(app: App, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "_rich", lambda: None)
    code, out, _ = run(capsys, "status", "--store", app.url, "--scope", "org:")
    assert code == 0
    assert "org:initech/user:alice@example.com" in out and "[#" in out and "%" in out
    assert out.splitlines()[0].split()[:3] == ["scope", "window", "quantity"]


def test_top_ranks_by_spend_and_scopes_lists_them(app: App, capsys: Any) -> None:
    code, out, _ = run(capsys, "top", "--store", app.url, "-n", "1", "--json")
    assert code == 0
    top = json.loads(out)
    assert [(r["scope"], r["quantity"]) for r in top] == [("org:initech", "usd")]
    code, out, _ = run(capsys, "scopes", "--store", app.url, "--json")
    listed = {r["scope"]: r["periods"] for r in json.loads(out)}
    assert listed["org:initech"] == ["day"] and listed["org:initech/user:bob@example.com"] == ["lifetime"]
    assert len(listed) == 6
    assert run(capsys, "top", "--store", app.url, "-n", "0")[0] == 2


def test_reset_asks_unless_yes(app: App, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = "org:initech/user:bob@example.com"
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, out, _ = run(capsys, "reset", scope, "--store", app.url)
    assert code == 1 and "not reset" in out
    assert app.guard.remaining(org="initech", user="bob@example.com").for_scope(scope)[0].spent > 0
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "yes")
    assert run(capsys, "reset", scope, "--store", app.url)[0] == 0
    assert scope in asked[0]
    assert app.guard.remaining(org="initech", user="bob@example.com").for_scope(scope)[0].spent == 0
    code, out, _ = run(capsys, "reset", "org:hooli", "--store", app.url, "--yes")
    assert code == 0 and "reset 1 counter" in out
    assert run(capsys, "reset", "org:nobody", "--store", app.url, "--yes")[0] == 1


def test_the_export_sums_to_what_status_shows(app: App, capsys: Any) -> None:
    app.guard.reset("org:initech/user:bob@example.com")  # a reset is in the ledger too
    rows = status_json(capsys, app.url)
    code, out, _ = run(capsys, "ledger", "export", "--store", app.url, "--format", "csv")
    assert code == 0
    sums: dict[tuple[str, str], Decimal] = {}
    tokens: dict[tuple[str, str], int] = {}
    for r in csv.DictReader(io.StringIO(out)):
        k = (r["scope"], r["per"])
        sums[k] = sums.get(k, Decimal(0)) + Decimal(r["charged_usd"])
        tokens[k] = tokens.get(k, 0) + int(r["charged_tokens"])
    for r in rows:
        k = (r["scope"], r["per"])
        if r["quantity"] == "usd":
            assert sums[k] == Decimal(r["spent"]), k
        elif r["quantity"] == "tokens":
            assert tokens[k] == r["spent"], k
    code, out, _ = run(
        capsys, "ledger", "export", "--store", app.url, "--format", "jsonl", "--scope", "org:hooli"
    )
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) == 1 and recs[0]["model"] == "test-model" and recs[0]["tokens"]["output"] == 40
    assert {s["scope"] for s in recs[0]["scopes"]} == {"org:hooli", "org:hooli/user:dave@example.com"}
    assert isinstance(recs[0]["cost_usd"], str) and recs[0]["run_id"] and recs[0]["lease_id"]
    assert run(capsys, "ledger", "export", "--store", app.url, "--format", "jsonl", "--since", "1h")[1]
    assert (
        run(capsys, "ledger", "export", "--store", app.url, "--format", "csv", "--since", "2999-01-01")[
            1
        ].count("\n")
        == 1
    )  # the header only
    code, _, err = run(capsys, "ledger", "export", "--store", app.url, "--format", "csv", "--since", "soon")
    assert code == 2 and "ISO 8601" in err


def test_exit_codes_name_the_problem(app: App, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "status")
    assert code == 2 and "BUDGETGUARD_STORE" in err
    code, _, err = run(capsys, "status", "--store", "memory://")
    assert code == 2 and "inside the guarded app's own process" in err
    code, _, err = run(capsys, "status", "--store", "bogus://x")
    assert code == 2 and "unknown store URL scheme" in err
    code, _, err = run(capsys, "status", "--store", f"redis://127.0.0.1:{free_port()}/0", "--timeout", "0.5")
    assert code == 3 and "refused the connection" in err
    monkeypatch.setenv("BUDGETGUARD_STORE", app.url)
    assert run(capsys, "scopes")[0] == 0
    assert run(capsys, "no-such-command")[0] == 2


def test_every_command_has_help(capsys: Any) -> None:
    for argv in (
        [], ["demo"], ["status"], ["top"], ["scopes"], ["reset"], ["ledger"], ["ledger", "export"],
        ["spool"], ["spool", "status"], ["spool", "replay"], ["prices"], ["doctor"],
    ):  # fmt: skip
        code, out, _ = run(capsys, *argv, "--help")
        assert code == 0 and "usage: budgetguard" in out, argv
    proc = subprocess.run([sys.executable, "-m", "budgetguard.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "exit codes" in proc.stdout


def test_prices_shows_the_resolved_rates_and_their_source(capsys: Any) -> None:
    code, out, _ = run(capsys, "prices", "gpt-4o", "--json")
    assert code == 0
    got = json.loads(out)
    assert got["per_mtok_usd"]["input_tokens"] == "2.5" and got["provider"] == "openai"
    assert "genai-prices" in got["source"]
    code, out, _ = run(capsys, "prices", "claude-sonnet-4-5", "--provider", "anthropic")
    assert code == 0 and "$3.00" in out and "cache" in out
    code, out, _ = run(capsys, "prices", "no-such-model-xyz")
    assert code == 1 and "no-such-model-xyz" in out


@pytest.fixture()
def lru_server() -> Iterator[RedisServer]:
    server = RedisServer(None, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru").start()
    yield server
    server.stop()


def test_doctor_passes_noeviction_and_scripts(redis_server: RedisServer, capsys: Any) -> None:
    code, out, _ = run(capsys, "doctor", "--store", redis_server.url)
    assert code == 0, out
    assert "ok       eviction     maxmemory-policy noeviction" in out
    assert "Lua scripts run" in out and "TIME works inside scripts" in out
    assert (
        "warn     persistence  neither AOF nor RDB" in out and "appendonly yes" in out
    )  # the suite's servers


def test_doctor_finds_an_evicting_server_and_names_the_fix(lru_server: RedisServer, capsys: Any) -> None:
    code, out, _ = run(capsys, "doctor", "--store", lru_server.url)
    assert code == 1
    assert "problem  eviction     maxmemory-policy allkeys-lru" in out
    assert "fix: CONFIG SET maxmemory-policy noeviction" in out and "1 problem(s)" in out
    code, out, _ = run(capsys, "doctor", "--store", f"redis://127.0.0.1:{free_port()}/0", "--timeout", "0.5")
    assert code == 3 and "refused the connection" in out


def test_spool_status_and_replay(app: App, capsys: Any, tmp_path: Path) -> None:
    root = tmp_path / "spooldir"
    spool = Spool(root / app.store.spool_key)
    ref = CounterRef("org:gamma", "day")
    spool.append(encode_settle(SettleRequest("spooled-1", (ref,), Amount(123, 4, 1))))
    code, out, _ = run(capsys, "spool", "status", "--dir", str(root), "--json")
    assert code == 0 and json.loads(out)["pending"] == 1
    code, out, _ = run(capsys, "spool", "status", "--dir", str(root))
    assert code == 0 and "1 write(s) waiting" in out
    code, out, _ = run(capsys, "spool", "replay", "--dir", str(root), "--store", app.url)
    assert code == 0 and "replayed 1 write(s); 0 still waiting" in out
    assert app.store.status([ref])[0].spent == Amount(123, 4, 1)
    assert run(capsys, "spool", "status", "--dir", str(tmp_path / "none"))[0] == 1


def test_on_cluster_status_and_the_export_read_every_slot(redis_cluster: Any, capsys: Any) -> None:
    prefix = f"clc-{uuid.uuid4().hex[:8]}:"
    url = f"{redis_cluster.url}?prefix={prefix}"
    store = RedisStore.from_url(redis_cluster.url, prefix=prefix)
    guard = BudgetGuard(limits=[Limit(usd=1, scope="org:{org}")], store=store, prices=PRICES)
    model = guard.wrap(FakeChatModel(model_name="test-model", output_tokens=10))
    orgs = [f"o{i}" for i in range(6)]  # roots spread over the cluster's slots
    for org in orgs:
        model.invoke("hi", config={"metadata": {"org": org}})
    rows = status_json(capsys, url, "--scope", "org:o")
    assert sorted(r["scope"] for r in rows) == [f"org:{o}" for o in orgs]
    code, out, _ = run(capsys, "ledger", "export", "--store", url, "--format", "jsonl")
    recs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and sorted(r["scopes"][0]["scope"] for r in recs) == [f"org:{o}" for o in orgs]
    assert sum(Decimal(r["cost_usd"]) for r in recs) == sum(Decimal(r["spent"]) for r in rows)
