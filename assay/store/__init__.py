"""The trace store: where spans are persisted and traces are read back.

``open_store(uri)`` understands:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``: an SQLite file
  (created on first use, with its directory's parent required to exist);
- ``memory://`` (or ``sqlite://``, ``sqlite:///:memory:``): an in-memory SQLite
  database, private to this process, for tests;
- ``postgresql://user:password@host:port/database``: a PostgreSQL database shared
  by many machines (``pip install 'assay[postgres]'``, psycopg 3).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from assay.errors import ConfigurationError
from assay.store.base import MetricRow, RunPage, SpanRecord, TracePage, TraceStore

if TYPE_CHECKING:
    from assay.store.runs import Metric, Run
    from assay.store.sql import SqlTraceStore
    from assay.tracing.models import Assessment, Trace

__all__ = ["LazyStore", "RunPage", "SpanRecord", "TracePage", "TraceStore", "open_store"]


class LazyStore:
    """A :class:`TraceStore` whose database layer is imported and opened on first use.

    SQLAlchemy costs a quarter of a second to import: deferring it keeps it off
    ``import assay`` and off the first traced call (the background writer, or
    the first query, pays it).
    """

    def __init__(self, uri: str, url: str, *, memory: bool = False) -> None:
        self.uri = uri
        self._url = url
        self._memory = memory
        self._store: SqlTraceStore | None = None
        self._opening: SqlTraceStore | None = None
        self._lock = threading.Lock()
        self._held_for_fork = False
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"LazyStore({self.uri!r})"

    @property
    def sql(self) -> SqlTraceStore:
        """The underlying SQL store (opened now if it was not yet)."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    from assay.store.sql import SqlTraceStore

                    # Open it fully here, so that every lazy import of the
                    # database layer is done before the first write.
                    opened = SqlTraceStore(self.uri, self._url, memory=self._memory)
                    self._opening = opened
                    try:
                        opened.open()
                    finally:
                        self._opening = None
                    self._store = opened
                store = self._store
        return store

    def open(self) -> None:
        """Import the database layer, connect, and create or check the schema now.

        Raises:
            StoreError: the database cannot be opened, or its schema is newer.
        """
        self.sql  # noqa: B018 - opening is the point

    def upgrade(self) -> tuple[int, int]:
        """Upgrade the database's schema to this assay's (``assay db upgrade``);
        returns the (old, new) schema versions."""
        from assay.store.sql import SqlTraceStore

        return SqlTraceStore(self.uri, self._url, memory=self._memory).upgrade()

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        self.sql.write_spans(records)

    def bulk_load(self, records: Iterable[SpanRecord], *, chunk_spans: int = 200_000,
                  defer_indexes: bool | None = None, cache_mb: int = 1024) -> int:
        """Store many spans at once (see :meth:`SqlTraceStore.bulk_load`); returns how many."""
        return self.sql.bulk_load(records, chunk_spans=chunk_spans,
                                  defer_indexes=defer_indexes, cache_mb=cache_mb)

    def get_trace(self, trace_id: str) -> Trace | None:
        return self.sql.get_trace(trace_id)

    def search(self, *, experiment: str | Sequence[str] | None, max_results: int = 100,
               page_token: str | None = None, order: Literal["newest", "oldest"] = "newest",
               include_spans: bool = True, filter_string: str | None = None,
               order_by: list[str] | None = None) -> TracePage:
        return self.sql.search(experiment=experiment, max_results=max_results,
                               page_token=page_token, order=order, include_spans=include_spans,
                               filter_string=filter_string, order_by=order_by)

    def delete_traces(self, *, experiment: str | Sequence[str] | None,
                      filter_string: str | None, before_ms: int | None) -> int:
        return self.sql.delete_traces(experiment=experiment, filter_string=filter_string,
                                      before_ms=before_ms)

    def set_tag(self, trace_id: str, key: str, value: str | None) -> None:
        self.sql.set_tag(trace_id, key, value)

    def log_assessment(self, assessment: Assessment) -> None:
        self.sql.log_assessment(assessment)

    def log_assessments(self, assessments: Sequence[Assessment], *,
                        overrides: Mapping[str, str] | None = None) -> None:
        self.sql.log_assessments(assessments, overrides=overrides)

    def get_assessment(self, trace_id: str, assessment_id: str) -> Assessment | None:
        return self.sql.get_assessment(trace_id, assessment_id)

    def delete_assessment(self, trace_id: str, assessment_id: str) -> bool:
        return self.sql.delete_assessment(trace_id, assessment_id)

    # -- runs -----------------------------------------------------------------
    def create_run(self, run_id: str, *, experiment: str, name: str | None,
                   start_time_ms: int, tags: Mapping[str, str] | None = None) -> None:
        self.sql.create_run(run_id, experiment=experiment, name=name,
                            start_time_ms=start_time_ms, tags=tags)

    def update_run(self, run_id: str, *, status: str | None = None,
                   end_time_ms: int | None = None, name: str | None = None) -> None:
        self.sql.update_run(run_id, status=status, end_time_ms=end_time_ms, name=name)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        self.sql.log_params(run_id, params)

    def log_metrics(self, run_id: str, metrics: Sequence[MetricRow]) -> None:
        self.sql.log_metrics(run_id, metrics)

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.sql.set_run_tags(run_id, tags)

    def delete_run_tag(self, run_id: str, key: str) -> None:
        self.sql.delete_run_tag(run_id, key)

    def log_run_table(self, run_id: str, name: str, content: str) -> None:
        self.sql.log_run_table(run_id, name, content)

    def load_run_table(self, run_id: str, name: str) -> str | None:
        return self.sql.load_run_table(run_id, name)

    def get_run(self, run_id: str) -> Run | None:
        return self.sql.get_run(run_id)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        return self.sql.get_metric_history(run_id, key)

    def search_runs(self, *, experiment: str | None, filter_string: str | None = None,
                    order_by: list[str] | None = None, max_results: int = 1000,
                    page_token: str | None = None) -> RunPage:
        return self.sql.search_runs(experiment=experiment, filter_string=filter_string,
                                    order_by=order_by, max_results=max_results,
                                    page_token=page_token)

    def delete_run(self, run_id: str) -> bool:
        return self.sql.delete_run(run_id)

    def count(self, *, experiment: str | Sequence[str] | None,
              filter_string: str | None = None) -> int:
        return self.sql.count(experiment=experiment, filter_string=filter_string)

    def count_spans(self) -> int:
        return self.sql.count_spans()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sql, name)

