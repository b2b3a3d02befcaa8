"""UTC calendar windows: where a counter's window starts and when it resets.

Pure arithmetic over epoch seconds (no clock is read, no pydantic), so the
memory store, the status rows and the Redis scripts' tests share one
definition; ``stores/redis/lua/common.lua`` mirrors it line for line.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

from .errors import ConfigError

__all__ = ["PERIODS", "as_datetime", "window_end", "window_start"]

PERIODS: tuple[str, ...] = ("minute", "hour", "day", "week", "month", "lifetime")
_EPOCH_MONDAY = 4 * 86400  # 1970-01-01 was a Thursday; 1970-01-05 a Monday


def window_start(per: str, now: float) -> int:
    """Start of the UTC calendar window holding ``now`` (epoch seconds)."""
    t = int(now // 1)
    if per == "lifetime":
        return 0
    if per == "minute":
        return t - t % 60
    if per == "hour":
        return t - t % 3600
    if per == "day":
        return t - t % 86400
    if per == "week":
        return t - (t - _EPOCH_MONDAY) % (7 * 86400)
    if per == "month":
        d = datetime.fromtimestamp(t, tz=timezone.utc)
        return calendar.timegm((d.year, d.month, 1, 0, 0, 0))
    raise ConfigError(f"unknown period {per!r}; use one of {', '.join(PERIODS)}")


def window_end(per: str, start: int) -> int | None:
    """When the window that began at ``start`` resets; ``None`` for lifetime."""
    if per == "lifetime":
        return None
    if per == "month":
        d = datetime.fromtimestamp(start, tz=timezone.utc)
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return calendar.timegm((y, m, 1, 0, 0, 0))
    step = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}[per]
    return start + step


def as_datetime(ts: int | None) -> datetime | None:
    """An epoch-seconds boundary as an aware UTC datetime (``None`` stays ``None``: lifetime)."""
    return None if ts is None else datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=ts)
