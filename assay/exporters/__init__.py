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
    """Counters of every exporter of the live configuration, one dict each, in the
    order of the configuration (the store first).

    Spans, counted since the configuration was made:

    - ``produced``: spans handed to this exporter's queue by this process;
    - ``inherited``: spans found in the disk spool, left there by earlier processes;
    - ``exported``: delivered, straight from memory or replayed from the spool;
    - ``failed``: lost because the exporter failed and nothing could keep them
      (no spool, or a batch the destination refused for good);
    - ``dropped``: lost for want of room: the queue full or closed, the spool over
      its bound (oldest first) or unwritable, records torn by a crash;
    - ``queued``: in memory now, waiting (at most the queue's bound);
    - ``in_flight``: in memory now, taken by the queue's threads: being exported or
      written to the spool;
    - ``spooled``: in the disk spool now, safe on disk and waiting to be replayed;
    - ``replayed``: delivered from the spool (included in ``exported``).

    They balance: ``produced + inherited == exported + failed + dropped + queued +
    in_flight + spooled``. Besides: ``exporter`` (the class name), ``target`` (where it sends:
    the OTLP endpoint, the store URI with any password masked, or ``None``),
    ``batches`` (export calls), ``blocked`` (times a full queue made the
    application wait), ``down`` (the last delivery failed for a reason that may
    pass), ``spool_dir``, ``spool_bytes`` and ``spool_torn`` (torn records
    skipped) of the disk spool (``None`` and zeros without one), the processor's
    ``redacted`` and ``redact_errors``, and the exporter's own counters when it
    has a ``stats()`` method (``retries`` and ``rejected_spans`` of
    :class:`OTLPExporter`).
    """
    from assay.tracing import _runtime

    rt = _runtime._STATE.rt
    if rt is None or rt.processor is None:
        return []
    return rt.processor.stats()
