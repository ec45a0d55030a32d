"""The exporter that writes spans into a :class:`~assay.store.TraceStore`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from assay.exporters._convert import to_record
from assay.store.base import TraceStore

__all__ = ["StoreSpanExporter"]

log = logging.getLogger("assay")


class StoreSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that persists spans in an assay trace store.

    ``export`` never raises: a store that cannot be written is logged and the
    batch reported as failed (the processor counts it).
    """

    def __init__(self, store: TraceStore, default_experiment: str = "default") -> None:
        self.store = store
        self._experiment = default_experiment

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.store.write_spans([to_record(s, self._experiment) for s in spans])
        except Exception as exc:
            log.error("assay: could not write %d span(s) to %s: %s", len(spans),
                      getattr(self.store, "uri", self.store), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
