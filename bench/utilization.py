"""Budget utilization per workload, beside the physical limit, in one run.

Utilization is the share of a budget spent when refusals begin: each workload
runs through ``BudgetGuard`` (memory store) until its first ``BudgetExceeded``.
The physical limit is what a guard could admit on the same calls if it knew
each call's exact input and output and capped the last answer to fit: it
stops only when the next call's input alone no longer fits. The reservation
ratio is the median, over admitted calls, of reserved / actual cost.

All calls go to ``budgetguard.testing.FakeChatModel`` (``gpt-4o-mini``
prices) with English-like usage: input tokens about a quarter of the prompt's
bytes, fixed-ish output. The workloads:

- single-turn calls with ``max_tokens=512``, and with no ``max_tokens``
  (the guard then reserves ``default_max_output_tokens``, 4096);
- one growing conversation (each call re-sends the thread plus a new user
  turn; ``max_tokens=512``), at several budgets;
- an agent loop (tool call, tool result, answer, next task) under a per-run
  budget, ``Limit(usd=..., scope="run:{run_id}")`` with ``metadata={"run_id": ...}``,
  no ``max_tokens``, at several budgets;
- 16 concurrent callers (threads) on one $0.001 budget, the race of
  ``bench/peers.py`` (16 calls fit), with one call per thread and with each
  thread looping until refused, over ``--reps`` repetitions (median, then the
  lowest as "worst"). The one-shot race runs with the default
  ``contention_wait`` (a call refused only by other calls' reservations in
  flight waits for them to settle) and, for comparison, with
  ``contention_wait=0`` (refused at once).

``refused`` counts the ``BudgetExceeded`` raised: a sequential workload ends at
its first; a looping race thread ends at its own.

No timing is asserted. Run: ``python bench/utilization.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit, cost
from budgetguard.engine.contention import DEFAULT_CONTENTION_WAIT
from budgetguard.testing import FakeChatModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

MODEL = "gpt-4o-mini"
STEP_CAP = 5000  # a runaway stop; every workload here is refused long before


class Refused(Exception):
    """The oracle's refusal (the physical limit was reached)."""


Invoke = Callable[[int, list[BaseMessage]], AIMessage]  # (step, messages) -> reply


