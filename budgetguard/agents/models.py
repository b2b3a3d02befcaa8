"""The models an agent's model call may be served by, each carrying the guard's handler.

The same chain as ``guard.wrap()`` builds with ``fallback=``/``degrade_at=``,
but as a list of chat models, since an agent swaps its model per call with
``request.override(model=...)``: the primary (soft-capped at ``degrade_at``,
not fitted), then each fallback (the last one fitted), then the primary again
without the soft cap when ``degrade_at`` is set. Without fallbacks: the
primary alone, fitted. A model that already carries this guard's handler
(``guard.wrap(llm)`` passed to ``create_agent``) has it taken off first, so
the call is reserved once, by the handler that knows its place in the chain.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from ..adapter.candidates import FALLBACK, LAST_FALLBACK, LAST_RESORT, PRIMARY, Role
from ..adapter.handler import GUARDS_KEY, BudgetGuardCallback
from ..adapter.models import guard_runnable
from ..engine import Engine
from ..errors import ConfigError

__all__ = ["Candidates", "strip_guard"]

_MAX_CACHED = 64


def strip_guard(model: BaseChatModel, engine: Engine) -> BaseChatModel:
    """``model`` without this engine's handlers (a model ``guard.wrap()`` returned), else itself."""
    cbs = model.callbacks
    if not isinstance(cbs, list):
        return model
    kept = [h for h in cbs if not (isinstance(h, BudgetGuardCallback) and _engine_of(h) is engine)]
    if len(kept) == len(cbs):
        return model
    meta = dict(model.metadata or {})
    tags = [t for t in meta.get(GUARDS_KEY, ()) if t != engine.tag]
    if tags:
        meta[GUARDS_KEY] = tags
    else:
        meta.pop(GUARDS_KEY, None)
    return model.model_copy(update={"callbacks": kept or None, "metadata": meta or None})


def _engine_of(handler: BudgetGuardCallback) -> object:
    return getattr(handler.sync_twin, "engine", None)


class Candidates:
    """The guarded candidates for a request's model, cached per model object."""

    def __init__(self, engine: Engine, fallbacks: Sequence[BaseChatModel], degrade_at: float | None) -> None:
        self.engine = engine
        self.fallbacks = tuple(fallbacks)
        self.ppm = None if degrade_at is None else round(degrade_at * 1_000_000)
        self._cache: OrderedDict[int, tuple[BaseChatModel, tuple[BaseChatModel, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def check(fallbacks: Sequence[Any]) -> tuple[BaseChatModel, ...]:
        for fb in fallbacks:
            if not isinstance(fb, BaseChatModel):
                raise ConfigError(
                    "BudgetMiddleware serves a refused call with the guard's fallback through "
                    f"request.override(model=...), which needs a chat model; got {type(fb).__name__}. "
                    "Pass the chat model itself as fallback= (tools and settings come from the agent)"
                )
        return tuple(fallbacks)

    def of(self, model: BaseChatModel) -> tuple[BaseChatModel, ...]:
        key = id(model)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] is model:
                self._cache.move_to_end(key)
                return hit[1]
        built = self._build(strip_guard(model, self.engine))
        with self._lock:
            self._cache[key] = (model, built)  # holds the model: its id is not reused meanwhile
            while len(self._cache) > _MAX_CACHED:
                self._cache.popitem(last=False)
        return built

    def _guard(self, model: BaseChatModel, ppm: int | None, role: Role | None, fit: bool) -> BaseChatModel:
        guarded = guard_runnable(self.engine, model, ppm, role, fit)
        assert isinstance(guarded, BaseChatModel)
        return guarded

    def _build(self, primary: BaseChatModel) -> tuple[BaseChatModel, ...]:
        if not self.fallbacks:
            return (self._guard(primary, None, None, True),)
        ppm = self.ppm
        roles = [FALLBACK] * (len(self.fallbacks) - 1) + [FALLBACK if ppm is not None else LAST_FALLBACK]
        last = len(self.fallbacks) - 1 if ppm is None else -1
        chain = [self._guard(primary, ppm, PRIMARY, False)]
        chain += [
            self._guard(strip_guard(fb, self.engine), None, r, i == last)
            for i, (fb, r) in enumerate(zip(self.fallbacks, roles, strict=True))
        ]
        if ppm is not None:
            chain.append(self._guard(primary, None, LAST_RESORT, True))
        return tuple(chain)
