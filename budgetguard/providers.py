"""Provider facts as data: ``data/providers.json``, loaded once and checked.

Provider ids, Bedrock region prefixes and the usage shapes each provider
reports change with the providers, not with our arithmetic, so they live in a
data file (as genai-prices keeps its price tables) and this module only turns
that file into frozen, typed tables. ``usage.py`` interprets the usage shapes;
``pricing.py`` uses the aliases and prefixes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, cast

__all__ = [
    "PROVIDER_ALIASES",
    "BEDROCK_REGION_PREFIXES",
    "MODEL_NAME_PREFIXES",
    "LOCAL_PROVIDERS",
    "SERVED_NAME_PARTIAL",
    "UNKNOWN_PRICE_HINTS",
    "RESPONSE_ROOTS",
    "SHAPES",
    "USAGE_METADATA_SHAPE",
    "Need",
    "Row",
    "Shape",
    "load_tables",
]

#: ``required``: absent or invalid means no reading at all. ``checked``: absent
#: is 0, invalid means no reading. ``optional``: absent is 0; invalid drops every
#: optional count of the shape and flags the reading as an estimate.
Need = Literal["required", "checked", "optional"]
_NEEDS: tuple[Need, ...] = ("required", "checked", "optional")


@dataclass(frozen=True, slots=True)
class Row:
    """One count: where it sits inside the shape's root, and where it goes."""

    path: tuple[str, ...]
    to: str
    need: Need


@dataclass(frozen=True, slots=True)
class Shape:
    """How one provider reports usage.

    ``detect``: keys whose presence in the root means this shape (empty: any
    mapping at the root is this shape). ``final``: no reading here ends the
    search instead of moving on to the next root. ``loose_details``: a value
    that is not a mapping where nested details belong counts as absent rather
    than invalid. ``rules``: names of the adjustments ``usage.py`` applies.
    """

    name: str
    detect: tuple[str, ...]
    rows: tuple[Row, ...]
    rules: tuple[str, ...] = ()
    final: bool = False
    loose_details: bool = False

    def claims(self, root: Mapping[str, Any]) -> bool:
        """Whether the mapping at this shape's root is reported in this shape."""
        return not self.detect or any(key in root for key in self.detect)


@dataclass(frozen=True, slots=True)
class Tables:
    """Everything ``providers.json`` holds, typed."""

    provider_aliases: dict[str, str]
    bedrock_region_prefixes: tuple[str, ...]
    model_name_prefixes: tuple[str, ...]
    local_providers: frozenset[str]
    served_name_partial: frozenset[str]
    unknown_price_hints: Mapping[str, str]
    shapes: Mapping[str, Shape]
    response_roots: tuple[tuple[str | None, tuple[Shape, ...]], ...]
    usage_metadata_shape: Shape


def _row(raw: Mapping[str, Any], shape: str) -> Row:
    path, to, need = raw["path"], raw["to"], raw["need"]
    if not (isinstance(path, str) and path and isinstance(to, str) and to) or need not in _NEEDS:
        raise ValueError(f"providers.json: bad row {dict(raw)!r} in shape {shape!r}")
    return Row(tuple(path.split(".")), to, cast(Need, need))


def _shape(name: str, raw: Mapping[str, Any]) -> Shape:
    rows = tuple(_row(r, name) for r in raw["rows"])
    targets = [r.to for r in rows]
    if len(set(targets)) != len(targets):
        raise ValueError(f"providers.json: shape {name!r} sends two rows to one field")
    details = raw.get("non_mapping_details", "invalid")
    if details not in ("invalid", "absent"):
        raise ValueError(f"providers.json: shape {name!r} has non_mapping_details={details!r}")
    return Shape(
        name,
        tuple(raw["detect"]),
        rows,
        tuple(raw.get("rules", ())),
        bool(raw.get("final", False)),
        details == "absent",
    )


def load_tables(text: str) -> Tables:
    """Parse and check the text of a ``providers.json``; ``ValueError`` if it is wrong."""
    raw = json.loads(text)
    shapes = {name: _shape(name, s) for name, s in raw["shapes"].items()}
    try:
        roots = tuple(
            (entry["root"], tuple(shapes[s] for s in entry["shapes"])) for entry in raw["response_metadata"]
        )
        um_shape = shapes[raw["usage_metadata_shape"]]
    except KeyError as e:
        raise ValueError(f"providers.json: unknown shape {e}") from None
    hints = {k: v for k, v in raw["unknown_price_hints"].items() if k != "about"}
    return Tables(
        dict(raw["provider_aliases"]),
        tuple(raw["bedrock_region_prefixes"]),
        tuple(raw["model_name_prefixes"]["prefixes"]),
        frozenset(raw["local_providers"]["providers"]),
        frozenset(raw["served_name_not_on_every_path"]["model_providers"]),
        MappingProxyType(hints),
        MappingProxyType(shapes),
        roots,
        um_shape,
    )


_TABLES = load_tables(
    (resources.files("budgetguard") / "data" / "providers.json").read_text(encoding="utf-8")
)

#: LangChain ``ls_provider`` values -> genai-prices provider ids.
PROVIDER_ALIASES: dict[str, str] = _TABLES.provider_aliases
#: Cross-region inference prefixes of Bedrock model ids (``us.anthropic...``).
BEDROCK_REGION_PREFIXES: tuple[str, ...] = _TABLES.bedrock_region_prefixes
#: API-path prefixes that are no part of a model's name (``models/gemini-2.5-flash``).
MODEL_NAME_PREFIXES: tuple[str, ...] = _TABLES.model_name_prefixes
#: ``ls_provider`` values of models run locally: never priced by guessing a hosted vendor.
LOCAL_PROVIDERS: frozenset[str] = _TABLES.local_providers
#: ``model_provider`` values whose served model name is reported on some paths only (ignored).
SERVED_NAME_PARTIAL: frozenset[str] = _TABLES.served_name_partial
#: Extra advice for ``UnknownModelPrice``, by ``ls_provider`` (``{model}`` is filled in).
UNKNOWN_PRICE_HINTS: Mapping[str, str] = _TABLES.unknown_price_hints
#: Every usage shape, by name.
SHAPES: Mapping[str, Shape] = _TABLES.shapes
#: Where in ``response_metadata`` usage may sit (``None``: the top level), in
#: the order tried, with the shapes that may sit there, in the order tried.
RESPONSE_ROOTS: tuple[tuple[str | None, tuple[Shape, ...]], ...] = _TABLES.response_roots
#: The shape of LangChain's own ``usage_metadata``.
USAGE_METADATA_SHAPE: Shape = _TABLES.usage_metadata_shape
