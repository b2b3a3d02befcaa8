"""What the store learns from clients it was given: a sync twin, Cluster or not, a spool key."""

from __future__ import annotations

import hashlib
from typing import Any

import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["describe", "is_cluster", "spool_key", "sync_twin"]

_TWIN_KEYS = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "path",
    "socket_timeout",
    "socket_connect_timeout",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_check_hostname",
)


def is_cluster(client: Any, async_client: Any) -> bool:
    """Whether either client talks to Redis Cluster (then a reservation must stay in one slot)."""
    return isinstance(client, redis.RedisCluster) or isinstance(async_client, aredis.RedisCluster)


def sync_twin(async_client: Any) -> Any:
    """A sync client to the same server as an asyncio one (not for Cluster: pass client= there).

    The guard's sync path needs one; ``None`` when it cannot be derived.
    """
    pool = getattr(async_client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict) or isinstance(async_client, aredis.RedisCluster):
        return None
    picked = {k: kwargs[k] for k in _TWIN_KEYS if k in kwargs}
    name = getattr(getattr(pool, "connection_class", None), "__name__", "")
    if "path" in picked:
        picked.pop("host", None)
        picked.pop("port", None)
        conn_class: Any = redis.UnixDomainSocketConnection
    elif "SSL" in name:
        conn_class = redis.SSLConnection
    else:
        conn_class = redis.Connection
    max_connections = getattr(pool, "max_connections", None) or 50
    return redis.Redis(
        connection_pool=redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
            connection_class=conn_class,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 0),
            **picked,
        )
    )


def spool_key(client: Any, prefix: str, label: str) -> str:
    """A short, secret-free id of (server, db, prefix): one spool directory per store."""
    where = label
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if isinstance(kwargs, dict):
        where = f"{kwargs.get('host')}|{kwargs.get('port')}|{kwargs.get('path')}|{kwargs.get('db')}"
    elif hasattr(client, "get_nodes"):
        nodes = sorted(f"{n.host}:{n.port}" for n in client.get_nodes())
        where = ",".join(nodes)
    digest = hashlib.sha256(f"{where}|{prefix}".encode()).hexdigest()[:16]
    return f"redis-{digest}"


def describe(client: Any, cluster: bool) -> str:
    """A secret-free label for messages: scheme, host, port and db (or the Cluster's nodes)."""
    if cluster or hasattr(client, "get_nodes"):
        try:
            nodes = ",".join(f"{n.host}:{n.port}" for n in client.get_nodes())
        except (AttributeError, TypeError):
            nodes = ""
        return f"redis+cluster://{nodes}" if nodes else "redis+cluster"
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return "redis"
    return address("redis", kwargs.get("host"), kwargs.get("port"), kwargs.get("db"), kwargs.get("path"))


def address(scheme: str, host: Any, port: Any, db: Any, path: Any = None) -> str:
    """``redis://host:port/db`` (IPv6 hosts bracketed), or ``unix:///path?db=N``; never credentials."""
    if path:
        return f"unix://{path}?db={db or 0}"
    host = str(host or "127.0.0.1")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or 6379}/{db or 0}"
