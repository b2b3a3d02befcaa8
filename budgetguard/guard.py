"""``BudgetGuard``: hard token and USD budgets on LangChain chat models.

A guard acts through a callback handler placed *on the chat model itself*
(``model_copy(update={"callbacks": ...})``), which survives ``bind_tools``,
``with_structured_output`` and streaming, and whose ``on_chat_model_start``
runs before the provider is contacted. Raising there aborts the call; the
caller gets our exception object as is.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from typing import Any, Literal, TypeVar, overload

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.base import coerce_to_runnable

from .adapter import compose
from .adapter.candidates import FALLBACK, FITTED_PRIMARY, LAST_FALLBACK, LAST_RESORT, PRIMARY
from .adapter.enforce import enforcing
from .adapter.models import guard_runnable
from .adapter.modes import Pipe, Wrapped
from .alerts import AlertCallback
from .engine import Engine, EngineConfig
from .engine.contention import DEFAULT_CONTENTION_WAIT
from .engine.watch import make_watch
from .errors import BudgetExceeded, ConfigError
from .estimate import DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_MIN_OUTPUT_TOKENS
from .health import Health, acheck, check
from .limits import Limit
from .pricing import Price
from .records import CallRecord
from .settings import GuardSettings
from .status import BudgetStatus
from .stores import Store
from .tokencount import InputCounter

__all__ = ["BudgetGuard", "CallRecord"]

#: A chat model (or LLM) class: ``wrap()`` gives back an instance of it (see ``wrap``).
M = TypeVar("M", bound=BaseLanguageModel[Any])
In = TypeVar("In")
Out = TypeVar("Out")


class BudgetGuard(Runnable[Any, Any]):
    """Hard USD/token/request budgets for LangChain chat models.

    Wrap a model (``guard.wrap(llm)`` or ``BudgetGuard(llm, ...)``), or
    compose it after one (``llm | BudgetGuard(limit_usd=5)``, also after a
    whole chain): either way every call is checked *before* it is sent.
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
        fit_max_tokens: bool = True,
        min_output_tokens: int = DEFAULT_MIN_OUTPUT_TOKENS,
        contention_wait: float = DEFAULT_CONTENTION_WAIT,
        model: str | None = None,
        on_record: Callable[[CallRecord], None] | None = None,
        on_store_error: Literal["closed", "open"] = "closed",
        store_timeout: float = 1.0,
        spool_dir: str | os.PathLike[str] | None = None,
        settle: Literal["inline", "background"] = "inline",
        token_counter: str | InputCounter | None = None,
        alerts: Sequence[float] = (),
        on_alert: AlertCallback | None = None,
    ) -> None:
        # Every keyword argument, by name: GuardSettings has a field for each and checks them in order.
        given = dict(locals())
        del given["self"], given["runnable"]
        settings = GuardSettings.parse(**given)
        config = EngineConfig(
            prices=dict(settings.prices or {}),
            default_price=settings.default_price,
            lease_ttl=float(settings.lease_ttl),
            default_max_output_tokens=settings.default_max_output_tokens,
            fit_max_tokens=settings.fit_max_tokens,
            min_output_tokens=settings.min_output_tokens,
            contention_wait=float(settings.contention_wait),
            on_record=settings.on_record,
            on_store_error=settings.on_store_error,
            token_counter=settings.token_counter,
            settle=settings.settle,
        )
        self.engine = Engine(settings.limits, settings.store, config, settings.spool())
        self.engine.flows.watch = make_watch(settings.alerts, settings.on_alert)  # OTel, alerts
        self.fallbacks: tuple[Runnable[Any, Any], ...] = settings.fallbacks
        self.degrade_at = settings.degrade_at
        self.model_hint = settings.model
        self.engine.note_model(settings.model, None)
        self.runnable = runnable
        self._guarded: Runnable[Any, Any] | None = self.wrap(runnable) if runnable is not None else None
        # Wrapped around a runnable, or piped after a model: the Runnable methods go to one of the two.
        self._mode: Wrapped | Pipe = (
            Pipe(self, self.engine, settings.model) if self._guarded is None else Wrapped(self._guarded)
        )

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

    # mypy cannot see that an M is the Runnable[In, Out] of overload 2 with its own In and Out.
    @overload
    def wrap(self, runnable: M) -> M: ...  # type: ignore[overload-overlap]

    @overload
    def wrap(self, runnable: Runnable[In, Out]) -> Runnable[In, Out]: ...

    def wrap(self, runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
        """Guard every chat-model call made by ``runnable``.

        A chat model comes back as a chat model, typed as its own class (it is an instance of
        it, or of a same-named subclass: tools and structured output intact), so
        ``guard.wrap(ChatOpenAI()).bind_tools(...)`` type-checks. A chain or other runnable
        comes back as a runnable of the same input and output. With ``fallback=``, a chat
        model comes back as a ``RunnableWithFallbacks`` that degrades to the first fallback
        that fits: it is still typed as the model's class, which is what it does (it reads
        attributes from the primary, and runs ``bind_tools``/``with_structured_output`` on
        every candidate), but ``isinstance`` against the class does not hold.
        ``degrade_at`` is a soft cap: when no fallback fits, the primary serves
        if it fits the hard cap (it is tried again last, without the soft cap).
        """
        if not isinstance(runnable, Runnable):
            raise ConfigError(
                f"wrap() needs a LangChain Runnable such as a chat model, got {type(runnable).__name__}"
            )
        if not self.fallbacks:
            return guard_runnable(self.engine, runnable, None)
        ppm = None if self.degrade_at is None else round(self.degrade_at * 1_000_000)
        # Fitting an output cap is the last resort before a refusal: every candidate is tried at its
        # full cap first; then the last fallback is fitted, and the primary, tried again last.
        primary = guard_runnable(self.engine, runnable, ppm, PRIMARY, fit=False)
        fit_primary = self.engine.flows.fit_max_tokens and isinstance(
            runnable, (BaseChatModel, RunnableBinding)
        )
        again = LAST_RESORT if ppm is not None else FITTED_PRIMARY if fit_primary else None
        roles = [FALLBACK] * (len(self.fallbacks) - 1) + [FALLBACK if again else LAST_FALLBACK]
        last = len(self.fallbacks) - 1 if ppm is None else -1
        chain = [
            guard_runnable(self.engine, fb, None, r, fit=i == last)
            for i, (fb, r) in enumerate(zip(self.fallbacks, roles, strict=True))
        ]
        if again is not None:
            chain.append(guard_runnable(self.engine, runnable, None, again))
        return primary.with_fallbacks(chain, exceptions_to_handle=(BudgetExceeded,))

    def compose_after(self, left: Runnable[Any, Any]) -> Runnable[Any, Any] | None:
        """``left | guard``: ``guard.wrap(left)``, so ``left``'s model calls are checked before they are sent.

        Called by ``|`` and ``pipe`` (``adapter/compose.py``). A guard around a
        runnable of its own is an ordinary step: ``None`` leaves ``|`` to LangChain.
        """
        return self.wrap(left) if self._guarded is None else None

    def __ror__(self, other: Any) -> Any:
        # ``{"a": llm} | guard`` or ``fn | guard``: Python asks the guard, since the left is no Runnable.
        if self._guarded is None:
            return self.wrap(coerce_to_runnable(other))
        return super().__ror__(other)

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

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the settles left to the background (``settle="background"``) before now.

        ``remaining()``, ``reset()`` and ``replay_spool()`` do this themselves, and so
        does the process's exit; False if ``timeout`` (seconds) ran out first.
        """
        return self.engine.settled(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush``; first it waits for the releases and settles of this event loop's cancelled calls."""
        return await self.engine.asettled(timeout)

    def health(self) -> Health:
        """For readiness probes: one round trip to the store, bounded by its timeout; never raises
        for a down store (``Health.ok`` is False and ``problem``/``fix`` say why)."""
        return check(self.store)

    async def ahealth(self) -> Health:
        return await acheck(self.store)

    def replay_spool(self) -> int:
        """Replay spooled store writes now (done by itself once the store answers again)."""
        return self.engine.replay_spool()

    def reset(self, scope: str = "global") -> int:
        """Zero a scope's counters (every period), written as in messages: ``user:alice@example.com``.

        Returns how many counters were reset.
        """
        return self.engine.reset(scope)

    async def areset(self, scope: str = "global") -> int:
        return await self.engine.areset(scope)

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
        return self._mode.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._mode.ainvoke(input, config, **kwargs)

    def batch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> list[Any]:
        return self._mode.batch(inputs, config, return_exceptions, **kwargs)

    async def abatch(
        self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> list[Any]:
        return await self._mode.abatch(inputs, config, return_exceptions, **kwargs)

    # The streams are the mode's own generators: no extra layer, closing one closes it.

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        return self._mode.stream(input, config, **kwargs)

    def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        return self._mode.astream(input, config, **kwargs)

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        return self._mode.transform(input, config, **kwargs)

    def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        return self._mode.atransform(input, config, **kwargs)


compose.install(BudgetGuard)  # once, at import; idempotent


@contextmanager
def _enforce(guard: BudgetGuard, metadata: dict[str, Any]) -> Iterator[BudgetGuard]:
    with enforcing(guard.engine, guard.model_hint, metadata):
        yield guard
