"""The trace store: where spans are persisted and traces are read back.

``open_store(uri)`` understands:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``: an SQLite file
  (created on first use, with its directory's parent required to exist);
- ``memory://`` (or ``sqlite://``, ``sqlite:///:memory:``): an in-memory SQLite
  database, private to this process, for tests.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from assay.errors import ConfigurationError
from assay.store.base import SpanRecord, TracePage, TraceStore

if TYPE_CHECKING:
    from assay.store.sql import SqlTraceStore

__all__ = ["SpanRecord", "TracePage", "TraceStore", "open_store"]

_SCHEMES = "sqlite:///path.db, memory://"


def open_store(uri: str) -> SqlTraceStore:
    """A store for ``uri``; the database is opened lazily, on first use.

    Raises:
        ConfigurationError: the URI's scheme is unknown, or the SQLite file's
            directory does not exist.
    """
    from assay.store.sql import SqlTraceStore

    if not isinstance(uri, str) or not uri.strip():
        raise ConfigurationError(f"store URI must be a non-empty string, got {uri!r}")
    text = uri.strip()
    if text in ("memory://", "sqlite://", "sqlite:///:memory:"):
        return SqlTraceStore(text, "sqlite://", memory=True)
    if text.startswith("sqlite:///"):
        path = text[len("sqlite:///"):]
        if not path:
            raise ConfigurationError(f"store URI {uri!r} names no file: use sqlite:///path.db")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"store URI {uri!r}: the directory {directory!r} does not exist")
        return SqlTraceStore(text, f"sqlite+pysqlite:///{path}")
    scheme = text.split(":", 1)[0] if ":" in text else text
    raise ConfigurationError(
        f"unknown trace store URI {uri!r} (scheme {scheme!r}); assay understands {_SCHEMES}")
