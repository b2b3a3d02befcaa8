"""Where budgets live, chosen by URL as in ``limits``.

``memory://`` (the default), ``redis://``, ``rediss://``, ``unix://``,
``redis+cluster://`` and ``redis+sentinel://``.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest, Store
from .memory import MemoryStore

__all__ = [
    "MemoryStore",
    "ReserveRequest",
    "ReserveResult",
    "SettleOutcome",
    "SettleRequest",
    "Store",
    "store_from_url",
    "ENV_VAR",
]

#: Names the store URL when the guard is given none.
ENV_VAR = "BUDGETGUARD_STORE"


def store_from_url(url: str | None, *, timeout: float = 1.0) -> Store:
    """Build a store from a URL; ``None`` reads ``$BUDGETGUARD_STORE``, else memory.

    ``timeout`` bounds each operation of a network store, retries included.
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or "memory://"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme in _REDIS_SCHEMES:
        from .redis import RedisStore

        return RedisStore.from_url(url, timeout=timeout)
    raise ConfigError(
        f"unknown store URL scheme in {_redact(url)!r}; use 'memory://', 'redis://', 'rediss://', "
        f"'unix://', 'redis+cluster://' or 'redis+sentinel://' (in code with store=... or in ${ENV_VAR})"
    )


_REDIS_SCHEMES = {
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
}


def _redact(url: str) -> str:
    """A URL safe to print: any password replaced by '***'."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, _, host = rest.rpartition("@")
        if ":" in creds:
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return f"{scheme}://***@{host}"  # a lone user-info is read as a password
    return url
