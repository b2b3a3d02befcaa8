"""Shared fixtures: real Redis servers started by the suite on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_servers import Cluster, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (tests use distinct prefixes)."""
    server = RedisServer().start()
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
    cluster = Cluster(3).start()
    yield cluster
    cluster.stop()
