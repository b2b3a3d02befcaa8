"""Input estimates that reuse what the provider already counted.

A prompt that extends one the provider reported on (a conversation thread,
an agent loop, a retry) is estimated as that prefix's reported input, plus
the reported output of its reply when the reply is the next message, plus an
upper bound (the guard's counter) for only the new messages. The estimate is
the smaller of that and the counter's bound for the whole prompt.

Prompts are fingerprinted by a chain of hashes, one link per message (its
type, content, tool calls, name, tool call id and extra fields), started from
a hash of the model and every invocation parameter that can change the input
(tools, response format, ...: all but the sampling and output-cap ones), so a
reported input, which includes the tools and the system prompt, is reused
only for the same model, tools and parameters. The longest known prefix of
the message list is used; with none known, the counter's bound. The
fingerprints live in a per-engine LRU of ``capacity`` entries, under a lock.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from ..estimate import PER_CALL, PER_MESSAGE, estimate_input_tokens
from ..tokencount import Counter, bytes_counter
from ..usage import TokenUsage

__all__ = ["DEFAULT_CAPACITY", "InputEstimator", "reply_bound"]

DEFAULT_CAPACITY = 1024
#: Invocation parameters that never change a prompt's input tokens.
_NOT_INPUT = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "num_predict",
        "maxTokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "seed",
        "n",
        "stream",
        "stream_usage",
        "stream_options",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "top_logprobs",
        "timeout",
        "request_timeout",
        "max_retries",
    }
)


def _json(part: object) -> bytes:
    return json.dumps(part, sort_keys=True, default=repr, ensure_ascii=False).encode("utf-8", "surrogatepass")


_ROOTS: dict[tuple[object, ...], bytes] = {}  # the params of most calls repeat: their digest, by value
#: the same, keyed by the params as given (order, values and their types): no sort, no copy
_SEEN: dict[tuple[object, ...], bytes] = {}


def _root(params: Mapping[str, Any], model: str | None) -> bytes:
    try:  # the common case: these very params (same order, values and types) were seen before
        seen: tuple[object, ...] | None = (model, tuple(params.items()), tuple(map(type, params.values())))
        digest = _SEEN.get(seen)  # type: ignore[arg-type]
    except TypeError:  # an unhashable value (a list of tools...)
        seen = digest = None
    if digest is not None:
        return digest
    kept = {k: v for k, v in params.items() if k not in _NOT_INPUT}
    try:
        key: tuple[object, ...] | None = (model, *sorted((k, type(v).__name__, v) for k, v in kept.items()))
        digest = _ROOTS.get(key)  # type: ignore[arg-type]
    except TypeError:  # an unhashable value (a list of tools...): digest it each time
        key = digest = None
    if digest is None:
        digest = hashlib.blake2b(b"budgetguard-prefix-v1" + _json([model, kept]), digest_size=16).digest()
        if key is not None:
            if len(_ROOTS) >= 4096:
                _ROOTS.clear()
            _ROOTS[key] = digest
    if seen is not None:
        if len(_SEEN) >= 4096:
            _SEEN.clear()
        _SEEN[seen] = digest
    return digest


_KINDS: dict[str, bytes] = {}  # a message type's name as hashed ("ai" for "AIMessageChunk")


def _kind(kind: str) -> bytes:
    name = kind.removesuffix("MessageChunk").lower() if kind.endswith("MessageChunk") else kind
    encoded = _KINDS[kind] = name.encode()
    return encoded


#: plain text links already hashed, by (parent, kind, text): a thread's earlier messages recur each turn
_LINKS: dict[tuple[bytes, bytes, str], bytes] = {}


def _link(parent: bytes, m: BaseMessage) -> bytes:
    kind = _KINDS.get(m.type) or _kind(m.type)  # a streamed reply is a chunk: the same message once sent back
    content = m.content
    calls = m.tool_calls if isinstance(m, AIMessage) else None
    call_id = m.tool_call_id if isinstance(m, ToolMessage) else None
    extra = calls or m.name or call_id or m.additional_kwargs
    if isinstance(content, str) and not extra and len(content) <= 4096:  # the common case: a dict hit
        key = (parent, kind, content)
        digest = _LINKS.get(key)
        if digest is None:
            digest = _text_link(parent, kind, content).digest()
            if len(_LINKS) >= 1024:
                _LINKS.clear()
            _LINKS[key] = digest
        return digest
    h = _text_link(parent, kind, content) if isinstance(content, str) else None
    if h is None:
        h = hashlib.blake2b(parent + kind + b"\0j" + _json(content), digest_size=16)
    if extra:
        h.update(b"\0x")
        h.update(_json((calls, m.name, call_id, m.additional_kwargs)))
    return h.digest()


def _text_link(parent: bytes, kind: bytes, content: str) -> Any:
    """A text message's link, hashed without a JSON dump."""
    return hashlib.blake2b(parent + kind + b"\0s" + content.encode("utf-8", "surrogatepass"), digest_size=16)


