"""``claim_alert`` in Redis: SET NX (PX when it expires), once for every process sharing the store.

Each claim carries a token of its own, so a retry after a lost reply tells its
own claim (True) from another process's (False): a claim is never lost nor won
twice by a retry.
"""

from __future__ import annotations

import os
from typing import Any

from tenacity import AsyncRetrying, Retrying

from . import codec
from .calls import FAILURES, mapped

__all__ = ["aclaim", "claim"]


def _px(ttl: float | None) -> int | None:
    """A claim's expiry in milliseconds (at least 1), or None to keep it."""
    return None if ttl is None else max(int(ttl * 1000), 1)


def claim(client: Any, name: str, ttl: float | None, label: str, timeout: float, attempts: int) -> bool:
    token, px = os.urandom(8).hex(), _px(ttl)

    def again() -> bool:
        if client.set(name, token, nx=True, px=px):
            return True
        return codec.decode_text(client.get(name) or b"") == token  # our own claim, its reply lost

    with mapped(label, timeout, attempts, "claim_alert") as call:
        try:
            return bool(client.set(name, token, nx=True, px=px))
        except FAILURES as e:
            retrying = Retrying(**call.retry_policy(e))
        return bool(retrying(again))


async def aclaim(
    client: Any, name: str, ttl: float | None, label: str, timeout: float, attempts: int
) -> bool:
    token, px = os.urandom(8).hex(), _px(ttl)

    async def again() -> bool:
        if await client.set(name, token, nx=True, px=px):
            return True
        return codec.decode_text(await client.get(name) or b"") == token

    with mapped(label, timeout, attempts, "claim_alert") as call:
        try:
            return bool(await client.set(name, token, nx=True, px=px))
        except FAILURES as e:
            retrying = AsyncRetrying(**call.retry_policy(e))
        return bool(await retrying(again))
