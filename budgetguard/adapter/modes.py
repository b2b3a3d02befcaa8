"""``BudgetGuard`` as a Runnable: wrapped around a model, or piped after one.

``Wrapped`` hands every call to the guarded copy of the runnable. ``llm |
guard`` never reaches ``Pipe``: composition makes it ``guard.wrap(llm)``
(``compose.py``). ``Pipe`` is the guard as a step of its own, where nothing
was composed: ``RunnableSequence(llm, guard)`` built by hand, or
``guard.invoke(message)``. It sees only the model's output: under ``invoke``
it records the usage after the fact and refuses later work once the budget is
spent; under ``stream`` its transform is a plain generator that reserves an
honest worst case (``Flows.pipe_amount``) before it pulls the upstream model,
so a refusal stops the call.

Each streaming method returns the strategy's own (async) generator, so the
guard adds no generator layer of its own: closing the stream closes it.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config

from ..engine import Engine
from ..errors import ConfigError

__all__ = ["Pipe", "Wrapped"]


class Wrapped:
    """The guard around a runnable: each call goes to the guarded copy."""

    __slots__ = ("guarded",)

    def __init__(self, guarded: Runnable[Any, Any]) -> None:
        self.guarded = guarded

    def invoke(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> Any:
        return self.guarded.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> Any:
        return await self.guarded.ainvoke(input, config, **kwargs)

    def batch(self, inputs: list[Any], config: Any, return_exceptions: bool, **kwargs: Any) -> list[Any]:
        return self.guarded.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self, inputs: list[Any], config: Any, return_exceptions: bool, **kwargs: Any
    ) -> list[Any]:
        return await self.guarded.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    def stream(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> Iterator[Any]:
        yield from self.guarded.stream(input, config, **kwargs)

    async def astream(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> AsyncIterator[Any]:
        async for chunk in self.guarded.astream(input, config, **kwargs):
            yield chunk

    def transform(self, input: Iterator[Any], config: RunnableConfig | None, **kwargs: Any) -> Iterator[Any]:
        yield from self.guarded.transform(input, config, **kwargs)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for chunk in self.guarded.atransform(input, config, **kwargs):
            yield chunk


class Pipe:
    """The guard as a step after a model: records (invoke), or reserves the worst case first (stream)."""

    def __init__(self, guard: Runnable[Any, Any], engine: Engine, model_hint: str | None) -> None:
        self.guard = guard  # batch and stream go through the guard's own invoke and transform
        self.engine = engine
        self.model_hint = model_hint
        self.warned = False

    def invoke(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> Any:
        message, metadata = self._input(input, config, stacklevel=4)
        refusal = self.engine.record(message, metadata, self.model_hint)
        if refusal is not None:
            raise refusal
        return message

    async def ainvoke(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> Any:
        message, metadata = self._input(input, config, stacklevel=5)
        refusal = await self.engine.arecord(message, metadata, self.model_hint)
        if refusal is not None:
            raise refusal
        return message

    def batch(self, inputs: list[Any], config: Any, return_exceptions: bool, **kwargs: Any) -> list[Any]:
        return Runnable.batch(self.guard, inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self, inputs: list[Any], config: Any, return_exceptions: bool, **kwargs: Any
    ) -> list[Any]:
        return await Runnable.abatch(
            self.guard, inputs, config, return_exceptions=return_exceptions, **kwargs
        )

    def stream(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> Iterator[Any]:
        yield from self._pull(iter([input]), config, input if isinstance(input, BaseMessage) else None)

    async def astream(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> AsyncIterator[Any]:
        async def one() -> AsyncIterator[Any]:
            yield input

        seen = input if isinstance(input, BaseMessage) else None
        async for chunk in self._apull(one(), config, seen):
            yield chunk

    def transform(self, input: Iterator[Any], config: RunnableConfig | None, **kwargs: Any) -> Iterator[Any]:
        yield from self._pull(input, config, None)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for chunk in self._apull(input, config, None):
            yield chunk

    def _pull(
        self, input: Iterator[Any], config: RunnableConfig | None, seen: BaseMessage | None
    ) -> Iterator[Any]:
        # A plain generator: this body runs before the upstream model is pulled,
        # so a refusal stops the call.
        metadata = ensure_config(config).get("metadata") or {}
        amount = self.engine.pipe_amount(seen, self.model_hint)
        lease_id, plan = self.engine.probe(metadata, amount, self.model_hint)
        total: BaseMessage | None = None
        try:
            for chunk in input:
                total = _merge(total, chunk)
                yield chunk
        finally:
            self.engine.settle_stream(lease_id, plan, total, self.model_hint, amount)

    async def _apull(
        self, input: AsyncIterator[Any], config: RunnableConfig | None, seen: BaseMessage | None
    ) -> AsyncIterator[Any]:
        metadata = ensure_config(config).get("metadata") or {}
        amount = self.engine.pipe_amount(seen, self.model_hint)
        lease_id, plan = await self.engine.aprobe(metadata, amount, self.model_hint)
        total: BaseMessage | None = None
        try:
            async for chunk in input:
                total = _merge(total, chunk)
                yield chunk
        finally:
            await self.engine.asettle_stream(lease_id, plan, total, self.model_hint, amount)

    def _input(
        self, message: Any, config: RunnableConfig | None, *, stacklevel: int
    ) -> tuple[BaseMessage, Mapping[str, Any]]:
        if not isinstance(message, BaseMessage):
            raise ConfigError(
                f"BudgetGuard as a step of its own expects the chat model's message, got "
                f"{type(message).__name__}; compose it instead (`chain | guard`), which guards every "
                "model call of the chain before it is sent"
            )
        if not self.warned:
            self.warned = True
            warnings.warn(
                "BudgetGuard as a step of its own (RunnableSequence(llm, guard), guard.invoke(message)) "
                "records usage after the model has run; it cannot stop that call. Compose it with "
                "`llm | guard`, or use guard.wrap(llm), to refuse calls before they are sent.",
                UserWarning,
                stacklevel=stacklevel,  # the frame it named before: invoke's caller, two above ainvoke
            )
        return message, ensure_config(config).get("metadata") or {}


def _merge(total: BaseMessage | None, chunk: Any) -> BaseMessage | None:
    if not isinstance(chunk, BaseMessage):
        return total
    if total is None:
        return chunk
    if isinstance(total, BaseMessageChunk) and isinstance(chunk, BaseMessageChunk):
        return total + chunk
    return chunk