_SCHEMES = "sqlite:///path.db, memory://, postgresql://user@host:port/database"


_LIVE: weakref.WeakSet[LazyStore] = weakref.WeakSet()


def _before_fork() -> None:
    """Keep fork() out of the stores' critical sections.

    A child must not inherit SQLite's lock bookkeeping from the middle of a
    transaction: fork waits (up to 5 s) for a write in progress. It does not
    wait long for a store being opened by another thread, since that thread may
    be importing and the interpreter holds the import lock across fork: the
    child forgets the half-opened store and opens its own. (``configure()``
    opens its store before returning, so only an unconfigured process that
    forks within moments of its first span can meet a half-imported module.)
    """
    for lazy in list(_LIVE):
        lazy._held_for_fork = lazy._lock.acquire(timeout=0.05)
        target = lazy._store or lazy._opening
        if target is not None:
            target.before_fork()


def _after_fork_in_parent() -> None:
    for lazy in list(_LIVE):
        target = lazy._store or lazy._opening
        if target is not None:
            target.after_fork_in_parent()
        if lazy._held_for_fork:
            lazy._held_for_fork = False
            lazy._lock.release()


def _after_fork_in_child() -> None:
    for lazy in list(_LIVE):
        lazy._lock = threading.Lock()
        lazy._held_for_fork = False
        if lazy._opening is not None:
            lazy._opening.after_fork_in_child()
            lazy._opening = None
        if lazy._store is not None:
            lazy._store.after_fork_in_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def open_store(uri: str) -> LazyStore:
    """A store for ``uri``; the database is opened lazily, on first use.

    Raises:
        ConfigurationError: the URI's scheme is unknown, or the SQLite file's
            directory does not exist.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigurationError(f"store URI must be a non-empty string, got {uri!r}")
    text = uri.strip()
    if text in ("memory://", "sqlite://", "sqlite:///:memory:"):
        return LazyStore(text, "sqlite://", memory=True)
    if text.startswith("sqlite:///"):
        path = text[len("sqlite:///"):]
        if not path:
            raise ConfigurationError(f"store URI {uri!r} names no file: use sqlite:///path.db")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"store URI {uri!r}: the directory {directory!r} does not exist")
        return LazyStore(text, f"sqlite+pysqlite:///{path}")
    if text.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                f"store URI {uri!r} needs the PostgreSQL driver: pip install 'assay[postgres]'"
            ) from None
        rest = text.split("://", 1)[1]
        return LazyStore(text, f"postgresql+psycopg://{rest}")
    scheme = text.split(":", 1)[0] if ":" in text else text
    raise ConfigurationError(
        f"unknown trace store URI {uri!r} (scheme {scheme!r}); assay understands {_SCHEMES}")
