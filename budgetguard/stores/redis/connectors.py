"""One connector per Redis topology, each declaring the URL schemes it serves.

This module is light on purpose: the registry imports it with ``import
budgetguard`` to know the schemes, so redis-py is imported only inside the
methods, when a store is really built.

Socket connect/read timeouts are a third of the store's ``timeout`` so that
our retries still fit in it; redis-py's own retries are off (ours bound them).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import SplitResult, parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigError
from ..base import Connector

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = [
    "Clients",
    "ClusterConnector",
    "RedisConnector",
    "SentinelConnector",
    "SingleConnector",
    "Target",
    "store_options",
]

_BAD_DB = "bad Redis database {!r} in the URL; "


class Clients(NamedTuple):
    """What a topology builds: the sync and asyncio clients, and the store's own options."""

    sync: Any
    asy: Any
    options: dict[str, Any]


class Target(NamedTuple):
    """A URL being connected (its scheme lower case) and the store's connection budget."""

    url: str
    parts: SplitResult
    scheme: str
    timeout: float
    max_connections: int

    def nodes(self, default_port: int) -> list[tuple[str, int]]:
        return hosts(self.parts.netloc, default_port)

    def auth(self) -> dict[str, Any]:
        return credentials(self.parts)

    def common(self) -> dict[str, Any]:
        """Client options every topology shares: short socket timeouts, no redis-py retries."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        sock = max(self.timeout / 3, 0.05)
        return {
            "socket_timeout": sock,
            "socket_connect_timeout": sock,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }


class RedisConnector(Connector):
    """A Redis topology: parses its URLs and builds both clients (``RedisStore.from_url``)."""

    @classmethod
    def connect(cls, url: str, *, timeout: float) -> RedisStore:
        from .store import RedisStore

        return RedisStore.from_url(url, timeout=timeout)

    @classmethod
    @abc.abstractmethod
    def clients(cls, target: Target) -> Clients:
        """Both clients for ``target``."""


class SingleConnector(RedisConnector):
    """One server over TCP, TLS or a unix socket: ``redis://[user:password@]host:6379/0``."""

    schemes = ("redis", "rediss", "unix")

    @classmethod
    def clients(cls, target: Target) -> Clients:
        import redis
        import redis.asyncio as aredis

        parts = target.parts
        in_path = parts.path.strip("/") if target.scheme != "unix" else ""  # a socket's path is no db
        db_text = parse_qs(parts.query).get("db", [in_path])[0]
        if db_text and not db_text.isdigit():
            raise ConfigError(_BAD_DB.format(db_text) + "expected e.g. redis://[user:password@]host:6379/0")
        pools = [
            module.BlockingConnectionPool.from_url(
                target.url, max_connections=target.max_connections, timeout=target.timeout, **target.common()
            )
            for module in (redis, aredis)
        ]
        from .clients import address

        db = db_text or "0"
        if target.scheme == "unix":
            label = address("unix", None, None, db, parts.path)
        else:
            label = address(target.scheme, parts.hostname, parts.port, db)
        return Clients(
            redis.Redis(connection_pool=pools[0]), aredis.Redis(connection_pool=pools[1]), {"label": label}
        )


class ClusterConnector(RedisConnector):
    """Redis Cluster from its seed nodes: ``redis+cluster://[password@]h1:p1,h2:p2``."""

    schemes = ("redis+cluster", "rediss+cluster")

    @classmethod
    def clients(cls, target: Target) -> Clients:
        import redis
        import redis.asyncio as aredis
        from redis.asyncio.cluster import ClusterNode as AClusterNode
        from redis.cluster import ClusterNode
        from redis.exceptions import RedisClusterException

        from .calls import TRANSIENT, failure

        nodes = target.nodes(6379)
        label = f"{target.scheme}://" + ",".join(f"{h}:{p}" for h, p in nodes)
        auth = target.auth()
        ssl = target.scheme.startswith("rediss")
        common = target.common()
        try:
            sync = redis.RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
                connection_pool_class=redis.BlockingConnectionPool,
                max_connections=target.max_connections,
                ssl=ssl,
                **auth,
                **common,
            )
        except (RedisClusterException, *TRANSIENT) as e:
            raise failure(label, e) from None
        asy = aredis.RedisCluster(
            startup_nodes=[AClusterNode(h, p) for h, p in nodes],
            max_connections=target.max_connections,
            ssl=ssl,
            **auth,
            **{k: v for k, v in common.items() if k != "health_check_interval"},
        )
        return Clients(sync, asy, {"cluster": True, "label": label})


