"""Which of LangChain's two callback dispatchers is asking for a handler's method.

LangChain looks an event's method up on the handler, then awaits it if it is a
coroutine function (its async path) or calls it (its sync path). Only the
async dispatcher, ``langchain_core.callbacks.manager._ahandle_event_for_handler``
(private), is a frame that awaits; so a look-up made from that frame, or a few
frames below it, is on the async path. Where that cannot be known (LangChain
renamed it, or the interpreter has no ``sys._getframe``), every look-up gets the
sync methods, which LangChain's async path runs on its executor: the calls are
still checked, only through the blocking store client.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import CodeType, FrameType

from langchain_core.callbacks import manager as _lc_manager

__all__ = ["on_async_path", "detection_available"]

logger = logging.getLogger("budgetguard")

#: How many frames are searched for the dispatcher, from the one making the look-up upwards.
MAX_FRAMES = 4

_ASYNC_DISPATCH: CodeType | None = getattr(
    getattr(_lc_manager, "_ahandle_event_for_handler", None), "__code__", None
)
_getframe: Callable[[int], FrameType] | None = getattr(sys, "_getframe", None)


def detection_available() -> bool:
    """Whether ``on_async_path`` can tell the paths apart in this interpreter and LangChain."""
    return _ASYNC_DISPATCH is not None and _getframe is not None


def on_async_path() -> bool:
    """True when the attribute look-up being served comes from LangChain's async dispatcher.

    Call it from the ``__get__`` of a descriptor: the frame two above this one
    made the look-up; it and up to ``MAX_FRAMES - 1`` frames above it are checked.
    """
    code, getframe = _ASYNC_DISPATCH, _getframe
    if code is None or getframe is None:
        return False
    try:
        frame: FrameType | None = getframe(2)
    except ValueError:  # a stack shallower than the caller claims: no dispatcher on it
        return False
    for _ in range(MAX_FRAMES):
        if frame is None:
            return False
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


if not detection_available():
    logger.info(
        "budgetguard cannot tell LangChain's async callback dispatch from its sync one here "
        "(no sys._getframe, or langchain_core.callbacks.manager._ahandle_event_for_handler is gone): "
        "async calls will be checked with the sync methods on LangChain's executor (still enforced)"
    )
