"""Token usage: one normalised record, read from whatever a provider reported.

LangChain's ``usage_metadata`` is read first; the provider shapes found in
``response_metadata`` are the fallback. Anything missing or impossible yields
``None`` so that the caller charges an estimate instead of a silent zero.
"""

from __future__ import annotations

import enum
import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import LLMResult

from .model_names import LLM_OUTPUT_KEYS, name_at, served_model_name
from .plain_usage import plain_counts
from .providers import RESPONSE_ROOTS, SHAPES, USAGE_METADATA_SHAPE, Row, Shape
from .usage_rules import RULES

__all__ = ["TokenUsage", "usage_from_message", "usage_from_result", "served_model"]

#: Counts above this are treated as corrupt: no single call uses ten billion tokens.
MAX_TOKENS = 10_000_000_000


class TokenUsage(NamedTuple):
    """Tokens of one call, in LangChain's convention.

    ``input_tokens`` includes cache reads and writes; ``output_tokens`` includes
    reasoning and audio output. ``cache_write_1h`` is the part of
    ``cache_write`` written with a one-hour TTL (the rest is 5-minute).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    input_audio: int = 0
    output_audio: int = 0
    reasoning: int = 0
    estimated: bool = False
    cache_hit: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:  # type: ignore[override]
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.cache_write_1h + other.cache_write_1h,
            self.input_audio + other.input_audio,
            self.output_audio + other.output_audio,
            self.reasoning + other.reasoning,
            self.estimated or other.estimated,
            self.cache_hit and other.cache_hit,
        )

    def flagged(self) -> TokenUsage:
        """The same counts, marked as an estimate."""
        return self._replace(estimated=True)

    def as_usage_metadata(self) -> UsageMetadata:
        """LangChain's dict shape, for code that expects it."""
        um: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cache_read or self.cache_write or self.input_audio:
            um["input_token_details"] = {
                "cache_read": self.cache_read,
                "cache_creation": self.cache_write,
                "audio": self.input_audio,
            }
        if self.reasoning or self.output_audio:
            um["output_token_details"] = {"reasoning": self.reasoning, "audio": self.output_audio}
        return cast(UsageMetadata, um)

    @classmethod
    def from_usage_metadata(cls, usage: Mapping[str, Any]) -> TokenUsage | None:
        """Parse a ``UsageMetadata`` dict; ``None`` if it is missing or impossible."""
        if type(usage) is not dict and not isinstance(usage, Mapping):
            return None
        counts = plain_counts(usage, MAX_TOKENS)  # the commonest readings, without the interpreter
        if counts is not None:
            return _new(TokenUsage, (*counts, False, False))
        return _read_usage_metadata(usage)

    @classmethod
    def from_response_metadata(cls, meta: Mapping[str, Any]) -> TokenUsage | None:
        """Read the provider shapes LangChain leaves in ``response_metadata``.

        Roots are tried in table order; at each, the first shape that claims the
        mapping there decides it. No reading moves on to the next root, unless
        the shape is ``final``.
        """
        if type(meta) is not dict and not isinstance(meta, Mapping):
            return None
        for root, shapes in _RESPONSE_READERS:
            found = meta if root is None else meta.get(root)
            if type(found) is not dict and not isinstance(found, Mapping):
                continue
            for detect, final, read in shapes:
                if _claims(detect, found):
                    parsed = read(found)
                    if parsed is not None or final:
                        return parsed
                    break
        return None


# ------------------------------------------------------------ shape interpreter

#: Row targets that are no ``TokenUsage`` field: counts only rules read.
SCRATCH = ("cache_write_5m",)
_FIELDS = tuple(f for f in TokenUsage._fields if f not in ("estimated", "cache_hit"))


class _Invalid(enum.Enum):
    """A value that is there but is no token count (wrong type, negative, absurd)."""

    INVALID = 0


_INVALID = _Invalid.INVALID


def _count(value: Any) -> int | None:
    if type(value) is not int or value < 0 or value > MAX_TOKENS:
        return None
    return value


def lookup(root: Mapping[str, Any], path: tuple[str, ...], loose: bool = False) -> int | _Invalid | None:
    """The count at ``path``: ``None`` if absent, ``_INVALID`` if it is no count.

    A falsy value where nested details belong is absent; any other non-mapping
    there is invalid, or absent when ``loose``.
    """
    node = _parent(root, path[:-1], loose)
    if node is None or node is _INVALID:
        return node
    return _read(node.get(path[-1]))


