"""What the Redis scripts take and give back: pure encoding, testable without a server.

Keys: a reservation's counters are grouped by the *base* of their root scope,
``<prefix>{<root>}:`` (one Cluster slot per root), passed as ``KEYS``; each
counter names its base by index. Arguments are text (integers as decimal
strings, ``''`` for "none"). Replies are integers: per counter its window
start, then one value per name in ``FIELDS`` (the counter hash's fields, in
that order). ``scripts.py`` writes ``FIELDS`` into the Lua, so the two sides
cannot disagree on the order or the width.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from redis.crc import key_slot

from ...errors import ConfigError
from ...ledger import LedgerNote, LedgerRecord, charges_from_json
from ...reservation import QUANTITIES, Amount, Caps, CounterRef, CounterSpec, CounterState, Violation
from ..base import ReserveRequest, ReserveResult, SettleRequest

__all__ = [
    "FIELDS",
    "WIDTH",
    "decode_record",
    "decode_reserve",
    "decode_state",
    "decode_states",
    "decode_text",
    "encode_cap",
    "expire_ms",
    "key_base",
    "key_bases",
    "reserve_head",
    "reserve_tail",
    "root_tag",
    "settle_args",
    "settle_head",
    "settle_middle",
    "settle_note",
    "status_args",
]

#: The counter hash fields, in reply order: spent (n, t, r), reserved (n, t, r),
#: overshoot count, overshoot (n, t, r), estimated settles.
FIELDS = ("sn", "st", "sr", "rn", "rt", "rr", "oc", "on", "ot", "orq", "ec")
#: Values per counter in a reply: the window start, then ``FIELDS``.
WIDTH = 1 + len(FIELDS)

SettleMode = Literal["settle", "release"]


def root_tag(scope: str) -> str:
    """The hash tag of a scope: its root (text before the first '/'), brace-free."""
    root = scope.split("/", 1)[0]
    return root.replace("{", "%7B").replace("}", "%7D")


@lru_cache(maxsize=4096)
def key_base(prefix: str, scope: str) -> str:
    """The key base of ``scope``, ``<prefix>{<root>}:`` (remembered: every call names the same few)."""
    return f"{prefix}{{{root_tag(scope)}}}:"


def key_bases(prefix: str, scopes: Sequence[str], cluster: bool) -> tuple[list[str], list[int]]:
    """The distinct bases of ``scopes`` (the script's KEYS) and each scope's 1-based index in them.

    On Cluster one script call must stay in one slot, so roots in several slots are refused here
    (``slots.groups`` splits a request by slot before).
    """
    bases: list[str] = []
    index: list[int] = []
    for scope in scopes:
        base = key_base(prefix, scope)
        if base not in bases:
            bases.append(base)
        index.append(bases.index(base) + 1)
    if cluster and len({key_slot(b.encode()) for b in bases}) > 1:
        raise ConfigError(  # the store splits a request by slot first (slots.groups): a bug if seen
            "on Redis Cluster one script call must stay in one slot, but these scopes' roots hash to "
            f"different slots: {sorted({s.split('/', 1)[0] for s in scopes})}"
        )
    return bases, index


def encode_cap(v: int | None) -> str:
    """A cap as script text: ``''`` is no cap."""
    return "" if v is None else str(int(v))


def expire_ms(ref: CounterRef) -> str:
    """A counter's expire_after as script text: milliseconds, ``'0'`` for none."""
    return "0" if ref.expire_after is None else str(max(int(ref.expire_after * 1000), 1))


def _caps(caps: Caps | None) -> list[str]:
    return [encode_cap(v) for v in caps] if caps is not None else ["", "", ""]


def reserve_tail(
    counters: Sequence[CounterSpec],
    index: Sequence[int],
    tombstone_ttl: int,
    grace: int,
    ledger: Sequence[int] = (),
) -> list[bytes]:
    """The reserve arguments that depend only on the counters (the store caches them).

    ``ledger`` is the ledger's retention (maxlen, age in ms), last: the sweep writes records too.
    """
    tail: list[Any] = [tombstone_ttl, grace]
    for spec, i in zip(counters, index, strict=True):
        tail += [i, spec.ref.scope, spec.ref.per, expire_ms(spec.ref), *_caps(spec.caps), *_caps(spec.soft)]
    return [str(v).encode() for v in (*tail, *ledger)]


def reserve_head(req: ReserveRequest, now: str) -> list[Any]:
    """The reserve arguments of one request: time, lease, ttl (ms), force flag, amount."""
    a = req.amount
    return [now, req.lease_id, int(req.ttl * 1000), "1" if req.force else "0", len(req.counters), *a]


def settle_args(
    req: SettleRequest,
    mode: SettleMode,
    index: Sequence[int],
    now: str,
    tombstone_ttl: int,
    grace: int,
    settled_cap: int,
    ledger: Sequence[int] = (),
) -> list[Any]:
    """The settle script's arguments (``mode`` 'release' drops the lease instead).

    Last, the ledger's: its retention (maxlen, age in ms) and the record's note (JSON); none
    (no record written) when ``ledger`` is empty.
    """
    args = settle_head(req, now) + settle_middle(req.counters, mode, index, tombstone_ttl, grace, settled_cap)
    return [*args, *ledger, *settle_note(req)] if ledger else args


def settle_head(req: SettleRequest, now: str) -> list[Any]:
    """The settle arguments of one request: time, lease, actual amount, the two flags."""
    a = req.actual
    flags = ["1" if req.estimated else "0", "1" if req.count_overshoot else "0"]
    return [now, req.lease_id, a.nanos, a.tokens, a.requests, *flags]


def settle_middle(
    refs: Sequence[CounterRef],
    mode: SettleMode,
    index: Sequence[int],
    tombstone_ttl: int,
    grace: int,
    cap: int,
) -> list[Any]:
    """The settle arguments that depend only on the counters and the mode (then the ledger's)."""
    return [tombstone_ttl, grace, mode, len(refs), cap, *_refs(refs, index)]


def settle_note(req: SettleRequest) -> list[str]:
    """The ledger record's note (JSON, '' for none): the last argument when a ledger is kept."""
    return ["" if req.note is None else req.note.to_json()]


def status_args(
    refs: Sequence[CounterRef],
    index: Sequence[int],
    now: str,
    tombstone_ttl: int,
    grace: int,
    ledger: Sequence[int] = (),
) -> list[Any]:
    """The status script's arguments (the ledger's retention last, for the sweep)."""
    return [now, tombstone_ttl, grace, len(refs), *_refs(refs, index), *ledger]


def _refs(refs: Sequence[CounterRef], index: Sequence[int]) -> list[Any]:
    out: list[Any] = []
    for ref, i in zip(refs, index, strict=True):
        out += [i, ref.scope, ref.per, expire_ms(ref)]
    return out


def decode_state(vals: Sequence[Any]) -> CounterState:
    """One counter of a reply: window start, then the ``FIELDS`` in order."""
    v = [int(x) for x in vals]
    return CounterState(
        window_start=v[0],
        spent=Amount(v[1], v[2], v[3]),
        reserved=Amount(v[4], v[5], v[6]),
        overshoot_count=v[7],
        overshoot=Amount(v[8], v[9], v[10]),
        estimated_count=v[11],
    )


def decode_states(reply: Sequence[Any], start: int) -> tuple[CounterState, ...]:
    """The counters of a reply from position ``start`` on, ``WIDTH`` values each."""
    return tuple(decode_state(reply[i : i + WIDTH]) for i in range(start, len(reply), WIDTH))


def decode_reserve(reply: Sequence[Any]) -> ReserveResult:
    """``{1}`` (admitted), or ``{admitted, index, quantity, soft, states...}`` (refused or forced)."""
    if len(reply) == 1:
        return ReserveResult(bool(int(reply[0])), ())
    admitted, vi, vq, soft = (int(x) for x in reply[:4])
    violation = Violation(vi - 1, QUANTITIES[vq - 1], bool(soft)) if vi else None
    return ReserveResult(bool(admitted), decode_states(reply, 4), violation)


def decode_record(entry_id: Any, fields: Any) -> LedgerRecord:
    """One ledger stream entry (``ledger.lua``'s ledger_add) as a record."""
    f = {decode_text(k): v for k, v in dict(fields).items()}
    n, t, r = (int(x) for x in decode_text(f.get("a", "0 0 0")).split())
    return LedgerRecord(
        time_us=int(f.get("t", 0)),
        outcome=decode_text(f.get("o", "")),
        lease_id=decode_text(f.get("l", "")),
        estimated=decode_text(f.get("e", "0")) == "1",
        cost=Amount(n, t, r),
        charges=charges_from_json(decode_text(f.get("c", "[]"))),
        note=LedgerNote.from_json(decode_text(f.get("m", ""))),
        id=decode_text(entry_id),
    )


def decode_text(v: Any) -> str:
    """A reply string (bytes unless the client decodes responses)."""
    return v.decode() if isinstance(v, bytes) else str(v)
