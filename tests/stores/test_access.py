"""Redis access control: AUTH (requirepass), an ACL user, TLS; and no secret ever printed.

Each test starts its own real redis-server. TLS uses a CA and a server
certificate made here with the openssl CLI; a redis-server built without TLS
FAILS the test (it is not skipped). Logs are captured at DEBUG during calls
that succeed and calls that fail (wrong password, dead server); the password
must appear in none of: the log text, ``repr(store)``, ``repr(guard)``, the
exception message, or the formatted exception chain.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_servers import RedisServer, free_port, redis_binary

from budgetguard import BudgetError, BudgetGuard, Limit
from budgetguard.errors import BudgetStoreUnavailable
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis  # every test here talks to real redis-server processes

PASSWORD = "pw-" + os.urandom(8).hex()  # distinctive: any leak is found by a plain search
LIMITS = [Limit(usd=10, requests=1000)]


class Server(RedisServer):
    """A redis-server whose readiness check can authenticate and speak TLS; logs kept for errors."""

    def __init__(self, *extra: str, ping: dict[str, Any] | None = None, tls_port: int | None = None) -> None:
        super().__init__(tls_port, *extra)
        self.ping_kwargs = ping or {}
        self.log = self.dir / "server.log"

    def start(self) -> Server:
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--protected-mode", "no",
            "--logfile", str(self.log),
            *self.extra,
        ]  # fmt: skip
        with open(self.dir / "stderr.log", "wb") as err:  # config errors go here, not to the log file
            self.proc = subprocess.Popen(args, stdout=err, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5, **self.ping_kwargs).ping():
                    return self
            except (redis.ConnectionError, redis.TimeoutError) as e:
                last = e
            time.sleep(0.05)
        out = "\n".join(
            p.read_text(errors="replace") for p in (self.dir / "stderr.log", self.log) if p.exists()
        )
        raise RuntimeError(f"redis-server on port {self.port} did not start ({last!r}); its log:\n{out}")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, **self.ping_kwargs)


@pytest.fixture()
def auth_server() -> Iterator[Server]:
    server = Server("--requirepass", PASSWORD, ping={"password": PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture()
def acl_server() -> Iterator[Server]:
    server = Server().start()
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "bguser", "on", f">{PASSWORD}", "~*", "+@all")
    # a user that may not run scripts: a realistic least-privilege mistake
    admin.execute_command("ACL", "SETUSER", "noscripts", "on", f">{PASSWORD}", "~*", "+@all", "-@scripting")
    admin.execute_command("ACL", "SETUSER", "default", "off")  # only named users get in now
    server.ping_kwargs = {"username": "bguser", "password": PASSWORD}
    yield server
    server.stop()


def make_certs(where: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to make test certificates")
    p = {n: where / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "ext.cnf")}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    ca_key, ca_crt, key, csr, crt, ext = (str(p[n]) for n in p)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
        "-days", "2", "-subj", "/CN=budgetguard-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    p["ext.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)  # fmt: skip
    return p


@pytest.fixture()
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, dict[str, Path]]]:
    certs = make_certs(tmp_path)
    port = free_port()
    server = Server(
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(certs["server.crt"]),
        "--tls-key-file", str(certs["server.key"]),
        "--tls-ca-cert-file", str(certs["ca.crt"]),
        "--tls-auth-clients", "no",
        "--requirepass", PASSWORD,
        ping={"ssl": True, "ssl_cert_reqs": "none", "password": PASSWORD},
        tls_port=port,
    )  # fmt: skip
    try:
        server.start()
    except RuntimeError as e:
        server.stop()
        text = str(e).lower()
        if "tls" in text and any(w in text for w in ("unrecognized", "not supported", "bad directive")):
            pytest.fail(
                "this redis-server build has no TLS support (build it with BUILD_TLS=yes, or install a "
                f"TLS-enabled package such as Debian's redis-server >= 6); it said:\n{e}"
            )
        pytest.fail(f"redis-server with TLS did not start: {e}")
    yield server, certs
    server.stop()


# ------------------------------------------------------------------ helpers


def guarded_calls_work(url: str, tmp_path: Path, n: int = 3) -> BudgetGuard:
    guard = BudgetGuard(limits=LIMITS, store=url, spool_dir=tmp_path / "spool")
    llm = FakeChatModel(input_tokens=20, output_tokens=5, max_tokens=32)
    guarded = guard.wrap(llm)
    (before,) = [r.spent for r in guard.remaining().rows if r.quantity == "requests"]
    for i in range(n):
        guarded.invoke(f"call {i}")
    assert llm.calls.count == n
    rows = {r.quantity: r for r in guard.remaining().rows}
    assert rows["requests"].spent == before + n and rows["requests"].reserved == 0
    return guard


def refused(url: str, tmp_path: Path) -> BaseException:
    """A guarded call through ``url`` fails (before the model) with a budgetguard error."""
    guard = BudgetGuard(limits=LIMITS, store=url, spool_dir=tmp_path / "spool-refused")
    llm = FakeChatModel()
    with pytest.raises(BudgetError) as info:
        guard.wrap(llm).invoke("hi")
    assert llm.calls.count == 0
    assert_no_secret(guard, guard.store, info.value)
    return info.value


def assert_no_secret(*objs: Any, caplog: pytest.LogCaptureFixture | None = None) -> None:
    for obj in objs:
        texts = [repr(obj), str(obj)]
        if isinstance(obj, BaseException):
            texts.append("".join(traceback.format_exception(obj)))
            texts += [repr(obj.__cause__), repr(obj.__context__)]
        for t in texts:
            assert PASSWORD not in t, f"the password leaked in {type(obj).__name__}: {t[:300]}"
    if caplog is not None:
        assert caplog.records, "DEBUG logging captured nothing: the check would be empty"
        assert PASSWORD not in caplog.text
        for rec in caplog.records:
            assert PASSWORD not in rec.getMessage()
            assert PASSWORD not in repr(rec.args)


# ------------------------------------------------------------------ AUTH


def test_requirepass_guarded_calls_work_and_no_secret_leaks(
    auth_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{PASSWORD}@127.0.0.1:{auth_server.port}/0"
    guard = guarded_calls_work(url, tmp_path)
    assert_no_secret(guard, guard.store, guard.store.client, caplog=caplog)

    # wrong password, no password: refused before the model, without echoing any secret
    wrong = refused(f"redis://:not-{PASSWORD}@127.0.0.1:{auth_server.port}/0", tmp_path)
    assert isinstance(wrong, BudgetStoreUnavailable)
    assert "Authentication" in str(wrong), "the refusal says authentication failed"
    refused(f"redis://127.0.0.1:{auth_server.port}/0", tmp_path)

    # the server dies under a working guard
    auth_server.kill()
    with pytest.raises(BudgetStoreUnavailable) as info:
        guard.wrap(FakeChatModel()).invoke("server gone")
    assert_no_secret(guard, guard.store, info.value, caplog=caplog)


# ------------------------------------------------------------------ ACL users


def test_acl_user_guarded_calls_work_and_no_secret_leaks(
    acl_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://bguser:{PASSWORD}@127.0.0.1:{acl_server.port}/0"
    guard = guarded_calls_work(url, tmp_path)
    assert guard.store.client.acl_whoami() == "bguser"  # type: ignore[attr-defined]
    assert_no_secret(guard, guard.store, guard.store.client, caplog=caplog)

    refused(f"redis://bguser:not-{PASSWORD}@127.0.0.1:{acl_server.port}/0", tmp_path)
    refused(f"redis://nobody:{PASSWORD}@127.0.0.1:{acl_server.port}/0", tmp_path)
    refused(f"redis://127.0.0.1:{acl_server.port}/0", tmp_path)  # the default user is off
    assert_no_secret(caplog=caplog)

    acl_server.kill()
    with pytest.raises(BudgetStoreUnavailable) as info:
        guard.wrap(FakeChatModel()).invoke("server gone")
    assert_no_secret(guard, guard.store, info.value, caplog=caplog)


def test_an_acl_user_without_script_rights_gets_a_budgetguard_error_naming_it(
    acl_server: Server, tmp_path: Path
) -> None:
    """A least-privilege mistake (no +@scripting) is refused as a documented error, not redis-py's."""
    guard = BudgetGuard(
        limits=LIMITS,
        store=f"redis://noscripts:{PASSWORD}@127.0.0.1:{acl_server.port}/0",
        spool_dir=tmp_path / "spool",
    )
    llm = FakeChatModel()
    with pytest.raises(Exception) as info:
        guard.wrap(llm).invoke("hi")
    assert llm.calls.count == 0
    assert PASSWORD not in str(info.value)
    assert isinstance(info.value, BudgetError), (
        f"a Redis permission error escaped the guard as {type(info.value).__module__}."
        f"{type(info.value).__name__}: {info.value}"
    )
    assert "evalsha" in str(info.value).lower() or "permission" in str(info.value).lower()


