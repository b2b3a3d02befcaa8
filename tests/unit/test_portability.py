"""``import budgetguard`` where ``fcntl`` does not exist (Windows has ``msvcrt``; some have neither)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

NO_LOCKS = "import sys; sys.modules['fcntl'] = None; sys.modules['msvcrt'] = None\n"


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_LOCKS + textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_import_and_guard_work_without_fcntl() -> None:
    """Before the fix, ``import budgetguard`` raised ModuleNotFoundError: No module named 'fcntl'."""
    done = run(
        """
        import budgetguard
        from budgetguard import BudgetGuard
        from budgetguard.testing import FakeChatModel
        guard = BudgetGuard(limit_usd=1)
        guard.wrap(FakeChatModel()).invoke("hi")
        assert guard.remaining().rows[0].spent > 0
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_without_file_locks_a_network_store_runs_without_a_spool_and_says_so() -> None:
    done = run(
        """
        import logging
        logging.basicConfig(level=logging.WARNING)
        from budgetguard import BudgetGuard, ConfigError
        guard = BudgetGuard(limit_usd=1, store="redis://127.0.0.1:1/0")
        assert guard.engine.spool is None
        BudgetGuard(limit_usd=1, store="redis://127.0.0.1:1/0")  # warned once, not per guard
        try:
            BudgetGuard(limit_usd=1, store="redis://127.0.0.1:1/0", spool_dir="/tmp/x")
        except ConfigError as e:
            print("refused:", e)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "refused: spool_dir= needs file locks" in done.stdout
    assert done.stderr.count("has no file locks") == 1, done.stderr
