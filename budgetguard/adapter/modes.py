"""``BudgetGuard`` as a Runnable: wrapped around a model, or piped after one.

``Wrapped`` hands every call to the guarded copy of the runnable. ``Pipe``
(``llm | BudgetGuard(...)``) sees only the model's output: under ``invoke`` it
records the usage after the fact and refuses later work once the budget is
spent; under ``stream`` its transform is a plain generator that probes the
budget before it pulls the upstream model, so a refusal stops the call.

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
    """The guard after a model in a chain: records (invoke) or probes first (stream)."""

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
        yield from self.guard.transform(iter([input]), config)

    async def astream(self, input: Any, config: RunnableConfig | None, **kwargs: Any) -> AsyncIterator[Any]:
        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self.guard.atransform(one(), config):
            yield chunk

    def transform(self, input: Iterator[Any], config: RunnableConfig | None, **kwargs: Any) -> Iterator[Any]:
        # A plain generator: this line runs before the upstream model is pulled,
        # so a refusal stops the call.
        metadata = ensure_config(config).get("metadata") or {}
        lease_id, plan = self.engine.probe(metadata)
        total: BaseMessage | None = None
        try:
            for chunk in input:
                total = _merge(total, chunk)
                yield chunk
        finally:
            self.engine.settle_stream(lease_id, plan, total, self.model_hint)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        metadata = ensure_config(config).get("metadata") or {}
        lease_id, plan = await self.engine.aprobe(metadata)
        total: BaseMessage | None = None
        try:
            async for chunk in input:
                total = _merge(total, chunk)
                yield chunk
        finally:
            await self.engine.asettle_stream(lease_id, plan, total, self.model_hint)

    def _input(
        self, message: Any, config: RunnableConfig | None, *, stacklevel: int
    ) -> tuple[BaseMessage, Mapping[str, Any]]:
        if not isinstance(message, BaseMessage):
            raise ConfigError(
                f"BudgetGuard in a pipe expects the chat model's message, got {type(message).__name__}; "
                "place it right after the model: llm | BudgetGuard(...)"
            )
        if not self.warned:
            self.warned = True
            warnings.warn(
                "llm | BudgetGuard(...) under invoke records usage after the model has run; it cannot "
                "stop that call. Use guard.wrap(llm) to refuse calls before they are sent.",
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
