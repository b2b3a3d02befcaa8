"""Token usage: one normalised record, read from whatever a provider reported.

LangChain's ``usage_metadata`` is read first; the provider shapes found in
``response_metadata`` are the fallback. Anything missing or impossible yields
``None`` so that the caller charges an estimate instead of a silent zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, cast

from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import LLMResult

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
        if not isinstance(usage, Mapping):
            return None
        get = usage.get
        inp, out = get("input_tokens"), get("output_tokens")
        if (
            type(inp) is not int
            or type(out) is not int
            or not (0 <= inp <= MAX_TOKENS and 0 <= out <= MAX_TOKENS)
        ):
            return None
        idet, odet = get("input_token_details"), get("output_token_details")
        cache_read = cache_write = e5 = e1 = audio_in = reasoning = audio_out = 0
        if idet:
            if not isinstance(idet, Mapping):
                return None
            vals = [_detail(idet, k) for k in _IN_KEYS]
            if None in vals:
                return None
            cache_read, cache_write, e5, e1, audio_in = vals  # type: ignore[assignment]
            cache_write = max(cache_write, e5 + e1)
        if odet:
            if not isinstance(odet, Mapping):
                return None
            reasoning_v, audio_out_v = _detail(odet, "reasoning"), _detail(odet, "audio")
            if reasoning_v is None or audio_out_v is None:
                return None
            reasoning, audio_out = reasoning_v, audio_out_v
        u = cls(
            inp,
            out,
            cache_read,
            cache_write,
            e1,
            audio_in,
            audio_out,
            reasoning,
            False,
            get("total_cost") == 0,
        )
        if cache_read + cache_write + audio_in > inp or reasoning + audio_out > out:
            return _consistent(u)
        return u

    @classmethod
    def from_response_metadata(cls, meta: Mapping[str, Any]) -> TokenUsage | None:
        """Read the provider shapes LangChain leaves in ``response_metadata``."""
        if not isinstance(meta, Mapping):
            return None
        for key in ("token_usage", "usage"):
            raw = meta.get(key)
            if isinstance(raw, Mapping):
                parsed = _provider_usage(raw)
                if parsed is not None:
                    return parsed
        metrics = meta.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, Mapping):
            return _pair(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))
        if "prompt_eval_count" in meta or "eval_count" in meta:  # Ollama
            return _pair(meta.get("prompt_eval_count"), meta.get("eval_count"))
        return None


_IN_KEYS = ("cache_read", "cache_creation", "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "audio")


def _count(value: Any) -> int | None:
    if type(value) is not int or value < 0 or value > MAX_TOKENS:
        return None
    return value


def _detail(details: Mapping[str, Any], key: str) -> int | None:
    value = details.get(key)
    return 0 if value is None else _count(value)


def _pair(inp: Any, out: Any) -> TokenUsage | None:
    i, o = _count(inp), _count(out)
    if i is None or o is None:
        return None
    return TokenUsage(input_tokens=i, output_tokens=o)


def _consistent(u: TokenUsage) -> TokenUsage:
    """Repair counts that contradict each other, upward, and flag the repair."""
    cached = u.cache_read + u.cache_write
    if cached + u.input_audio > u.input_tokens:
        # Some paths report input *excluding* cache; charge the larger reading.
        u = u._replace(input_tokens=u.input_tokens + cached + u.input_audio, estimated=True)
    if u.reasoning + u.output_audio > u.output_tokens:
        u = u._replace(output_tokens=u.output_tokens + u.reasoning + u.output_audio, estimated=True)
    return u


def _provider_usage(raw: Mapping[str, Any]) -> TokenUsage | None:
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI and compatibles
        base = _pair(raw.get("prompt_tokens"), raw.get("completion_tokens"))
        if base is None:
            return None
        pdet = raw.get("prompt_tokens_details") or {}
        cdet = raw.get("completion_tokens_details") or {}
        if not isinstance(pdet, Mapping) or not isinstance(cdet, Mapping):
            return base.flagged()
        vals = [_detail(pdet, "cached_tokens"), _detail(pdet, "audio_tokens")]
        vals += [_detail(cdet, "reasoning_tokens"), _detail(cdet, "audio_tokens")]
        if any(v is None for v in vals):
            return base.flagged()
        c_read, a_in, reas, a_out = (v or 0 for v in vals)
        return _consistent(
            base._replace(cache_read=c_read, input_audio=a_in, reasoning=reas, output_audio=a_out)
        )
    if "input_tokens" in raw or "output_tokens" in raw:  # Anthropic (input excludes cache)
        base = _pair(raw.get("input_tokens"), raw.get("output_tokens"))
        if base is None:
            return None
        cr = _detail(raw, "cache_read_input_tokens")
        cw = _detail(raw, "cache_creation_input_tokens")
        creation = raw.get("cache_creation")
        e1: int | None = 0
        if isinstance(creation, Mapping):
            e1 = _detail(creation, "ephemeral_1h_input_tokens")
        if cr is None or cw is None or e1 is None:
            return base.flagged()
        return base._replace(
            input_tokens=base.input_tokens + cr + cw,
            cache_read=cr,
            cache_write=cw,
            cache_write_1h=min(e1, cw),
        )
    if "inputTokens" in raw or "outputTokens" in raw:  # Bedrock Converse
        base = _pair(raw.get("inputTokens"), raw.get("outputTokens"))
        if base is None:
            return None
        b_read = _detail(raw, "cacheReadInputTokens")
        b_write = _detail(raw, "cacheWriteInputTokens")
        if b_read is None or b_write is None:
            return base.flagged()
        return base._replace(
            input_tokens=base.input_tokens + b_read + b_write, cache_read=b_read, cache_write=b_write
        )
    return None


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
    if total is None and isinstance(result.llm_output, Mapping):
        total = TokenUsage.from_response_metadata(result.llm_output)
        model = model or _str_or_none(result.llm_output.get("model_name"))
    return total, model


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
    meta = getattr(message, "response_metadata", None) or {}
    for key in ("model_name", "model", "model_id"):
        name = _str_or_none(meta.get(key))
        if name:
            return name
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