def _parent(
    root: Mapping[str, Any], keys: tuple[str, ...], loose: bool
) -> Mapping[str, Any] | _Invalid | None:
    node: Any = root
    for key in keys:
        node = node.get(key)
        if type(node) is not dict and not isinstance(node, Mapping):
            return None if loose or not node else _INVALID
    return node  # type: ignore[no-any-return]


def _read(value: Any) -> int | _Invalid | None:
    if value is None:
        return None
    n = _count(value)
    return _INVALID if n is None else n


@functools.cache
def _by_parent(shape: Shape) -> tuple[tuple[tuple[str, ...], tuple[Row, ...]], ...]:
    """A shape's rows grouped by the mapping they sit in, so each is looked up once per parse."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in shape.rows:
        groups.setdefault(row.path[:-1], []).append(row)
    return tuple((parent, tuple(rows)) for parent, rows in groups.items())


#: A shape compiled once: the mapping at its root -> its reading, or ``None``.
Reader = Callable[[Mapping[str, Any]], TokenUsage | None]

#: Every count a reader fills, 0 until read (absent is 0 for every count that is not
#: required), and the two flags: what ``TokenUsage`` is built from.
_ZEROS: dict[str, int] = {**dict.fromkeys((*_FIELDS, *SCRATCH), 0), "estimated": False, "cache_hit": False}
_pick = operator.itemgetter(*TokenUsage._fields)
_new = tuple.__new__


def compile_shape(shape: Shape) -> Reader:
    """A shape's rows and rules turned into one reader, built once per shape.

    Rows are grouped by the mapping they sit in (each looked up once per
    parse), with each group's needs summed up in advance: a missing group
    costs one test, not one per row.
    """
    groups = tuple(
        (
            parent[0] if parent else None,
            parent[1:],
            tuple((r.path[-1], r.to, r.need) for r in rows),
            any(r.need == "required" for r in rows),  # an absent group is no reading
            any(r.need != "optional" for r in rows),  # an invalid group is no reading
        )
        for parent, rows in _by_parent(shape)
    )
    required = tuple(r.to for r in shape.rows if r.need == "required")
    rules = tuple(RULES[name] for name in shape.rules)
    loose = shape.loose_details

    def read(root: Mapping[str, Any]) -> TokenUsage | None:
        counts = _ZEROS.copy()
        for first, rest, rows, needed, strict in groups:
            node = root if first is None else root.get(first)
            if node is not None and (rest or type(node) is not dict):
                node = _descend(node, rest, loose)
            if node is None or node is _INVALID:
                if needed if node is None else strict:
                    return None
                if node is _INVALID:
                    counts["estimated"] = True
                continue
            get = node.get
            for key, to, need in rows:
                v = get(key)
                if v is None:
                    if need == "required":
                        return None
                elif type(v) is int and 0 <= v <= MAX_TOKENS:
                    counts[to] = v
                elif need != "optional":
                    return None
                else:
                    counts["estimated"] = True
        if counts["estimated"]:
            counts = _discredited(counts, required)
        u: TokenUsage = _new(TokenUsage, _pick(counts))
        for rule in rules:
            u = rule(u, counts, root)
        return u

    return read


def _descend(node: Any, keys: tuple[str, ...], loose: bool) -> Mapping[str, Any] | _Invalid | None:
    """The mapping at ``keys`` below ``node``, a value found where a mapping of details belongs."""
    if type(node) is not dict and not isinstance(node, Mapping):
        return None if loose or not node else _INVALID
    return _parent(node, keys, loose) if keys else node


def _discredited(counts: dict[str, int], required: tuple[str, ...]) -> dict[str, int]:
    """One bad detail discredits them all: keep what is required, flagged as an estimate."""
    kept = _ZEROS.copy()
    for to in required:
        kept[to] = counts[to]
    kept["estimated"] = True
    return kept


_readers: dict[int, tuple[Shape, Reader]] = {}


def reader(shape: Shape) -> Reader:
    """The compiled reader of ``shape`` (compiled on first use, then kept)."""
    found = _readers.get(id(shape))
    if found is None or found[0] is not shape:
        found = _readers[id(shape)] = (shape, compile_shape(shape))
    return found[1]


def read_shape(shape: Shape, root: Mapping[str, Any]) -> TokenUsage | None:
    """Apply one usage shape's rows, then its rules, to the mapping at its root."""
    return reader(shape)(root)


