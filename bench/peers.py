"""16 racing callers on one small budget, through budgetguard and its peers, side by side in one run.

The workload: 16 threads share one $0.001 budget. Each thread loops "check,
call, record" until it is refused, on a fake ``gpt-4o-mini`` with 20 ms of
latency whose calls cost about $0.00006 (43 input tokens, 90 output tokens,
``max_tokens=100``), so exactly 16 calls fit. The peers:

- LangChain's ``UsageMetadataCallbackHandler``: tracking only, it cannot refuse.
  The app checks the handler's tracked spend (priced with ``budgetguard.cost``)
  against the budget before each call, the best a tracker allows.
- budgetguard, on the memory store and on Redis (its own redis-server on a free
  loopback port, or ``--url``): the guard reserves each call's worst case
  atomically before it is sent and settles the actual cost after.
- LiteLLM's ``BudgetManager`` (``pip install -e '.[bench]'``), used as its docs
  say: ``create_budget``, then before each call ``projected_cost(model,
  messages, user) <= get_total_budget(user)``, and ``update_cost(completion_obj=...)``
  after it (the response is the fake's usage as a LiteLLM ``ModelResponse``;
  no network: its bundled cost map is used).

Printed per peer, over ``--reps`` repetitions (worst and median): overspend
(% over the budget), utilization (% of the budget spent) and calls admitted
of the 16 that fit. No timing is asserted.

Run: ``python bench/peers.py [--reps N] [--url redis://host:port/db] [--callers 16]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import AIMessage

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, cost
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

MODEL = "gpt-4o-mini"
BUDGET = Decimal("0.001")
CALLERS = 16
LATENCY = 0.02
MAX_TOKENS = 100
OUTPUT_TOKENS = 90
# 160 characters: the fake counts 3 + 160 // 4 = 43 input tokens (English, about 4 characters a token)
PROMPT = (
    "Summarise this support ticket in one line: the customer cannot log in after "
    "resetting the password and the reset email link says it has already expired."
)
MAX_CALLS_PER_THREAD = 50  # a runaway stop, never reached by the peers here


def fake() -> FakeChatModel:
    return FakeChatModel(
        model_name=MODEL, max_tokens=MAX_TOKENS, output_tokens=OUTPUT_TOKENS, latency=LATENCY
    )


def call_cost() -> Decimal:
    """What one call of the race really costs (the fake's own usage, priced exactly)."""
    usage = fake().model_copy(update={"latency": 0.0}).invoke(PROMPT).usage_metadata
    assert usage is not None
    return cost(usage, MODEL)


def fits(budget: Decimal) -> int:
    return int(budget // call_cost())


# ------------------------------------------------------------------ the race


@dataclass
class Outcome:
    admitted: int
    spent: Decimal
    ratio: float = 0.0  # budgetguard only: median reserved / actual cost over admitted calls

    def overspend_pct(self, budget: Decimal) -> float:
        return float(max(self.spent - budget, Decimal(0)) / budget * 100)

    def utilization_pct(self, budget: Decimal) -> float:
        return float(self.spent / budget * 100)


def race(attempt: Callable[[], bool], callers: int, once: bool = False) -> int:
    """``callers`` threads each call ``attempt()`` until it returns False (or once); the calls admitted."""
    barrier = threading.Barrier(callers)
    admitted = [0] * callers
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            limit = 1 if once else MAX_CALLS_PER_THREAD
            while admitted[i] < limit and attempt():
                admitted[i] += 1
        except BaseException as exc:  # reported, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(admitted)


def run_tracking(budget: Decimal, callers: int, once: bool = False) -> Outcome:
    handler = UsageMetadataCallbackHandler()
    llm = fake().model_copy(update={"callbacks": [handler]})

    def tracked() -> Decimal:
        return sum((cost(u, m) for m, u in dict(handler.usage_metadata).items()), Decimal(0))

    def attempt() -> bool:
        if tracked() >= budget:  # the app's own check; the handler only tracks
            return False
        llm.invoke(PROMPT)
        return True

    admitted = race(attempt, callers, once)
    return Outcome(admitted, tracked())


def run_budgetguard(budget: Decimal, callers: int, store: Any = None, once: bool = False) -> Outcome:
    records: list[CallRecord] = []
    guard = BudgetGuard(limit_usd=budget, store=store, on_record=records.append)
    llm = guard.wrap(fake())

    def attempt() -> bool:
        try:
            llm.invoke(PROMPT)
        except BudgetExceeded:
            return False
        return True

    admitted = race(attempt, callers, once)
    spent = sum((Decimal(r.spent) for r in guard.remaining().rows if r.quantity == "usd"), Decimal(0))
    records = [r for r in records if r.outcome != "refused"]  # refusals are recorded too, at $0
    ratio = statistics.median(float(r.reserved_usd / r.cost_usd) for r in records) if records else 0.0
    return Outcome(admitted, spent, ratio)


def litellm_budget_manager() -> tuple[Any, Any] | str:
    """LiteLLM's ``BudgetManager`` and ``ModelResponse``, or why they cannot run here."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled prices: no download
    try:
        import litellm
        from litellm import BudgetManager, ModelResponse
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    try:
        litellm.cost_per_token(model=MODEL, prompt_tokens=1, completion_tokens=1)
    except Exception as exc:
        return f"not runnable offline: {type(exc).__name__}: {exc}"
    return BudgetManager, ModelResponse


@contextlib.contextmanager
def in_temp_dir() -> Iterator[None]:
    """BudgetManager(client_type="local") writes user_cost.json to the working directory, from threads."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bg-bench-litellm-") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            for t in threading.enumerate():  # its non-blocking save threads
                if t is not threading.current_thread() and not t.daemon:
                    t.join(5)
            os.chdir(old)


def run_litellm(budget: Decimal, callers: int, classes: tuple[Any, Any], once: bool = False) -> Outcome:
    budget_manager_cls, model_response_cls = classes
    user = f"bench-{secrets.token_hex(4)}"
    with in_temp_dir():
        manager = budget_manager_cls(project_name="budgetguard-bench")
        manager.create_budget(total_budget=float(budget), user=user)
        llm = fake()
        messages = [{"role": "user", "content": PROMPT}]

        def attempt() -> bool:
            if manager.projected_cost(MODEL, messages, user) > manager.get_total_budget(user):
                return False
            reply = llm.invoke(PROMPT)
            assert isinstance(reply, AIMessage) and reply.usage_metadata is not None
            u = reply.usage_metadata
            response = model_response_cls(
                model=MODEL,
                choices=[{"message": {"role": "assistant", "content": reply.content}}],
                usage={
                    "prompt_tokens": u["input_tokens"],
                    "completion_tokens": u["output_tokens"],
                    "total_tokens": u["total_tokens"],
                },
            )
            manager.update_cost(completion_obj=response, user=user)
            return True

        admitted = race(attempt, callers, once)
        spent = Decimal(str(manager.get_current_cost(user)))
    return Outcome(admitted, spent)


# ------------------------------------------------------------------ the run


def run(url: str | None, reps: int, callers: int, own: bool) -> None:
    prefix = f"bgbench-peers:{os.getpid()}-{secrets.token_hex(4)}:"
    stores: list[RedisStore] = []

    def redis_store() -> RedisStore:
        assert url is not None
        s = RedisStore.from_url(url, prefix=f"{prefix}{len(stores)}:")
        stores.append(s)
        return s

    peers: dict[str, Callable[[bool], Outcome] | str] = {
        "UsageMetadataCallbackHandler (tracks only)": lambda once: run_tracking(BUDGET, callers, once),
        "budgetguard, memory store": lambda once: run_budgetguard(BUDGET, callers, once=once),
        "budgetguard, Redis store": lambda once: run_budgetguard(BUDGET, callers, redis_store(), once),
    }
    lite = litellm_budget_manager()
    peers["LiteLLM BudgetManager (projected check)"] = (
        lite if isinstance(lite, str) else (lambda once: run_litellm(BUDGET, callers, lite, once))
    )

    modes = {True: "one call per thread", False: "each thread loops until refused"}
    results: dict[tuple[bool, str], list[Outcome]] = {(m, n): [] for m in modes for n in peers}
    try:
        for _ in range(reps):
            for once in modes:
                for name, fn in peers.items():
                    if not isinstance(fn, str):
                        results[once, name].append(fn(once))
    finally:
        if url is not None and not own:
            import redis

            admin = redis.Redis.from_url(url)
            keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                admin.unlink(*keys[i : i + 1000])
            admin.close()
        for s in stores:
            s.close()

    print(
        f"{callers} threads racing on one ${BUDGET} budget; each call ${call_cost()} "
        f"({LATENCY * 1000:g} ms latency), so {fits(BUDGET)} fit; {reps} repetitions"
        + (f"; Redis at {url} ({'started by this script' if own else 'existing server'})" if url else "")
    )
    for once, mode in modes.items():
        n_fit = min(fits(BUDGET), callers if once else callers * MAX_CALLS_PER_THREAD)
        print()
        print(
            f"{mode + ':':<44} {'overspend % worst':>17} {'median':>7} "
            f"{'utilization % worst':>19} {'median':>7} {'admitted/fit worst':>18} {'median':>7}"
        )
        for name, fn in peers.items():
            if isinstance(fn, str):
                print(f"{name:<44} {fn}")
                continue
            outs = results[once, name]
            over = [o.overspend_pct(BUDGET) for o in outs]
            util = [o.utilization_pct(BUDGET) for o in outs]
            adm = [o.admitted for o in outs]
            # worst: the most overspend; the least utilization; admitted furthest from what fits
            worst_adm = max(adm, key=lambda a: abs(a - n_fit))
            print(
                f"{name:<44} {max(over):>17.1f} {statistics.median(over):>7.1f} "
                f"{min(util):>19.1f} {statistics.median(util):>7.1f} "
                f"{f'{worst_adm}/{n_fit}':>18} {f'{statistics.median(adm):g}/{n_fit}':>7}"
            )
    print()
    print(
        "overspend = spent over the budget; utilization = share of the budget spent "
        "(over 100% is overspend);\nadmitted/fit = calls that went out, of those whose real cost "
        "fits the budget (more than fit means overspend).\nThe tracking handler cannot refuse: the app "
        "checks its tracked spend before each call. LiteLLM: projected_cost() <= budget before, "
        "update_cost() after."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="use this Redis (redis://host:port/db) instead of starting one")
    ap.add_argument("--reps", type=int, default=7, help="repetitions of the race per peer (default 7)")
    ap.add_argument("--callers", type=int, default=CALLERS, help=f"racing threads (default {CALLERS})")
    args = ap.parse_args()
    if args.reps < 1 or args.callers < 1:
        ap.error("--reps and --callers must be >= 1")
    if args.url:
        run(args.url, args.reps, args.callers, own=False)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from redis_overhead import own_redis_server

        with own_redis_server() as url:
            run(url, args.reps, args.callers, own=True)


if __name__ == "__main__":
    main()
