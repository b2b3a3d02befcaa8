"""The ``budgetguard`` command: see, export and reset budgets, check the store, run the demo.

The store comes from ``--store URL``, else ``$BUDGETGUARD_STORE``.

Exit codes: 0 ok; 1 a finding or problem (doctor found a problem, a reset
not confirmed, a model with no price, spool writes left); 2 a usage error
(bad arguments, no or bad store URL, memory://); 3 the store is unavailable.

Tables and usage bars use ``rich`` when it is installed (the ``cli`` extra),
plain text otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import BudgetStoreUnavailable, ConfigError
from . import doctor, export, offline_demo, prices, spool, status
from .common import EXIT_STORE, EXIT_USAGE, CliError
from .offline_demo import demo

__all__ = ["demo", "main"]

_EPILOG = "exit codes: 0 ok, 1 a finding or problem, 2 a usage error, 3 the store is unavailable"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="budgetguard",
        description="Hard token and USD budgets for LangChain: see, export and reset them.",
        epilog=_EPILOG,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (offline_demo, status, export, spool, prices, doctor):
        module.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (the console script exits with it)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return int(args.run(args))
    except CliError as e:
        sys.stderr.write(f"budgetguard: {e}\n")
        return e.code
    except BudgetStoreUnavailable as e:
        sys.stderr.write(f"budgetguard: {e}\n")
        return EXIT_STORE
    except ConfigError as e:
        sys.stderr.write(f"budgetguard: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
