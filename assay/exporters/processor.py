"""Between ended spans and exporters: redaction, then one bounded queue per exporter.

The calling thread only appends the ended span to each exporter's queue; a
background thread per exporter sends batches. The queues follow the virtues of
OpenTelemetry's BatchSpanProcessor (bounded, woken early when a batch is ready,
deadline-aware flush and shutdown, fork-safe) and add what it lacks: a
documented full-queue policy, counters for every span, a rate-limited warning
whenever spans are dropped or fail, and a disk spool.

Full-queue policy:
    ``"block"`` (default): the thread ending a span waits for the writer to make
    room, up to ``block_timeout_s`` (5 s); if there is still no room the span is
    dropped and counted. A burst the machine can produce is thus stored whole.
    ``"drop"``: the span is dropped at once and counted.

Disk spool (exporters whose class says ``spool_by_default = True``, such as
:class:`~assay.exporters.OTLPExporter`; see :mod:`assay.exporters.spool`): what
the destination cannot take in time goes to disk instead of being lost, and is
replayed, oldest first, when it answers again, or by the next process that uses
the same spool directory. Namely:

- when the queue is three quarters full (a slow or unreachable collector), a
  second thread moves the oldest spans from memory to the spool, so that the
  application neither waits nor loses spans as long as the disk keeps up; if
  spans still come faster than they can be written, the queue-full policy
  applies as without a spool;
- a batch the exporter gives up on for a reason that may pass (connection
  refused, timeout, 429, 5xx, its retry window over) is appended to the spool,
  and the queue counts the destination as down: until a replayed record gets
  through (a probe, retried with backoff), new spans go straight to the spool;
- a batch refused for good (an HTTP 400) is not kept: it is counted ``failed``;
- at shutdown (and so at exit), what is still in memory goes to the spool.

Spans in memory and spans replayed from the spool interleave, so a destination
may receive spans out of the order they ended (OTLP allows it). Delivery
through the spool is at least once.

Counters of one queue (:meth:`ExportQueue.stats`) always balance::

    produced + inherited == exported + failed + dropped + queued + in_flight + spooled
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import sys
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from assay.exporters._convert import readable_from_model, to_span_model
from assay.exporters.spool import (
    DEFAULT_MAX_BYTES,
    Spool,
    SpoolError,
    decode_spans,
    encode_spans,
    spool_directory,
)
from assay.tracing._runtime import internal_error

if TYPE_CHECKING:
    from assay.tracing.models import Span

__all__ = ["AssayProcessor", "ExportQueue", "target_of", "was_shut_down"]

log = logging.getLogger("assay")

_MAX_BATCH = 2_048
_WARN_EVERY_S = 10.0
_PROBE_FIRST_S = 0.5  # the first wait before a replayed record probes a down destination
_PROBE_MAX_S = 30.0
_RECLAIM_EVERY_S = 30.0  # how often a live queue looks for segments left by other processes
_SHUTDOWN_GRACE_S = 2.0  # how long shutdown waits for an export it cut short

#: Exporters that an assay configuration shut down; they cannot serve another one.
_SHUT_DOWN: weakref.WeakSet[SpanExporter] = weakref.WeakSet()


def was_shut_down(exporter: SpanExporter) -> bool:
    """Whether a configuration of assay shut ``exporter`` down (when it was replaced,
    or by ``assay.shutdown()``)."""
    try:
        return exporter in _SHUT_DOWN
    except TypeError:  # not weak-referenceable or not hashable: never recorded
        return False


def target_of(exporter: SpanExporter) -> str | None:
    """Where ``exporter`` sends, as it may be shown: its ``target`` or ``endpoint``
    attribute, or its store's URI, with the password of a URL masked; ``None`` when
    it does not say."""
    for value in (getattr(exporter, "target", None), getattr(exporter, "endpoint", None),
                  getattr(getattr(exporter, "store", None), "uri", None)):
        if isinstance(value, str) and value:
            return _mask_password(value)
    return None


def _mask_password(uri: str) -> str:
    with contextlib.suppress(ValueError):
        parts = urllib.parse.urlsplit(uri)
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return uri


class _Taken:
    """Spans taken from a queue by one of its threads, until they are settled."""

    __slots__ = ("settled", "spans", "start")

    def __init__(self, spans: list[ReadableSpan], start: int) -> None:
        self.spans = spans
        self.start = start  # the queue position of the first span
        self.settled = False


class _RateLimitedWarnings:
    """Warnings that add up counts and are logged at most once per interval each."""

    def __init__(self, every_s: float = _WARN_EVERY_S) -> None:
        self._every = every_s
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def add(self, kind: str, count: int) -> None:
        with self._lock:
            self._pending[kind] = self._pending.get(kind, 0) + count

    def due(self, force: bool = False) -> list[tuple[str, int]]:
        """The kinds to log now, with their counts since they were last logged."""
        now = time.monotonic()
        out = []
        with self._lock:
            for kind, count in list(self._pending.items()):
                last = self._last.get(kind)
                if count and (force or last is None or now - last >= self._every):
                    out.append((kind, count))
                    self._pending[kind] = 0
                    self._last[kind] = now
        return out

    def pending(self) -> bool:
        return any(self._pending.values())

    def forget(self, kind: str) -> None:
        """Drop what ``kind`` added up since it was last logged."""
        with self._lock:
            self._pending.pop(kind, None)


class ExportQueue:
    """One exporter behind one bounded queue and one background thread.

    With a ``spool``, a second thread moves spans to disk when the queue nears
    its bound or the destination is down (see the module documentation).
    """

    def __init__(self, exporter: SpanExporter, *, max_queue_size: int, flush_interval_s: float,
                 queue_full_policy: str = "block", block_timeout_s: float = 5.0,
                 max_batch_size: int = _MAX_BATCH, spool: Spool | None = None) -> None:
        self.exporter = exporter
        self.name = type(exporter).__name__
        self.target = target_of(exporter)
        self._max = max_queue_size
        self._batch = min(max_batch_size, max_queue_size)
        self._interval = flush_interval_s
        self._policy = queue_full_policy
        self._block_timeout = block_timeout_s
        if spool is not None:
            # Past three quarters full, the oldest spans go to disk a batch at a time;
            # the last quarter is the spiller's head start on a full queue.
            self._spill_at = max(max_queue_size * 3 // 4, 1)
            self._spill_to = max(self._spill_at - self._batch, 0)
        else:
            self._spill_at = sys.maxsize
            self._spill_to = 0
        self._init_state(spool)
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())
        if spool is not None and spool.has_segments():
            self._start()  # deliver what earlier processes left, spans or not

    def _init_state(self, spool: Spool | None) -> None:
        self._spool = spool
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._spill_wake = threading.Event()
        self._room = threading.Event()
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._unsettled: list[_Taken] = []
        self._taken = 0
        self._thread: threading.Thread | None = None
        self._spiller: threading.Thread | None = None
        self._spool_opened = False
        self._spool_error: Exception | None = None
        self._closed = False
        self._stopping = False
        self._down = False
        self._probe_at = 0.0
        self._probe_wait = _PROBE_FIRST_S
        self._probe_now = False
        self._export_began: int | None = None  # the exporter's retry count when it began
        self._next_claim = time.monotonic() + _RECLAIM_EVERY_S
        self._put_drops = 0
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.batches = 0
        self.blocked = 0
        self._warnings = _RateLimitedWarnings()

    def _after_fork(self) -> None:
        # The parent exports what it had queued (and keeps its spool); the child
        # starts empty, with a spool of its own on the same directory.
        spool = self._spool.forked() if self._spool is not None else None
        self._init_state(spool)

    @property
    def spool(self) -> Spool | None:
        """The disk spool of this queue, if it has one."""
        return self._spool

    # -- calling thread -------------------------------------------------------
    def put(self, span: ReadableSpan) -> None:
        if self._thread is None:
            self._start()
        queue = self._queue
        if len(queue) >= self._max and not self._make_room():
            self._count_drop(1, at_put=True)
            return
        queue.append(span)
        size = len(queue)
        if size >= self._batch and not self._wake.is_set():
            self._wake.set()
        if size >= self._spill_at and not self._spill_wake.is_set():
            self._spill_wake.set()

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
            self._spill_wake.set()
            self._room.wait(min(remaining, 0.05))
        return True

    def _count_drop(self, n: int, *, at_put: bool = False) -> None:
        with self._lock:
            self.dropped += n
            if at_put:
                self._put_drops += n
        self._warnings.add("dropped", n)
        self._log_warnings()

    def _log_warnings(self, force: bool = False) -> None:
        """One warning per kind and interval for what happened since the last one."""
        for kind, count in self._warnings.due(force):
            if kind == "dropped":
                log.warning("assay: %d span(s) dropped by the %s queue (queue full or closed); "
                            "%d dropped in all. Raise max_queue_size or use "
                            "queue_full_policy='block'.", count, self.name, self.dropped)
            elif kind == "failed":
                log.warning("assay: %s could not export %d span(s) (%d in all); they are lost.",
                            self._label(), count, self.failed)
            elif kind == "evicted":
                log.warning("assay: %d span(s) deleted from the spool of %s to keep it within "
                            "its bound (max_bytes=%d); raise spool_max_bytes to keep more.",
                            count, self._label(), self._spool.max_bytes if self._spool else 0)
            elif kind == "unspooled":
                log.warning("assay: %d span(s) for %s were dropped: the spool at %s could not "
                            "take them: %s", count, self._label(),
                            self._spool.directory if self._spool else None, self._spool_error)
            elif kind == "spooled":
                log.warning("assay: %s cannot deliver in time (collector down or slow): %d "
                            "span(s) went to the spool at %s, safe on disk; they are sent when "
                            "it answers again, or by the next process that uses this spool.",
                            self._label(), count, self._spool.directory if self._spool else None)

    def _label(self) -> str:
        return f"{self.name} ({self.target})" if self.target else self.name

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=f"assay-export-{self.name}",
                                      daemon=True)
            self._thread = thread
            if self._spool is not None:
                self._spiller = threading.Thread(target=self._spill_run,
                                                 name=f"assay-spool-{self.name}", daemon=True)
            thread.start()
            if self._spiller is not None:
                self._spiller.start()
        _finalize_in_multiprocessing_child(self)

    # -- taking spans out of the queue (both threads) ------------------------------------
    def _take(self, limit: int) -> _Taken | None:
        with self._cond:
            queue = self._queue
            n = min(limit, len(queue))
            if n <= 0:
                return None
            popleft = queue.popleft
            taken = _Taken([popleft() for _ in range(n)], self._taken)
            self._taken += n
            self._unsettled.append(taken)
        self._room.set()
        return taken

    def _settle(self, taken: _Taken) -> None:
        with self._cond:
            if not taken.settled:
                taken.settled = True
                self._unsettled.remove(taken)
            self._cond.notify_all()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- background thread ----------------------------------------------------
    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while True:
                self._wake.wait(self._next_wait())
                self._wake.clear()
                self._work()
                if self._warnings.pending():
                    self._log_warnings()
                if self._stopping and not self._queue:
                    return
        finally:
            detach(token)

    def _next_wait(self) -> float:
        if self._down:
            return min(self._interval, max(self._probe_at - time.monotonic(), 0.0))
        return self._interval

    def _work(self) -> None:
        """Export memory batches and replay spooled records, in turn, until both are
        done; while the destination is down, send memory to the spool and probe."""
        spool = self._open_spool()
        while True:
            if self._warnings.pending():
                self._log_warnings()
            if self._stopping and spool is not None:
                self._spill(0)
                return
            if self._down:
                self._spill(0)
                if time.monotonic() < self._probe_at and not self._probe_now:
                    return
                self._probe_now = False
                if not self._replay_one(probe=True):
                    return
                continue
            progressed = False
            taken = self._take(self._batch)
            if taken is not None:
                self._export(taken)
                progressed = True
            if spool is not None and not self._down and not self._stopping:
                progressed = self._replay_one(probe=False) or progressed
            if not progressed:
                return

    def _open_spool(self, *, now: bool = False) -> Spool | None:
        """The spool, opened on first use, and claiming what other processes left in it
        every ``_RECLAIM_EVERY_S`` (at once with ``now``)."""
        spool = self._spool
        if spool is None:
            return None
        started = time.monotonic()
        if self._spool_opened and started < self._next_claim and not now:
            return spool
        self._next_claim = started + _RECLAIM_EVERY_S
        try:
            inherited = spool.claim()
        except (OSError, SpoolError) as exc:
            if not self._spool_opened:
                log.error("assay: the spool of %s at %s cannot be used: %s", self._label(),
                          spool.directory, exc)
            inherited = 0
        self._spool_opened = True
        if inherited:
            log.info("assay: %d span(s) left in the spool at %s by earlier processes will be "
                     "sent to %s", inherited, spool.directory, self._label())
        return spool

    def _call_export(self, spans: Sequence[ReadableSpan]) -> tuple[bool, bool]:
        """Export; returns (delivered, whether a failure may pass and is worth retrying)."""
        self.batches += 1
        self._export_began = getattr(self.exporter, "retries", 0)
        try:
            result = self.exporter.export(spans)
        except Exception as exc:  # an exporter must not raise; count it and go on
            if not self.failed and not self._down:
                log.error("assay: %s.export raised %r", self.name, exc)
            return False, True
        finally:
            self._export_began = None
        if result is SpanExportResult.SUCCESS:
            return True, True
        return False, bool(getattr(self.exporter, "last_failure_transient", True))

    def _export(self, taken: _Taken) -> None:
        delivered, transient = self._call_export(taken.spans)
        if taken.settled:  # shutdown kept a copy in the spool meanwhile
            return
        count = len(taken.spans)
        if delivered:
            self.exported += count
            self._mark_up()
        elif self._spool is not None and transient:
            if self._spool_spans(taken.spans) and not self._stopping:
                self._warnings.add("spooled", count)
            self._mark_down()
        else:
            self.failed += count
            self._warnings.add("failed", count)
        self._log_warnings()  # before a flush waiting for this batch returns
        self._settle(taken)

    def _replay_one(self, *, probe: bool) -> bool:
        """Send the oldest spooled record; ``True`` when it was delivered or given up."""
        spool = self._spool
        record = spool.next_record() if spool is not None else None
        if spool is None or record is None:
            if probe:  # nothing on disk to probe with: the next memory batch probes
                self._down = False
            return False
        try:
            spans = decode_spans(record.payload)
        except Exception as exc:
            log.error("assay: a record of the spool at %s cannot be decoded and is skipped: "
                      "%r", spool.directory, exc)
            spool.ack(record, delivered=False)
            self.failed += record.span_count
            return True
        delivered, transient = self._call_export(spans)
        if delivered:
            if spool.ack(record):  # not when shutdown closed the spool meanwhile
                self.exported += record.span_count
            self._mark_up()
        elif transient:
            spool.release(record)
            self._mark_down()
            self._notify()
            return False
        elif spool.ack(record, delivered=False):
            self.failed += record.span_count
            self._warnings.add("failed", record.span_count)
        self._notify()
        return True

    def _mark_down(self) -> None:
        if not self._down:
            self._down = True
            self._probe_wait = _PROBE_FIRST_S
            self._spill_wake.set()
        wait = self._probe_wait
        self._probe_at = time.monotonic() + random.uniform(wait / 2, wait)
        self._probe_wait = min(wait * 2, _PROBE_MAX_S)

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            self._warnings.forget("spooled")
            pending = self._spool.pending_spans if self._spool is not None else 0
            log.info("assay: %s answers again; %d span(s) left in the spool to replay",
                     self._label(), pending)

    # -- the spool ------------------------------------------------------------------------
    def _spill_run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while True:
                self._spill_wake.wait(self._interval)
                self._spill_wake.clear()
                if self._down or self._stopping:
                    self._spill(0)
                elif len(self._queue) >= self._spill_at:
                    self._spill(self._spill_to)
                if self._warnings.pending():
                    self._log_warnings()
                if self._stopping and not self._queue:
                    return
        finally:
            detach(token)

    def _spill(self, keep: int, *, warn: bool = True) -> None:
        """Move the oldest spans to the spool until at most ``keep`` are left in memory."""
        while len(self._queue) > keep:
            taken = self._take(min(self._batch, len(self._queue) - keep))
            if taken is None:
                return
            if self._spool_spans(taken.spans) and warn:
                self._warnings.add("spooled", len(taken.spans))
            self._settle(taken)

    def _spool_spans(self, spans: list[ReadableSpan]) -> bool:
        """Append ``spans`` to the spool as one record; counted as dropped if it cannot."""
        spool = self._spool
        assert spool is not None
        evicted = spool.evicted_spans
        try:
            spool.append(encode_spans(spans), len(spans))
        except Exception as exc:
            self._spool_error = exc
            with self._lock:
                self.dropped += len(spans)
            self._warnings.add("unspooled", len(spans))
            return False
        finally:
            if spool.evicted_spans != evicted:
                self._warnings.add("evicted", spool.evicted_spans - evicted)
        return True

    # -- flush and shutdown ---------------------------------------------------
    def force_flush(self, timeout_s: float, *, while_up: bool = False) -> bool:
        """Wait until every span queued before the call is delivered, and the spool is
        empty; ``False`` when ``timeout_s`` passes first.

        With ``while_up`` (shutdown, with a spool) the wait also ends as soon as
        the destination is found down or an export is being retried: what is
        left then goes to the spool rather than keeping the process from exiting.
        """
        deadline = time.monotonic() + timeout_s
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._queue and not self.spooled
        with self._cond:
            target = self._taken + len(self._queue)
        if self._spool is not None and not while_up:
            # An explicit flush looks for segments that processes gone since the last
            # look left in the spool, and probes a down destination at once.
            self._open_spool(now=True)
            self._probe_now = True
        self._wake.set()
        give_up = self._struggling if while_up else (lambda: False)
        with self._cond:
            while not self._passed(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or give_up():
                    return False
                self._cond.wait(min(remaining, 0.1))
        while self.spooled:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed or give_up():
                return False
            self._wake.set()
            with self._cond:
                self._cond.wait(min(remaining, 0.1))
        return True

    def _struggling(self) -> bool:
        """The destination is down, or the export under way has needed a retry."""
        if self._down:
            return True
        began = self._export_began
        return began is not None and getattr(self.exporter, "retries", 0) != began

    def _passed(self, target: int) -> bool:
        return self._taken >= target and all(t.start >= target for t in self._unsettled)

    def shutdown(self, timeout_s: float, *, keep_exporter: bool = False) -> None:
        """Deliver what can be delivered within ``timeout_s``, keep the rest in the
        spool (or count it as dropped without one), and stop. With ``keep_exporter``
        the exporter is left running, for a configuration that takes it over."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout_s
        if not self._down:
            self.force_flush(timeout_s, while_up=True)
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._spill_wake.set()
        if self._spool is not None:
            self._shutdown_spooled(deadline, keep_exporter)
        else:
            self._join(self._thread, deadline)
            left = self._take(len(self._queue))
            if left is not None:
                self._count_drop(len(left.spans))
                self._settle(left)
            if not keep_exporter:
                self._shutdown_exporter()
        self._log_warnings(force=True)

    def _shutdown_spooled(self, deadline: float, keep_exporter: bool) -> None:
        spool = self._spool
        assert spool is not None
        self._spill(0, warn=False)
        grace = time.monotonic() + _SHUTDOWN_GRACE_S
        if keep_exporter:  # it cannot be interrupted: wait a little, not the whole deadline
            deadline = min(deadline, grace)
        else:
            self._shutdown_exporter()  # cuts a retry short: its batch goes to the spool
            deadline = max(deadline, grace)
        self._join(self._thread, deadline)
        self._join(self._spiller, deadline)
        with self._cond:
            stuck = [t for t in self._unsettled if not t.settled]
        for taken in stuck:  # an export still out: keep a copy (it may arrive twice)
            self._spool_spans(taken.spans)
            self._settle(taken)
        self._spill(0, warn=False)
        spool.close()
        pending = spool.pending_spans
        if pending:
            log.warning("assay: %d span(s) for %s are kept in the spool at %s, safe on disk; "
                        "the next process that uses this spool sends them.", pending,
                        self._label(), spool.directory)

    @staticmethod
    def _join(thread: threading.Thread | None, deadline: float) -> None:
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))

    def _shutdown_exporter(self) -> None:
        with contextlib.suppress(TypeError):
            _SHUT_DOWN.add(self.exporter)
        try:
            self.exporter.shutdown()
        except Exception as exc:
            internal_error(f"{self.name}.shutdown", exc)

    # -- counters -------------------------------------------------------------------------
    @property
    def spooled(self) -> int:
        """Spans in the spool, not yet delivered."""
        return self._spool.pending_spans if self._spool is not None else 0

    @property
    def down(self) -> bool:
        """Whether the last delivery failed for a reason that may pass."""
        return self._down

    def stats(self) -> dict[str, Any]:
        """The counters of this queue (see :func:`assay.exporters.stats`)."""
        spool = self._spool
        counters = spool.counters() if spool is not None else {}
        with self._cond:
            taken = self._taken
            queued = len(self._queue)
            in_flight = sum(len(t.spans) for t in self._unsettled)
        produced = taken + queued + self._put_drops
        row: dict[str, Any] = {
            "exporter": self.name,
            "target": self.target,
            "produced": produced,
            "queued": queued,
            "in_flight": in_flight,
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.dropped + counters.get("evicted_spans", 0)
            + counters.get("unreadable_spans", 0),
            "batches": self.batches,
            "blocked": self.blocked,
            "spooled": counters.get("pending_spans", 0),
            "replayed": counters.get("replayed_spans", 0),
            "inherited": counters.get("inherited_spans", 0),
            "spool_bytes": counters.get("bytes", 0),
            "spool_torn": counters.get("torn_records", 0),
            "spool_dir": str(spool.directory) if spool is not None else None,
            "down": self._down,
        }
        extra = getattr(self.exporter, "stats", None)
        if callable(extra):
            try:
                more = extra()
            except Exception as exc:
                internal_error(f"{self.name}.stats", exc)
            else:
                if isinstance(more, dict):
                    for key, value in more.items():
                        row.setdefault(key, value)
        return row


