"""A local, fsync'ed, append-only record of store writes that could not be made.

When the store is unreachable, reservations (with ``on_store_error="open"``)
and settlements (always: a call that ran must never be lost) are appended
here, one JSON line each, and fsync'ed before the guard goes on. Once the
store answers again the lines are replayed; every store operation is
idempotent by lease id, so a line replayed twice counts once. Each process
writes its own file; any process replays any file, under an exclusive
``flock``, so a restarted process replays what an earlier one left.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import filelocks
from .errors import BudgetStoreUnavailable, ConfigError
from .ledger import LedgerNote
from .reservation import Amount, Caps, CounterRef, CounterSpec
from .stores.base import ReserveRequest, SettleRequest, Store

__all__ = ["Spool", "default_spool_dir"]

logger = logging.getLogger("budgetguard")

ENV_VAR = "BUDGETGUARD_SPOOL_DIR"


def default_spool_dir() -> Path:
    """``$BUDGETGUARD_SPOOL_DIR``, else ``<tmp>/budgetguard-spool`` (set a durable one in production)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(tempfile.gettempdir()) / "budgetguard-spool"


def _caps(c: Caps | None) -> list[int | None] | None:
    return None if c is None else list(c)


def _expiry(r: CounterRef) -> list[float]:
    """A ref's expire_after, as an optional last item (lines without it read as before)."""
    return [] if r.expire_after is None else [r.expire_after]


def encode_reserve(req: ReserveRequest) -> dict[str, Any]:
    return {
        "op": "reserve",
        "lease": req.lease_id,
        "counters": [
            [s.ref.scope, s.ref.per, _caps(s.caps), _caps(s.soft), *_expiry(s.ref)] for s in req.counters
        ],
        "amount": list(req.amount),
        "ttl": req.ttl,
    }


def encode_settle(req: SettleRequest) -> dict[str, Any]:
    entry = {
        "op": "settle",
        "lease": req.lease_id,
        "counters": [[r.scope, r.per, *_expiry(r)] for r in req.counters],
        "actual": list(req.actual),
        "estimated": req.estimated,
        "overshoot": req.count_overshoot,
    }
    if req.note is not None:  # for the ledger record (lines without it replay as before)
        entry["note"] = req.note.to_list()
    return entry


def encode_release(lease_id: str, counters: tuple[CounterRef, ...]) -> dict[str, Any]:
    return {"op": "release", "lease": lease_id, "counters": [[r.scope, r.per, *_expiry(r)] for r in counters]}


def apply(store: Store, entry: dict[str, Any]) -> None:
    """Replay one spooled line against ``store`` (idempotent)."""
    op = entry["op"]
    if op == "reserve":
        specs = tuple(
            CounterSpec(CounterRef(scope, per, *rest), Caps(*caps), None if soft is None else Caps(*soft))
            for scope, per, caps, soft, *rest in entry["counters"]
        )
        # force: the call went ahead, so its reservation is recorded whatever the caps say
        store.reserve(
            ReserveRequest(entry["lease"], specs, Amount(*entry["amount"]), entry["ttl"], force=True)
        )
    elif op == "settle":
        refs = tuple(CounterRef(*c) for c in entry["counters"])
        store.settle(
            SettleRequest(
                entry["lease"],
                refs,
                Amount(*entry["actual"]),
                entry["estimated"],
                entry["overshoot"],
                LedgerNote.from_list(entry.get("note")),
            )
        )
    elif op == "release":
        store.release(entry["lease"], tuple(CounterRef(*c) for c in entry["counters"]))
    else:
        raise ValueError(f"unknown spool op {op!r}")


class Spool:
    """This process's spool file in ``directory``, and the replay of every file there."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        # No I/O here: the directory is created by ``prepare()``, on the guard's first store operation.
        self.dir = Path(directory) if directory is not None else default_spool_dir()
        self.path = self.dir / f"spool-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
        self._lock = threading.Lock()  # this process's appends
        self._replaying = threading.Lock()  # one replay at a time; appends need not wait for it
        self._prepared = False
        self.dirty = False  # this process wrote lines not yet replayed

    def prepare(self) -> None:
        """Create the directory and check that it is writable (``ConfigError`` naming the fix if not)."""
        if self._prepared:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"spool_dir {str(self.dir)!r} cannot be created ({e}); pass a writable spool_dir="
            ) from e
        if not os.access(self.dir, os.W_OK):
            raise ConfigError(f"spool_dir {str(self.dir)!r} is not writable; pass a writable spool_dir=")
        self._prepared = True

    def __repr__(self) -> str:
        return f"Spool({str(self.dir)!r})"

    def append(self, entry: dict[str, Any]) -> None:
        """Append one line and fsync it before returning."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        self.prepare()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                filelocks.lock(fd, blocking=True)
                os.write(fd, line)
                os.fsync(fd)
                filelocks.unlock(fd)
            finally:
                os.close(fd)  # closing releases the lock
            self.dirty = True

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("spool-*.jsonl"))

    def pending(self) -> int:
        """Lines waiting in every file of the directory."""
        total = 0
        for path in self.files():
            try:
                total += sum(1 for _ in path.open("rb"))
            except FileNotFoundError:
                continue
        return total

    def orphaned(self) -> bool:
        """Whether another process that is no longer running left lines here."""
        for path in self.files():
            try:
                if path != self.path and path.stat().st_size and not _alive(path):
                    return True
            except FileNotFoundError:
                continue
        return False

    def replay(self, store: Store) -> int:
        """Replay every file; returns the lines applied. Stops (keeping the rest) if the store fails."""
        applied = 0
        with self._replaying:
            self.dirty = False  # lines appended from now on set it again
            for path in self.files():
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    continue
                try:
                    if not filelocks.lock(fd, blocking=False):
                        continue  # another process is replaying or writing it
                    lines = list(_lines(fd))
                    done = 0
                    try:
                        for entry in lines:
                            apply(store, entry)
                            done += 1
                    finally:
                        _keep(fd, lines[done:])
                        applied += done
                    if not lines[done:] and path != self.path and not _alive(path):
                        path.unlink(missing_ok=True)
                finally:
                    filelocks.unlock(fd)
                    os.close(fd)
        if applied:
            logger.info("budgetguard: replayed %d spooled store writes", applied)
        return applied

    def try_replay(self, store: Store) -> int:
        try:
            return self.replay(store)
        except BudgetStoreUnavailable:
            self.dirty = True
            return 0
        except BaseException:
            self.dirty = True
            raise


def _lines(fd: int) -> Iterator[dict[str, Any]]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except ValueError:
            logger.error("budgetguard: skipped a corrupt spool line: %r", raw[:200])


def _keep(fd: int, rest: list[dict[str, Any]]) -> None:
    """Rewrite the file with the lines not yet applied (under the lock)."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    if rest:
        os.write(fd, b"".join((json.dumps(e, separators=(",", ":")) + "\n").encode() for e in rest))
    os.fsync(fd)


def _alive(path: Path) -> bool:
    """Whether the process that owns a spool file still runs."""
    try:
        pid = int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return False
    if os.name == "nt":  # pragma: no cover - signal 0 is CTRL_C_EVENT there: never send it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
