"""A minimal OpenAI-compatible HTTP server on 127.0.0.1, for tests, benchmarks and dry runs.

It answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` with a reply (a fixed
text, or a function of the request body) after an optional latency, and misbehaves on purpose:
each request takes the next fault of its script, then requests are answered normally.

Faults: ``429`` (with Retry-After), ``500``, ``hang`` (no answer until the client gives up),
``drop`` (connection closed without a response), ``empty`` (200 with an empty body), ``400``, ``401``
(these two echo the Authorization header in their error text, as some real APIs do).

    >>> with StubServer(reply="Verdict: wrong") as server:
    ...     server.base_url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

FAULTS = ("429", "500", "hang", "drop", "empty", "400", "401")


class StubServer:
    def __init__(self, reply: str | Callable[[dict], str] = "The attempt is wrong.\nVerdict: wrong",
                 latency_s: float = 0.0, faults: list[str] | None = None, retry_after: str = "1"):
        unknown = sorted(set(faults or []) - set(FAULTS))
        if unknown:
            raise ValueError(f"StubServer faults {unknown}: expected any of {', '.join(FAULTS)}")
        self.reply = reply if callable(reply) else (lambda body, text=reply: text)
        self.latency_s = latency_s
        self.faults = list(faults or [])
        self.retry_after = retry_after
        self.received: list[dict] = []          # request bodies, in arrival order
        self.authorizations: list[str] = []     # their Authorization headers
        self.served: list[str] = []             # what each request got: a fault name or 'ok'
        self.in_flight = 0
        self.max_in_flight = 0                  # most requests handled at once
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="stub-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "StubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()                    # releases hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next(self, body: dict, authorization: str) -> str:
        with self._lock:
            self.received.append(body)
            self.authorizations.append(authorization)
            fault = self.faults.pop(0) if self.faults else "ok"
            self.served.append(fault)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return fault

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256                    # the default 5 drops connections when many clients open at once


def _handler(server: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"           # keep-alive: clients reuse connections
        disable_nagle_algorithm = True          # else small writes wait for delayed ACKs (~40 ms each)

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps({"error": {"message": message, "type": "stub", "code": status}}).encode(), headers)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            kind = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}.get(self.path)
            if kind is None:
                return self._error(404, f"no route {self.path}")
            fault = server._next(body, self.headers.get("Authorization", ""))
            try:
                self._answer(kind, body, fault)
            finally:
                server._done()

        def _answer(self, kind: str, body: dict, fault: str) -> None:
            if fault == "hang":
                server._stopping.wait(3600)
                self.close_connection = True
                return None
            if fault == "drop":
                self.close_connection = True
                return None
            if server.latency_s:
                time.sleep(server.latency_s)
            if fault == "429":
                return self._error(429, "rate limited", {"Retry-After": server.retry_after})
            if fault == "500":
                return self._error(500, "internal error")
            if fault in ("400", "401"):
                # Echo the credentials like some real APIs do: clients must not pass error texts on verbatim.
                auth = self.headers.get("Authorization", "")
                return self._error(int(fault), f"{'invalid api key' if fault == '401' else 'bad request'} ({auth})")
            if fault == "empty":
                return self._send(200, b"")
            text = server.reply(body)
            prompt = body.get("prompt") or " ".join(m["content"] for m in body.get("messages", []))
            choice = ({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                      if kind == "chat" else {"index": 0, "finish_reason": "stop", "text": text})
            self._send(200, json.dumps({
                "id": "stub", "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": body.get("model", ""), "choices": [choice],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                          "total_tokens": (len(prompt) + len(text)) // 4}}).encode())

    return Handler


def main() -> None:
    """Serve until interrupted; the first line printed is the base URL."""
    import argparse

    parser = argparse.ArgumentParser(description="A stub OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer [0]")
    parser.add_argument("--reply", default="The attempt is wrong.\nVerdict: wrong", help="the text of every answer")
    args = parser.parse_args()
    server = StubServer(reply=args.reply, latency_s=args.latency).start()
    print(server.base_url, flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
