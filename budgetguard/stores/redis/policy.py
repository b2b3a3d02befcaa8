"""Refuse a Redis that may evict keys: an evicted counter is a budget silently reset to zero.

Read from ``INFO memory`` (``maxmemory_policy``), which managed services
report even where ``CONFIG`` is disabled. Checked once per store, on its
first operation (constructors do no I/O); an explicit opt-in skips it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError

__all__ = ["SAFE", "check_ledger", "check_store", "policies", "refuse_eviction"]

logger = logging.getLogger("budgetguard")

SAFE = "noeviction"


def policies(info: Any) -> list[str]:
    """The ``maxmemory_policy`` of each node in an ``INFO memory`` reply (Cluster: one per node)."""
    if not isinstance(info, Mapping):
        return []
    if "maxmemory_policy" in info:
        return [str(info["maxmemory_policy"])]
    out: list[str] = []
    for node in info.values():  # RedisCluster answers {node: info} for every node
        out += policies(node)
    return out


def refuse_eviction(info: Any, label: str) -> None:
    """``ConfigError`` naming the fix unless every node runs ``noeviction``.

    A server that does not report its policy cannot be checked: logged once, let through.
    """
    found = policies(info)
    if not found:
        logger.warning("budgetguard: %s does not report maxmemory_policy; make sure it is noeviction", label)
        return
    bad = sorted({p for p in found if p != SAFE})
    if bad:
        raise ConfigError(
            f"Budget store {label} has maxmemory-policy {', '.join(bad)}: under memory pressure Redis "
            "would evict budget counters and leases, silently resetting budgets. Set maxmemory-policy "
            "noeviction on that server (CONFIG SET maxmemory-policy noeviction, or the provider's "
            "parameter group), or give budgetguard a dedicated instance that has it; to accept the "
            "risk, pass RedisStore(..., allow_eviction=True) or add ?allow_eviction=true to the URL."
        )


def check_store(client: Any, async_client: Any, prefix: str, timeout: float, attempts: int) -> None:
    """Refuse a store that could never work, before any connection is tried."""
    if client is None and async_client is None:
        raise ConfigError(
            "RedisStore needs client= (redis.Redis) and/or async_client=, or use RedisStore.from_url"
        )
    if "{" in prefix or "}" in prefix:
        raise ConfigError(f"prefix {prefix!r} must not contain braces: the store adds the hash tags itself")
    if not timeout > 0 or attempts < 1:
        raise ConfigError("timeout must be > 0 seconds and attempts >= 1")


def check_ledger(maxlen: Any, age: Any) -> None:
    if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0:
        raise ConfigError(
            f"ledger_maxlen must be a number of records per root (0: no ledger), got {maxlen!r}"
        )
    if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or not age > 0):
        raise ConfigError(f"ledger_age must be a positive number of seconds or None, got {age!r}")
