"""An exporter that keeps spans in memory, for tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from assay.tracing.models import Span

__all__ = ["InMemorySpanExporter"]


class InMemorySpanExporter(SpanExporter):
    """Collects every exported span as an assay :class:`~assay.Span`.

    Example:
        >>> exporter = InMemorySpanExporter()
        >>> assay.configure(store="memory://", exporters=[exporter])
        >>> ...; assay.flush(); exporter.spans
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self.raw: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from assay.exporters._convert import to_span_model

        models = [to_span_model(s) for s in spans]
        with self._lock:
            self.raw.extend(spans)
            self._spans.extend(models)
        return SpanExportResult.SUCCESS

    @property
    def spans(self) -> list[Span]:
        """Exported spans, in the order they ended."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.raw.clear()

    def shutdown(self) -> None:
        return None
