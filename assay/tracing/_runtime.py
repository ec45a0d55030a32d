"""The one live configuration: provider, tracer, processor and store.

``_STATE.rt`` is read on every traced call, so it is a plain attribute. It is
``None`` until ``configure()`` runs or the first span starts, at which point
the settings are read from the environment.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.id_generator import IdGenerator

from assay.config import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from assay.exporters.processor import AssayProcessor
    from assay.store.base import TraceStore
    from assay.tracing.models import Span

log = logging.getLogger("assay")

__all__ = ["Runtime", "current", "install", "internal_error", "shutdown"]


class _Ids(IdGenerator):
    """Random OpenTelemetry ids from a private generator.

    ``random.seed()`` in application code does not touch it, and a forked
    child reseeds it, so parent and child never hand out the same ids.
    """

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(32))
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._rng = random.Random(os.urandom(32))

    def generate_span_id(self) -> int:
        value = self._rng.getrandbits(64)
        while value == 0:
            value = self._rng.getrandbits(64)
        return value

    def generate_trace_id(self) -> int:
        value = self._rng.getrandbits(128)
        while value == 0:
            value = self._rng.getrandbits(128)
        return value


_IDS: _Ids | None = None


def _ids() -> _Ids:
    global _IDS
    if _IDS is None:
        _IDS = _Ids()
    return _IDS


class Runtime:
    """What ``configure()`` built. Immutable once installed, except ``clock``."""

    __slots__ = ("clock", "enabled", "experiment", "max_value_bytes", "processor", "provider",
                 "settings", "store", "tracer")

    def __init__(self, settings: Settings, *, store: TraceStore | None,
                 provider: TracerProvider | None, tracer: Tracer | None,
                 processor: AssayProcessor | None) -> None:
        self.settings = settings
        self.enabled = settings.enabled and tracer is not None
        self.experiment = settings.experiment
        self.max_value_bytes = settings.max_value_bytes
        self.store = store
        self.provider = provider
        self.tracer = tracer
        self.processor = processor
        self.clock: Callable[[], int] = time.time_ns

    def flush(self, timeout_s: float) -> bool:
        if self.processor is None:
            return True
        return self.processor.force_flush(int(timeout_s * 1000))

    def close(self, timeout_s: float = 10.0, *,
              keep: Collection[SpanExporter] = ()) -> None:
        """Flush and stop the export threads, then release the store's connections.

        The exporters in ``keep`` are flushed but not shut down: a new configuration
        takes them over.
        """
        try:
            if self.processor is not None:
                self.processor.shutdown(timeout_s, keep=keep)
        finally:
            if self.store is not None:
                self.store.close()


class _State:
    __slots__ = ("rt",)

    def __init__(self) -> None:
        self.rt: Runtime | None = None


_STATE = _State()
_LOCK = threading.RLock()
_ATEXIT_REGISTERED = False
_error_counts: dict[str, int] = {}


def internal_error(where: str, exc: BaseException) -> None:
    """Report a failure of assay's own machinery: logged once per place, counted.

    With ``ASSAY_INTERNAL_ERRORS=raise`` (assay's own tests) it re-raises instead.
    """
    rt = _STATE.rt
    if rt is not None and rt.settings.internal_errors == "raise":
        raise exc
    count = _error_counts.get(where, 0) + 1
    _error_counts[where] = count
    if count == 1:
        log.error("assay: internal error in %s (tracing goes on): %r", where, exc,
                  exc_info=exc)


def internal_error_counts() -> dict[str, int]:
    return dict(_error_counts)


def current() -> Runtime:
    """The live runtime, built from the environment on first use."""
    rt = _STATE.rt
    if rt is not None:
        return rt
    with _LOCK:
        if _STATE.rt is None:
            from assay.config import settings_from_env
            from assay.errors import ConfigurationError

            try:
                settings = settings_from_env()
                install(settings)
            except ConfigurationError as exc:
                log.error("assay: tracing disabled: %s", exc)
                install(Settings(enabled=False), open_store=False)
        rt = _STATE.rt
        assert rt is not None
        return rt


#: ``configure(store="none")``: no local store, spans go to the given exporters only.
NO_STORE = "none"


def install(settings: Settings, *, redact: Callable[[Span], Span | None] | None = None,
            exporters: list[SpanExporter] | None = None, use_global_provider: bool = False,
            open_store: bool = True, id_generator: IdGenerator | None = None,
            clock: Callable[[], int] | None = None, open_now: bool = False) -> Runtime:
    """Build a runtime for ``settings`` and make it the live one.

    With ``open_now`` (an explicit ``configure()``) the store is opened before
    returning: a store that cannot be used is the caller's error, raised here,
    and the database layer is imported on this thread rather than by the
    background writer (which a ``fork()`` could interrupt mid-import). Without
    it (tracing configured implicitly by the first span) the writer opens the
    store, keeping SQLAlchemy off the first traced call.
    """
    from assay.store import open_store as _open_store

    exporters = list(exporters or ())
    if exporters:
        _check_exporters(exporters)
    wanted = open_store and settings.store.strip().lower() != NO_STORE
    store = _open_store(settings.store) if wanted else None
    if store is not None and open_now:
        store.open()
    with _LOCK:
        old = _STATE.rt
        _STATE.rt = None
        if old is not None:
            old.close(keep=_handed_over(old, exporters))
        if not settings.enabled:
            rt = Runtime(settings, store=store, provider=None, tracer=None, processor=None)
        else:
            rt = _build(settings, store, redact, exporters, use_global_provider,
                        id_generator or _ids())
        if clock is not None:
            rt.clock = clock
        _STATE.rt = rt
        _register_atexit()
        return rt


def _check_exporters(exporters: list[SpanExporter]) -> None:
    """Refuse exporters that an earlier configuration shut down: they would fail
    every export."""
    from assay.errors import ConfigurationError
    from assay.exporters.processor import was_shut_down

    with _LOCK:
        live = _STATE.rt
        live_ids = {id(e) for e in (live.processor.exporters if live is not None
                                     and live.processor is not None else ())}
        for exporter in exporters:
            if id(exporter) not in live_ids and was_shut_down(exporter):
                raise ConfigurationError(
                    f"configure(exporters=[..., {exporter!r}, ...]): this exporter was shut "
                    "down when the configuration that used it was replaced without it or by "
                    "assay.shutdown(); create a new one. (An exporter passed again to the "
                    "next configure() call is handed over, not shut down.)")


def _handed_over(old: Runtime, exporters: list[SpanExporter]) -> list[SpanExporter]:
    """The exporters of ``old`` that the new configuration uses again."""
    if old.processor is None:
        return []
    ids = {id(e) for e in exporters}
    return [e for e in old.processor.exporters if id(e) in ids]


def _build(settings: Settings, store: TraceStore | None,
           redact: Callable[[Span], Span | None] | None,
           exporters: list[SpanExporter], use_global_provider: bool,
           id_generator: IdGenerator) -> Runtime:
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    from assay._version import __version__
    from assay.exporters.processor import AssayProcessor
    from assay.exporters.store import StoreSpanExporter

    all_exporters: list[SpanExporter] = []
    if store is not None:
        all_exporters.append(StoreSpanExporter(store))
    all_exporters.extend(exporters)
    spool_root: str | Path | None = None
    if settings.spool:
        from assay.exporters.spool import default_spool_root

        spool_root = settings.spool_dir or default_spool_root()
    processor = AssayProcessor(
        all_exporters,
        redact=redact,
        max_queue_size=settings.max_queue_size,
        flush_interval_s=settings.flush_interval_ms / 1000.0,
        queue_full_policy=settings.queue_full_policy,
        experiment=settings.experiment,
        spool_root=spool_root,
        spool_max_bytes=settings.spool_max_bytes,
    )
    provider: Any = None
    if use_global_provider:
        existing = trace_api.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            provider = existing
    if provider is None:
        ratio = settings.sampling_ratio
        root = ALWAYS_ON if ratio >= 1.0 else TraceIdRatioBased(ratio)
        resource = _resource(settings.experiment)
        # assay flushes and shuts its provider down itself (atexit, configure()).
        provider = TracerProvider(sampler=ParentBased(root), resource=resource,
                                  id_generator=id_generator, shutdown_on_exit=False)
        if use_global_provider:
            trace_api.set_tracer_provider(provider)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("assay", __version__)
    return Runtime(settings, store=store, provider=provider, tracer=tracer, processor=processor)


def _resource(experiment: str) -> Resource:
    """The resource of assay's own provider.

    ``service.name`` comes from ``OTEL_SERVICE_NAME``, else from
    ``OTEL_RESOURCE_ATTRIBUTES``, else it is ``"assay"`` (in place of the SDK's
    ``unknown_service`` default); the other attributes of
    ``OTEL_RESOURCE_ATTRIBUTES`` are kept.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    from assay.tracing.types import RESOURCE_EXPERIMENT

    resource = Resource.create({RESOURCE_EXPERIMENT: experiment})
    name = resource.attributes.get(SERVICE_NAME)
    if not isinstance(name, str) or not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "assay"}))
    return resource


