"""Keeps LangChain from logging a guard's refusals as callback errors.

LangChain logs every exception a callback raises at WARNING before re-raising
it. A guard's are refusals delivered to the caller as exceptions; logging each
one too would read as a crash. Exactly those records are dropped, nothing else.
"""

from __future__ import annotations

import logging
from typing import TypeVar

__all__ = ["quiet_refusals"]

H = TypeVar("H", bound=type)


class _QuietRefusals(logging.Filter):
    """Drops LangChain's "Error in <handler>.<event> callback" records of the registered handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (
            isinstance(args, tuple)
            and len(args) == 3
            and record.msg == "Error in %s.%s callback: %s"
            and args[0] in self.names
        )


_filter = _QuietRefusals()
logging.getLogger("langchain_core.callbacks.manager").addFilter(_filter)


def quiet_refusals(handler_class: H) -> H:
    """Class decorator: LangChain's error records for this handler class are not logged."""
    _filter.names.add(handler_class.__name__)
    return handler_class
