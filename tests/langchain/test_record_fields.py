"""A CallRecord can be tied to its request: run ids, the caller's metadata and timestamps."""

from __future__ import annotations

from datetime import datetime, timezone

from langchain_core.runnables import RunnableLambda

from budgetguard import BudgetGuard, CallRecord, Limit
from budgetguard.testing import FakeChatModel


def test_record_carries_run_ids_metadata_and_times() -> None:
    recs: list[CallRecord] = []
    guard = BudgetGuard(limits=[Limit(usd="1", scope="user:{user_id}")], on_record=recs.append)
    model = guard.wrap(FakeChatModel())
    before = datetime.now(timezone.utc)
    chain = RunnableLambda(lambda x: x) | model
    chain.invoke("hi", config={"metadata": {"user_id": "ann", "request_id": "r-1"}})
    after = datetime.now(timezone.utc)
    (rec,) = recs
    assert rec.run_id is not None and rec.parent_run_id is not None and rec.run_id != rec.parent_run_id
    assert rec.metadata == {"user_id": "ann", "request_id": "r-1"}  # LangChain's ls_* keys left out
    assert rec.started_at is not None and rec.ended_at is not None
    assert before <= rec.started_at <= rec.ended_at <= after
    assert rec.scopes == ("user:ann",)


def test_record_run_id_matches_the_callback_run() -> None:
    recs: list[CallRecord] = []
    guard = BudgetGuard(limit_usd="1", on_record=recs.append)
    model = guard.wrap(FakeChatModel())
    seen = []
    from langchain_core.callbacks import BaseCallbackHandler

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, serialized, messages, *, run_id, **kw):  # type: ignore[no-untyped-def]
            seen.append(run_id)

    model.invoke("hi", config={"callbacks": [Spy()]})
    assert [r.run_id for r in recs] == seen
