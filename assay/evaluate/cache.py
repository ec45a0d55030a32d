"""The judge cache: a judge's verdicts stored by the content of what it was asked.

The key is a SHA-256 over the model URI, the endpoint's base URL, the exact
messages sent, the temperature and the feedback type (its JSON schema), so an
unchanged rerun of an evaluation makes no model calls, and any change to the
prompt, the row, the model or the endpoint asks again. The value is the parsed
result, the rationale and the tokens the original call used.

Verdicts live in one SQLite file, ``judge_cache.sqlite``, in a directory:
``cache="path/to/dir"`` when given, else ``$ASSAY_CACHE_DIR``, else
``$XDG_CACHE_HOME/assay``, else ``~/.cache/assay``. The file is in WAL mode
with a busy timeout, so many threads and processes may share it.

A cache that cannot be opened, read or written (a corrupt file, a directory
that cannot be created) logs a warning on the ``assay`` logger and is skipped:
the judge calls its model as if there were no cache. It never fails an
evaluation.

    from assay.evaluate.cache import JudgeCache

    cache = JudgeCache("/tmp/judge-cache")
    key = JudgeCache.key(model="openai:/gpt-4o-mini", base_url="https://api.openai.com/v1",
                         messages=[{"role": "user", "content": "..."}], temperature=0.0,
                         feedback_type={"type": "boolean"})
    cache.get(key)            # None: a miss
    cache.put(key, {"result": True, "rationale": "...", "input_tokens": 120,
                    "output_tokens": 30})
    cache.get(key)["result"]  # True: a hit
    cache.stats()             # {'hits': 1, 'misses': 1, 'errors': 0, 'writes': 1}
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CACHE_FILENAME", "JudgeCache", "default_cache_dir", "shared_cache"]

log = logging.getLogger("assay")

#: The SQLite file inside the cache directory.
CACHE_FILENAME = "judge_cache.sqlite"
#: Bumped when the key or the stored value changes meaning (old entries then miss).
_KEY_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS judge_verdicts (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def default_cache_dir() -> Path:
    """``$ASSAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/assay``, else ``~/.cache/assay``.

    Example:
        >>> default_cache_dir()   # ASSAY_CACHE_DIR unset, XDG_CACHE_HOME=/var/cache
        PosixPath('/var/cache/assay')
    """
    explicit = os.environ.get("ASSAY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "assay"
    return Path.home() / ".cache" / "assay"


class JudgeCache:
    """Judge verdicts by content, in ``<directory>/judge_cache.sqlite``.

    Thread-safe: one SQLite connection, opened on first use, behind a lock.
    Counters (:meth:`stats`) count lookups that found a verdict (``hits``),
    lookups that did not (``misses``, which includes failed lookups),
    failures of the cache itself (``errors``) and stored verdicts (``writes``).

    Example:
        >>> import tempfile
        >>> cache = JudgeCache(tempfile.mkdtemp())
        >>> cache.put("k", {"result": True}); cache.get("k")
        {'result': True}
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        """
        Args:
            directory: where the SQLite file lives (created when missing);
                default :func:`default_cache_dir`, read now.
        """
        self.directory = Path(directory).expanduser() if directory is not None else (
            default_cache_dir())
        self.path = self.directory / CACHE_FILENAME
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._broken: str | None = None
        self._warned = False
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.writes = 0

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.directory)!r})"

    @staticmethod
    def key(*, model: str, base_url: str | None, messages: Sequence[Mapping[str, str]],
            temperature: float | None, feedback_type: Any, repeat: int = 0) -> str:
        """The content key of one judge request (64 hex characters).

        Args:
            model: the model URI.
            base_url: the endpoint's base URL.
            messages: the exact messages sent.
            temperature: the sampling temperature.
            feedback_type: the result's JSON schema (or any JSON-safe description).
            repeat: which repeat of an evaluation asks (``evaluate(repeats=N)``): each
                repeat is a fresh sample of the judge, cached apart. Repeat 0 has the
                key of an evaluation without repeats.

        Example:
            >>> len(JudgeCache.key(model="openai:/m", base_url="", messages=[],
            ...                    temperature=0.0, feedback_type="bool"))
            64
        """
        document = {
            "v": _KEY_VERSION,
            "model": model,
            "base_url": base_url or "",
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": temperature,
            "feedback_type": feedback_type,
        }
        if repeat:
            document["repeat"] = repeat
        text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                          default=repr)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- storage ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        """The open connection, opening it on first use; ``None`` when the cache is broken."""
        if self._conn is not None or self._broken is not None:
            return self._conn
        conn: sqlite3.Connection | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "not a database" in str(exc) or "malformed" in str(exc):
                    raise
                # Some filesystems (network mounts) refuse WAL; the default journal works.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
            conn.execute("SELECT COUNT(*) FROM judge_verdicts WHERE key = ''").fetchone()
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            self._broken = f"{type(exc).__name__}: {exc}"
            self.errors += 1
            log.warning("assay: judge cache %s cannot be used (%s); judges will call "
                        "their model without it", self.path, self._broken)
            return None
        self._conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored verdict for ``key``, or ``None`` (a miss, or a cache failure).

        Never raises; a failure is logged as a warning and counted in ``errors``.
        """
        with self._lock:
            conn = self._connect()
            row = None
            if conn is not None:
                try:
                    row = conn.execute("SELECT value FROM judge_verdicts WHERE key = ?",
                                       (key,)).fetchone()
                except sqlite3.Error as exc:
                    self._fail("read", exc)
            value = None
            if row is not None:
                try:
                    value = json.loads(row[0])
                except (TypeError, ValueError) as exc:
                    self._fail("decode an entry of", exc)
                if not isinstance(value, dict):
                    value = None
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: str, value: Mapping[str, Any]) -> bool:
        """Store ``value`` (JSON-safe) under ``key``; ``False`` when it could not.

        Never raises; a failure is logged as a warning and counted in ``errors``.
        """
        try:
            text = json.dumps(dict(value), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            with self._lock:
                self._fail("encode a verdict for", exc)
            return False
        with self._lock:
            conn = self._connect()
            if conn is None:
                return False
            try:
                conn.execute("INSERT OR REPLACE INTO judge_verdicts (key, value, created_at) "
                             "VALUES (?, ?, ?)", (key, text, time.time()))
            except sqlite3.Error as exc:
                self._fail("write", exc)
                return False
            self.writes += 1
            return True

    def _fail(self, what: str, exc: BaseException) -> None:
        """Count and log a failure (the first of each kind at warning level)."""
        self.errors += 1
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(level, "assay: could not %s the judge cache %s (%s: %s); the judge calls "
                "its model instead", what, self.path, type(exc).__name__, exc)

    def stats(self) -> dict[str, int]:
        """Counters: ``hits``, ``misses``, ``errors``, ``writes``.

        Example:
            >>> import tempfile
            >>> JudgeCache(tempfile.mkdtemp()).stats()
            {'hits': 0, 'misses': 0, 'errors': 0, 'writes': 0}
        """
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "errors": self.errors,
                    "writes": self.writes}

    def __len__(self) -> int:
        """The number of stored verdicts (0 when the cache cannot be read)."""
        with self._lock:
            conn = self._connect()
            if conn is None:
                return 0
            try:
                return int(conn.execute("SELECT COUNT(*) FROM judge_verdicts").fetchone()[0])
            except sqlite3.Error:
                return 0

    def clear(self) -> None:
        """Delete every stored verdict (counters are kept)."""
        with self._lock:
            conn = self._connect()
            if conn is not None:
                try:
                    conn.execute("DELETE FROM judge_verdicts")
                except sqlite3.Error as exc:
                    self._fail("clear", exc)

    def close(self) -> None:
        """Close the SQLite connection; the next use opens it again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


_shared: dict[Path, JudgeCache] = {}
_shared_lock = threading.Lock()


def shared_cache(directory: str | os.PathLike[str] | None = None) -> JudgeCache:
    """The process-wide :class:`JudgeCache` for ``directory`` (default resolved now).

    Judges on the same directory share one object (one connection, one set of
    counters); they are closed at interpreter exit.
    """
    path = Path(directory).expanduser() if directory is not None else default_cache_dir()
    resolved = path.absolute()
    with _shared_lock:
        found = _shared.get(resolved)
        if found is None:
            found = _shared[resolved] = JudgeCache(resolved)
        return found


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        caches = list(_shared.values())
        _shared.clear()
    for cache in caches:
        cache.close()
