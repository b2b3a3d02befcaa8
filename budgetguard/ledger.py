"""The ledger: one record per change to what counters have spent, written by the store itself.

Every settle appends one record inside the same atomic step that changes the
counters (the settle Lua script on Redis, under the lock in memory), so the
ledger and the counters can never disagree. A record names each counter it
changed, with its window and the exact amount it added to that counter's
spent: ``settled``, ``late`` (replaces the estimate an expired lease was
charged), ``unreserved``, ``expired`` (a lease ran out unsettled and was
charged its estimate), ``refunded`` (an expired lease released) and
``reset`` (the counter was zeroed: minus what it had spent). Summed per
counter, the charges equal the spent that ``status`` shows, while the ledger
still holds the window's records.

Retention: on Redis one stream per root scope, trimmed to about
``ledger_maxlen`` records (``XADD MAXLEN ~``) and to ``ledger_age`` seconds
(``XTRIM MINID ~``; an idle root's stream expires after that long); the
memory store keeps a ring of the newest ``ledger_cap``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .reservation import Amount
from .usage import TokenUsage

__all__ = [
    "DEFAULT_AGE",
    "DEFAULT_MAXLEN",
    "TOKEN_KINDS",
    "Charge",
    "LedgerNote",
    "LedgerRecord",
    "charges_between",
    "note_for",
    "totals",
]

#: Records kept per root scope (Redis) or in all (memory), by default.
DEFAULT_MAXLEN = 10_000
#: Seconds a Redis ledger record is kept, by default: 35 days covers a month's window and its export.
DEFAULT_AGE = 35 * 86400

TOKEN_KINDS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "input_audio",
    "output_audio",
    "reasoning",
)

_NO_DETAILS = (0, 0, 0, 0, 0, 0)
#: ``json.dumps(d, separators=(",", ":"))`` without making an encoder per note (one per Redis settle)
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # cache_read ... reasoning, all zero


class LedgerNote(NamedTuple):
    """What the guard knows of a settled call that the store does not: written into its record."""

    model: str = ""
    provider: str | None = None
    tokens: tuple[tuple[str, int], ...] = ()  # by kind: input, output, cache_read, reasoning...
    run_id: str | None = None
    #: (store key, scope as the user wrote it), for the keys whose values were percent-encoded
    scopes: tuple[tuple[str, str], ...] = ()

    def label(self, key: str) -> str | None:
        """The scope as written for a store key this note names, else ``None``."""
        for k, label in self.scopes:
            if k == key:
                return label
        return None

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "model": self.model,
            "provider": self.provider,
            "tokens": dict(self.tokens),
            "run_id": self.run_id,
        }
        if self.scopes:
            d["scopes"] = [list(p) for p in self.scopes]
        return _COMPACT.encode(d)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> LedgerNote:
        if not text:
            return cls()
        try:
            d = json.loads(text)
            tokens = tuple((str(k), int(v)) for k, v in (d.get("tokens") or {}).items())
            scopes = tuple((str(k), str(v)) for k, v in d.get("scopes") or ())
            return cls(str(d.get("model") or ""), d.get("provider"), tokens, d.get("run_id"), scopes)
        except (ValueError, TypeError, AttributeError):
            return cls()

    def to_list(self) -> list[Any]:
        """For a spool line (JSON)."""
        return [
            self.model,
            self.provider,
            [list(t) for t in self.tokens],
            self.run_id,
            [list(p) for p in self.scopes],
        ]

    @classmethod
    def from_list(cls, v: Any) -> LedgerNote | None:
        if not isinstance(v, list) or len(v) not in (4, 5):
            return None
        scopes = tuple((str(k), str(lb)) for k, lb in (v[4] if len(v) == 5 else ()))
        return cls(str(v[0]), v[1], tuple((str(k), int(n)) for k, n in v[2]), v[3], scopes)


def note_for(
    model: str,
    provider: str | None,
    usage: TokenUsage,
    run_id: object = None,
    scopes: Iterable[tuple[str, str]] = (),
) -> LedgerNote:
    """The note of one call: its model, provider, tokens by kind (zeros left out), run id, and
    its scopes as written where they differ from the store keys (``scopes``: key, label pairs)."""
    i, o = usage[0], usage[1]
    if i and o and usage[2:8] == _NO_DETAILS:  # the common case: both totals, no details
        tokens: tuple[tuple[str, int], ...] = (("input", i), ("output", o))
    else:  # input_tokens ... reasoning: TokenUsage's fields in TOKEN_KINDS' order
        tokens = tuple([(k, n) for k, n in zip(TOKEN_KINDS, usage[:8], strict=True) if n])
    written = tuple([(k, label) for k, label in scopes if k != label]) if scopes else ()
    return tuple.__new__(
        LedgerNote, (model, provider, tokens, None if run_id is None else str(run_id), written)
    )


class Charge(NamedTuple):
    """What one record added to one counter's spent (negative for a refund or a reset)."""

    scope: str  # the store key (percent-encoded values); ``definitions.label_of`` gives it as written
    per: str
    window_start: int
    amount: Amount


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One change to spent: when, why, for which lease, and what it added to each counter."""

    time_us: int  # epoch microseconds (the store's clock: Redis TIME unless server_time=False)
    outcome: str  # settled | late | unreserved | expired | refunded | reset
    lease_id: str
    estimated: bool
    cost: Amount  # the call's cost (its estimate for ``expired``), nano-dollars, tokens, requests
    charges: tuple[Charge, ...]
    note: LedgerNote = field(default_factory=LedgerNote)
    id: str = ""  # the stream entry id on Redis

    @property
    def time(self) -> float:
        return self.time_us / 1_000_000


def totals(records: Iterable[LedgerRecord]) -> dict[tuple[str, str, int], Amount]:
    """Per counter (scope key, period, window start): the sum of the charges."""
    out: dict[tuple[str, str, int], Amount] = {}
    for rec in records:
        for c in rec.charges:
            k = (c.scope, c.per, c.window_start)
            out[k] = out.get(k, Amount()) + c.amount
    return out


def charges_between(
    records: Iterable[LedgerRecord], since: float | None = None, until: float | None = None
) -> Iterator[LedgerRecord]:
    """The records with ``since <= time < until`` (epoch seconds; ``None``: unbounded)."""
    for rec in records:
        t = rec.time
        if (since is None or t >= since) and (until is None or t < until):
            yield rec


def charges_from_json(raw: Any) -> tuple[Charge, ...]:
    """The charges of a Redis record: ``[[per, window_start, scope, n, t, r], ...]``."""
    if isinstance(raw, (bytes, str)):
        raw = json.loads(raw) if raw not in ("", b"", "{}", b"{}") else []
    if isinstance(raw, Mapping):  # cjson encodes an empty table as {}
        return ()
    return tuple(
        Charge(str(s), str(per), int(ws), Amount(int(n), int(t), int(r))) for per, ws, s, n, t, r in raw
    )
