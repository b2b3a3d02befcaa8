"""Which store serves a URL: every connector, and the one place a scheme is named.

Each connector class declares its schemes (``memory``, and one class per
Redis topology); this module lists the classes and picks one by scheme. It
imports no redis-py: the Redis connectors load it only when they connect.
Schemes are matched lower-cased, here and nowhere else, so ``REDIS://`` is
``redis://`` for every layer (redis-py included: the URL passed on carries
the lower-cased scheme).
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Connector
from .memory import MemoryConnector
from .redis.connectors import ClusterConnector, SentinelConnector, SingleConnector

__all__ = ["CONNECTORS", "listing", "lookup", "resolve"]

#: Every connector, in the order messages list their schemes.
CONNECTORS: tuple[type[Connector], ...] = (
    MemoryConnector,
    SingleConnector,
    ClusterConnector,
    SentinelConnector,
)
_BY_SCHEME = {scheme: c for c in CONNECTORS for scheme in c.schemes}


def lookup(scheme: str) -> type[Connector] | None:
    """The connector for ``scheme``, in any case; ``None`` if no store serves it."""
    return _BY_SCHEME.get(scheme.lower())


def resolve(url: str) -> tuple[str, str, type[Connector] | None]:
    """``<scheme>://...`` as (scheme lower-cased, the URL with it, its connector or ``None``)."""
    head, sep, rest = url.partition("://")
    scheme = head.lower() if sep else ""
    connector = lookup(scheme)
    return scheme, (f"{scheme}://{rest}" if connector is not None else url), connector


def listing(connectors: Iterable[type[Connector]] = CONNECTORS, *, quote: str = "") -> str:
    """The schemes for a message: ``'memory://', 'redis://', ... or 'rediss+sentinel://'``."""
    names = [f"{quote}{s}://{quote}" for c in connectors for s in c.schemes]
    return ", ".join(names[:-1]) + " or " + names[-1]
