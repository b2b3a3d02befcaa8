"""Budgets shared by every process and host, in Redis (or Valkey).

Each operation is ONE Lua script call (EVALSHA; redis-py reloads a script
after NOSCRIPT), so a reservation against several limits is all-or-nothing
and no race can overspend (on Cluster, one script per slot the counters use).
Money is integer nano-dollars (no INCRBYFLOAT).
Leases live in Redis with their expiry; expired ones are charged inside the
scripts. Window boundaries use the server's clock (``TIME``) unless
``server_time=False``.

One concept per module: ``store`` (the ``RedisStore`` operations),
``connectors`` (one per topology, with its URL schemes), ``clients`` (what is
derived from given clients), ``calls`` (retries and error mapping), ``codec``
(script arguments and replies, pure), ``scripts`` (loading ``lua/*.lua``),
``slots`` (on Cluster, a reservation across slots: one script per slot, in slot order).

``RedisStore`` is loaded on first use: importing this package (the registry
does, for the connectors' schemes) imports no redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = ["RedisStore"]


def __getattr__(name: str) -> object:
    if name == "RedisStore":
        from .store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
