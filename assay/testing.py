"""Helpers for testing code that uses assay: capture traces in memory, deterministically.

Example:
    >>> from assay.testing import capture_traces
    >>> with capture_traces() as captured:
    ...     my_traced_app("hello")
    >>> [s.name for s in captured.spans]
    ['my_traced_app', 'call_llm']
    >>> captured.traces()[0].info.state
    'OK'
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from opentelemetry.sdk.trace.id_generator import IdGenerator

from assay.config import Settings, settings_from_env
from assay.exporters.memory import InMemorySpanExporter
from assay.tracing import _runtime
from assay.tracing.models import Span, Trace

__all__ = ["CapturedTraces", "FakeClock", "InMemorySpanExporter", "SequentialIdGenerator",
           "capture_traces"]


class SequentialIdGenerator(IdGenerator):
    """Trace and span ids 1, 2, 3, ... (as 32/16 hex characters), thread-safe."""

    def __init__(self) -> None:
        self._traces = itertools.count(1)
        self._spans = itertools.count(1)
        self._lock = threading.Lock()

    def generate_trace_id(self) -> int:
        with self._lock:
            return next(self._traces)

    def generate_span_id(self) -> int:
        with self._lock:
            return next(self._spans)


class FakeClock:
    """A clock (ns since the epoch) that advances by ``step_ns`` on every reading."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000, step_ns: int = 1_000_000):
        self._next = start_ns
        self._step = step_ns
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            value = self._next
            self._next += self._step
            return value


class CapturedTraces:
    """What :func:`capture_traces` recorded."""

    def __init__(self, exporter: InMemorySpanExporter, experiment: str) -> None:
        self.exporter = exporter
        self.experiment = experiment

    @property
    def spans(self) -> list[Span]:
        """Every ended span so far, in the order they ended (flushes first)."""
        _runtime.flush(10.0)
        return self.exporter.spans

    def traces(self) -> list[Trace]:
        """Every trace recorded so far, oldest first, with its spans (flushes first)."""
        rt = _runtime.current()
        _runtime.flush(10.0)
        assert rt.store is not None
        out: list[Trace] = []
        token = None
        while True:
            page = rt.store.search(experiment=self.experiment, max_results=1000,
                                   page_token=token, order="oldest")
            out.extend(page.traces)
            token = page.next_page_token
            if token is None:
                return out


@contextmanager
def capture_traces(*, experiment: str = "test", deterministic: bool = True,
                   settings: Settings | None = None) -> Iterator[CapturedTraces]:
    """Trace into an in-memory store for the duration of the block.

    Args:
        experiment: experiment of the captured traces.
        deterministic: sequential ids and a clock that advances 1 ms per reading.
        settings: start from these settings instead of the environment's.

    On exit the capture is flushed and shut down; the next span reads the
    configuration from the environment again (or call ``assay.configure``).
    """
    exporter = InMemorySpanExporter()
    base = settings or settings_from_env()
    conf = replace(base, store="memory://", experiment=experiment, enabled=True)
    _runtime.install(conf, exporters=[exporter],
                     id_generator=SequentialIdGenerator() if deterministic else None,
                     clock=FakeClock() if deterministic else None)
    try:
        yield CapturedTraces(exporter, experiment)
    finally:
        _runtime.shutdown()
