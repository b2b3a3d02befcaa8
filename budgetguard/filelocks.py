"""Exclusive locks on open files, for the spool: ``fcntl`` on POSIX, ``msvcrt`` on Windows.

``import budgetguard`` must work where neither exists; there ``AVAILABLE`` is
false and the guard runs without a spool (see ``settings.GuardSettings.spool``).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["AVAILABLE", "lock", "unlock"]

fcntl: ModuleType | None
msvcrt: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
try:
    import msvcrt
except ImportError:
    msvcrt = None

AVAILABLE = fcntl is not None or msvcrt is not None
# msvcrt locks are mandatory byte ranges: lock one byte far past any data, so that
# holding the lock never stops another process from reading the lines themselves.
_WIN_OFFSET = 1 << 40


def lock(fd: int, *, blocking: bool) -> bool:
    """Lock ``fd`` exclusively; ``False`` if ``blocking`` is false and another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    if msvcrt is not None:  # pragma: no cover - Windows
        here = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
        except OSError:
            if blocking:
                raise
            return False
        finally:
            os.lseek(fd, here, os.SEEK_SET)
        return True
    raise RuntimeError("no file locking on this platform (budgetguard.filelocks.AVAILABLE is False)")


def unlock(fd: int) -> None:
    """Release the lock before closing ``fd`` (closing alone releases it on POSIX)."""
    if fcntl is None and msvcrt is not None:  # pragma: no cover - Windows
        here = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass  # not held
        finally:
            os.lseek(fd, here, os.SEEK_SET)
