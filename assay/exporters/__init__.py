"""Exporters: OpenTelemetry ``SpanExporter``s that receive assay's spans, and their counters."""

from __future__ import annotations

from typing import Any

from assay.exporters.memory import InMemorySpanExporter
from assay.exporters.store import StoreSpanExporter

__all__ = ["InMemorySpanExporter", "StoreSpanExporter", "stats"]


def stats() -> list[dict[str, Any]]:
    """Counters of every exporter of the live configuration, one dict each:
    ``exporter``, ``queued``, ``exported``, ``failed``, ``dropped``, ``batches``,
    ``blocked``, ``redacted``, ``redact_errors``."""
    from assay.tracing import _runtime

    rt = _runtime._STATE.rt
    if rt is None or rt.processor is None:
        return []
    return rt.processor.stats()