# ------------------------------------------------------------------ TLS


def test_tls_guarded_calls_work_and_no_secret_leaks(
    tls_server: tuple[Server, dict[str, Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, certs = tls_server
    caplog.set_level(logging.DEBUG)
    base = f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0"

    unverified = guarded_calls_work(f"{base}?ssl_cert_reqs=none", tmp_path / "a")
    verified = guarded_calls_work(f"{base}?ssl_ca_certs={certs['ca.crt']}", tmp_path / "b")
    for g in (unverified, verified):
        assert_no_secret(g, g.store, g.store.client, caplog=caplog)
    info = verified.store.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert info.get("ssl_ca_certs") == str(certs["ca.crt"])

    # plain text to the TLS port, or a certificate we do not trust: refused, fast, no secret shown
    t0 = time.monotonic()
    refused(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", tmp_path)
    refused(f"{base}?ssl_ca_certs={certs['server.crt']}&ssl_cert_reqs=required", tmp_path)
    assert time.monotonic() - t0 < 5
    assert_no_secret(caplog=caplog)

    server.kill()
    with pytest.raises(BudgetStoreUnavailable) as exc:
        verified.wrap(FakeChatModel()).invoke("server gone")
    assert_no_secret(verified, verified.store, exc.value, caplog=caplog)
