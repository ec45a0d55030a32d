"""The exporter that sends spans to any OpenTelemetry collector over OTLP/HTTP (protobuf).

Example:
    >>> from assay.exporters import OTLPExporter
    >>> assay.configure(exporters=[OTLPExporter("http://collector:4318/v1/traces")])

Each span travels with its provider's resource (``service.name`` and the rest)
and, besides assay's own ``assay.*`` attributes, with the conventions that
tools such as Phoenix, Langfuse or Grafana read: ``input.value`` / ``output.value``,
``openinference.span.kind`` and the OpenTelemetry GenAI ``gen_ai.*`` attributes
(see :mod:`assay.exporters._conventions` for the mapping).

Settings not given to the constructor come from the standard environment
variables, the signal-specific one winning over the generic one:

=====================================================  ==================================
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``                 the URL, used as it is
``OTEL_EXPORTER_OTLP_ENDPOINT``                        a base URL; ``/v1/traces`` is
                                                       appended to its path
``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``                ``key=value`` pairs separated by
                                                       commas, percent-decoded
``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT``                per request, in milliseconds
                                                       (default 10000)
``OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION``            ``gzip`` (assay's default) or
                                                       ``none``
=====================================================  ==================================

The endpoint defaults to ``http://localhost:4318/v1/traces``. TLS settings
(a private CA, client certificates) and proxies are those of the ``httpx.Client``
given as ``client``.

Delivery: connection errors, timeouts and the HTTP statuses 429 and 5xx are
retried with exponential backoff and full jitter (a ``Retry-After`` header, in
seconds or as an HTTP date, is waited for instead), for at most ``max_retry_s``
after the export began; then the batch is reported as failed. Any other status
fails at once. ``export`` never raises, and ``shutdown`` cuts a backoff short.

Under :func:`assay.configure`, what this exporter cannot deliver in time goes
to a disk spool and is sent again later (see :mod:`assay.exporters.processor`);
``last_failure_transient`` tells the spool whether a failed batch is worth
keeping.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import httpx
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from assay._http import retry_after
from assay._version import __version__
from assay.errors import ConfigurationError
from assay.exporters._otlp_wire import encode_request

__all__ = ["OTLPExporter"]

log = logging.getLogger("assay")

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
_TRACES_PATH = "v1/traces"
_DEFAULT_TIMEOUT_S = 10.0
_MAX_BACKOFF_S = 8.0
_LOG_EVERY_S = 60.0
_PROTOBUF = "application/x-protobuf"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class _Settings:
    endpoint: str
    headers: dict[str, str]
    timeout_s: float
    compression: str


class OTLPExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` speaking OTLP/HTTP with protobuf bodies.

    Args:
        endpoint: the full URL spans are posted to, e.g.
            ``http://collector:4318/v1/traces``.
        headers: HTTP headers sent with every request (an API key, a tenant).
        timeout_s: how long one request may take, in seconds.
        compression: ``"gzip"`` or ``"none"``.
        max_retry_s: how long one batch is retried before it is given up; ``0``
            turns retries off.
        initial_backoff_s: the first backoff ceiling; each retry doubles it (up
            to 8 s), and the wait is drawn uniformly below it.
        max_request_bytes: a batch whose encoding is larger is sent in several
            requests (collectors refuse large bodies: 20 MiB by default).
        conventions: add ``input.value``, ``openinference.span.kind`` and the
            ``gen_ai.*`` attributes on the wire.
        client: an ``httpx.Client`` to send with (for TLS or proxy settings); it
            is left open on shutdown, as its owner's to close. By default the
            exporter keeps a client of its own and closes it on shutdown.

    ``endpoint``, ``headers``, ``timeout_s`` and ``compression`` left as ``None``
    come from the ``OTEL_EXPORTER_OTLP_*`` environment variables (see the module
    documentation), then the defaults.

    Attributes:
        retries: requests sent again after a failed attempt, since creation.
        last_failure_transient: whether the last failed export failed for a reason
            that may pass (the collector unreachable, slow, overloaded or answering
            5xx, or this exporter shut down mid-export), so that its batch is worth
            sending again; ``False`` when the collector refused the batch for good
            (an HTTP 4xx other than 429) or it could not be encoded.
        rejected_spans: spans that the endpoint accepted the request of but
            reported as rejected (OTLP partial success).

    Raises:
        ConfigurationError: an argument or environment variable is invalid.
    """

    #: assay's processor gives this exporter a disk spool (unless configured off).
    spool_by_default: ClassVar[bool] = True

    def __init__(self, endpoint: str | None = None, *,
                 headers: Mapping[str, str] | None = None,
                 timeout_s: float | None = None,
                 compression: Literal["gzip", "none"] | None = None,
                 max_retry_s: float = 30.0,
                 initial_backoff_s: float = 0.5,
                 max_request_bytes: int = 4 * 1024 * 1024,
                 conventions: bool = True,
                 client: httpx.Client | None = None) -> None:
        settings = _settings(os.environ, endpoint, headers, timeout_s, compression)
        self.endpoint = settings.endpoint
        self.timeout_s = settings.timeout_s
        self.compression = settings.compression
        self.max_retry_s = _non_negative("max_retry_s", max_retry_s)
        self.initial_backoff_s = _non_negative("initial_backoff_s", initial_backoff_s)
        if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or (
                max_request_bytes <= 0):
            raise ConfigurationError(f"OTLPExporter(max_request_bytes={max_request_bytes!r}): "
                                     "expected a positive integer")
        self.max_request_bytes = max_request_bytes
        self.conventions = conventions
        self.retries = 0
        self.rejected_spans = 0
        self.last_failure_transient = True
        self._headers = {
            **settings.headers,
            "Content-Type": _PROTOBUF,
            "User-Agent": f"assay/{__version__}",
        }
        if self.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client()
        self._stopped = threading.Event()
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        if self._owns_client:
            ref = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _after_fork(self) -> None:
        # The parent's pooled connections are not the child's to use (nor to close).
        self._client = httpx.Client()

    def __repr__(self) -> str:
        return f"OTLPExporter({self.endpoint!r})"

    # -- SpanExporter -------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send ``spans``, retrying as configured; never raises.

        A batch larger than ``max_request_bytes`` goes in several requests, in
        order; when one of them fails for good, the rest are not sent and the
        whole batch is reported as failed.
        """
        if self._stopped.is_set():
            self.last_failure_transient = True
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            bodies = self._encode(spans)
        except Exception as exc:
            self._log_failure("encode", "could not encode %d span(s) for OTLP: %r",
                              len(spans), exc)
            self.last_failure_transient = False
            return SpanExportResult.FAILURE
        deadline = time.monotonic() + self.max_retry_s
        for count, body in bodies:
            if self._send(body, count, deadline) is not SpanExportResult.SUCCESS:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Stop: a retry waiting for its turn gives up at once; later exports fail."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._owns_client:
            self._client.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered here: every export is sent before it returns."""
        return True

    @property
    def target(self) -> str:
        """Where spans go: the endpoint (in ``assay.exporters.stats()`` rows)."""
        return self.endpoint

    def stats(self) -> dict[str, int]:
        """The counters: ``retries`` and ``rejected_spans``."""
        return {"retries": self.retries, "rejected_spans": self.rejected_spans}

    # -- delivery -----------------------------------------------------------------------
    def _encode(self, spans: Sequence[ReadableSpan]) -> list[tuple[int, bytes]]:
        """Request bodies with their span counts, halving the batch until each fits."""
        request = encode_request(spans, conventions=self.conventions)
        if len(spans) > 1 and request.ByteSize() > self.max_request_bytes:
            half = len(spans) // 2
            return self._encode(spans[:half]) + self._encode(spans[half:])
        body = request.SerializeToString()
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        return [(len(spans), body)]

    def _send(self, body: bytes, count: int, deadline: float) -> SpanExportResult:
        timeout = self.timeout_s
        attempt = 0
        while True:
            outcome = self._attempt(body, count, timeout)
            if outcome is None:
                return SpanExportResult.SUCCESS
            # A client closed by shutdown() mid-request fails for a reason that passes.
            self.last_failure_transient = outcome.retry or self._stopped.is_set()
            if not outcome.retry:
                self._log_failure(outcome.kind, "could not export %d span(s) to %s: %s",
                                  count, self.endpoint, outcome.problem)
                return SpanExportResult.FAILURE
            # Full jitter; a server's Retry-After is a floor, so that "0" cannot spin.
            ceiling = min(_MAX_BACKOFF_S, self.initial_backoff_s * 2 ** attempt)
            wait = max(random.uniform(0.0, ceiling), outcome.wait or 0.0)
            if wait >= deadline - time.monotonic():
                self._log_failure(outcome.kind, "gave up exporting %d span(s) to %s after %d "
                                  "retries: %s", count, self.endpoint, attempt, outcome.problem)
                return SpanExportResult.FAILURE
            log.debug("assay: OTLPExporter retries in %.2f s: %s", wait, outcome.problem)
            if self._stopped.wait(wait):
                self._log_failure("shutdown", "was shut down while retrying the export of %d "
                                  "span(s) to %s: %s", count, self.endpoint, outcome.problem)
                return SpanExportResult.FAILURE
            attempt += 1
            self.retries += 1
            timeout = min(self.timeout_s, max(deadline - time.monotonic(), 0.001))

    def _attempt(self, body: bytes, count: int, timeout: float) -> _Failure | None:
        """Send one request; ``None`` when the endpoint accepted it."""
        try:
            response = self._client.post(self.endpoint, content=body, headers=self._headers,
                                         timeout=timeout)
        except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
            kind = type(exc).__name__
            return _Failure(True, kind, f"{kind}: {exc}" if str(exc) else kind)
        except Exception as exc:  # a closed client, an invalid request
            return _Failure(False, type(exc).__name__, repr(exc))
        status = response.status_code
        if 200 <= status < 300:
            self._read_partial_success(response, count)
            return None
        problem = f"HTTP {status}: {response.text[:200]!r}"
        if status == 429 or status >= 500:
            wait = retry_after(response.headers.get("retry-after"))
            return _Failure(True, f"HTTP {status}", problem, wait)
        return _Failure(False, f"HTTP {status}", problem)

    def _read_partial_success(self, response: httpx.Response, count: int) -> None:
        if not response.content or "protobuf" not in response.headers.get("content-type", ""):
            return
        try:
            reply = ExportTraceServiceResponse.FromString(response.content)
        except DecodeError:
            return
        partial = reply.partial_success
        if partial.rejected_spans or partial.error_message:
            self.rejected_spans += partial.rejected_spans
            self._log_failure("partial success", "%s rejected %d of %d span(s): %s",
                              self.endpoint, partial.rejected_spans, count,
                              partial.error_message or "-", level=logging.WARNING)

    def _log_failure(self, kind: str, message: str, *args: Any,
                     level: int = logging.ERROR) -> None:
        """Log at most once a minute per kind of failure, counting the ones left out."""
        now = time.monotonic()
        last = self._last_logged.get(kind)
        if last is not None and now - last < _LOG_EVERY_S:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        self._last_logged[kind] = now
        unlogged = self._unlogged.pop(kind, 0)
        if unlogged:
            message += " (and %d more like it since the last report)"
            args = (*args, unlogged)
        log.log(level, "assay: OTLPExporter " + message, *args)


