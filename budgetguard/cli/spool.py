"""``spool status|replay``: the writes a guarded app could not make while its store was down."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import BudgetStoreUnavailable
from ..spool import Spool, _alive, default_spool_dir
from .common import EXIT_OK, EXIT_PROBLEM, EXIT_STORE, CliError, open_store, store_parent, table

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    p = sub.add_parser("spool", help="inspect or replay a spool of store writes")
    inner = p.add_subparsers(dest="spool_command", required=True, metavar="{status,replay}")
    d = argparse.ArgumentParser(add_help=False)
    d.add_argument(
        "--dir",
        metavar="DIR",
        help=f"the spool directory (default: $BUDGETGUARD_SPOOL_DIR, else {default_spool_dir()})",
    )
    s = inner.add_parser("status", parents=[d], help="the files and the writes waiting in them")
    s.add_argument("--json", action="store_true", help="machine-readable")
    s.set_defaults(run=status)
    r = inner.add_parser(
        "replay",
        parents=[d, store_parent()],
        help="apply the waiting writes to the store now (idempotent: a write applied twice counts once)",
    )
    r.set_defaults(run=replay)


def _dir(args: argparse.Namespace) -> Path:
    path = Path(args.dir) if args.dir else default_spool_dir()
    if not path.is_dir():
        raise CliError(
            f"no spool directory at {str(path)!r}; pass --dir (the guard's spool_dir)", EXIT_PROBLEM
        )
    return path


def _ops(path: Path) -> Counter[str]:
    ops: Counter[str] = Counter()
    try:
        with path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        ops[str(json.loads(raw).get("op"))] += 1
                    except ValueError:
                        ops["corrupt"] += 1
    except FileNotFoundError:
        pass
    return ops


def _files(root: Path) -> list[Path]:
    """The spool files under ``root``: a guard's ``spool_dir`` holds one directory per store."""
    found = sorted(root.glob("spool-*.jsonl"))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        found += sorted(sub.glob("spool-*.jsonl"))
    return found


def status(args: argparse.Namespace) -> int:
    root = _dir(args)
    files = [(p, _ops(p), _alive(p)) for p in _files(root)]
    waiting = sum(sum(o.values()) for _, o, _ in files)
    if args.json:
        rows = [{"file": str(p), "writes": dict(ops), "owner_running": alive} for p, ops, alive in files]
        json.dump({"dir": str(root), "pending": waiting, "files": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    sys.stdout.write(f"spool {root}: {waiting} write(s) waiting in {len(files)} file(s)\n")
    if files:
        table(
            sys.stdout,
            ["file", "reserve", "settle", "release", "owner"],
            [
                [
                    str(p.relative_to(root)),
                    str(o["reserve"]),
                    str(o["settle"]),
                    str(o["release"]),
                    "running" if a else "gone",
                ]
                for p, o, a in files
            ],
            right=["reserve", "settle", "release"],
        )
    return EXIT_OK


def replay(args: argparse.Namespace) -> int:
    root = _dir(args)
    store = open_store(args)
    own = root / store.spool_key  # a guard's spool_dir holds one directory per store
    spool = Spool(own if own.is_dir() else root)
    try:
        applied = spool.replay(store)
    except BudgetStoreUnavailable as e:
        sys.stdout.write(f"store unavailable, nothing more replayed: {e}\n")
        return EXIT_STORE
    left = spool.pending()
    sys.stdout.write(f"replayed {applied} write(s); {left} still waiting\n")
    return EXIT_OK if left == 0 else EXIT_PROBLEM