def usd_of(inp: int, out: int) -> Decimal:
    return cost({"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}, MODEL)


# ------------------------------------------------------------------ English-like text


WORDS = (
    "the budget report shows that our team spent less on travel this quarter while cloud "
    "costs grew because the new search service needs more memory and the data pipeline "
    "now runs every hour instead of once a day so we should review the contract"
).split()


def english(n_chars: int, seed: int) -> str:
    out: list[str] = []
    i, size = seed, 0
    while size < n_chars:
        w = WORDS[i % len(WORDS)]
        out.append(w)
        size += len(w) + 1
        i += 7
    return " ".join(out)[:n_chars]


# ------------------------------------------------------------------ workloads (drivers)


def single_turn(invoke: Invoke) -> None:
    lengths = (300, 900, 1600, 600, 2400)
    for step in range(STEP_CAP):
        invoke(step, [HumanMessage(english(lengths[step % len(lengths)], step))])


def conversation(invoke: Invoke) -> None:
    thread: list[BaseMessage] = [SystemMessage("You are a concise analyst. " + english(200, 1))]
    for step in range(STEP_CAP):
        thread.append(HumanMessage(english(320, step)))
        thread.append(invoke(step, list(thread)))


def agent(invoke: Invoke) -> None:
    thread: list[BaseMessage] = [SystemMessage("You are an operations agent. " + english(400, 3))]
    thread.append(HumanMessage("Task 0: " + english(240, 0)))
    for step in range(STEP_CAP):
        reply = invoke(step, list(thread))
        thread.append(reply)
        if reply.tool_calls:
            result = english(1800, step)  # a search result, a file, a table
            thread.append(ToolMessage(result, tool_call_id=reply.tool_calls[0]["id"] or "call"))
        else:
            thread.append(HumanMessage(f"Task {step}: " + english(240, step)))


SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the company knowledge base.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


@dataclass(frozen=True)
class Workload:
    name: str
    driver: Callable[[Invoke], None]
    models: Sequence[FakeChatModel]  # call i goes to models[i % len(models)]: fixed-ish output
    budgets: Sequence[Decimal]
    goal: str  # "99" (>= 99%) or "physical" (within 1 point of it)
    tools: bool = False
    run_scoped: bool = False


def fakes(max_tokens: int | None, outputs: Sequence[int], **kw: Any) -> list[FakeChatModel]:
    return [FakeChatModel(model_name=MODEL, max_tokens=max_tokens, output_tokens=o, **kw) for o in outputs]


def workloads() -> list[Workload]:
    reply = english(1200, 5)  # about 300 tokens of English, re-sent with the thread
    return [
        Workload(
            "single-turn, max_tokens=512",
            single_turn,
            fakes(512, (220, 300, 380)),
            [Decimal("0.05")],
            "99",
        ),
        Workload(
            "single-turn, no max_tokens",
            single_turn,
            fakes(None, (220, 300, 380)),
            [Decimal("0.05")],
            "99",
        ),
        Workload(
            "growing conversation, max_tokens=512",
            conversation,
            fakes(512, (280, 300, 320), responses=[reply]),
            [Decimal("0.02"), Decimal("0.05"), Decimal("0.10")],
            "physical",
        ),
        Workload(
            "agent loop, per-run budget, no max_tokens",
            agent,
            fakes(None, (110, 120, 130), responses=[english(600, 9)], tool_args={"query": "q3 cloud costs"}),
            [Decimal("0.005"), Decimal("0.01"), Decimal("0.02"), Decimal("0.05")],
            "physical",
            tools=True,
            run_scoped=True,
        ),
    ]


# ------------------------------------------------------------------ measuring


@dataclass
class Figures:
    utilization: float  # % of the budget spent when refusals began
    physical: float  # % an exact guard could spend on the same calls
    ratio: float  # median reserved / actual over admitted calls
    calls: int


def bound(model: FakeChatModel, tools: bool) -> Any:
    return model.bind_tools([SEARCH_TOOL]) if tools else model


def measure_guard(w: Workload, budget: Decimal, run_id: str) -> tuple[float, float, int]:
    records: list[CallRecord] = []
    limit = Limit(usd=budget, scope="run:{run_id}") if w.run_scoped else Limit(usd=budget)
    guard = BudgetGuard(limits=[limit], on_record=records.append)
    llms = [bound(guard.wrap(m), w.tools) for m in w.models]
    config = {"metadata": {"run_id": run_id}}

    def invoke(step: int, messages: list[BaseMessage]) -> AIMessage:
        return llms[step % len(llms)].invoke(messages, config=config)  # type: ignore[no-any-return]

    try:
        w.driver(invoke)
    except BudgetExceeded:
        pass
    else:
        raise RuntimeError(f"{w.name}: never refused in {STEP_CAP} calls")
    records = [r for r in records if r.outcome != "refused"]  # refusals are recorded too, at $0
    spent = sum((r.cost_usd for r in records), Decimal(0))
    ratio = statistics.median(float(r.reserved_usd / r.cost_usd) for r in records) if records else 0.0
    return float(spent / budget * 100), ratio, len(records)


def measure_physical(w: Workload, budget: Decimal) -> float:
    """The same calls, unguarded; admitted while their exact cost fits, the last answer capped to fit."""
    llms = [bound(m, w.tools) for m in w.models]
    out_rate = usd_of(0, 1_000_000) / 1_000_000
    spent = Decimal(0)

    def invoke(step: int, messages: list[BaseMessage]) -> AIMessage:
        nonlocal spent
        reply = llms[step % len(llms)].invoke(messages)
        u = reply.usage_metadata
        assert u is not None
        full = usd_of(u["input_tokens"], u["output_tokens"])
        if spent + full <= budget:
            spent += full
            return reply  # type: ignore[no-any-return]
        room = budget - spent - usd_of(u["input_tokens"], 0)
        capped = int((room / out_rate).to_integral_value(ROUND_FLOOR)) if room > 0 else 0
        if capped >= 1:  # the input fits: answer with as many tokens as the budget leaves
            spent += usd_of(u["input_tokens"], capped)
        raise Refused

    try:
        w.driver(invoke)
    except Refused:
        pass
    return float(spent / budget * 100)


def measure(w: Workload) -> list[tuple[Decimal, Figures]]:
    rows = []
    for i, budget in enumerate(w.budgets):
        util, ratio, calls = measure_guard(w, budget, f"bench-run-{i}")
        rows.append((budget, Figures(util, measure_physical(w, budget), ratio, calls)))
    return rows


def verdict(goal: str, util: float, physical: float) -> str:
    if goal == "99":
        return "meets" if util >= 99.0 else "MISSES"
    if goal == "95":
        return "meets" if util >= 95.0 else "MISSES"
    return "meets" if physical - util <= 1.0 else "MISSES"


GOAL_TEXT = {"99": ">= 99%", "95": ">= 95%", "physical": "within 1 pt of physical"}


# ------------------------------------------------------------------ the 16-caller race


@dataclass
class Race:
    admitted: int
    refused: int
    spent: Decimal
    ratio: float


def run_race(budget: Decimal, callers: int, once: bool, contention_wait: float) -> Race:
    """The race of ``bench/peers.py`` (memory store), counting the refusals."""
    records: list[CallRecord] = []
    guard = BudgetGuard(limit_usd=budget, contention_wait=contention_wait, on_record=records.append)
    llm = guard.wrap(peers.fake())
    refused = [0]
    lock = threading.Lock()

    def attempt() -> bool:
        try:
            llm.invoke(peers.PROMPT)
        except BudgetExceeded:
            with lock:
                refused[0] += 1
            return False
        return True

    admitted = peers.race(attempt, callers, once)
    spent = sum((Decimal(r.spent) for r in guard.remaining().rows if r.quantity == "usd"), Decimal(0))
    records = [r for r in records if r.outcome != "refused"]  # refusals are recorded too, at $0
    ratio = statistics.median(float(r.reserved_usd / r.cost_usd) for r in records) if records else 0.0
    return Race(admitted, refused[0], spent, ratio)


def print_races(reps: int) -> None:
    budget, callers = peers.BUDGET, peers.CALLERS
    n_fit = peers.fits(budget)
    physical = float(n_fit * peers.call_cost() / budget * 100)
    wait_s = f"wait {DEFAULT_CONTENTION_WAIT:g} s"
    for once, wait, mode in (
        (True, DEFAULT_CONTENTION_WAIT, f"1 call each, {wait_s}"),
        (True, 0.0, "1 call each, no wait"),
        (False, DEFAULT_CONTENTION_WAIT, f"looping, {wait_s}"),
    ):
        outs = [run_race(budget, callers, once, wait) for _ in range(reps)]
        by_util = sorted(outs, key=lambda o: o.spent)
        median, worst = by_util[len(by_util) // 2], by_util[0]
        ratio = statistics.median(o.ratio for o in outs)
        name = f"{callers} callers, {mode}, median"
        for label, o in ((name, median), ("  worst", worst)):
            u = float(o.spent / budget * 100)
            goal, met = (GOAL_TEXT["95"], verdict("95", u, physical)) if wait else ("(for comparison)", "-")
            print(
                f"{label:<44} {'$' + str(budget):>8} {f'{o.admitted}/{n_fit}':>6} {o.refused:>7} "
                f"{u:>10.1f}% {physical:>8.1f}% {physical - u:>8.1f} {ratio:>13.2f}x  {goal:<24} {met}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="repetitions of the 16-caller race (default 7)")
    args = ap.parse_args()
    if args.reps < 1:
        ap.error("--reps must be >= 1")

    head = (
        f"{'workload':<44} {'budget':>8} {'calls':>6} {'refused':>7} {'utilization':>11} {'physical':>9} "
        f"{'gap pts':>8} {'reserve/actual':>14}  {'goal':<24} verdict"
    )
    print(f"model {MODEL} (FakeChatModel, English-like usage), memory store")
    print()
    print(head)
    for w in workloads():
        for budget, f in measure(w):
            print(
                f"{w.name:<44} {'$' + str(budget):>8} {f.calls:>6} {1:>7} {f.utilization:>10.1f}% "
                f"{f.physical:>8.1f}% {f.physical - f.utilization:>8.1f} {f.ratio:>13.2f}x  "
                f"{GOAL_TEXT[w.goal]:<24} {verdict(w.goal, f.utilization, f.physical)}"
            )
    print_races(args.reps)  # 16 concurrent callers: the race of bench/peers.py, on the memory store
    print()
    print(
        "utilization: % of the budget spent when refusals began; physical: what a guard knowing each "
        "call's exact\ninput and output could spend on the same calls (capping the last answer); gap: "
        f"physical minus utilization;\nreserve/actual: median reservation over actual cost per admitted "
        f"call; calls: calls admitted ({args.reps} race repetitions,\nof those that fit); refused: "
        "BudgetExceeded raised; wait: contention_wait (0: a call refused by\nreservations in flight is "
        "refused at once)."
    )


if __name__ == "__main__":
    main()
