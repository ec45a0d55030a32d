"""A scripted LLM endpoint on 127.0.0.1 for judge tests and benchmarks.

It speaks OpenAI chat completions (``POST /v1/chat/completions``) and the
Anthropic messages API (``POST /v1/messages``), records every request, and
answers as scripted. Standard library only, so ``bench/`` scripts can import
it too::

    from tests.evaluate.judge_server import JudgeServer, Reply, verdict, rate_limited

    with JudgeServer([verdict(False, "wrong city"), rate_limited(1), "not json"]) as server:
        judge = make_judge("j", "{{ outputs }}", model="openai:/gpt-4o-mini",
                           base_url=server.openai_base_url, api_key="test")
        ...
        server.requests          # every request: api, path, headers, body, time
        server.max_in_flight     # the most requests it ever held at once

What it answers, per request: the next item of the ``replies`` queue (a
:class:`Reply`, or a ``str`` meaning a 200 answer with that assistant text);
when the queue is empty, ``respond(request)`` if given and it returns
something; else ``default`` (by default :func:`auto_verdict`, a valid verdict
of the type the request's ``response_format`` asks for). ``delay`` slows every
answer. All of these are plain attributes, changeable while it runs.

Run it by hand (``python tests/evaluate/judge_server.py --port 8123``) to get
an endpoint that always approves, for a benchmark or a demo.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["JudgeServer", "Reply", "Request", "auto_verdict", "fenced", "rate_limited",
           "server_error", "slow", "verdict"]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
#: ``GET`` here answers ``{"requests": n, "max_in_flight": m}`` (for a server in
#: another process).
STATS_PATH = "/stats"


@dataclass
class Reply:
    """One scripted answer.

    ``text`` is the assistant's reply, wrapped in the API's answer shape with
    ``input_tokens``/``output_tokens`` as its usage. ``body`` (a dict as JSON,
    a str or bytes as is) replaces the whole answer body instead. ``status``
    other than 200 with neither gives an API-style error body.
    """

    text: str | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    input_tokens: int = 10
    output_tokens: int = 5


@dataclass
class Request:
    """A request the server received."""

    api: str  # "openai" | "anthropic" | "unknown"
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON body, or None
    received_at: float  # time.monotonic()

    @property
    def messages(self) -> list[dict[str, Any]]:
        body = self.body if isinstance(self.body, dict) else {}
        return list(body.get("messages") or [])

    @property
    def prompt(self) -> str:
        """Every message's content (and Anthropic's ``system``), joined: for assertions."""
        body = self.body if isinstance(self.body, dict) else {}
        parts = [str(body.get("system", ""))]
        parts.extend(str(m.get("content", "")) for m in self.messages)
        return "\n".join(parts)


def verdict(result: Any = True, rationale: str = "looks right") -> str:
    """A well-formed judge reply text."""
    return json.dumps({"rationale": rationale, "result": result})


def fenced(text: str, language: str = "json") -> str:
    """``text`` in a Markdown code fence with words around it."""
    return f"Here is my verdict:\n```{language}\n{text}\n```\nHope this helps."


def rate_limited(retry_after: float | str | None = 0) -> Reply:
    """A 429 answer, with ``Retry-After`` unless ``None``."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(status=429, headers=headers)


def server_error(status: int = 500) -> Reply:
    """A 5xx answer."""
    return Reply(status=status)


def slow(reply: Reply | str, delay: float) -> Reply:
    """``reply`` sent after ``delay`` seconds."""
    base = reply if isinstance(reply, Reply) else Reply(text=reply)
    return Reply(text=base.text, status=base.status, body=base.body,
                 headers=dict(base.headers), delay=delay, input_tokens=base.input_tokens,
                 output_tokens=base.output_tokens)


