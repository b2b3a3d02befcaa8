"""What operators read from a Redis store, and what guards record for them (``RedisStore``'s part).

Limit definitions (for the CLI's caps), the ledger (``budgetguard.ledger``), the scopes in use
and alert claims: none of them is on a guarded call's hot path, so they live apart from the
reserve and settle scripts in ``store.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ...definitions import LimitDef, decode_def, encode_def
from ...errors import ConfigError
from ...ledger import LedgerRecord
from . import alerts, codec
from .calls import mapped
from .ledger import LedgerRoots, read_all
from .roots import Roots

__all__ = ["OperatorReads"]

logger = logging.getLogger("budgetguard")


class OperatorReads:
    """``RedisStore``'s operator-facing methods; the attributes below are the store's own."""

    prefix: str
    label: str
    timeout: float
    attempts: int
    client: Any
    async_client: Any
    _clock: Callable[[], float]
    _roots: Roots
    _ledger_roots: LedgerRoots
    _ledger: tuple[int, int]
    _call: Callable[..., Any]
    _acall: Callable[..., Any]
    _bases: Callable[[Sequence[str]], tuple[list[str], list[int]]]
    _now: Callable[[], str]

    def reset(self, scope: str) -> int:
        keys, _ = self._bases([scope])
        return int(self._call("reset", keys, [self._now(), scope, *self._ledger]))

    async def areset(self, scope: str) -> int:
        keys, _ = self._bases([scope])
        return int(await self._acall("reset", keys, [self._now(), scope, *self._ledger]))

    def _define_args(self, defs: Sequence[LimitDef]) -> tuple[list[str], list[Any]]:
        return [f"{self.prefix}limits"], [int(self._clock()), *(encode_def(d) for d in defs)]

    def define_limits(self, defs: Sequence[LimitDef]) -> None:
        keys, args = self._define_args(defs)
        try:
            self._call("define", keys, args)
        except ConfigError as e:  # the CLI loses sight of these caps; enforcement is unaffected
            logger.warning("budgetguard: could not record the limit definitions in %s: %s", self.label, e)

    async def adefine_limits(self, defs: Sequence[LimitDef]) -> None:
        keys, args = self._define_args(defs)
        try:
            await self._acall("define", keys, args)
        except ConfigError as e:
            logger.warning("budgetguard: could not record the limit definitions in %s: %s", self.label, e)

    def limit_definitions(self) -> list[LimitDef]:
        """Every definition a guard recorded, most recently written first."""
        c = self._sync_client("limit_definitions()")
        with mapped(self.label, self.timeout, self.attempts, "limit_definitions"):
            raw = c.hgetall(f"{self.prefix}limits")
        seen = sorted(((float(v), codec.decode_text(k)) for k, v in raw.items()), reverse=True)
        return [d for _, text in seen if (d := decode_def(text)) is not None]

    def ledger_records(self, since: float | None = None, until: float | None = None) -> list[LedgerRecord]:
        """Every ledger stream's records with ``since <= time < until``, oldest first."""
        c = self._sync_client("ledger_records()")
        with mapped(self.label, self.timeout, self.attempts, "ledger"):
            return read_all(c, [self._ledger_roots.key, self._roots.key], self._clock(), since, until)

    def _sync_client(self, what: str) -> Any:
        if self.client is None:
            raise ConfigError(f"{what} needs a sync client; pass client= to RedisStore")
        return self.client

    # ------------------------------------------------------------ alerts

    supports_alerts = True

    def claim_alert(self, key: str, ttl: float | None) -> bool:
        """One claimer in every process (``alerts.py``: SET NX, with PX when ``ttl``)."""
        if self.client is None:
            raise ConfigError("claim_alert() needs a sync client")
        name = f"{self.prefix}alert:{key}"
        return alerts.claim(self.client, name, ttl, self.label, self.timeout, self.attempts)

    async def aclaim_alert(self, key: str, ttl: float | None) -> bool:
        if self.async_client is None:
            return await asyncio.to_thread(self.claim_alert, key, ttl)
        name = f"{self.prefix}alert:{key}"
        return await alerts.aclaim(self.async_client, name, ttl, self.label, self.timeout, self.attempts)

    def scopes(self) -> list[tuple[str, str]]:
        """Every (scope, period) that has held a reservation and is not forgotten yet
        (``expire_after``), without KEYS or SCAN. (``roots`` and ``<base>s`` are the sets
        of earlier versions, read too.)"""
        if self.client is None:
            raise ConfigError("scopes() needs a sync client")
        now = self._clock()
        c = self.client
        bases = {*c.zrangebyscore(self._roots.key, now, "+inf"), *c.smembers(f"{self.prefix}roots")}
        out: set[tuple[str, str]] = set()
        for base in sorted(codec.decode_text(b) for b in bases):
            members = {*c.zrangebyscore(f"{base}sz", int(now * 1000), "+inf"), *c.smembers(f"{base}s")}
            for member in members:
                scope, _, per = codec.decode_text(member).rpartition("\t")
                out.add((scope, per))
        return sorted(out)
