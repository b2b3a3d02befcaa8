"""Keeps LangChain from logging a guard's refusals as callback errors.

LangChain logs every exception a callback raises at WARNING before re-raising
it. A guard's refusals (``BudgetExceeded`` and its subclasses) are answers
delivered to the caller as exceptions; logging each one too would read as a
crash. Exactly those records are dropped. Everything else a guard's handler
raises (a store outage, a missing scope key) is still logged: it is a fault.
"""

from __future__ import annotations

import logging
import re
from typing import TypeVar

from ..errors import BudgetExceeded

__all__ = ["quiet_refusals"]

H = TypeVar("H", bound=type)

#: LangChain logs ``repr(exception)``: the class name, then its arguments.
_CLASS_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")


def _refusal_names() -> set[str]:
    """The names of ``BudgetExceeded`` and of every subclass defined so far."""
    names, todo = set(), [BudgetExceeded]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class _QuietRefusals(logging.Filter):
    """Drops LangChain's "Error in <handler>.<event> callback" records of refusals by our handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (
            isinstance(args, tuple)
            and len(args) == 3
            and record.msg == "Error in %s.%s callback: %s"
            and args[0] in self.names
        ):
            return True
        match = _CLASS_NAME.match(str(args[2]))
        return match is None or match.group(1) not in _refusal_names()


_filter = _QuietRefusals()
logging.getLogger("langchain_core.callbacks.manager").addFilter(_filter)


def quiet_refusals(handler_class: H) -> H:
    """Class decorator: LangChain's refusal records for this handler class are not logged."""
    _filter.names.add(handler_class.__name__)
    return handler_class
