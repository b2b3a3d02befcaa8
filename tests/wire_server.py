"""A tiny HTTP server on 127.0.0.1 that speaks whatever wire format a test gives it.

Each route is ``(method, path prefix) -> reply``; a reply is a status, a content
type and a body (bytes, or a list of byte chunks sent one by one, as NDJSON
and SSE streams arrive). Requests are recorded, so tests can read what the
real client sent. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    body: bytes | list[bytes]
    content_type: str = "application/json"
    status: int = 200


@dataclass
class Seen:
    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WireServer:
    url: str
    routes: dict[tuple[str, str], Reply] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def route(self, method: str, prefix: str, reply: Reply) -> None:
        self.routes[(method, prefix)] = reply

    def json(self, method: str, prefix: str, payload: Any) -> None:
        self.route(method, prefix, Reply(json.dumps(payload).encode()))

    def find(self, method: str, path: str) -> Reply | None:
        best = [(p, r) for (m, p), r in self.routes.items() if m == method and path.startswith(p)]
        best.sort(key=lambda pr: -len(pr[0]))
        return best[0][1] if best else None


def ndjson(lines: list[dict[str, Any]]) -> Reply:
    return Reply([(json.dumps(line) + "\n").encode() for line in lines], "application/x-ndjson")


def sse(events: list[dict[str, Any]], done: bool = False) -> Reply:
    chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return Reply(chunks, "text/event-stream")


def _handler(server: WireServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            server.seen.append(Seen(self.command, self.path, body))
            reply = server.find(self.command, self.path)
            if reply is None:
                reply = Reply(b'{"error": "no route"}', status=404)
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            if isinstance(reply.body, bytes):
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                return
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in reply.body:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = _serve

    return Handler


@contextmanager
def wire_server() -> Iterator[WireServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(WireServer("")))
    state = WireServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
