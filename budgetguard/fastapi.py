"""FastAPI (and Starlette) plumbing: refusals as HTTP answers, metadata from requests, safe streams.

Needs the ``fastapi`` extra. ``import budgetguard`` never imports this module.

* ``add_exception_handlers(app)``: ``BudgetExceeded`` is a 429 with ``Retry-After``,
  ``MissingScope`` a 400, ``BudgetStoreUnavailable`` a 503; each body names the problem,
  money as strings (FastAPI's encoder would turn a ``Decimal`` into a float).
* ``budget_metadata(...)``: a dependency that builds the guard's metadata from headers
  or from an auth dependency's result.
* ``stream_response(llm.astream(...))``: pulls the first chunk *before* answering, so a
  refused call is a 429 and not a 200 whose body breaks.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

try:
    from fastapi import Depends
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "budgetguard.fastapi needs FastAPI: pip install 'langchain-budgetguard[fastapi]'"
    ) from e

from .errors import BudgetError, BudgetExceeded, BudgetStoreUnavailable, ConfigError, MissingScope
from .limits import ScopeTemplate
from .status import BudgetStatus, JSONValue, json_quantity

if TYPE_CHECKING:
    from .guard import BudgetGuard

__all__ = [
    "MissingHeader",
    "add_exception_handlers",
    "budget_metadata",
    "chunk_text",
    "error_response",
    "status_response",
    "stream_response",
]

#: A metadata source: a header name, or a function of the auth dependency's result.
Source = str | Callable[[Any], Any]


class MissingHeader(MissingScope):
    """A scope's metadata comes from a request header that the request did not send (a 400)."""

    def __init__(self, template: str, key: str, header: str) -> None:
        super().__init__(template, key, f"comes from the {header!r} header")
        self.header = header
        self._msg = (
            f"Scope {template!r} needs metadata[{key!r}] from the {header!r} header, "
            f"which the request did not send (or sent empty). Send the {header!r} header."
        )


# ---------------------------------------------------------------- error answers


def error_response(exc: BudgetError) -> JSONResponse:
    """The HTTP answer for a budgetguard error (what ``add_exception_handlers`` sends)."""
    if isinstance(exc, BudgetExceeded):
        return _refusal(exc)
    if isinstance(exc, MissingScope):
        body: dict[str, JSONValue] = {
            "error": "missing_scope",
            "detail": str(exc),
            "template": exc.template,
            "key": exc.key,
        }
        if isinstance(exc, MissingHeader):
            body["header"] = exc.header
        return JSONResponse(body, status_code=400)
    if isinstance(exc, BudgetStoreUnavailable):
        body = {
            "error": "budget_store_unavailable",
            "detail": str(exc),
            "store": exc.store,
            "operation": exc.operation,
        }
        return JSONResponse(body, status_code=503)
    return JSONResponse({"error": "budget_error", "detail": str(exc)}, status_code=500)


def _refusal(exc: BudgetExceeded) -> JSONResponse:
    q = exc.quantity
    retry = None if exc.retry_after is None else math.ceil(exc.retry_after)
    body: dict[str, JSONValue] = {
        "error": "budget_exceeded",
        "detail": exc.reason(),
        "scope": exc.scope,
        "window": exc.window,
        "quantity": q,
        "cap": json_quantity(q, exc.limit.value(q)),
        "spent": json_quantity(q, exc.spent),
        "reserved": json_quantity(q, exc.reserved),
        "requested": json_quantity(q, exc.requested),
        "remaining": json_quantity(q, exc.remaining),
        "resets_at": None if exc.resets_at is None else exc.resets_at.isoformat(),
        "retry_after": retry,
        "never_fits": exc.never_fits,
        "model": exc.model,
        "candidates": [{"role": c.role, "model": c.model, "reason": c.reason} for c in exc.candidates],
    }
    # No Retry-After when waiting cannot help (a lifetime limit, a call that never fits).
    headers = None if retry is None else {"Retry-After": str(retry)}
    return JSONResponse(body, status_code=429, headers=headers)


async def _handle(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, BudgetError):  # pragma: no cover - registered for budgetguard errors only
        raise exc
    return error_response(exc)


def add_exception_handlers(app: Starlette) -> None:
    """Answer ``BudgetExceeded`` with 429 (+ ``Retry-After``), ``MissingScope`` with 400 and
    ``BudgetStoreUnavailable`` with 503, wherever the app raises them (endpoints, dependencies)."""
    for cls in (BudgetExceeded, MissingScope, BudgetStoreUnavailable):
        app.add_exception_handler(cls, _handle)


def status_response(status: BudgetStatus, status_code: int = 200) -> JSONResponse:
    """``status.to_dict()`` as JSON: money as strings (returning the dataclass would give floats)."""
    return JSONResponse(status.to_dict(), status_code=status_code)


# ---------------------------------------------------------------- metadata from the request


