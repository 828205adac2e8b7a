"""A real HTTP receiver of completion callbacks on loopback, for the callback tests: it records
every request and answers each path the statuses it is told to, in order (then 200)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it came

    def json(self) -> Any:
        return json.loads(self.body)

    def verifies(self, secret: str) -> bool:
        """The receiver's check: HMAC-SHA256 of ``<timestamp>.<body>`` under the secret."""
        signed = self.headers["x-takeflow-timestamp"].encode() + b"." + self.body
        expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers["x-takeflow-signature"])


class CallbackReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, list[int]] = {}  # per path: statuses to answer first, in order
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._cond:
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                    queued = receiver.answers.get(self.path)
                    status = queued.pop(0) if queued else 200
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def of_path(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` requests to ``path``, once they came (``TimeoutError`` else)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(got := [r for r in self.received if r.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} callbacks to {path} came")
                self._cond.wait(left)
        return got[:count]


@contextmanager
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=10)
