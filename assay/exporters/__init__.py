"""Exporters: OpenTelemetry ``SpanExporter``s that receive assay's spans, and their counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assay.exporters.memory import InMemorySpanExporter
from assay.exporters.store import StoreSpanExporter

if TYPE_CHECKING:
    from assay.exporters.otlp import OTLPExporter

__all__ = ["InMemorySpanExporter", "OTLPExporter", "StoreSpanExporter", "stats"]


def __getattr__(name: str) -> Any:
    # OTLPExporter brings httpx and protobuf along: imported on first use only.
    if name == "OTLPExporter":
        from assay.exporters.otlp import OTLPExporter

        return OTLPExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stats() -> list[dict[str, Any]]:
    """Counters of every exporter of the live configuration, one dict each:
    ``exporter``, ``queued``, ``exported``, ``failed``, ``dropped``, ``batches``,
    ``blocked``, ``redacted``, ``redact_errors``."""
    from assay.tracing import _runtime

    rt = _runtime._STATE.rt
    if rt is None or rt.processor is None:
        return []
    return rt.processor.stats()
