"""``GuardSettings``: ``BudgetGuard``'s keyword arguments, checked once at construction.

The checks run in the order of the fields and stop at the first problem,
which reaches the caller as is: a ``ConfigError`` naming the fix, or the
``ValidationError`` of a shorthand ``Limit``. pydantic would fold a ValueError
raised in a validator (both are) into a ValidationError of its own wording and
go on with the other fields, so each validator is wrapped (``_as_is``) to raise
``_Refused`` instead, which pydantic lets through, and ``GuardSettings.parse``
unwraps it. Values are kept
as given (``SkipValidation``): the validators below are the whole check.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

from langchain_core.runnables import Runnable
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationInfo,
    field_validator,
)

from . import filelocks
from .engine.contention import DEFAULT_CONTENTION_WAIT
from .errors import ConfigError
from .estimate import DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_MIN_OUTPUT_TOKENS
from .limits import Limit
from .pricing import Price
from .records import CallRecord
from .spool import Spool, default_spool_dir
from .stores import Store, store_from_url
from .tokencount import Counter, InputCounter, resolve_counter

logger = logging.getLogger("budgetguard")

__all__ = ["GuardSettings"]

T = TypeVar("T")


class _Refused(Exception):
    """Carries a configuration error through pydantic unchanged (see the module docstring)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _as_is(check: Callable[..., T]) -> Callable[..., T]:
    """A validator whose ValueError (a ConfigError, a Limit's ValidationError) pydantic leaves alone."""

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return check(*args, **kwargs)
        except ValueError as e:
            raise _Refused(e) from None

    return run


def _check(*fields: str) -> Callable[[Callable[..., Any]], Any]:
    """A before-validator of these fields (a classmethod), its errors raised as is."""

    def validator(check: Callable[..., Any]) -> Any:
        return field_validator(*fields, mode="before")(classmethod(_as_is(check)))

    return validator


