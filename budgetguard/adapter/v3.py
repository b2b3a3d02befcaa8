"""``stream_events(version="v3")``: its events counted, and an abandoned stream settled.

The v3 protocol (langchain-core 1.8, beta) sends ``on_stream_event`` for each
event; a model whose ``_stream`` also sends ``on_llm_new_token`` has its text
counted there, so an event only counts as output (no text, never twice): once
output began, a stream that breaks off is charged what was seen plus the worst
case for the rest. On the sync path the consumer pulls a ``ChatModelStream``;
one it drops half-read gets no end or error event at all, and its reservation
would stay open until the lease expires. So the stream is watched: when it is
garbage-collected with its call unsettled, the call is settled as an abandoned
stream (``engine.fail(GeneratorExit)``). The async stream needs no watch:
its producer task runs to the end, or ``aclose()`` sends ``on_llm_error``.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.language_models.chat_model_stream import ChatModelStream

from ..engine import Engine

__all__ = ["stream_event"]

logger = logging.getLogger("budgetguard")

#: How far up from the handler the stream's pump is looked for (LangChain's dispatch adds ~4 frames).
_DEPTH = 12


#: Runs whose sync stream is watched (each watched once; its finalizer forgets it).
_watched: set[UUID] = set()


def stream_event(engine: Engine, event: Any, kwargs: Mapping[str, Any]) -> None:
    """Count one v3 event (no I/O); on a run's first, watch its sync stream for abandonment."""
    run_id: UUID = kwargs["run_id"]
    if run_id not in engine.pending:
        return
    engine.observe(run_id, None, "")
    if run_id in _watched:
        return
    stream = _caller_stream()
    if stream is not None:
        _watched.add(run_id)
        weakref.finalize(stream, _abandoned, engine, run_id)


def _caller_stream() -> ChatModelStream | None:
    """The ``ChatModelStream`` whose pump sent this event: a local of LangChain's event loop frame."""
    frame = sys._getframe(1)
    for _ in range(_DEPTH):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        for value in frame.f_locals.values():
            if isinstance(value, ChatModelStream):
                return value
    return None


def _abandoned(engine: Engine, run_id: UUID) -> None:
    # A finalizer must not raise: a settle that fails is logged (the lease still expires).
    _watched.discard(run_id)
    if run_id not in engine.pending:
        return
    try:
        engine.fail(run_id, GeneratorExit())
    except Exception:
        logger.warning("budgetguard: could not settle an abandoned v3 stream (run %s)", run_id, exc_info=True)
