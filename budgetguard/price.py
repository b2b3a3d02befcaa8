"""``Price``: a user's own price for a model, validated (``BudgetGuard(prices=...)``, ``cost()``).

Data apart from the arithmetic: ``pricing.py`` compiles a ``Price`` into integer rates.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Price"]


class Price(BaseModel):
    """A user-supplied price, in USD per million tokens.

    A cache rate left as ``None`` bills those tokens at the input rate.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: Decimal = Field(ge=0, allow_inf_nan=False)
    output_per_mtok: Decimal = Field(ge=0, allow_inf_nan=False)
    cache_read_per_mtok: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write_per_mtok: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_float_drift(cls, v: Any) -> Any:
        # Decimal(0.1) carries binary noise; go through repr so 0.1 means 0.1.
        return Decimal(repr(v)) if isinstance(v, float) else v