def _claims(detect: tuple[str, ...], root: Mapping[str, Any]) -> bool:
    """``Shape.claims``, for a compiled shape."""
    if not detect:
        return True
    for key in detect:
        if key in root:
            return True
    return False


def _check_tables() -> None:
    """Fail at import, not mid-call, if the data names a rule or field we lack."""
    for shape in SHAPES.values():
        for name in shape.rules:
            if name not in RULES:
                raise ValueError(f"providers.json: shape {shape.name!r} names unknown rule {name!r}")
        for row in shape.rows:
            if row.to not in _FIELDS and row.to not in SCRATCH:
                raise ValueError(f"providers.json: shape {shape.name!r} fills unknown field {row.to!r}")


_check_tables()

_read_usage_metadata = reader(USAGE_METADATA_SHAPE)


#: ``RESPONSE_ROOTS`` compiled: each root with its shapes' detect keys, ``final`` and reader.
_RESPONSE_READERS = tuple(
    (root, tuple((s.detect, s.final, reader(s)) for s in shapes)) for root, shapes in RESPONSE_ROOTS
)


def usage_from_message(message: BaseMessage) -> TokenUsage | None:
    """Usage carried by one message or merged chunk, or ``None``."""
    um = getattr(message, "usage_metadata", None)
    if um:
        parsed = TokenUsage.from_usage_metadata(um)
        if parsed is not None:
            return parsed
    return TokenUsage.from_response_metadata(getattr(message, "response_metadata", None) or {})


def usage_from_result(result: LLMResult) -> tuple[TokenUsage | None, str | None]:
    """Usage and served model of a chat-model run, as ``on_llm_end`` sees it."""
    total: TokenUsage | None = None
    model: str | None = None
    for gens in result.generations:
        for gen in gens:
            message = getattr(gen, "message", None)
            if message is None:
                continue
            u = usage_from_message(message)
            if u is not None:
                total = u if total is None else total + u
            model = model or served_model(message)
    out = result.llm_output
    if type(out) is dict and not out:  # what BaseChatModel leaves: nothing to read (read once, below)
        if _EMPTY_READING is not None:  # (else it stands: ``with_details(total, None)`` is ``total``)
            total = _EMPTY_READING if total is None else with_details(total, _EMPTY_READING)
    elif isinstance(out, Mapping):
        if total is None:
            total = TokenUsage.from_response_metadata(out)
            model = model or name_at(out, LLM_OUTPUT_KEYS)
        else:
            total = with_details(total, TokenUsage.from_response_metadata(out))
    return total, model


#: An empty ``llm_output``'s reading (``None`` unless a table says otherwise), read once.
_EMPTY_READING = TokenUsage.from_response_metadata({})


#: The counts inside input and output that some integrations leave out of ``usage_metadata``.
_DETAILS = ("cache_read", "cache_write", "cache_write_1h", "input_audio", "output_audio", "reasoning")


def with_details(usage: TokenUsage, raw: TokenUsage | None) -> TokenUsage:
    """``usage``, with the details a second reading of the same call gives.

    ChatMistralAI's ``usage_metadata`` has totals only; its ``llm_output``
    keeps the provider's usage, cache reads included. The two are one call's
    usage only if their totals agree: otherwise ``usage`` stands as it is.
    """
    if raw is None or (raw.input_tokens, raw.output_tokens) != (usage.input_tokens, usage.output_tokens):
        return usage
    return usage._replace(**{f: max(getattr(usage, f), getattr(raw, f)) for f in _DETAILS})


def audio_unsplit(u: TokenUsage) -> TokenUsage:
    """A reading for a prompt with audio that does not say how much of it was audio.

    langchain-google-genai drops Gemini's per-modality counts
    (``usageMetadata.promptTokensDetails``), so the split is unknowable: every
    uncached input token is charged as audio (the dearer rate), flagged as an
    estimate. A reading that reports audio stands as it is.
    """
    audio = u.input_tokens - u.cache_read - u.cache_write
    if u.input_audio or u.cache_hit or audio <= 0:
        return u
    return u._replace(input_audio=audio, estimated=True)


def sum_messages(messages: Iterable[BaseMessage]) -> TokenUsage | None:
    """Sum usage over every chunk of a stream (usage may sit on any of them)."""
    total: TokenUsage | None = None
    for m in messages:
        u = usage_from_message(m)
        if u is not None:
            total = u if total is None else total + u
    return total


def served_model(message: BaseMessage) -> str | None:
    """The model name the provider says served the call."""
    return served_model_name(getattr(message, "response_metadata", None))
