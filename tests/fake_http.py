"""A JSON endpoint on 127.0.0.1 for tests of HTTP clients (import as `from fake_http import json_endpoint`)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def json_endpoint(
    reply: Callable[[dict], dict], models: tuple[str, ...] = ("served",)
) -> Iterator[tuple[str, list[dict]]]:
    """Serves POST requests: each JSON body is recorded (with its path and Authorization header) and answered with
    reply(body); GET /v1/models lists `models`. Yields (base URL ending in /v1, the records)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            data = json.dumps(reply(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            found = self.path.rstrip("/").endswith("/models")
            data = json.dumps({"object": "list", "data": [{"id": m} for m in models]}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        server.shutdown()