class GuardSettings(BaseModel):
    """What a guard is configured with, valid; build with ``GuardSettings.parse(**kwargs)``."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    limit_usd: SkipValidation[Decimal | float | int | str | None] = None
    limit_tokens: SkipValidation[int | None] = None
    #: the shorthand limit (``limit_usd=``/``limit_tokens=``) first, then ``limits=``
    limits: SkipValidation[tuple[Limit, ...]] = Field(default=(), validate_default=True)
    fallback: SkipValidation[Runnable[Any, Any] | Sequence[Runnable[Any, Any]] | None] = None
    degrade_at: SkipValidation[float | None] = None
    lease_ttl: SkipValidation[float] = 600.0
    default_max_output_tokens: SkipValidation[int] = DEFAULT_MAX_OUTPUT_TOKENS
    fit_max_tokens: SkipValidation[bool] = True
    min_output_tokens: SkipValidation[int] = DEFAULT_MIN_OUTPUT_TOKENS
    #: seconds a call refused only by other calls' reservations in flight waits for them; 0 disables
    contention_wait: SkipValidation[float] = DEFAULT_CONTENTION_WAIT
    prices: SkipValidation[Mapping[str, Price] | None] = None
    default_price: SkipValidation[Price | None] = None
    model: SkipValidation[str | None] = None
    on_record: SkipValidation[Callable[[CallRecord], None] | None] = None
    on_store_error: SkipValidation[Literal["closed", "open"]] = "closed"
    store_timeout: SkipValidation[float] = 1.0
    spool_dir: SkipValidation[str | os.PathLike[str] | None] = None
    #: "background": a network store's settles leave the caller's path (``engine/settler.py``); "inline"
    settle: SkipValidation[Literal["inline", "background"]] = "inline"
    #: fractions of a limit at which ``on_alert`` is called, once per scope, window and threshold
    alerts: SkipValidation[tuple[float, ...]] = ()
    on_alert: SkipValidation[Callable[[Any], Any] | None] = Field(default=None, validate_default=True)
    #: a name ("bytes", "o200k", "cl100k", "auto"), a callable or None ("bytes"); a Counter once parsed
    token_counter: SkipValidation[Counter] = Field(default=None, validate_default=True)
    #: given as a Store, a URL or None ($BUDGETGUARD_STORE, else memory); a Store once parsed
    store: SkipValidation[Store] = Field(default=None, validate_default=True)

    @classmethod
    def parse(cls, **kwargs: Any) -> GuardSettings:
        """The settings, or the first problem with them raised as is."""
        try:
            return cls(**kwargs)
        except _Refused as refused:
            error = refused.error
        raise error  # outside the handler: the caller sees the error alone, as before

    @_check("limits")
    def _all_limits(cls, v: Sequence[Any], info: ValidationInfo) -> tuple[Limit, ...]:
        usd, tokens = info.data["limit_usd"], info.data["limit_tokens"]
        all_limits: list[Limit] = []
        if usd is not None or tokens is not None:
            all_limits.append(Limit(usd=usd, tokens=tokens))
        for lim in v:
            if not isinstance(lim, Limit):
                raise ConfigError(
                    f"limits must hold budgetguard.Limit objects, got {type(lim).__name__}: {lim!r}"
                )
            all_limits.append(lim)
        if not all_limits:
            raise ConfigError(
                "BudgetGuard needs a limit: pass limit_usd=, limit_tokens= or limits=[Limit(...)]"
            )
        return tuple(all_limits)

    @_check("degrade_at")
    def _fraction(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ConfigError(f"degrade_at must be a fraction in (0, 1], e.g. 0.8; got {v!r}")
            if info.data["fallback"] is None:
                raise ConfigError("degrade_at needs fallback=: the cheaper model(s) to switch to")
        return v

    @_check("lease_ttl", "store_timeout")
    def _seconds(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{info.field_name} must be a positive number of seconds, got {v!r}")
        return v

    @_check("default_max_output_tokens", "min_output_tokens")
    def _max_output(cls, v: Any, info: ValidationInfo) -> Any:
        if type(v) is not int or v <= 0:
            raise ConfigError(f"{info.field_name} must be a positive int, got {v!r}")
        return v

    @_check("fit_max_tokens")
    def _fit(cls, v: Any) -> Any:
        if type(v) is not bool:
            raise ConfigError(f"fit_max_tokens must be True or False, got {v!r}")
        return v

    @_check("contention_wait")
    def _contention_wait(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 3600:
            raise ConfigError(
                f"contention_wait must be a number of seconds from 0 (do not wait) to 3600, got {v!r}"
            )
        return v

    @_check("prices")
    def _prices(cls, v: Any) -> Any:
        for key, price in (v or {}).items():
            if not isinstance(price, Price):
                raise ConfigError(
                    f"prices[{key!r}] must be budgetguard.Price(input_per_mtok=..., output_per_mtok=...), "
                    f"got {type(price).__name__}"
                )
        return v

    @_check("default_price")
    def _default_price(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, Price):
            raise ConfigError("default_price must be a budgetguard.Price")
        return v

    @_check("on_store_error")
    def _on_store_error(cls, v: Any) -> Any:
        if v not in ("closed", "open"):
            raise ConfigError(
                f"on_store_error must be 'closed' (refuse calls) or 'open' (allow and spool), got {v!r}"
            )
        return v

    @_check("settle")
    def _settle(cls, v: Any) -> Any:
        if v not in ("inline", "background"):
            raise ConfigError(
                "settle must be 'background' (a network store settles after the call returns, off its "
                f"path) or 'inline' (the caller waits for the settle), got {v!r}"
            )
        return v

    @_check("alerts")
    def _alerts(cls, v: Any) -> tuple[float, ...]:
        if v is None:
            return ()
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
            raise ConfigError(
                f"alerts must be a list of fractions of a limit, e.g. [0.5, 0.8, 1.0]; got {v!r}"
            )
        for t in v:
            if isinstance(t, bool) or not isinstance(t, (int, float, Decimal)) or not 0 < t <= 1:
                raise ConfigError(
                    f"each alert threshold must be a fraction in (0, 1], e.g. 0.8 for 80%; got {t!r}"
                )
        if len(set(v)) != len(v):
            raise ConfigError(f"alerts lists a threshold twice: {list(v)!r}")
        return tuple(sorted(float(t) for t in v))

    @_check("on_alert")
    def _on_alert(cls, v: Any, info: ValidationInfo) -> Any:
        alerts = info.data.get("alerts", ())
        if v is not None and not callable(v):
            raise ConfigError(f"on_alert must be a function (or async function) taking an Alert, got {v!r}")
        if alerts and v is None:
            raise ConfigError("alerts= needs on_alert=: the function to call when a threshold is passed")
        if v is not None and not alerts:
            raise ConfigError("on_alert= needs alerts=: the thresholds, e.g. alerts=[0.5, 0.8, 1.0]")
        return v

    @_check("token_counter")
    def _token_counter(cls, v: str | InputCounter | None) -> Counter:
        return resolve_counter(v)

    @_check("store")
    def _store(cls, v: Store | str | None, info: ValidationInfo) -> Store:
        """Last: opening a store from a URL is the one step that builds something."""
        if v is None or isinstance(v, str):
            v = store_from_url(v, timeout=float(info.data["store_timeout"]))
        elif not isinstance(v, Store):
            raise ConfigError(f"store must be a budgetguard Store or a URL such as 'memory://', got {v!r}")
        if info.data.get("alerts") and not v.supports_alerts:
            raise ConfigError(
                f"{v!r} cannot deduplicate alerts (Store.claim_alert), so alerts= could fire more than "
                "once: use the memory or Redis store, or implement claim_alert and supports_alerts"
            )
        if not v.supports_sync:
            raise ConfigError(
                f"{v!r} has only an asyncio client, but the guard checks calls from LangChain's "
                "callbacks, which are sync: pass client=redis.Redis(...) too (async_client= may stay)"
            )
        return v

    @property
    def fallbacks(self) -> tuple[Runnable[Any, Any], ...]:
        """``fallback=`` as a tuple: one runnable, several, or none."""
        if self.fallback is None:
            return ()
        if isinstance(self.fallback, Runnable):
            return (self.fallback,)
        return tuple(self.fallback)

    def spool(self) -> Spool | None:
        """Where store writes wait while a network store is down (and for ``spool_dir=``)."""
        if self.spool_dir is None and not self.store.blocking:
            return None
        if not filelocks.AVAILABLE:
            if self.spool_dir is not None:
                raise ConfigError(
                    "spool_dir= needs file locks (fcntl on POSIX, msvcrt on Windows), which this Python "
                    "lacks; leave spool_dir unset to run without a spool (store faults then reach the caller)"
                )
            _warn_no_spool()
            return None
        return Spool(Path(self.spool_dir or default_spool_dir()) / self.store.spool_key)


@functools.cache
def _warn_no_spool() -> None:
    logger.warning(
        "budgetguard: this platform has no file locks (fcntl or msvcrt), so guards run without a spool: "
        "a settle the store cannot take is raised to the caller, and on_store_error='open' cannot spool"
    )