class SentinelConnector(RedisConnector):
    """The master a set of Sentinels names: ``redis+sentinel://h1:p1,h2:p2/<service>?db=0``."""

    schemes = ("redis+sentinel", "rediss+sentinel")

    @classmethod
    def clients(cls, target: Target) -> Clients:
        from redis.asyncio.sentinel import Sentinel as ASentinel
        from redis.sentinel import Sentinel

        nodes = target.nodes(26379)
        service = unquote(target.parts.path.strip("/")) or "mymaster"
        db_text = parse_qs(target.parts.query).get("db", ["0"])[0]
        if not db_text.isdigit():
            raise ConfigError(_BAD_DB.format(db_text) + "use ?db=<number>")
        db = int(db_text)
        auth = target.auth()
        common = target.common()
        skw = {"socket_timeout": common["socket_timeout"], "socket_connect_timeout": common["socket_timeout"]}
        sentinel = Sentinel(nodes, sentinel_kwargs=skw, **common)  # type: ignore[no-untyped-call]
        asentinel = ASentinel(nodes, sentinel_kwargs=skw, **common)  # type: ignore[no-untyped-call]
        sync = sentinel.master_for(service, db=db, **auth)  # type: ignore[no-untyped-call]
        asy = asentinel.master_for(service, db=db, **auth)
        where = ",".join(f"{h}:{p}" for h, p in nodes)
        return Clients(sync, asy, {"label": f"{target.scheme}://{where}/{service}?db={db}"})


def hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``h1:p1,h2`` (after any credentials) as (host, port) pairs; a bad port is a ValueError."""
    hostpart = netloc.rsplit("@", 1)[-1]
    out = []
    for item in hostpart.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", str(default_port))
        out.append((host or "127.0.0.1", int(port or default_port)))
    return out


def credentials(parts: SplitResult) -> dict[str, Any]:
    """``user:password@`` as client options; a lone ``secret@`` is read as the password."""
    netloc = parts.netloc
    if "@" not in netloc:
        return {}
    creds = netloc.rsplit("@", 1)[0]
    user, _, password = creds.partition(":")
    out: dict[str, Any] = {}
    if password:
        out["password"] = unquote(password)
        if user:
            out["username"] = unquote(user)
    elif user:
        out["password"] = unquote(user)
    return out


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(name: str, text: str) -> bool:
    if text.lower() not in _TRUE + _FALSE:
        raise ConfigError(f"{name} in the URL must be true or false, got {text!r}")
    return text.lower() in _TRUE


def _count(name: str, text: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"{name} in the URL must be a whole number, got {text!r}")
    return int(text)


def _seconds(name: str, text: str) -> float | None:
    if text.lower() in ("", "none"):
        return None
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0 or v != v or v == float("inf"):
        raise ConfigError(f"{name} in the URL must be a positive number of seconds or 'none', got {text!r}")
    return v


def _prefix(name: str, text: str) -> str:
    if not text:
        raise ConfigError(f"{name} in the URL must not be empty")
    return text


#: The store's own URL options and how each is read; redis-py never sees them.
_OPTIONS: dict[str, Any] = {
    "allow_eviction": _flag,
    "ledger_maxlen": _count,
    "ledger_age": _seconds,
    "prefix": _prefix,
}


def store_options(url: str) -> tuple[str, dict[str, Any]]:
    """The store's own URL options (``?allow_eviction=true``, ``?ledger_maxlen=N``, ``?ledger_age=S``,
    ``?prefix=myapp:``), taken out before redis-py reads the URL."""
    parts = urlsplit(url)
    if not any(name in parts.query for name in _OPTIONS):
        return url, {}
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: _OPTIONS[k](k, v) for k, v in pairs if k in _OPTIONS}
    rest = urlencode([(k, v) for k, v in pairs if k not in _OPTIONS])
    return urlunsplit(parts._replace(query=rest)), options
