"""``python -m budgetguard.cli``."""

from __future__ import annotations

from . import main

raise SystemExit(main())
