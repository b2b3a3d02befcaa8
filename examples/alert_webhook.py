"""Budget alerts posted to a webhook (Slack-style JSON), once per scope, window and threshold.

Set ALERT_WEBHOOK_URL to your webhook. Without it, the example starts a tiny
local receiver and prints what it gets, so it runs offline. The callback is
sync and posts with the standard library: the call that crossed the
threshold waits for the post (at most ``timeout`` seconds); an async
callback (``async def``, with httpx) runs on the caller's event loop instead.
A webhook that fails is logged by the guard, never raised into the call.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from budgetguard import Alert, BudgetExceeded, BudgetGuard, Limit
from budgetguard.testing import FakeChatModel


def alert_payload(alert: Alert) -> dict[str, object]:
    """The alert as JSON: money as strings (exact), times as ISO 8601."""
    pct = f"{alert.threshold:.0%}"
    return {
        "text": f"{alert.scope} passed {pct} of its {alert.window} {alert.quantity} budget "
        f"({alert.spent} of {alert.cap})",
        "scope": alert.scope,
        "window": alert.window,
        "quantity": alert.quantity,
        "threshold": alert.threshold,
        "spent": str(alert.spent),
        "cap": str(alert.cap),
        "resets_at": alert.resets_at.isoformat() if alert.resets_at else None,
    }


def webhook(url: str, timeout: float = 2.0) -> Callable[[Alert], None]:
    """An ``on_alert`` that POSTs each alert to ``url``."""

    def post(alert: Alert) -> None:
        body = json.dumps(alert_payload(alert)).encode()
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    return post


def run(url: str) -> None:
    guard = BudgetGuard(
        limits=[Limit(usd="0.001", per="day", scope="user:{user_id}")],
        alerts=[0.5, 0.8, 1.0],
        on_alert=webhook(url),
    )
    llm = guard.wrap(FakeChatModel(model_name="gpt-4o-mini", output_tokens=400, max_tokens=500))
    for i in range(5):
        try:
            llm.invoke(f"question {i}", config={"metadata": {"user_id": "alice"}})
            print(f"call {i}: ok")
        except BudgetExceeded as exc:
            print(f"call {i}: refused ({exc.scope})")


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        print("webhook got:", json.loads(body)["text"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    url = os.environ.get("ALERT_WEBHOOK_URL")
    if url:
        run(url)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            run(f"http://127.0.0.1:{server.server_address[1]}/hook")
        finally:
            server.shutdown()
            server.server_close()
