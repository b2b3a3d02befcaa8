"""The hot path's script calls packed once and sent on a pooled connection (sync and asyncio).

``redis-py`` encodes every argument of every command anew (two dozen per reserve), and its
``execute_command`` adds a layer of bookkeeping per call. The reserve and settle of one plan
repeat the same keys and most of the same arguments, so :class:`Packer` keeps those as
ready RESP bytes (cached by the caller per counters tuple) and only the few per-call values
(time, lease id, amounts, note) are encoded per call.

:func:`send` / :func:`asend` then do what ``execute_command`` does for one command, and no
more: a connection from the client's pool, the connection's own retry policy (``Retry``,
which disconnects on a connection error before any retry), ``send_packed_command`` and
``read_response`` (whose error replies raise the same exceptions as before, so the store's
error mapping, retries and spooling are unchanged), a reconnect if the connection asks for
one, and the connection back to the pool. A ``NOSCRIPT`` reply (the server lost the script:
a restart, a failover, ``SCRIPT FLUSH``) loads it and sends the call again, as redis-py's
``Script`` does.

Only plain ``redis.Redis`` / ``redis.asyncio.Redis`` clients take this path (Sentinel ones
too: routing lives in their pool); :func:`plain` says whether one may. Cluster clients, a
single-connection client, and a client whose ``execute_command`` was wrapped (tracing,
tests that count commands) keep the ``Script`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ...reservation import CounterRef, CounterSpec
from ..base import ReserveRequest, SettleRequest
from . import codec

__all__ = ["Hot", "Packer", "asend", "bulk", "plain", "send"]


def _own(method: Any) -> Any:
    """redis-py's own ``execute_command``; ``None`` if something (e.g. a tracing library, through
    ``wrapt``) already wrapped it at class level: then every call keeps that path."""
    return None if hasattr(method, "__wrapped__") else method


_SYNC = _own(redis.Redis.execute_command)
_ASYNC = _own(redis.asyncio.Redis.execute_command)


def _version() -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in redis.__version__.split(".")[:2])
    except ValueError:
        return (99,)


#: redis-py before 5.3 wants a command name for ``get_connection``; later ones warn if given one.
_POOL_ARGS: tuple[str, ...] = ("EVALSHA",) if _version() < (5, 3) else ()


def _wrapper_codes() -> tuple[Any, ...]:
    """The code of redis-py's ``deprecated_args`` wrappers (sync and async); none before it had one."""
    try:
        from redis.utils import deprecated_args
    except ImportError:
        return ()

    async def probe(self: Any) -> None: ...

    wrap = deprecated_args(args_to_warn=["*"], reason="", version="")
    return tuple(w.__code__ for w in (wrap(lambda self: None), wrap(probe)) if hasattr(w, "__code__"))


_WRAPPERS = _wrapper_codes()
_GETTERS: dict[type, Callable[[Any], Any]] = {}


def _getter(pool: Any) -> Callable[[Any], Any]:
    """``get_connection`` of ``pool``'s class, past redis-py's ``deprecated_args`` wrapper: called
    without arguments that only calls through, yet costs a tenth of a pool checkout. Any other
    wrapper (tracing, tests) is kept."""
    kind = type(pool)
    getter = _GETTERS.get(kind)
    if getter is None:
        method: Callable[[Any], Any] = kind.get_connection
        inner = getattr(method, "__wrapped__", None)
        if inner is not None and not _POOL_ARGS and getattr(method, "__code__", None) in _WRAPPERS:
            method = inner
        getter = _GETTERS[kind] = method
    return getter


def plain(client: Any) -> bool:
    """Whether ``client`` is a plain pooled client nobody instrumented (checked per call: cheap)."""
    if client is None or "execute_command" in vars(client):
        return False
    kind = type(client).execute_command
    if kind is _SYNC:
        return getattr(client, "connection", None) is None  # not single_connection_client
    if kind is _ASYNC:
        return not getattr(client, "single_connection_client", True)
    return False


