"""Calls into the user's code (``on_record``) that can never break a model call.

The call ran and its spend is already recorded by the time ``on_record``
hears of it; an exception there is the user's bug, not a reason to lose the
model's answer. Each distinct (callback, exception type) is logged once, with
its traceback, so a callback that fails on every call does not flood the logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["UserCallbacks"]

logger = logging.getLogger("budgetguard")

T = TypeVar("T")


class UserCallbacks:
    """Runs user callbacks, swallowing and logging (once per kind) what they raise."""

    __slots__ = ("_lock", "_seen")

    def __init__(self) -> None:
        self._seen: set[tuple[int, type[BaseException]]] = set()
        self._lock = threading.Lock()

    def call(self, callback: Callable[[T], object], arg: T) -> None:
        try:
            callback(arg)
        except Exception as exc:
            key = (id(callback), type(exc))
            with self._lock:
                first = key not in self._seen
                self._seen.add(key)
            name = getattr(callback, "__qualname__", None) or repr(callback)
            if first:
                logger.error(
                    "budgetguard: callback %s raised %s; the call's result is returned and its spend "
                    "is recorded (further %s from it are logged at DEBUG)",
                    name,
                    type(exc).__name__,
                    type(exc).__name__,
                    exc_info=True,
                )
            else:
                logger.debug("budgetguard: callback %s raised %r again", name, exc)
