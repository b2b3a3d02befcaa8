"""A fake chat model that reports usage the way real providers do.

LangChain's own fakes drop usage when streaming (``GenericFakeChatModel``) or
never report it (``FakeListChatModel``). ``FakeChatModel`` reports it on
``invoke`` and, like OpenAI with ``stream_usage``, on an extra final stream
chunk; it counts its calls so tests can prove a refused call never reached it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from .estimate import estimate_text_tokens

__all__ = ["FakeChatModel", "CallLog"]


class CallLog:
    """Counts provider calls; shared by every copy of one fake model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def hit(self) -> None:
        with self._lock:
            self.count += 1

    def __repr__(self) -> str:
        return f"CallLog(count={self.count})"


def _prompt_tokens(messages: Sequence[BaseMessage]) -> int:
    # A rough real-BPE-like count (4 chars a token) so the guard's estimate errs high.
    chars = sum(
        len(m.content) if isinstance(m.content, str) else len(json.dumps(m.content)) for m in messages
    )
    return 3 * len(messages) + max(1, chars // 4)


def _capped(out: int, cap: int | None) -> tuple[int, str]:
    """The output tokens a provider sends under ``cap``, and its finish reason (``length`` if cut)."""
    if cap and out > cap:
        return cap, "length"
    return out, "stop"


class FakeChatModel(BaseChatModel):
    """A provider-shaped fake: realistic ``usage_metadata``, model name, call count.

    ``responses`` are returned in turn. Usage: input tokens from the prompt
    (about 4 characters a token) unless ``input_tokens`` fixes it; output
    tokens from the reply unless ``output_tokens`` fixes it; plus optional
    cache and reasoning details. With tools bound and ``tool_args`` set, it
    calls the first tool with those arguments (so structured output works),
    and answers in text once the last message is a tool result (so an agent
    loop ends).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "gpt-4o-mini"
    provider: str = "openai"
    responses: list[str] = Field(default_factory=lambda: ["Hello! How can I help you today?"])
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    max_tokens: int | None = None
    tool_args: dict[str, Any] | None = None
    usage_on_stream: bool = True
    usage_on_invoke: bool = True
    latency: float = 0.0
    fail_with: Callable[[], BaseException] | None = None
    calls: CallLog = Field(default_factory=CallLog)
    _cycle: Iterator[int] = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._cycle = itertools.cycle(range(len(self.responses) or 1))

    @property
    def _llm_type(self) -> str:
        return "budgetguard-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=self.provider, ls_model_name=self.model_name, ls_model_type="chat"
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens:
            params["ls_max_tokens"] = max_tokens
        return params

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        params = super()._get_invocation_params(stop=stop, **kwargs)
        params["model"] = self.model_name
        if self.max_tokens is not None:
            params.setdefault("max_tokens", self.max_tokens)
        return params

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        # Overridden only so RunnableWithFallbacks can resolve the return type
        # (it evaluates the hints in the defining module, and core's lacks Runnable).
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    # -------------------------------------------------------------- behaviour

    def _reply(self, messages: list[BaseMessage], **kwargs: Any) -> tuple[AIMessage, UsageMetadata]:
        self.calls.hit()
        if self.fail_with is not None:
            raise self.fail_with()
        text = self.responses[next(self._cycle)] if self.responses else ""
        tool_calls = []
        tools = kwargs.get("tools")
        answered = bool(messages) and isinstance(messages[-1], ToolMessage)
        if tools and self.tool_args is not None and not answered:
            name = tools[0]["function"]["name"]
            tool_calls = [
                {"name": name, "args": dict(self.tool_args), "id": "call_fake_1", "type": "tool_call"}
            ]
            text = ""
        inp = self.input_tokens if self.input_tokens is not None else _prompt_tokens(messages)
        out = self.output_tokens
        if out is None:
            out = estimate_text_tokens(text or json.dumps(self.tool_args)) // 2 + 1
        out, finish = _capped(out, kwargs.get("max_tokens", self.max_tokens))
        usage = cast(
            UsageMetadata,
            {
                "input_tokens": inp,
                "output_tokens": out + self.reasoning_tokens,
                "total_tokens": inp + out + self.reasoning_tokens,
            },
        )
        if self.cache_read_tokens or self.cache_write_tokens:
            usage["input_token_details"] = {
                "cache_read": self.cache_read_tokens,
                "cache_creation": self.cache_write_tokens,
            }
        if self.reasoning_tokens:
            usage["output_token_details"] = {"reasoning": self.reasoning_tokens}
        msg = AIMessage(
            content=text,
            tool_calls=tool_calls,
            response_metadata={"model_name": self.model_name, "finish_reason": finish},
        )
        return msg, usage

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        msg, usage = self._reply(messages, **kwargs)
        if self.usage_on_invoke:
            msg.usage_metadata = usage
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        msg, usage = self._reply(messages, **kwargs)
        if self.usage_on_invoke:
            msg.usage_metadata = usage
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _chunks(self, messages: list[BaseMessage], **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        msg, usage = self._reply(messages, **kwargs)
        text = msg.content if isinstance(msg.content, str) else ""
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)] or [""]
        for piece in pieces:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=0)
                    for c in msg.tool_calls
                ],
                response_metadata=dict(msg.response_metadata),
            )
        )
        if self.usage_on_stream:  # OpenAI-style: usage on an extra chunk after finish_reason
            yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, **kwargs):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, **kwargs):
            if self.latency:
                await asyncio.sleep(0)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