def bulk(values: Sequence[bytes]) -> bytes:
    """RESP bulk strings, back to back."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in values)


#: Every ASCII character: an encoding that writes these as ASCII does lets ASCII text go as is.
_ASCII = bytes(range(128)).decode("ascii")


class Packer:
    """Encodes arguments as the client's encoder does: ``str`` by its encoding, ``int`` as decimal
    (exactly those two inline, anything else by the encoder itself)."""

    __slots__ = ("ascii", "encoder", "encoding", "errors")

    def __init__(self, client: Any) -> None:
        self.encoder = client.get_encoder()
        self.encoding: str = self.encoder.encoding
        self.errors: str = self.encoder.encoding_errors
        try:  # utf-8, latin-1, ascii...: then ASCII text needs no per-value encode
            self.ascii = _ASCII.encode(self.encoding, self.errors) == _ASCII.encode("ascii")
        except (LookupError, UnicodeError):
            self.ascii = False

    def encode(self, v: Any) -> bytes:
        t = type(v)
        if t is str:
            return cast(bytes, v.encode(self.encoding, self.errors))
        if t is int:
            return b"%d" % v
        return cast(bytes, self.encoder.encode(v))

    def args(self, values: Sequence[Any]) -> bytes:
        """``values`` as RESP bulk strings, back to back.

        The per-call values are ASCII ``str`` and ``int`` (time, lease id, amounts): those are
        formatted as one text and encoded once, which is a third cheaper than bytes per value.
        """
        if self.ascii:
            text = []
            for v in values:
                t = type(v)
                if t is int:
                    v = str(v)
                elif t is not str or not v.isascii():
                    break
                text.append(f"${len(v)}\r\n{v}\r\n")
            else:
                return "".join(text).encode("ascii")
        out = []
        encoding, errors = self.encoding, self.errors
        for v in values:
            t = type(v)
            b = v.encode(encoding, errors) if t is str else b"%d" % v if t is int else self.encode(v)
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)


Bases = Callable[[Sequence[str]], tuple[list[str], list[int]]]
_Cached = tuple[int, bytes, bytes]  # ARGV count besides the per-call ones, EVALSHA..KEYS, constant ARGV


class Hot:
    """The packed reserve and settle calls of one client, their constant parts cached per plan.

    Byte for byte the command redis-py would send for ``codec``'s argument lists (the tests
    compare the two).
    """

    def __init__(
        self, client: Any, bases: Bases, tombstone_ttl: int, grace: int, cap: int, ledger: tuple[int, int]
    ) -> None:
        self.packer = Packer(client)
        self._bases = bases
        self._ttl, self._grace, self._cap, self._ledger = tombstone_ttl, grace, cap, ledger
        self._reserves: dict[tuple[CounterSpec, ...], _Cached] = {}
        self._settles: dict[tuple[tuple[CounterRef, ...], str], _Cached] = {}

    def reserve(self, sha: str, req: ReserveRequest, now: str) -> bytes:
        """EVALSHA reserve: the cached keys and counters, this request's time, lease and amount."""
        c = self._reserves.get(req.counters)
        if c is None:
            bases, index = self._bases([s.ref.scope for s in req.counters])
            tail = codec.reserve_tail(req.counters, index, self._ttl, self._grace, self._ledger)
            c = _cache(self._reserves, req.counters, self._prefix(sha, bases, tail))
        n, pre, post = c
        head = codec.reserve_head(req, now)
        return b"*%d\r\n" % (n + len(head)) + pre + self.packer.args(head) + post

    def settle(self, sha: str, req: SettleRequest, now: str, mode: codec.SettleMode = "settle") -> bytes:
        """EVALSHA settle: this request's time, lease, amount and flags, the cached rest, the note."""
        key = (req.counters, mode)
        c = self._settles.get(key)
        if c is None:
            bases, index = self._bases([r.scope for r in req.counters] or ["global"])
            mid = codec.settle_middle(req.counters, mode, index, self._ttl, self._grace, self._cap)
            c = _cache(self._settles, key, self._prefix(sha, bases, [*mid, *self._ledger]))
        n, pre, mid_bytes = c
        head = codec.settle_head(req, now)
        note = codec.settle_note(req) if self._ledger else []
        tail = mid_bytes + self.packer.args(note)
        return b"*%d\r\n" % (n + len(head) + len(note)) + pre + self.packer.args(head) + tail

    def _prefix(self, sha: str, keys: Sequence[str], constant: Sequence[Any]) -> tuple[int, bytes, bytes]:
        parts = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *(self.packer.encode(k) for k in keys)]
        return len(parts) + len(constant), bulk(parts), self.packer.args(constant)


def _cache(cache: dict[Any, _Cached], key: Any, value: _Cached) -> _Cached:
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = value
    return value


def send(client: Any, script: Any, packed: bytes) -> Any:
    """One packed EVALSHA of ``script`` on a pooled connection of ``client``; its reply."""
    try:
        return _send(client, packed)
    except NoScriptError:
        script.sha = client.script_load(script.script)  # the same sha: packed still names it
        return _send(client, packed)


def _send(client: Any, packed: bytes) -> Any:
    pool = client.connection_pool
    conn = _getter(pool)(pool, *_POOL_ARGS)
    try:

        def do() -> Any:
            conn.send_packed_command([packed])
            return conn.read_response()

        return conn.retry.call_with_retry(do, lambda _e: conn.disconnect())
    finally:
        try:
            reconnect = getattr(conn, "should_reconnect", None)
            if reconnect is not None and reconnect():
                conn.disconnect()
                conn.connect()
        finally:
            pool.release(conn)


async def asend(client: Any, script: Any, packed: bytes) -> Any:
    """The asyncio twin of :func:`send`."""
    try:
        return await _asend(client, packed)
    except NoScriptError:
        script.sha = await client.script_load(script.script)
        return await _asend(client, packed)


async def _asend(client: Any, packed: bytes) -> Any:
    pool = client.connection_pool
    conn = await _getter(pool)(pool, *_POOL_ARGS)
    try:

        async def do() -> Any:
            await conn.send_packed_command([packed])
            return await conn.read_response()

        async def fail(_e: BaseException) -> None:
            await conn.disconnect()

        return await conn.retry.call_with_retry(do, fail)
    finally:
        await pool.release(conn)
