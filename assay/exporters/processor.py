"""Between ended spans and exporters: redaction, then one bounded queue per exporter.

The calling thread only appends the ended span to each exporter's queue; a
background thread per exporter sends batches. The queues follow the virtues of
OpenTelemetry's BatchSpanProcessor (bounded, woken early when a batch is ready,
deadline-aware flush and shutdown, fork-safe) and add what it lacks: a
documented full-queue policy, counters for every span, and a warning whenever
spans are dropped.

Full-queue policy:
    ``"block"`` (default): the thread ending a span waits for the writer to make
    room, up to ``block_timeout_s`` (5 s); if there is still no room the span is
    dropped and counted. A burst the machine can produce is thus stored whole.
    ``"drop"``: the span is dropped at once and counted.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from assay.exporters._convert import readable_from_model, to_span_model
from assay.tracing._runtime import internal_error

if TYPE_CHECKING:
    from assay.tracing.models import Span

__all__ = ["AssayProcessor", "ExportQueue"]

log = logging.getLogger("assay")

_MAX_BATCH = 2_048
_WARN_EVERY_S = 10.0


class _Flush:
    """A marker in the queue: set once everything queued before it is exported."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class ExportQueue:
    """One exporter behind one bounded queue and one background thread."""

    def __init__(self, exporter: SpanExporter, *, max_queue_size: int, flush_interval_s: float,
                 queue_full_policy: str = "block", block_timeout_s: float = 5.0,
                 max_batch_size: int = _MAX_BATCH) -> None:
        self.exporter = exporter
        self.name = type(exporter).__name__
        self._max = max_queue_size
        self._batch = min(max_batch_size, max_queue_size)
        self._interval = flush_interval_s
        self._policy = queue_full_policy
        self._block_timeout = block_timeout_s
        self._init_state()
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _init_state(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._room = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopping = False
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.batches = 0
        self.blocked = 0
        self._last_warning = 0.0
        self._unwarned_drops = 0

    def _after_fork(self) -> None:
        # The parent exports what it had queued; the child starts empty.
        self._init_state()

    # -- calling thread -------------------------------------------------------
    def put(self, span: ReadableSpan) -> None:
        if self._thread is None:
            self._start()
        queue = self._queue
        if len(queue) >= self._max and not self._make_room():
            self._count_drop(1)
            return
        queue.append(span)
        if len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _make_room(self) -> bool:
        if self._policy != "block" or self._closed:
            return False
        deadline = time.monotonic() + self._block_timeout
        with self._lock:
            self.blocked += 1
        while len(self._queue) >= self._max:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return False
            self._room.clear()
            self._wake.set()
            self._room.wait(min(remaining, 0.05))
        return True

    def _count_drop(self, n: int) -> None:
        with self._lock:
            self.dropped += n
            self._unwarned_drops += n
        self._warn_drops()

    def _warn_drops(self, force: bool = False) -> None:
        """One warning per interval for the drops since the last one (at once when forced)."""
        with self._lock:
            now = time.monotonic()
            if not self._unwarned_drops or (
                    not force and now - self._last_warning < _WARN_EVERY_S):
                return
            count, self._unwarned_drops, self._last_warning = self._unwarned_drops, 0, now
        log.warning("assay: %d span(s) dropped by the %s queue (queue full or closed); "
                    "%d dropped in all. Raise max_queue_size or use queue_full_policy='block'.",
                    count, self.name, self.dropped)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=f"assay-export-{self.name}",
                                      daemon=True)
            self._thread = thread
            thread.start()
        _finalize_in_multiprocessing_child(self)

    # -- background thread ----------------------------------------------------
    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                self._drain()
                if self._unwarned_drops:
                    self._warn_drops()
                if self._stopping and not self._queue:
                    return
        finally:
            detach(token)

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[ReadableSpan] = []
            markers: list[_Flush] = []
            while queue and len(batch) < self._batch:
                item = queue.popleft()
                if isinstance(item, _Flush):
                    markers.append(item)
                    break
                batch.append(item)
            self._room.set()
            if batch:
                self._export(batch)
            for marker in markers:
                marker.done.set()

    def _export(self, batch: list[ReadableSpan]) -> None:
        self.batches += 1
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # an exporter must not raise; count it and go on
            result = SpanExportResult.FAILURE
            if self.failed == 0:
                log.error("assay: %s.export raised %r", self.name, exc)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(batch)
        else:
            self.failed += len(batch)
            log.warning("assay: %s could not export %d span(s)", self.name, len(batch))

    # -- flush and shutdown ---------------------------------------------------
    def force_flush(self, timeout_s: float) -> bool:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._queue
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        if self._closed:
            return
        deadline = time.monotonic() + timeout_s
        self.force_flush(timeout_s)
        self._closed = True
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
        if self._queue:
            left = sum(1 for item in self._queue if not isinstance(item, _Flush))
            if left:
                self._count_drop(left)
            self._queue.clear()
        self._warn_drops(force=True)
        try:
            self.exporter.shutdown()
        except Exception as exc:
            internal_error(f"{self.name}.shutdown", exc)

    def stats(self) -> dict[str, Any]:
        queued = sum(1 for item in list(self._queue) if not isinstance(item, _Flush))
        return {
            "exporter": self.name,
            "queued": queued,
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.dropped,
            "batches": self.batches,
            "blocked": self.blocked,
        }


def _finalize_in_multiprocessing_child(queue: ExportQueue) -> None:
    """A ``multiprocessing`` child (fork or forkserver) leaves through ``os._exit``,
    skipping ``atexit``: register a multiprocessing finalizer so that the spans it
    queued are still exported."""
    import sys

    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(queue, queue.shutdown, args=(10.0,), exitpriority=100)


class AssayProcessor(SpanProcessor):
    """The one span processor assay adds to a ``TracerProvider``.

    ``on_end`` runs on the thread that ends the span: it applies ``redact``
    (if configured) and appends the span to each exporter's queue.
    """

    def __init__(self, exporters: Sequence[SpanExporter], *,
                 redact: Callable[[Span], Span | None] | None = None,
                 max_queue_size: int = 50_000, flush_interval_s: float = 0.5,
                 queue_full_policy: str = "block", experiment: str = "default") -> None:
        self._redact = redact
        self._experiment = experiment
        self.queues = [ExportQueue(e, max_queue_size=max_queue_size,
                                   flush_interval_s=flush_interval_s,
                                   queue_full_policy=queue_full_policy) for e in exporters]
        self._puts = [q.put for q in self.queues]
        self.redacted = 0
        self.redact_errors = 0
        self._closed = False

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self._closed or not span.context.trace_flags.sampled:
            return
        if self._redact is not None:
            redacted = self._apply_redact(span)
            if redacted is None:
                return
            span = redacted
        for put in self._puts:
            put(span)

    def _apply_redact(self, span: ReadableSpan) -> ReadableSpan | None:
        try:
            model = to_span_model(span)
            result = self._redact(model)  # type: ignore[misc]
            if result is None:
                self.redacted += 1
                return None
            return readable_from_model(result, span)
        except Exception as exc:
            self.redact_errors += 1
            log.error("assay: redact raised %r; the span %r was dropped", exc, span.name)
            return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000.0
        ok = True
        for queue in self.queues:
            ok = queue.force_flush(max(deadline - time.monotonic(), 0.0)) and ok
        return ok

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        for queue in self.queues:
            queue.shutdown(max(deadline - time.monotonic(), 0.0))

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for queue in self.queues:
            row = queue.stats()
            row["redacted"] = self.redacted
            row["redact_errors"] = self.redact_errors
            out.append(row)
        return out
