"""The exporter that writes spans into a :class:`~assay.store.TraceStore`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from assay.errors import StoreError
from assay.exporters._convert import to_record
from assay.store.base import TraceStore

__all__ = ["StoreSpanExporter"]

log = logging.getLogger("assay")

#: URI schemes of stores on a database server, reached over the network.
_SERVER_SCHEMES = ("postgresql:", "postgresql+", "postgres:")


class StoreSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that persists spans in an assay trace store.

    ``export`` never raises: a store that cannot be written is logged and the
    batch reported as failed (the processor counts it).

    A store on a database server (PostgreSQL) gets a disk spool by default, as
    an OTLP collector does (see :mod:`assay.exporters.processor`): a batch that
    could not be written for a reason that may pass (the server down or
    unreachable, a connection lost, the database locked for longer than the
    store's retries, a schema this assay may not write until the store or this
    assay is upgraded) is kept on disk and written when the server answers again,
    by this process or the next one using the same spool. A batch the database
    refuses (a row its schema rejects) is not kept. A SQLite file is on this
    machine, so a write that fails there fails for everyone: no spool.
    """

    def __init__(self, store: TraceStore, default_experiment: str = "default") -> None:
        self.store = store
        self._experiment = default_experiment
        uri = getattr(store, "uri", "")
        self.spool_by_default = isinstance(uri, str) and uri.lower().startswith(_SERVER_SCHEMES)
        #: Whether the last failed export failed for a reason that may pass.
        self.last_failure_transient = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.store.write_spans([to_record(s, self._experiment) for s in spans])
        except Exception as exc:
            self.last_failure_transient = _may_pass(exc)
            log.error("assay: could not write %d span(s) to %s: %s", len(spans),
                      getattr(self.store, "uri", self.store), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _may_pass(exc: BaseException) -> bool:
    """Whether a write failed for a reason that may pass: somewhere in its chain of
    causes, the database's operational error (server down, connection lost,
    locked, timed out), the operating system's (a socket, a file), or a store
    whose schema this assay may not write until one of them is upgraded."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, StoreError) and cause.may_pass:
            return True
        if isinstance(cause, OperationalError) or (
                isinstance(cause, DBAPIError) and cause.connection_invalidated):
            return True
        if isinstance(cause, (OSError, TimeoutError)):
            return True
        if isinstance(cause, DBAPIError):
            return False  # the database refused the rows themselves
        cause = cause.__cause__ or cause.__context__
    return False
