"""``CallRecord``: what one guarded call cost, handed to ``on_record``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from .usage import TokenUsage

__all__ = ["CallRecord", "Outcome", "caller_metadata"]

#: How a call ended, as recorded in the store.
#: ``settled``: charged its reported usage; ``estimated``: charged an estimate (usage missing or
#: the call failed after output began); ``released``: refunded, the provider was never reached;
#: ``cache_hit``: served by LangChain's cache, free; ``replay``: a settle already applied (no-op);
#: ``late``: settled after its lease had expired, replacing the estimate it was charged;
#: ``unreserved``: usage recorded for a lease the store never saw; ``spooled``: the store was down,
#: the settle waits in the spool; ``refused``: refused before it was sent, nothing charged
#: (``reason`` says why).
Outcome = Literal[
    "settled", "estimated", "released", "cache_hit", "replay", "late", "unreserved", "spooled", "refused"
]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What one guarded call cost, as recorded in the store."""

    model: str
    provider: str | None
    usage: TokenUsage
    cost_usd: Decimal
    reserved_usd: Decimal
    scopes: tuple[str, ...]
    outcome: Outcome
    #: the output cap the call was sent with when the guard lowered it to fit the budget, else None
    output_cap_fitted: int | None = None
    #: the LangChain run id of the model call, and of the run around it (a chain, an agent step)
    run_id: UUID | None = None
    parent_run_id: UUID | None = None
    #: the caller's metadata the guard read its scopes from (LangChain's own ``ls_*`` keys left out)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: when the call began (before its reservation) and when it was recorded, UTC
    started_at: datetime | None = None
    ended_at: datetime | None = None
    #: why a refused call was refused (the scope, the limit, what it needed), else None
    reason: str | None = None

    @property
    def estimated(self) -> bool:
        return self.usage.estimated


def caller_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's metadata, without LangChain's ``ls_*`` keys and the guard's own markers."""
    if not metadata:
        return {}
    return {k: v for k, v in metadata.items() if not k.startswith(("ls_", "budgetguard"))}