def _example(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return True
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "number":
        return max(float(schema.get("minimum", 1.0)), min(1.0, float(schema.get("maximum", 1))))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "string":
        return "ok"
    return True


def auto_verdict(request: Request) -> Reply:
    """A valid verdict for ``request``: its ``result`` fits the OpenAI
    ``response_format`` schema when there is one, else it is ``true``."""
    body = request.body if isinstance(request.body, dict) else {}
    result_schema = None
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        result_schema = body["response_format"]["json_schema"]["schema"]["properties"]["result"]
    return Reply(text=verdict(_example(result_schema), "auto verdict"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many judge threads connect at once
    owner: JudgeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout) closes its end: not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's
        # algorithm holds the body back until the client's delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == STATS_PATH:
            owner = self.server.owner
            self._answer(200, {"requests": owner.count(), "max_in_flight": owner.max_in_flight},
                         {})
            return
        self._answer(404, {"error": {"message": f"no GET {self.path}"}}, {})

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        api = {OPENAI_PATH: "openai", ANTHROPIC_PATH: "anthropic"}.get(path, "unknown")
        request = Request(api, "POST", path, {k.lower(): v for k, v in self.headers.items()},
                          body, time.monotonic())
        reply = owner._next_reply(request)
        delay = reply.delay + owner.delay
        try:
            if delay > 0:
                owner._stopping.wait(delay)
            if api == "unknown":
                self._answer(404, {"error": {"message": f"no endpoint {path}"}}, {})
            elif not isinstance(body, dict):
                self._answer(400, _error(api, 400, "the body is not a JSON object"), {})
            else:
                self._answer(reply.status, _body(api, request, reply, owner), reply.headers)
        except OSError:
            self.close_connection = True
        finally:
            owner._done()

    def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _error(api: str, status: int, message: str) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 400: "invalid_request_error"}.get(status, "api_error")
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": status}}


def _body(api: str, request: Request, reply: Reply, owner: JudgeServer) -> Any:
    if reply.body is not None:
        return reply.body
    if reply.status != 200 or reply.text is None:
        return _error(api, reply.status, f"scripted HTTP {reply.status}")
    n = next(owner._ids)
    model = request.body.get("model") if isinstance(request.body, dict) else None
    if api == "anthropic":
        return {"id": f"msg_{n:06d}", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": reply.text}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens,
                          "output_tokens": reply.output_tokens}}
    return {"id": f"chatcmpl-{n:06d}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply.text}}],
            "usage": {"prompt_tokens": reply.input_tokens,
                      "completion_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens}}


class JudgeServer:
    """An OpenAI- and Anthropic-compatible endpoint with scripted answers (see the module).

    Attributes:
        replies: the queue of scripted answers, consumed one per request.
        respond: ``request -> Reply | str | None``, asked when the queue is empty.
        default: the answer when neither gives one (a Reply, a str, or a function
            of the request; default :func:`auto_verdict`).
        delay: seconds added before every answer.
        requests: every request received, in arrival order.
        max_in_flight: the most requests held at once.
    """

    def __init__(self, replies: Iterable[Reply | str] = (), *,
                 respond: Callable[[Request], Reply | str | None] | None = None,
                 default: Reply | str | Callable[[Request], Reply] | None = None,
                 delay: float = 0.0, port: int = 0) -> None:
        self.replies: collections.deque[Reply | str] = collections.deque(replies)
        self.respond = respond
        self.default = default if default is not None else auto_verdict
        self.delay = delay
        self.port = port
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the Anthropic base URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` (the OpenAI base URL)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> JudgeServer:
        self._stopping.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.05}, name=f"judge-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def count(self, api: str | None = None) -> int:
        """Requests received (for one ``api`` when given)."""
        with self._lock:
            return sum(1 for r in self.requests if api is None or r.api == api)

    # -- called by the handler threads ------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            item: Reply | str | None = self.replies.popleft() if self.replies else None
        if item is None and self.respond is not None:
            item = self.respond(request)
        if item is None:
            item = self.default(request) if callable(self.default) else self.default
        return item if isinstance(item, Reply) else Reply(text=item)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description="A judge endpoint that always approves.")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per answer")
    args = parser.parse_args()
    with JudgeServer(port=args.port, delay=args.delay) as server:
        print(f"OpenAI base URL {server.openai_base_url}, Anthropic base URL {server.url}",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