def reply_bound(output_tokens: int) -> int:
    """An upper bound on a reply's tokens once it is sent back as the next prompt's assistant message.

    The reported output (reasoning included, which is not sent back) plus
    the message's format margin, and an eighth for a re-tokenization of the
    sampled text that may split it differently.
    """
    return output_tokens + output_tokens // 8 + PER_MESSAGE


class InputEstimator:
    """The guard's counter, and the prefixes the provider has counted (thread-safe, bounded)."""

    __slots__ = ("_known", "_lock", "capacity", "counter")

    def __init__(self, counter: Counter, capacity: int = DEFAULT_CAPACITY) -> None:
        self.counter = counter
        self.capacity = capacity
        self._known: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._known)

    def estimate(
        self,
        messages: Sequence[BaseMessage],
        params: Mapping[str, Any],
        model: str | None,
        root: bytes | None = None,
    ) -> tuple[int, bytes]:
        """An upper bound on the prompt's input tokens, and its fingerprint (for ``learn``).

        ``root``: ``_root(params, model)``, if the caller has it already (``engine/shapes.py``)."""
        tools = params.get("tools") or params.get("functions")
        counter = self.counter
        bound = (  # bytes_counter, the default, called without its own frame
            estimate_input_tokens(messages, tools)
            if counter is bytes_counter
            else counter(messages, tools, model)
        )
        chain = [root or _root(params, model)]
        for m in messages:
            chain.append(_link(chain[-1], m))
        with self._lock:
            for i in range(len(chain) - 1, 0, -1):
                known = self._known.get(chain[i])
                if known is not None:
                    self._known.move_to_end(chain[i])
                    break
            else:
                return bound, chain[-1]
        if i == len(messages) and counter is bytes_counter:  # the whole prompt is known
            new = PER_CALL  # (what bytes_counter gives for no messages, without a call)
        else:
            new = counter(messages[i:], None, model)  # their own call overhead: a margin
        return min(bound, known + new), chain[-1]

    def learn(self, key: bytes | None, usage: TokenUsage, response: LLMResult) -> None:
        """Remember a reported input for a prompt, and (input + reply) for the prompt plus its reply."""
        if key is None or usage.estimated or usage.cache_hit or usage.input_tokens <= 0:
            return
        reply = _reply(response)
        after = None if reply is None else _link(key, reply)  # (hashed before the lock is taken)
        known = self._known
        with self._lock:
            known[key] = usage.input_tokens
            known.move_to_end(key)
            if after is not None:
                known[after] = usage.input_tokens + reply_bound(usage.output_tokens)
                known.move_to_end(after)
            while len(known) > self.capacity:
                known.popitem(last=False)


def _reply(response: LLMResult) -> BaseMessage | None:
    """The one reply a call produced; ``None`` for several (``n`` > 1) or none."""
    batches = response.generations
    if len(batches) == 1:  # the common case, without flattening
        gens = batches[0]
        return gens[0].message if len(gens) == 1 and isinstance(gens[0], ChatGeneration) else None
    gens = [g for batch in batches for g in batch]
    if len(gens) == 1 and isinstance(gens[0], ChatGeneration):
        return gens[0].message
    return None
