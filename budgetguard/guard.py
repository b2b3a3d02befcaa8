"""``BudgetGuard``: hard token and USD budgets on LangChain chat models.

A guard acts through a callback handler placed *on the chat model itself*
(``model_copy(update={"callbacks": ...})``), which survives ``bind_tools``,
``with_structured_output`` and streaming, and whose ``on_chat_model_start``
runs before the provider is contacted. Raising there aborts the call; the
caller gets our exception object as is.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.callbacks import manager as _lc_manager
from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.tracers.context import register_configure_hook

from .engine import Engine, ModelHint
from .errors import BudgetExceeded, ConfigError
from .estimate import DEFAULT_MAX_OUTPUT_TOKENS
from .limits import Limit
from .pricing import Price
from .records import CallRecord
from .spool import Spool, default_spool_dir
from .status import BudgetStatus
from .stores import Store, store_from_url

__all__ = ["BudgetGuard", "CallRecord"]

logger = logging.getLogger("budgetguard")


# LangChain looks a handler's method up, then awaits it if it is a coroutine function
# (async path) or calls it (sync path). A guard must refuse sync calls, and an async
# handler's exceptions are swallowed on the sync path, so the methods must be sync
# there; on the async path they should await the store's async twins (redis.asyncio)
# instead of blocking the loop. The look-up itself tells the paths apart: only the
# async dispatcher is the frame asking. If LangChain ever renames it, the sync
# methods are used (run off the loop on LangChain's executor): still enforced.
_ASYNC_DISPATCH = getattr(getattr(_lc_manager, "_ahandle_event_for_handler", None), "__code__", None)


def _from_async_dispatch() -> bool:
    return _ASYNC_DISPATCH is not None and sys._getframe(2).f_code is _ASYNC_DISPATCH


def _dispatching(name: str) -> Any:
    def get(self: Any) -> Any:
        if self._async_capable() and _from_async_dispatch():
            return getattr(self, "_a_" + name)
        return getattr(self, "_s_" + name)

    return property(get, doc=f"{name}: sync on LangChain's sync path, async on its async path")


class BudgetGuardCallback(BaseCallbackHandler):
    """Reserves on model start, settles on end; attached by the guard, not by users."""

    raise_error = True

    def __init__(
        self, engine: Engine, hint: ModelHint | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.engine = engine
        self.hint = hint or ModelHint()
        self.extra_metadata = dict(metadata or {})

    @property
    def run_inline(self) -> bool:  # type: ignore[override]
        return not self.engine.store.blocking

    def _async_capable(self) -> bool:
        return self.engine.store.blocking  # an in-memory store is fastest inline and sync

    def _meta(self, metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
        if not self.extra_metadata:
            return metadata or {}
        return {**(metadata or {}), **self.extra_metadata}

    on_chat_model_start = _dispatching("on_chat_model_start")
    on_llm_start = _dispatching("on_llm_start")
    on_llm_new_token = _dispatching("on_llm_new_token")
    on_llm_end = _dispatching("on_llm_end")
    on_llm_error = _dispatching("on_llm_error")

    def _s_on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.engine.begin(run_id, messages[0], None, invocation_params, self._meta(metadata), self.hint)

    async def _a_on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self.engine.abegin(
            run_id, messages[0], None, invocation_params, self._meta(metadata), self.hint
        )

    def _s_on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.engine.begin(run_id, None, prompts[:1], invocation_params, self._meta(metadata), self.hint)

    async def _a_on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self.engine.abegin(
            run_id, None, prompts[:1], invocation_params, self._meta(metadata), self.hint
        )

    def _s_on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        self.engine.observe(run_id, getattr(chunk, "message", None), token if isinstance(token, str) else "")

    async def _a_on_llm_new_token(
        self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any
    ) -> None:
        self._s_on_llm_new_token(token, chunk=chunk, run_id=run_id)  # no I/O: just counting

    def _s_on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.engine.end(run_id, response)

    async def _a_on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        await self.engine.aend(run_id, response)

    def _s_on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.engine.fail(run_id, error)

    async def _a_on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        await self.engine.afail(run_id, error)


class _QuietRefusals(logging.Filter):
    """LangChain logs every exception a callback raises at WARNING before re-raising it.

    Ours are refusals delivered to the caller as exceptions; logging each one
    too would read as a crash. Drop exactly those records, nothing else.
    """

    _names = frozenset({"BudgetGuardCallback", "_EnforceCallback"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (
            isinstance(args, tuple)
            and len(args) == 3
            and record.msg == "Error in %s.%s callback: %s"
            and args[0] in self._names
        )


logging.getLogger("langchain_core.callbacks.manager").addFilter(_QuietRefusals())


# ------------------------------------------------------------------ enforce()


class _EnforceCallback(BaseCallbackHandler):
    """Every guard active through ``enforce()`` in this context, applied in order.

    If a later guard refuses, the earlier ones' reservations are released, so
    nothing leaks for a call that never happened.
    """

    raise_error = True

    def __init__(self, members: tuple[BudgetGuardCallback, ...]) -> None:
        self.members = members

    @property
    def run_inline(self) -> bool:  # type: ignore[override]
        return all(m.run_inline for m in self.members)

    def _async_capable(self) -> bool:
        return any(m._async_capable() for m in self.members)

    on_chat_model_start = _dispatching("on_chat_model_start")
    on_llm_start = _dispatching("on_llm_start")
    on_llm_new_token = _dispatching("on_llm_new_token")
    on_llm_end = _dispatching("on_llm_end")
    on_llm_error = _dispatching("on_llm_error")

    def _s_start(self, method: str, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        done: list[BudgetGuardCallback] = []
        try:
            for m in self.members:
                getattr(m, "_s_" + method)(*args, run_id=run_id, **kwargs)
                done.append(m)
        except BaseException as exc:
            for m in done:
                m.engine.fail(run_id, exc)
            raise

    async def _a_start(self, method: str, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        done: list[BudgetGuardCallback] = []
        try:
            for m in self.members:
                await getattr(m, "_a_" + method)(*args, run_id=run_id, **kwargs)
                done.append(m)
        except BaseException as exc:
            for m in done:
                await m.engine.afail(run_id, exc)
            raise

    def _s_on_chat_model_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self._s_start("on_chat_model_start", *args, run_id=run_id, **kwargs)

    async def _a_on_chat_model_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        await self._a_start("on_chat_model_start", *args, run_id=run_id, **kwargs)

    def _s_on_llm_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self._s_start("on_llm_start", *args, run_id=run_id, **kwargs)

    async def _a_on_llm_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        await self._a_start("on_llm_start", *args, run_id=run_id, **kwargs)

    def _s_on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            m._s_on_llm_new_token(*args, **kwargs)

    async def _a_on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        self._s_on_llm_new_token(*args, **kwargs)

    def _s_on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            m._s_on_llm_end(*args, **kwargs)

    async def _a_on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            await m._a_on_llm_end(*args, **kwargs)

    def _s_on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            m._s_on_llm_error(*args, **kwargs)

    async def _a_on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        for m in self.members:
            await m._a_on_llm_error(*args, **kwargs)


_enforce_var: ContextVar[_EnforceCallback | None] = ContextVar("budgetguard_enforce", default=None)
register_configure_hook(_enforce_var, True)  # once, at import: never per entry


# ------------------------------------------------------------------ the guard


def _model_hint(model: BaseLanguageModel[Any], soft_ppm: int | None) -> ModelHint:
    name = None
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        v = getattr(model, attr, None)
        if isinstance(v, str) and v:
            name = v
            break
    provider = None
    try:
        provider = model._get_ls_params().get("ls_provider")
    except Exception:
        provider = None
    profile = getattr(model, "profile", None)
    profile_max = profile.get("max_output_tokens") if isinstance(profile, Mapping) else None
    return ModelHint(name, provider, profile_max if isinstance(profile_max, int) else None, soft_ppm)


def _with_handler(model: BaseLanguageModel[Any], handler: BudgetGuardCallback) -> BaseLanguageModel[Any]:
    cbs = model.callbacks
    if cbs is None:
        new: Any = [handler]
    elif isinstance(cbs, list):
        new = [*cbs, handler]
    elif isinstance(cbs, BaseCallbackManager):
        new = cbs.copy()
        new.add_handler(handler, inherit=False)
    else:  # pragma: no cover - LangChain allows nothing else
        raise ConfigError(f"unsupported callbacks on {type(model).__name__}: {cbs!r}")
    update: dict[str, Any] = {"callbacks": new}
    # Usage in streams only arrives when asked for (ChatOpenAI with a custom base_url...).
    if "stream_usage" in type(model).model_fields and getattr(model, "stream_usage", None) is not True:
        update["stream_usage"] = True
    return model.model_copy(update=update)


class BudgetGuard(Runnable[Any, Any]):
    """Hard USD/token/request budgets for LangChain chat models.

    Wrap a model (``guard.wrap(llm)`` or ``BudgetGuard(llm, ...)``) to check
    every call *before* it is sent; or put it after one in a chain
    (``llm | BudgetGuard(limit_usd=5)``) to record usage (see README: the
    pipe form cannot stop a call under ``invoke``).
    """

    def __init__(
        self,
        runnable: Runnable[Any, Any] | None = None,
        *,
        limit_usd: Decimal | float | int | str | None = None,
        limit_tokens: int | None = None,
        limits: Sequence[Limit] = (),
        store: Store | str | None = None,
        fallback: Runnable[Any, Any] | Sequence[Runnable[Any, Any]] | None = None,
        degrade_at: float | None = None,
        prices: Mapping[str, Price] | None = None,
        default_price: Price | None = None,
        lease_ttl: float = 600.0,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        model: str | None = None,
        on_record: Callable[[CallRecord], None] | None = None,
        on_store_error: Literal["closed", "open"] = "closed",
        store_timeout: float = 1.0,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        all_limits: list[Limit] = []
        if limit_usd is not None or limit_tokens is not None:
            all_limits.append(
                Limit(usd=limit_usd, tokens=limit_tokens)  # type: ignore[arg-type]
            )
        for lim in limits:
            if not isinstance(lim, Limit):
                raise ConfigError(
                    f"limits must hold budgetguard.Limit objects, got {type(lim).__name__}: {lim!r}"
                )
            all_limits.append(lim)
        if not all_limits:
            raise ConfigError(
                "BudgetGuard needs a limit: pass limit_usd=, limit_tokens= or limits=[Limit(...)]"
            )
        if degrade_at is not None:
            if (
                isinstance(degrade_at, bool)
                or not isinstance(degrade_at, (int, float))
                or not 0 < degrade_at <= 1
            ):
                raise ConfigError(f"degrade_at must be a fraction in (0, 1], e.g. 0.8; got {degrade_at!r}")
            if fallback is None:
                raise ConfigError("degrade_at needs fallback=: the cheaper model(s) to switch to")
        if not isinstance(lease_ttl, (int, float)) or isinstance(lease_ttl, bool) or not lease_ttl > 0:
            raise ConfigError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        if type(default_max_output_tokens) is not int or default_max_output_tokens <= 0:
            raise ConfigError(
                f"default_max_output_tokens must be a positive int, got {default_max_output_tokens!r}"
            )
        for key, price in (prices or {}).items():
            if not isinstance(price, Price):
                raise ConfigError(
                    f"prices[{key!r}] must be budgetguard.Price(input_per_mtok=..., output_per_mtok=...), "
                    f"got {type(price).__name__}"
                )
        if default_price is not None and not isinstance(default_price, Price):
            raise ConfigError("default_price must be a budgetguard.Price")
        if on_store_error not in ("closed", "open"):
            raise ConfigError(
                "on_store_error must be 'closed' (refuse calls) or 'open' (allow and spool), "
                f"got {on_store_error!r}"
            )
        if (
            isinstance(store_timeout, bool)
            or not isinstance(store_timeout, (int, float))
            or not store_timeout > 0
        ):
            raise ConfigError(f"store_timeout must be a positive number of seconds, got {store_timeout!r}")
        if store is None or isinstance(store, str):
            store = store_from_url(store, timeout=float(store_timeout))
        elif not isinstance(store, Store):
            raise ConfigError(
                f"store must be a budgetguard Store or a URL such as 'memory://', got {store!r}"
            )
        if not store.supports_sync:
            raise ConfigError(
                f"{store!r} has only an asyncio client, but the guard checks calls from LangChain's "
                "callbacks, which are sync: pass client=redis.Redis(...) too (async_client= may stay)"
            )
        spool = None
        if spool_dir is not None or store.blocking:
            spool = Spool(Path(spool_dir or default_spool_dir()) / store.spool_key)
        self.engine = Engine(
            all_limits,
            store,
            prices=prices,
            default_price=default_price,
            lease_ttl=float(lease_ttl),
            default_max_output_tokens=default_max_output_tokens,
            on_record=on_record,
            on_store_error=on_store_error,
            spool=spool,
        )
        if fallback is None:
            self.fallbacks: tuple[Runnable[Any, Any], ...] = ()
        elif isinstance(fallback, Runnable):
            self.fallbacks = (fallback,)
        else:
            self.fallbacks = tuple(fallback)
        self.degrade_at = degrade_at
        self.model_hint = model
        self._warned_pipe = False
        self.runnable = runnable
        self._guarded: Runnable[Any, Any] | None = self.wrap(runnable) if runnable is not None else None

    # -------------------------------------------------------------- config

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self.engine.limits

    @property
    def store(self) -> Store:
        return self.engine.store

    def __repr__(self) -> str:
        inner = f"{type(self.runnable).__name__}, " if self.runnable is not None else ""
        lims = "; ".join(lim.describe() for lim in self.limits)
        return f"BudgetGuard({inner}limits=[{lims}], store={type(self.store).__name__})"

    # -------------------------------------------------------------- wrapping

    def _wrap_one(self, runnable: Runnable[Any, Any], soft_ppm: int | None) -> Runnable[Any, Any]:
        if isinstance(runnable, BaseLanguageModel):
            handler = BudgetGuardCallback(self.engine, _model_hint(runnable, soft_ppm))
            return _with_handler(runnable, handler)
        if type(runnable) is RunnableBinding and isinstance(runnable.bound, BaseLanguageModel):
            return runnable.model_copy(update={"bound": self._wrap_one(runnable.bound, soft_ppm)})
        if soft_ppm is not None:
            raise ConfigError(
                "fallback= and degrade_at= work on a chat model; wrap the model inside your chain, "
                f"not the whole {type(runnable).__name__}"
            )
        # A chain or agent: inheritable callbacks reach every model call inside it.
        return runnable.with_config(callbacks=[BudgetGuardCallback(self.engine)])

    def wrap(self, runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
        """Guard every chat-model call made by ``runnable``.

        A chat model comes back as a chat model (same class, tools and
        structured output intact). With ``fallback=``, it comes back as a
        ``RunnableWithFallbacks`` that degrades to the first fallback that fits.
        """
        if not isinstance(runnable, Runnable):
            raise ConfigError(
                f"wrap() needs a LangChain Runnable such as a chat model, got {type(runnable).__name__}"
            )
        if not self.fallbacks:
            return self._wrap_one(runnable, None)
        ppm = None if self.degrade_at is None else round(self.degrade_at * 1_000_000)
        primary = self._wrap_one(runnable, ppm)
        chain = [self._wrap_one(fb, None) for fb in self.fallbacks]
        return primary.with_fallbacks(chain, exceptions_to_handle=(BudgetExceeded,))

    def enforce(self, **metadata: Any) -> AbstractContextManager[BudgetGuard]:
        """Apply this guard to every model call inside the ``with`` block.

        ``metadata`` fills scope templates and overrides the run's own.
        """
        return _enforce(self, metadata)

    # -------------------------------------------------------------- operators

    def remaining(self, **metadata: Any) -> BudgetStatus:
        """Each applicable limit's spent, reserved and remaining budget, now."""
        return self.engine.status(metadata)

    async def aremaining(self, **metadata: Any) -> BudgetStatus:
        return await self.engine.astatus(metadata)

    def replay_spool(self) -> int:
        """Replay spooled store writes now (done by itself once the store answers again)."""
        if self.engine.spool is None:
            return 0
        return self.engine.spool.replay(self.store)

    def reset(self, scope: str = "global") -> int:
        """Zero a scope's counters (every period). Returns how many were reset."""
        return self.store.reset(scope)

    # -------------------------------------------------------------- Runnable

    @property
    def InputType(self) -> Any:
        return self._guarded.InputType if self._guarded is not None else Any

    @property
    def OutputType(self) -> Any:
        return self._guarded.OutputType if self._guarded is not None else Any

    def __getattr__(self, name: str) -> Any:
        # bind_tools, with_structured_output, model_name...: the guarded model's.
        if name.startswith("_") or name in ("runnable", "engine"):
            raise AttributeError(name)
        guarded = self.__dict__.get("_guarded")
        if guarded is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(guarded, name)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if self._guarded is not None:
            return self._guarded.invoke(input, config, **kwargs)
        return self._record(input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if self._guarded is not None:
            return await self._guarded.ainvoke(input, config, **kwargs)
        message, metadata = self._pipe_input(input, config)
        refusal = await self.engine.arecord(message, metadata, self.model_hint)
        if refusal is not None:
            raise refusal
        return message

    def batch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> list[Any]:
        if self._guarded is not None:
            return self._guarded.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> list[Any]:
        if self._guarded is not None:
            return await self._guarded.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        if self._guarded is not None:
            yield from self._guarded.stream(input, config, **kwargs)
        else:
            yield from self.transform(iter([input]), config)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        if self._guarded is not None:
            async for chunk in self._guarded.astream(input, config, **kwargs):
                yield chunk
        else:

            async def one() -> AsyncIterator[Any]:
                yield input

            async for chunk in self.atransform(one(), config):
                yield chunk

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        if self._guarded is not None:
            yield from self._guarded.transform(input, config, **kwargs)
            return
        # Pipe form, stream mode. A plain generator: this line runs before the
        # upstream model is pulled, so a refusal stops the call.
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
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        if self._guarded is not None:
            async for chunk in self._guarded.atransform(input, config, **kwargs):
                yield chunk
            return
        metadata = ensure_config(config).get("metadata") or {}
        lease_id, plan = await self.engine.aprobe(metadata)
        total: BaseMessage | None = None
        try:
            async for chunk in input:
                total = _merge(total, chunk)
                yield chunk
        finally:
            await self.engine.asettle_stream(lease_id, plan, total, self.model_hint)

    def _record(self, message: Any, config: RunnableConfig | None) -> Any:
        message, metadata = self._pipe_input(message, config)
        refusal = self.engine.record(message, metadata, self.model_hint)
        if refusal is not None:
            raise refusal
        return message

    def _pipe_input(
        self, message: Any, config: RunnableConfig | None
    ) -> tuple[BaseMessage, Mapping[str, Any]]:
        if not isinstance(message, BaseMessage):
            raise ConfigError(
                f"BudgetGuard in a pipe expects the chat model's message, got {type(message).__name__}; "
                "place it right after the model: llm | BudgetGuard(...)"
            )
        if not self._warned_pipe:
            self._warned_pipe = True
            warnings.warn(
                "llm | BudgetGuard(...) under invoke records usage after the model has run; it cannot "
                "stop that call. Use guard.wrap(llm) to refuse calls before they are sent.",
                UserWarning,
                stacklevel=4,
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


@contextmanager
def _enforce(guard: BudgetGuard, metadata: dict[str, Any]) -> Iterator[BudgetGuard]:
    member = BudgetGuardCallback(guard.engine, ModelHint(model=guard.model_hint), metadata)
    current = _enforce_var.get()
    members = (*(current.members if current else ()), member)
    token = _enforce_var.set(_EnforceCallback(members))
    try:
        yield guard
    finally:
        _enforce_var.reset(token)