def budget_metadata(
    guard: BudgetGuard | None = None,
    *,
    auth: Callable[..., Any] | None = None,
    **sources: Source,
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A FastAPI dependency giving the guard's metadata for this request.

    Each keyword is a metadata key; its value is a header name (``user_id="x-user-id"``) or a
    function of ``auth``'s result (``auth=current_user, user_id=lambda u: u.id``; ``auth`` is
    itself a dependency). A missing or empty value raises ``MissingScope`` (a 400 with
    ``add_exception_handlers``) naming the scope that needs it, taken from ``guard``'s limits.
    """
    if not sources:
        raise ConfigError("budget_metadata() needs at least one key, e.g. user_id='x-user-id'")
    for key, src in sources.items():
        if isinstance(src, str) and not src.strip():
            raise ConfigError(f"budget_metadata(): the header for {key!r} is empty")
        if not isinstance(src, str) and not callable(src):
            raise ConfigError(
                f"budget_metadata(): {key}= must be a header name or a function of the auth result, "
                f"got {type(src).__name__}"
            )
        if callable(src) and auth is None:
            raise ConfigError(f"budget_metadata(): {key}= is a function of the auth result; pass auth=")
    templates = {key: _template_for(guard, key) for key in sources}

    async def dependency(request: Request, auth_result: Any = None) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        for key, src in sources.items():
            if isinstance(src, str):
                value: Any = request.headers.get(src)
                if value is None or not value.strip():
                    raise MissingHeader(templates[key], key, src)
            else:
                value = src(auth_result)
                if value is None:
                    raise MissingScope(templates[key], key, "is None in the auth result")
            meta[key] = value
        return meta

    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    if auth is not None:
        params.append(
            inspect.Parameter(
                "auth_result", inspect.Parameter.KEYWORD_ONLY, default=Depends(auth), annotation=Any
            )
        )
    # FastAPI reads the signature: the auth dependency, when given, is a sub-dependency.
    dependency.__signature__ = inspect.Signature(params, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    return dependency


def _template_for(guard: BudgetGuard | None, key: str) -> str:
    """The first of the guard's scope templates that needs ``key`` (for the error's message)."""
    for lim in guard.limits if guard is not None else ():
        if lim.scope is not None and key in ScopeTemplate.parse(lim.scope).fields:
            return lim.scope
    return f"{{{key}}}"


# ---------------------------------------------------------------- streaming


def chunk_text(chunk: Any) -> str | bytes:
    """A stream chunk as body text: a message chunk's text, a string or bytes as is, else JSON."""
    if isinstance(chunk, (str, bytes)):
        return chunk
    text = getattr(chunk, "text", None)
    if text is not None:
        return str(text() if callable(text) and not isinstance(text, str) else text)
    return json.dumps(chunk, default=str)


async def stream_response(
    stream: AsyncIterator[Any] | Iterator[Any],
    *,
    encode: Callable[[Any], str | bytes] = chunk_text,
    media_type: str = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """A ``StreamingResponse`` over a model stream whose first chunk has already arrived.

    ``StreamingResponse`` sends its 200 before the body runs, so a refusal raised by the first
    pull would break the body instead. Here it is raised from this call, before any answer:
    with ``add_exception_handlers`` it becomes a 429. ``stream`` is ``llm.astream(...)`` or
    ``llm.stream(...)`` (pulled in a worker thread, in one context throughout). The stream is
    closed when the body ends or the client goes away, so the guard settles it.
    """
    if isinstance(stream, AsyncIterator):
        return await _async_response(stream, encode, media_type, headers)
    return await _sync_response(stream, encode, media_type, headers)


_DONE = object()


async def _async_response(
    it: AsyncIterator[Any],
    encode: Callable[[Any], str | bytes],
    media_type: str,
    headers: Mapping[str, str] | None,
) -> StreamingResponse:
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = _DONE
    except BaseException:
        await _aclose(it)
        raise

    async def body() -> AsyncIterator[str | bytes]:
        try:
            if first is not _DONE:
                if out := encode(first):
                    yield out
                async for chunk in it:
                    if out := encode(chunk):
                        yield out
        finally:
            await _aclose(it)

    return StreamingResponse(body(), media_type=media_type, headers=headers)


async def _sync_response(
    it: Iterator[Any],
    encode: Callable[[Any], str | bytes],
    media_type: str,
    headers: Mapping[str, str] | None,
) -> StreamingResponse:
    # One context for every pull: what the stream sets in its context stays there between chunks.
    ctx = contextvars.copy_context()

    def step() -> Any:
        return next(it, _DONE)

    async def pull() -> Any:
        return await run_in_threadpool(ctx.run, step)

    async def close() -> None:
        closer = getattr(it, "close", None)
        if callable(closer):
            await run_in_threadpool(ctx.run, closer)

    try:
        first = await pull()
    except BaseException:
        await close()
        raise

    async def body() -> AsyncIterator[str | bytes]:
        try:
            chunk = first
            while chunk is not _DONE:
                if out := encode(chunk):
                    yield out
                chunk = await pull()
        finally:
            await close()

    return StreamingResponse(body(), media_type=media_type, headers=headers)


async def _aclose(it: AsyncIterator[Any]) -> None:
    closer = getattr(it, "aclose", None)
    if callable(closer):
        await closer()