def _finalize_in_multiprocessing_child(queue: ExportQueue) -> None:
    """A ``multiprocessing`` child (fork or forkserver) leaves through ``os._exit``,
    skipping ``atexit``: register a multiprocessing finalizer so that the spans it
    queued are still exported."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(queue, queue.shutdown, args=(10.0,), exitpriority=100)


class AssayProcessor(SpanProcessor):
    """The one span processor assay adds to a ``TracerProvider``.

    ``on_end`` runs on the thread that ends the span: it applies ``redact``
    (if configured) and appends the span to each exporter's queue.

    Args:
        exporters: where spans go, each behind a queue of its own.
        redact: see :func:`assay.configure`.
        max_queue_size: spans held in memory per exporter.
        flush_interval_s: how often a queue sends what it holds.
        queue_full_policy: ``"block"`` or ``"drop"`` (see the module documentation).
        spool_root: the directory under which exporters that want a disk spool
            (``spool_by_default = True``) get one, named after their target;
            ``None`` turns spooling off.
        spool_max_bytes: the bound of each spool.
    """

    def __init__(self, exporters: Sequence[SpanExporter], *,
                 redact: Callable[[Span], Span | None] | None = None,
                 max_queue_size: int = 50_000, flush_interval_s: float = 0.5,
                 queue_full_policy: str = "block", experiment: str = "default",
                 spool_root: str | os.PathLike[str] | None = None,
                 spool_max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._redact = redact
        self._experiment = experiment
        self.exporters = list(exporters)
        self.queues = [ExportQueue(e, max_queue_size=max_queue_size,
                                   flush_interval_s=flush_interval_s,
                                   queue_full_policy=queue_full_policy,
                                   spool=_spool_for(e, spool_root, spool_max_bytes))
                       for e in exporters]
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

    def shutdown(self, timeout_s: float = 10.0, *,
                 keep: Collection[SpanExporter] = ()) -> None:
        """Flush and stop every queue within ``timeout_s``; the exporters in ``keep``
        are not shut down (a new configuration takes them over)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        kept = {id(e) for e in keep}
        for queue in self.queues:
            queue.shutdown(max(deadline - time.monotonic(), 0.0),
                           keep_exporter=id(queue.exporter) in kept)

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for queue in self.queues:
            row = queue.stats()
            row["redacted"] = self.redacted
            row["redact_errors"] = self.redact_errors
            out.append(row)
        return out

    def undelivered(self) -> list[dict[str, Any]]:
        """The stats of the queues that still hold spans in memory or in a spool."""
        return [row for row in self.stats()
                if row["queued"] or row["in_flight"] or row["spooled"]]


def _spool_for(exporter: SpanExporter, root: str | os.PathLike[str] | None,
               max_bytes: int) -> Spool | None:
    if root is None or not getattr(exporter, "spool_by_default", False):
        return None
    target = target_of(exporter) or f"{type(exporter).__module__}.{type(exporter).__qualname__}"
    return Spool(spool_directory(root, target), max_bytes=max_bytes, target=target)
