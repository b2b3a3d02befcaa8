"""Smoke test: ``bench/observe_overhead.py`` runs with tiny arguments and prints both phases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_observe_overhead_prints_its_tables() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "observe_overhead.py"), "--rounds", "1", "--calls", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for needle in ("phase 1: no SDK configured", "guard + alerts", "phase 2: an SDK configured", "x quiet"):
        assert needle in proc.stdout, proc.stdout
