"""``examples/alert_webhook.py`` against a real local HTTP server: what it posts, and a webhook that fails."""

from __future__ import annotations

import io
import json
import runpy
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "alert_webhook.py"


class _Hook(BaseHTTPRequestHandler):
    status = 204
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        got = {"path": self.path, "type": self.headers["Content-Type"], **json.loads(body)}
        type(self).bodies.append(got)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"bodies": [], "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/budget", handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_example_posts_each_threshold_once_with_money_as_strings(hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    example = runpy.run_path(str(EXAMPLE), run_name="alert_webhook")
    out = io.StringIO()
    with redirect_stdout(out):
        example["run"](url)
    got = handler.bodies
    assert [b["threshold"] for b in got] == [0.5, 0.8]
    for b in got:
        assert b["path"] == "/hooks/budget" and b["type"] == "application/json"
        assert b["scope"] == "user:alice" and b["window"] == "day" and b["quantity"] == "usd"
        assert b["cap"] == "0.001" and isinstance(b["spent"], str) and b["resets_at"].endswith("+00:00")
        assert float(b["spent"]) >= b["threshold"] * 0.001
    assert "passed 50% of its day usd budget" in got[0]["text"]
    assert "refused (user:alice)" in out.getvalue()


def test_a_webhook_that_fails_never_breaks_the_calls(
    hook: tuple[str, type[_Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    url, handler = hook
    handler.status = 500
    example = runpy.run_path(str(EXAMPLE), run_name="alert_webhook")
    out = io.StringIO()
    with redirect_stdout(out):
        example["run"](url)
    assert len(handler.bodies) == 2  # each alert was tried
    assert out.getvalue().count(": ok") == 4  # and every call that fits went through
    errors = [r for r in caplog.records if r.name == "budgetguard" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "HTTPError" in errors[0].getMessage()
