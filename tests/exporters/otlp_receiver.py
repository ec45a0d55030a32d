"""A small OTLP/HTTP trace receiver on 127.0.0.1, for tests.

It decodes each request (gzip or plain protobuf) with the OpenTelemetry proto
classes alone, records it, and answers as scripted:

    with OTLPReceiver(statuses=[503, 503]) as receiver:   # then 200s
        OTLPExporter(receiver.url).export(spans)
        receiver.attempts        # every request, answered or not
        receiver.spans()         # the spans of the accepted requests

Knobs (plain attributes, changeable while it runs): ``statuses`` and ``delays``
are consumed one per request (then 200 and no delay), ``retry_after`` is sent
with every 429 and 5xx answer, ``error_body`` is the body of those answers and
``partial_success`` = ``(rejected_spans, message)`` goes into the 200 answers.
A receiver built with a fixed ``port`` and not yet started (or stopped)
refuses connections on that port.
"""

from __future__ import annotations

import collections
import gzip
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

__all__ = ["OTLPReceiver", "ReceivedSpan", "Request", "attributes_of", "free_port", "value_of"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def value_of(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (arrays as tuples)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, which)


def attributes_of(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in key_values}


@dataclass
class Request:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes  # as sent (compressed when it was)
    message: ExportTraceServiceRequest
    status: int  # what the receiver answered
    at: float  # time.monotonic() on arrival


@dataclass
class ReceivedSpan:
    """A span of an accepted request, with its resource and scope."""

    span: PbSpan
    resource: dict[str, Any]
    scope: str

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)


class OTLPReceiver:
    """A threaded HTTP server answering OTLP trace exports on 127.0.0.1."""

    def __init__(self, port: int = 0, *, statuses: Iterable[int] = (),
                 delays: Iterable[float] = (), retry_after: str | None = None,
                 error_body: str = "unavailable",
                 partial_success: tuple[int, str] | None = None) -> None:
        self.port = port
        self.statuses: collections.deque[int] = collections.deque(statuses)
        self.delays: collections.deque[float] = collections.deque(delays)
        self.retry_after = retry_after
        self.error_body = error_body
        self.partial_success = partial_success
        self.attempts: list[Request] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> OTLPReceiver:
        server = ThreadingHTTPServer((HOST, self.port), _Handler)
        server.daemon_threads = True
        server.receiver = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers that are delaying their answer
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OTLPReceiver:
        return self.start() if self._server is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/traces"

    # -- what arrived ---------------------------------------------------------------
    @property
    def accepted(self) -> list[Request]:
        with self._lock:
            return [r for r in self.attempts if 200 <= r.status < 300]

    def spans(self) -> list[ReceivedSpan]:
        out = []
        for request in self.accepted:
            for resource_spans in request.message.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    out.extend(ReceivedSpan(s, resource, scope_spans.scope.name)
                               for s in scope_spans.spans)
        return out

    def wait_for_attempts(self, count: int, timeout_s: float = 5.0) -> bool:
        """Block until ``count`` requests have arrived (``False`` on timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while len(self.attempts) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._arrived.wait(remaining)
            return True

    # -- answering (handler threads) ------------------------------------------------
    def _answer(self, handler: _Handler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        arrived = time.monotonic()
        with self._lock:
            status = self.statuses.popleft() if self.statuses else 200
            delay = self.delays.popleft() if self.delays else 0.0
        message = ExportTraceServiceRequest()
        try:
            raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
            message.ParseFromString(raw)
        except Exception as exc:
            status, error = 400, f"undecodable request: {exc!r}"
        else:
            error = self.error_body
        if delay:
            self._stopping.wait(delay)
        with self._arrived:
            self.attempts.append(Request(handler.path, headers, body, message, status, arrived))
            self._arrived.notify_all()
        if 200 <= status < 300:
            reply = ExportTraceServiceResponse()
            if self.partial_success is not None:
                rejected, text = self.partial_success
                reply.partial_success.CopyFrom(
                    ExportTracePartialSuccess(rejected_spans=rejected, error_message=text))
            handler.reply(status, reply.SerializeToString(), "application/x-protobuf")
        else:
            extra = {"Retry-After": self.retry_after} if self.retry_after and (
                status == 429 or status >= 500) else {}
            handler.reply(status, error.encode(), "text/plain; charset=utf-8", extra)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        receiver: OTLPReceiver = self.server.receiver  # type: ignore[attr-defined]
        receiver._answer(self, self.rfile.read(length))

    def reply(self, status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up waiting (a timeout test)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return None
