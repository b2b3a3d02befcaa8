"""Where budgets live, chosen by URL as in ``limits``.

``memory://`` (the default), ``redis://``, ``rediss://``, ``unix://``,
``redis+cluster://`` (``rediss+`` for TLS) and ``redis+sentinel://``; the
schemes are declared by the connectors in ``registry``.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from . import registry
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
    _, normalized, connector = registry.resolve(url)
    if connector is None:
        schemes = registry.listing(quote="'")
        raise ConfigError(
            f"unknown store URL scheme in {_redact(url)!r}; use {schemes} "
            f"(in code with store=... or in ${ENV_VAR})"
        )
    return connector.connect(normalized, timeout=timeout)


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
