"""Reservation precision on one growing English conversation (a fake gpt-4o; no network).

    PYTHONPATH=. python bench/precision.py [--counter bytes|o200k|auto] [--turns 20] [--limit 30000]

The fake provider reports what OpenAI's chat format really costs: o200k tokens
of each message (bpe-openai, offline), 3 a message and 3 a call. Prints the
reservation / actual cost of each turn, their mean, and how many turns a
token limit admits against how many fit by their real usage.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
from typing import Any, cast

import bpe_openai  # type: ignore[import-untyped]
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.ai import UsageMetadata

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord
from budgetguard.testing import FakeChatModel

ENC = bpe_openai.get_encoding("o200k_base")
QUESTION = "Could you explain, in plain words, how a budget guard decides to admit a call? " * 3
ANSWER = "It estimates the worst case, reserves it, and settles to the real usage afterwards. " * 6


class OpenAILikeFake(FakeChatModel):
    def _reply(self, messages: list[BaseMessage], **kwargs: Any) -> tuple[AIMessage, UsageMetadata]:
        msg, _ = super()._reply(messages, **kwargs)
        inp = 3 + sum(4 + len(ENC.encode(str(m.content))) for m in messages)
        out = min(len(ENC.encode(str(msg.content))), kwargs.get("max_tokens") or 10**9)
        usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        return msg, cast(UsageMetadata, usage)


def converse(turns: int, limit: int | None, counter: str | None) -> tuple[list[CallRecord], int]:
    """The records of one growing thread, and how many of its turns were admitted."""
    records: list[CallRecord] = []
    options: dict[str, Any] = {"on_record": records.append}
    if counter and "token_counter" in inspect.signature(BudgetGuard).parameters:
        options["token_counter"] = counter
    if limit:
        options["limit_tokens"] = limit
    else:
        options["limit_usd"] = 1000
    llm = BudgetGuard(**options).wrap(OpenAILikeFake(model_name="gpt-4o", responses=[ANSWER], max_tokens=200))
    history: list[BaseMessage] = [SystemMessage(content="You are terse.")]
    done = 0
    while done < turns:
        history.append(HumanMessage(content=QUESTION))
        try:
            history.append(llm.invoke(history))
        except BudgetExceeded:
            break
        done += 1
    return [r for r in records if r.outcome != "refused"], done  # refusals are recorded too, at $0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counter", default=None)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--limit", type=int, default=30_000)
    a = ap.parse_args()
    records, _ = converse(a.turns, None, a.counter)
    ratios = [float(r.reserved_usd / r.cost_usd) for r in records]
    print("reserve/actual per turn:", " ".join(f"{x:.2f}" for x in ratios))
    print(f"mean {statistics.mean(ratios):.2f}, first {ratios[0]:.2f}, last {ratios[-1]:.2f}")
    spent, fit = 0, 0
    for r in records:
        spent += r.usage.total_tokens
        fit += spent <= a.limit
    _, admitted = converse(a.turns, a.limit, a.counter)
    print(f"limit_tokens={a.limit}: {admitted} turns admitted where {fit} fit by real usage")


if __name__ == "__main__":
    main()
