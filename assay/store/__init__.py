"""The trace store: where spans are persisted and traces are read back.

``open_store(uri)`` understands:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``: an SQLite file
  (created on first use, with its directory's parent required to exist);
- ``memory://`` (or ``sqlite://``, ``sqlite:///:memory:``): an in-memory SQLite
  database, private to this process, for tests.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from assay.errors import ConfigurationError
from assay.store.base import SpanRecord, TracePage, TraceStore

if TYPE_CHECKING:
    from assay.store.sql import SqlTraceStore
    from assay.tracing.models import Trace

__all__ = ["LazyStore", "SpanRecord", "TracePage", "TraceStore", "open_store"]


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
        self._lock = threading.Lock()
        self._held_for_fork = False
        ref = weakref.ref(self)
        os.register_at_fork(before=lambda: _fork_hook(ref, "before"),
                            after_in_parent=lambda: _fork_hook(ref, "parent"),
                            after_in_child=lambda: _fork_hook(ref, "child"))

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

                    # Open it fully here, under the lock that fork() waits for, so
                    # that every lazy import of the database layer is done.
                    opened = SqlTraceStore(self.uri, self._url, memory=self._memory)
                    opened.open()
                    self._store = opened
                store = self._store
        return store

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        self.sql.write_spans(records)

    def get_trace(self, trace_id: str) -> Trace | None:
        return self.sql.get_trace(trace_id)

    def search(self, *, experiment: str | None, max_results: int = 100,
               page_token: str | None = None, order: Literal["newest", "oldest"] = "newest",
               include_spans: bool = True) -> TracePage:
        return self.sql.search(experiment=experiment, max_results=max_results,
                               page_token=page_token, order=order, include_spans=include_spans)

    def count(self, *, experiment: str | None) -> int:
        return self.sql.count(experiment=experiment)

    def count_spans(self) -> int:
        return self.sql.count_spans()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sql, name)

_SCHEMES = "sqlite:///path.db, memory://"


def _fork_hook(ref: weakref.ref[LazyStore], when: str) -> None:
    """fork() waits (up to 5 s) for a store being opened in another thread: a child
    must not inherit a half-imported database module or a lock nobody releases."""
    store = ref()
    if store is None:
        return
    if when == "before":
        store._held_for_fork = store._lock.acquire(timeout=5.0)
    elif when == "parent":
        if store._held_for_fork:
            store._held_for_fork = False
            store._lock.release()
    else:
        store._lock = threading.Lock()
        store._held_for_fork = False


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
    scheme = text.split(":", 1)[0] if ":" in text else text
    raise ConfigurationError(
        f"unknown trace store URI {uri!r} (scheme {scheme!r}); assay understands {_SCHEMES}")