def shutdown(timeout_s: float = 10.0) -> None:
    """Flush and stop the live runtime (assay starts a fresh one on the next span)."""
    with _LOCK:
        rt = _STATE.rt
        _STATE.rt = None
    if rt is not None:
        rt.close(timeout_s)


def _at_exit() -> None:
    rt = _STATE.rt
    if rt is None:
        return
    try:
        rt.close(timeout_s=10.0)
    except Exception as exc:  # pragma: no cover - never fail interpreter exit
        log.error("assay: could not flush at exit: %r", exc)


def _register_atexit() -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        atexit.register(_at_exit)
        _ATEXIT_REGISTERED = True


def flush(timeout_s: float = 10.0) -> bool:
    """Block until every span that has ended is persisted by every exporter.

    Returns within ``timeout_s`` whatever the exporters do, a collector that is
    down included. When something is not delivered by then, one warning lists,
    per exporter, the spans still in memory (sent in the background, and flushed
    again at exit) and those in its disk spool (safe on disk: sent when the
    collector answers again, or by the next process that uses the spool);
    :func:`assay.exporters.stats` has the same figures.

    Args:
        timeout_s: give up after this many seconds.

    Returns:
        ``True`` when everything was exported in time, ``False`` otherwise.

    Example:
        >>> assay.flush()
        True
    """
    rt = _STATE.rt
    if rt is None:
        return True
    delivered = rt.flush(timeout_s)
    if not delivered and rt.processor is not None:
        _report_undelivered(rt.processor.undelivered(), timeout_s)
    return delivered


def _report_undelivered(rows: list[dict[str, Any]], timeout_s: float) -> None:
    lines = []
    for row in rows:
        where = f"{row['exporter']} ({row['target']})" if row.get("target") else row["exporter"]
        parts = []
        in_memory = row["queued"] + row["in_flight"]
        if in_memory:
            parts.append(f"{in_memory} in memory (still being sent; flushed again at exit)")
        if row["spooled"]:
            parts.append(f"{row['spooled']} in the spool at {row['spool_dir']} (safe on disk: "
                         "sent when the collector answers again, or by the next process that "
                         "uses this spool)")
        lines.append(f"  {where}: " + "; ".join(parts))
    log.warning("assay: flush(timeout_s=%g) returned before every span was delivered:\n%s",
                timeout_s, "\n".join(lines))
