"""A served model with no price, warned of once per model (per process), not on every call."""

from __future__ import annotations

import logging

__all__ = ["unpriced_served", "warn_unpriced"]

logger = logging.getLogger("budgetguard")

unpriced_served: set[str] = set()


def warn_unpriced(served: str, model: str) -> None:
    """Warn of a served model with no price once per model (per process), not on every call."""
    if served in unpriced_served or len(unpriced_served) >= 10_000:
        return
    unpriced_served.add(served)
    logger.warning("budgetguard: served model %r has no price; charged at %r's rates", served, model)
