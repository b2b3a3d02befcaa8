"""Limit definitions as kept in the store, so that operators' tools know every cap.

A guard writes its limits there once, on its first use of the store (never
in a constructor): the scope template as written, the period, and one cap
per quantity. ``budgetguard status`` reads them back to show each counter's
cap, and to turn a counter's store key (values percent-encoded) back into
the scope as the user wrote it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from urllib.parse import unquote

from .limits import DEFAULT_SCOPE, Limit, ScopeTemplate
from .units import QUANTITY_NAMES, Quantity

__all__ = ["LimitDef", "caps_for", "decode_def", "definitions_of", "encode_def", "keys_for", "label_of"]

#: A field value in a store key: ASCII letters and digits, the rest percent-encoded (limits._encode).
_VALUE = r"((?:[A-Za-z0-9]|%[0-9A-F]{2})+)"


class LimitDef(NamedTuple):
    """One cap of one limit: ``cap`` is nano-dollars for ``usd``, a count otherwise."""

    scope: str  # the template as written, e.g. "org:{org_id}/user:{user_id}"
    per: str
    quantity: Quantity
    cap: int
    expire_after: float | None = None


def definitions_of(limits: Iterable[Limit]) -> tuple[LimitDef, ...]:
    """Every cap of ``limits``, one definition per quantity."""
    out: list[LimitDef] = []
    for lim in limits:
        for q in QUANTITY_NAMES:
            cap = lim.usd_nanos if q == "usd" else getattr(lim, q)
            if cap is not None:
                out.append(LimitDef(lim.scope or DEFAULT_SCOPE, lim.per, q, int(cap), lim.expire_seconds))
    return tuple(dict.fromkeys(out))


def encode_def(d: LimitDef) -> str:
    """The canonical text of a definition (a hash field: equal limits write the same field)."""
    return json.dumps([d.scope, d.per, d.quantity, str(d.cap), d.expire_after], separators=(",", ":"))


def decode_def(text: str | bytes) -> LimitDef | None:
    """A definition read back; ``None`` for text this version cannot read."""
    try:
        scope, per, quantity, cap, expire_after = json.loads(text)
        if quantity not in QUANTITY_NAMES:
            return None
        return LimitDef(
            str(scope), str(per), quantity, int(cap), None if expire_after is None else float(expire_after)
        )
    except (ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=1024)
def _pattern(template: str) -> re.Pattern[str] | None:
    """A regex matching the store keys ``template`` renders (``None`` for a template without fields)."""
    tpl = ScopeTemplate.parse(template)
    if not tpl.fields:
        return None
    return re.compile("".join(re.escape(lit) + (_VALUE if f is not None else "") for lit, f in tpl.parts))


def _matches(template: str, key: str) -> tuple[bool, str | None]:
    """Whether ``template`` renders ``key``, and the scope as written if so."""
    pattern = _pattern(template)
    if pattern is None:
        return key == template, key if key == template else None
    m = pattern.fullmatch(key)
    if m is None:
        return False, None
    values = iter(unquote(v) for v in m.groups())
    tpl = ScopeTemplate.parse(template)
    return True, "".join(lit + (next(values) if f is not None else "") for lit, f in tpl.parts)


def label_of(key: str, defs: Sequence[LimitDef]) -> str:
    """The scope as the user wrote it, for a counter's store key (values percent-decoded)."""
    for d in defs:
        ok, label = _matches(d.scope, key)
        if ok and label is not None:
            return label
    return unquote(key) if "%" in key else key


def caps_for(key: str, per: str, defs: Sequence[LimitDef]) -> dict[Quantity, int]:
    """The caps on a counter: per quantity, the tightest of the limits that land on it (as
    ``plans.build_plan`` does). ``defs`` come newest first: a limit whose cap was changed later
    counts with its newest cap only."""
    caps: dict[Quantity, int] = {}
    seen: set[tuple[str, str, str]] = set()
    for d in defs:
        if (d.scope, d.per, d.quantity) in seen:
            continue  # an older cap of the same limit
        seen.add((d.scope, d.per, d.quantity))
        if d.per == per and _matches(d.scope, key)[0]:
            caps[d.quantity] = min(caps.get(d.quantity, d.cap), d.cap)
    return caps


def keys_for(scope: str, defs: Sequence[LimitDef]) -> list[str]:
    """The store keys a scope written plainly (``user:alice@example.com``) stands for."""
    keys: list[str] = []
    for template in dict.fromkeys(d.scope for d in defs):
        tpl = ScopeTemplate.parse(template)
        values = tpl.match(scope)
        if values is not None:
            try:
                keys.append(tpl.render(values))
            except LookupError:
                continue
    keys.append(scope)
    return list(dict.fromkeys(keys))
