"""Limits and scope templates (the window arithmetic is in ``budgetguard.windows``).

All of it is pure: no clock is read here, callers pass the time in.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError, MissingScope

__all__ = [
    "Limit",
    "Period",
    "ScopeTemplate",
    "DEFAULT_SCOPE",
    "MAX_SCOPE_VALUE",
]

Period = Literal["minute", "hour", "day", "week", "month", "lifetime"]
DEFAULT_SCOPE = "global"
MAX_SCOPE_VALUE = 256
_NANOS = Decimal(1_000_000_000)


class Limit(BaseModel):
    """A cap on USD, tokens and/or requests, per window, for one scope.

    ``scope`` is a template filled from the run's metadata, e.g.
    ``"user:{user_id}"``; ``None`` means the guard's default scope.

    ``expire_after`` (seconds, or a ``timedelta``) is for ephemeral scopes
    such as ``"run:{run_id}"``: a counter of this limit is forgotten that long
    after its last reserve or settle, so per-run budgets do not pile up in the
    store. Make it longer than the guard's ``lease_ttl``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    tokens: int | None = Field(default=None, ge=0, strict=True)
    requests: int | None = Field(default=None, ge=0, strict=True)
    per: Period = "lifetime"
    scope: str | None = None
    expire_after: timedelta | None = None

    @field_validator("expire_after", mode="before")
    @classmethod
    def _expire_positive(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expire_after must be a number of seconds or a timedelta, not a bool")
        return v

    @field_validator("expire_after")
    @classmethod
    def _expire_after_positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v <= timedelta(0):
            raise ValueError(f"expire_after must be positive, got {v.total_seconds()} s")
        return v

    @property
    def expire_seconds(self) -> float | None:
        """``expire_after`` in seconds (``None``: kept for the window, forever for lifetime)."""
        return None if self.expire_after is None else self.expire_after.total_seconds()

    @field_validator("usd", mode="before")
    @classmethod
    def _usd_exact(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("usd must be a number of dollars, not a bool")
        return Decimal(repr(v)) if isinstance(v, float) else v

    @field_validator("scope")
    @classmethod
    def _scope_parses(cls, v: str | None) -> str | None:
        if v is not None:
            ScopeTemplate.parse(v)
        return v

    @model_validator(mode="after")
    def _has_quantity(self) -> Limit:
        if self.usd is None and self.tokens is None and self.requests is None:
            raise ValueError("a Limit needs at least one of usd=, tokens= or requests=")
        return self

    def value(self, quantity: str) -> Decimal | int:
        v = {"usd": self.usd, "tokens": self.tokens, "requests": self.requests}[quantity]
        if v is None:
            raise KeyError(quantity)
        return v

    @property
    def usd_nanos(self) -> int | None:
        """The USD cap in nano-dollars, rounded down so the cap is never loosened."""
        if self.usd is None:
            return None
        return int((self.usd * _NANOS).to_integral_value(rounding=ROUND_FLOOR))

    def describe(self) -> str:
        parts = []
        if self.usd is not None:
            parts.append(f"${self.usd}")
        if self.tokens is not None:
            parts.append(f"{self.tokens:,} tokens")
        if self.requests is not None:
            parts.append(f"{self.requests:,} requests")
        per = "" if self.per == "lifetime" else f" per {self.per}"
        return f"{' / '.join(parts)}{per} on {self.scope or DEFAULT_SCOPE}"


# ---------------------------------------------------------------- scopes


class ScopeTemplate:
    """A scope such as ``"org:{org_id}/user:{user_id}"``, filled from metadata.

    Values are percent-encoded, so distinct values always give distinct keys
    whatever characters they hold (``:``, ``{``, newlines...).
    """

    __slots__ = ("fields", "parts", "template")
    _cache: ClassVar[dict[str, ScopeTemplate]] = {}

    def __init__(self, template: str, parts: tuple[tuple[str, str | None], ...]) -> None:
        self.template = template
        self.parts = parts
        self.fields = tuple(f for _, f in parts if f is not None)

    @classmethod
    def parse(cls, template: str) -> ScopeTemplate:
        cached = cls._cache.get(template)
        if cached is not None:
            return cached
        if not isinstance(template, str) or not template.strip():
            raise ConfigError(f"scope {template!r} is empty; use e.g. 'global' or 'user:{{user_id}}'")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ConfigError(
                f"scope {template!r} is not a valid template ({e}); "
                "write fields as {name}, and double braces for literal ones"
            ) from None
        parts: list[tuple[str, str | None]] = []
        for literal, field, spec, conv in parsed:
            if field is not None:
                _check_field(template, field, spec, conv, parts[-1][1] if parts and not literal else None)
            parts.append((literal, field))
        tpl = cls(template, tuple(parts))
        cls._cache[template] = tpl
        return tpl

    def render(self, metadata: Mapping[str, Any]) -> str:
        """The store key: field values percent-encoded (``MissingScope`` if one is missing or bad)."""
        return self.render_both(metadata)[0]

    def render_both(self, metadata: Mapping[str, Any]) -> tuple[str, str]:
        """The store key, and the scope as the user wrote it (for messages, status and records)."""
        key: list[str] = []
        label: list[str] = []
        for literal, field in self.parts:
            key.append(literal)
            label.append(literal)
            if field is not None:
                text = self._value(metadata, field)
                key.append(_encode(text))
                label.append(text)
        rendered = "".join(key)
        if self.fields and rendered == DEFAULT_SCOPE:
            # a value spelling the default scope's name must not land on the guard's default counter
            rendered = _pct(rendered[0]) + rendered[1:]
        return rendered, "".join(label)

    def _value(self, metadata: Mapping[str, Any], field: str) -> str:
        if field not in metadata or metadata[field] is None:
            raise MissingScope(self.template, field)
        value = metadata[field]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise MissingScope(self.template, field, f"is a {type(value).__name__}; it must be a str or int")
        text = str(value)
        if not text:
            raise MissingScope(self.template, field, "is empty")
        if len(text) > MAX_SCOPE_VALUE:
            raise MissingScope(self.template, field, f"is longer than {MAX_SCOPE_VALUE} characters")
        return text

    def match(self, scope: str) -> dict[str, str] | None:
        """The field values that this template renders as ``scope`` (written plainly), or ``None``."""
        pattern = "".join(re.escape(lit) + ("(.+?)" if f is not None else "") for lit, f in self.parts)
        m = re.fullmatch(pattern, scope, flags=re.DOTALL)
        return None if m is None else dict(zip(self.fields, m.groups(), strict=True))


def _check_field(template: str, field: str, spec: str | None, conv: str | None, previous: str | None) -> None:
    """A field must be a plain metadata key, apart from the field before it (``previous``)."""
    if not field.isidentifier() or spec or conv:
        raise ConfigError(
            f"scope {template!r}: field {{{field}{'!' + conv if conv else ''}"
            f"{':' + spec if spec else ''}}} must be a plain metadata key such as {{user_id}}"
        )
    if previous is not None:
        raise ConfigError(
            f"scope {template!r}: fields {{{previous}}} and {{{field}}} need a separator "
            "between them, e.g. '{org_id}/{user_id}'"
        )


def _encode(text: str) -> str:
    """Percent-encode all but ASCII letters and digits, so no value can fake a separator."""
    if text.isascii() and text.isalnum():
        return text
    return "".join(c if c.isascii() and c.isalnum() else _pct(c) for c in text)


def _pct(c: str) -> str:
    return "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