class _Failure(NamedTuple):
    """One failed request."""

    retry: bool  # worth sending again
    kind: str  # what failed, for logging once per kind ("HTTP 503", "ConnectError")
    problem: str  # what failed, in full
    wait: float | None = None  # the server's Retry-After, in seconds


# -- settings ------------------------------------------------------------------------------


def _settings(env: Mapping[str, str], endpoint: str | None, headers: Mapping[str, str] | None,
              timeout_s: float | None, compression: str | None) -> _Settings:
    if endpoint is not None:
        url = _check_url(endpoint, f"OTLPExporter(endpoint={endpoint!r})")
    else:
        url = _endpoint_from_env(env)
    if headers is not None:
        if not all(isinstance(k, str) and _TOKEN.match(k) and isinstance(v, str)
                   for k, v in headers.items()):
            raise ConfigurationError(
                f"OTLPExporter(headers={dict(headers)!r}): expected header names and string "
                "values")
        header_map = dict(headers)
    else:
        header_map = _from_env(env, "HEADERS", _parse_headers) or {}
    if timeout_s is not None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
                math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigurationError(
                f"OTLPExporter(timeout_s={timeout_s!r}): expected a positive number of seconds")
        timeout = float(timeout_s)
    else:
        timeout = _from_env(env, "TIMEOUT", _parse_timeout_ms) or _DEFAULT_TIMEOUT_S
    if compression is not None:
        try:
            method = _parse_compression(str(compression))
        except ValueError as exc:
            raise ConfigurationError(
                f"OTLPExporter(compression={compression!r}): {exc}") from None
    else:
        method = _from_env(env, "COMPRESSION", _parse_compression) or "gzip"
    protocol = _from_env(env, "PROTOCOL", str.strip)
    if protocol is not None and protocol != "http/protobuf":
        log.warning("assay: OTLPExporter speaks http/protobuf only; the protocol %r set in "
                    "the environment is not used", protocol)
    return _Settings(url, header_map, timeout, method)


def _from_env(env: Mapping[str, str], option: str, parse: Any) -> Any:
    """The parsed value of ``OTEL_EXPORTER_OTLP_TRACES_<option>``, else of the generic one."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{option}", f"OTEL_EXPORTER_OTLP_{option}"):
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"environment variable {name}={raw!r} is invalid: {exc}") from None
    return None


def _endpoint_from_env(env: Mapping[str, str]) -> str:
    for name, signal_path in (("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", False),
                              ("OTEL_EXPORTER_OTLP_ENDPOINT", True)):
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        url = _check_url(raw.strip(), f"environment variable {name}={raw!r}")
        if signal_path:
            parts = urllib.parse.urlsplit(url)
            path = parts.path.rstrip("/") + "/" + _TRACES_PATH
            url = urllib.parse.urlunsplit(parts._replace(path=path))
        return url
    return DEFAULT_ENDPOINT


def _check_url(url: str, where: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        if valid:
            _ = parts.port  # a port that is not a number raises here
    except ValueError:
        valid = False
    if not valid:
        raise ConfigurationError(
            f"{where} is invalid: expected an http:// or https:// URL with a host")
    return url


def _parse_headers(text: str) -> dict[str, str]:
    """``key1=value1,key2=value2``, each key and value percent-decoded."""
    headers: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key.strip())
        if not sep or not _TOKEN.match(key):
            raise ValueError(
                f"expected comma-separated key=value pairs, got {item.strip()!r}")
        headers[key] = urllib.parse.unquote(value.strip())
    return headers


def _parse_timeout_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError("expected a positive number of milliseconds")
    return value / 1000.0


def _parse_compression(text: str) -> str:
    value = text.strip().lower()
    if value not in ("gzip", "none"):
        raise ValueError("expected 'gzip' or 'none'")
    return value


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigurationError(f"OTLPExporter({name}={value!r}): expected a number >= 0")
    return float(value)
