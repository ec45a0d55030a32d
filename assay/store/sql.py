"""The SQL trace store (SQLAlchemy Core): writing spans, reading traces, listing them.

SQLite is the embedded default: WAL journal, a busy timeout, and write
transactions opened with ``BEGIN IMMEDIATE`` so that several processes can
write one file without "database is locked" reaching anyone; a write that still
finds the file locked is retried with backoff. On PostgreSQL a write that the
server aborted to break a deadlock with another process's is retried the same
way (writers lock the rows of traces in trace id order, which avoids most).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic_core import to_json
from sqlalchemy import Connection, Engine, and_, case, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

from assay._gc import paused as collector_paused
from assay.errors import ConfigurationError, StoreError
from assay.store import copies
from assay.store import schema as s
from assay.store._run_sql import SqlRuns
from assay.store.base import MetricRow, RunPage, SpanRecord, TracePage
from assay.store.pages import assemble, stored_assessment, without_parallel_workers
from assay.store.plans import (
    PAGE_COLUMNS,
    RARE_MATCHES,
    Scope,
    SearchPlan,
    Sql,
    bounded_matches,
    build_count,
    build_plan,
    plan_cache,
    scope_of,
    where_clause,
)
from assay.store.values import json_text, typed_value
from assay.tracing.models import Assessment, Trace

if TYPE_CHECKING:
    from assay.store.runs import Metric, Run

__all__ = ["SqlTraceStore"]

log = logging.getLogger("assay")
_T = TypeVar("_T")

PREVIEW_CHARS = 1_000
_SPAN_COLUMNS = ["trace_id", "span_id", "parent_id", "name", "span_type", "status",
                 "status_message", "start_time_ns", "end_time_ns", "inputs", "outputs",
                 "attributes", "events", "duration_ns"]
_ROWS_PER_STATEMENT = 500
_COPY_FROM_ROWS = 1_000  # PostgreSQL bulk loads send larger row sets with COPY
_PG_VALUES = re.compile(r"VALUES \(%\(\w+\)s(?:::\w+)?(?:, %\(\w+\)s(?:::\w+)?)*\)")
_SQLITE_MAX_PARAMS = 30_000  # below SQLite's default limit of 32,766 variables
_VALUES = re.compile(r"VALUES (\(\?(?:, \?)*\))")


@functools.lru_cache(maxsize=64)
def _multi_values(sql: str, n: int) -> str:
    """``INSERT ... VALUES (?, ?)`` with the row group repeated ``n`` times."""
    match = _VALUES.search(sql)
    if match is None:  # pragma: no cover - our own statements always match
        raise StoreError(f"cannot batch statement {sql!r}")
    group = match.group(1)
    return sql[:match.start(1)] + ", ".join([group] * n) + sql[match.end(1):]


_TRACE_COLUMNS = ["trace_id", "experiment", "name", "state", "timestamp_ms", "execution_time_ms",
                  "request_preview", "response_preview", "root_span_id", "root_rank",
                  "end_time_ms", "run_id"]
_ATTR_COLUMNS = ["trace_id", "span_id", "key", "value_kind", "num_value", "str_value"]
# SQLite: the view the full-text index reads its text from, and the statement
# that indexes the spans from a rowid on.
_TEXT_SOURCE = "trace_text_source"
_SQLITE_TEXT_FROM_SPANS = (
    f"INSERT INTO {s.FTS_TABLE} (rowid, trace_id, content) "
    f"SELECT id, trace_id, content FROM {_TEXT_SOURCE} WHERE id >= ? ORDER BY id")
_WRITE_RETRY_S = 60.0
_VERSION_ROW = {"version": s.SCHEMA_VERSION, "writable_by": s.WRITABLE_BY}
_BUSY_TIMEOUT_MS = 30_000
_CACHE_PAGES = -65_536  # negative: in KiB, so 64 MiB
_FIRST_CHUNK_MIN_SPANS = 10_000  # a bulk load's first chunk, unless chunk_spans is less
_TEXT_AUTOMERGE = 4  # FTS5's own default: merge once 4 segments of a level exist
_INDEX_BUILD_CACHE_KIB = -8_192  # a bulk load's page cache while it builds indexes
# How much of a store file a connection maps into memory for reading (SQLite caps
# this at its build's maximum, 2 GiB by default).
_MMAP_BYTES = 2 << 30
_CHECKPOINT_PAGES = 10_000
_ANALYSIS_ROWS = 20_000  # index entries SQLite's ANALYZE samples per index
_ANALYZE_FROM_SPANS = 20_000  # smaller stores are answered fast without statistics
_FORK_WAIT_S = 5.0
# How long a search on SQLite walks the traces in page order, probing each, before
# it gathers the matches first instead (see SqlTraceStore.search).
_WALK_BUDGET_S = 0.010
# A walk cut short at its budget goes on from the last match it found when, at
# the rate it found them, the rest of the page should take at most this long
# (it then gets half as long again before the matches are gathered after all).
_WALK_MORE_S = 0.010
# How long the count that tells few matches from many may take; longer: many.
_RARE_BUDGET_S = 0.003
_WALK_STEPS = 1_000  # SQLite virtual-machine steps between looks at the clock


def _make_engine(url: str, *, immediate: bool, memory: bool) -> Engine:
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True)
    if memory:
        engine = create_engine(url, poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": _BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below
        # ILIKE folds case beyond ASCII (SQLite's own lower() does not).
        dbapi_conn.create_function("assay_lower", 1, _lower, deterministic=True)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if not memory:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            # Trace ids are random, so every batch dirties pages all over the
            # primary-key indexes: a larger page cache and rarer checkpoints
            # (each one an fsync) let a page dirtied by several batches be
            # written back once. Measured: 2.5x the write rate of the defaults.
            cur.execute(f"PRAGMA cache_size = {_CACHE_PAGES}")
            cur.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            if not immediate:
                # Readers map the file rather than copying each page in: a search
                # touching pages that other searches pushed out of the page cache
                # takes them from the operating system's cache without a system
                # call per page (measured at 100,000 traces, searches interleaved:
                # 5% to 40% less time, the OR of two tags 14 ms to 9 ms). The
                # writer does not: a bulk load ran about 4% slower with the map.
                cur.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _own_schema(conn: Connection, uri: str) -> str | None:
    """PostgreSQL: the schema the store's tables are in, the first of the search
    path that exists. The store is looked for, and created, in this schema only:
    a schema later in the search path may hold tables of the same names (another
    store), which the statements, naming tables without a schema, would
    otherwise find. ``None`` elsewhere.

    Raises:
        StoreError: no schema of the search path exists.
    """
    if conn.dialect.name != "postgresql":
        return None
    own = conn.exec_driver_sql("SELECT current_schema()").scalar()
    if own is None:
        path = conn.exec_driver_sql("SHOW search_path").scalar()
        raise StoreError(f"the trace store {uri} has no schema: none of its search path "
                         f"({path}) exists in the database")
    return str(own)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


#: PostgreSQL's errors that say "run the transaction again": a deadlock the
#: server broke by aborting this one, a serialization failure, a lock not granted.
_PG_RETRY_STATES = frozenset({"40P01", "40001", "55P03"})


#: How many PostgreSQL advisory locks the traces are spread over for logging
#: assessments. Every lock a transaction holds takes a slot in the server's shared
#: lock table (64 per connection by default): a lock per trace would exhaust it
#: for an evaluation that logs feedback on thousands of traces at once.
_ASSESSMENT_LOCKS = 32
_ASSESSMENT_LOCK_BASE = int.from_bytes(
    hashlib.blake2b(b"assay.assessments", digest_size=6).digest(), "big") << 8


def _lock_keys(trace_ids: Sequence[str]) -> list[int]:
    """The PostgreSQL advisory lock keys that cover these traces, ascending: one
    of ``_ASSESSMENT_LOCKS`` per trace, from a digest of its id."""
    return sorted({_ASSESSMENT_LOCK_BASE + hashlib.blake2b(tid.encode(), digest_size=8)
                   .digest()[0] % _ASSESSMENT_LOCKS for tid in trace_ids})


def _lock_assessments(conn: Connection, trace_ids: Sequence[str]) -> None:
    """On PostgreSQL, wait for the loggers of assessments on these traces (or on
    others under the same keys) in other processes to commit, and hold them off
    until this transaction does: without it, two loggers of the same feedback
    would each find the same older one valid and both leave theirs valid. Keys in
    one order: they cannot deadlock. SQLite's writers take turns."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) k",
                             (_lock_keys(trace_ids),))


def _explicit_overrides(rows: list[dict[str, Any]],
                        overrides: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``overrides`` (new id: target id) as target id: the new assessment's row.

    Raises:
        ValueError: not a mapping; a new id is not in the batch, or two override one
            target.
    """
    if not isinstance(overrides, Mapping):
        raise ValueError(f"log_assessments(overrides={overrides!r}): expected a mapping of "
                         "a new assessment's id to the id of the feedback it overrides")
    by_id = {row["assessment_id"]: row for row in rows}
    out: dict[str, dict[str, Any]] = {}
    for new_id, target in overrides.items():
        row = by_id.get(new_id)
        if row is None:
            raise ValueError(f"log_assessments(overrides=...): {new_id!r} is not an "
                             "assessment of this batch")
        if target in out:
            raise ValueError(f"log_assessments(overrides=...): {target!r} is overridden by "
                             f"both {out[target]['assessment_id']!r} and {new_id!r}")
        out[target] = row
    return out


def _checked_targets(conn: Connection,
                     explicit: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The stored assessments that new ones override by name (target id: new id),
    each checked to be a valid feedback of the new one's trace.

    Raises:
        ValueError: one is not stored on that trace, is an expectation, or is
            overridden already (by a newer judgement that the override has not seen).
    """
    a = s.assessments.c
    found = {aid: rest for aid, *rest in conn.execute(
        select(a.assessment_id, a.trace_id, a.kind, a.overridden_by)
        .where(a.assessment_id.in_(list(explicit))))}
    out = {}
    for target, new in explicit.items():
        stored = found.get(target)
        where = f"the override of assessment {target!r} on trace {new['trace_id']}"
        if stored is None or stored[0] != new["trace_id"]:
            raise ValueError(f"{where}: the trace has no assessment with this id")
        if stored[1] != "feedback":
            raise ValueError(f"{where}: it is an {stored[1]}, not feedback (a newer "
                             "expectation of the same name and source replaces it)")
        if stored[2] is not None:
            raise ValueError(f"{where}: it is already overridden by {stored[2]!r}; "
                             "override that one")
        out[target] = new["assessment_id"]
    return out


def _is_transient(exc: OperationalError) -> bool:
    """Whether a write failed only because of other writers, and may succeed if
    run again: SQLite's database locked or busy, PostgreSQL's deadlock (writers
    of the same traces from several processes) or serialization failure."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _PG_RETRY_STATES
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in text or "busy" in text


@dataclass(slots=True)
class _Rows:
    """What one batch of spans writes, table by table."""

    spans: list[tuple[Any, ...]]
    attributes: list[tuple[Any, ...]]
    traces: list[tuple[Any, ...]]
    tags: list[tuple[str, str, str]]
    metadata: list[tuple[str, str, str]]
    text: list[tuple[int, str, str]]  # PostgreSQL's full-text rows


@dataclass
class _Load:
    """A bulk load's progress: spans written, and the indexes it dropped."""

    defer: bool | None
    total: int = 0
    deferred: list[Any] = field(default_factory=list)
    db_file: str | None = None  # SQLite: the database file, to checkpoint meanwhile


class SqlTraceStore:
    """A trace store in one SQL database (SQLite file or in-memory)."""

    def __init__(self, uri: str, url: str, *, memory: bool = False) -> None:
        self.uri = uri
        self._url = url
        self._memory = memory
        self._lock = threading.RLock()
        # Held for every write transaction and by os.fork(): a child must not
        # inherit SQLite's lock bookkeeping from the middle of a transaction.
        self._fork_guard = threading.Lock()
        self._guard_held = False
        self._engines: tuple[Engine, Engine] | None = None
        self._ready = False
        self._sql_cache: dict[str, tuple[str, bool]] = {}
        self._fts = False
        self._newer = False  # the store's schema is newer than this assay's (and writable)
        # SQLite's planner statistics are refreshed as the store grows: the spans
        # to write before looking again (0: look at the first write).
        self._until_check = 0 if not memory and url.startswith("sqlite") else 1 << 62
        self.runs = SqlRuns(self)
        self._plans = plan_cache(build_plan)
        self._count_plans = plan_cache(build_count)

    # fork() hooks, called by the LazyStore that owns this store, in lock order.
    def before_fork(self) -> None:
        # Wait for a write in progress (bounded: a write stuck behind another
        # process's lock must not hang fork() for long).
        self._guard_held = self._fork_guard.acquire(timeout=_FORK_WAIT_S)

    def after_fork_in_parent(self) -> None:
        if self._guard_held:
            self._guard_held = False
            self._fork_guard.release()

    def after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._fork_guard = threading.Lock()
        self._guard_held = False
        if self._engines is not None:
            for engine in set(self._engines):
                engine.dispose(close=False)  # the parent's connections stay the parent's

    def __repr__(self) -> str:
        return f"SqlTraceStore({self.uri!r})"

    # -- connections and schema -----------------------------------------------
    def open(self) -> None:
        """Connect and create or check the schema now rather than on first use.

        Raises:
            StoreError: the database cannot be opened, or its schema is newer.
        """
        self._get_engines()
        self._span_insert_ready()

    def _span_insert_ready(self) -> None:
        with self._read() as conn:
            self._compiled(conn, "spans", self._insert(s.spans).on_conflict_do_nothing(),
                           _SPAN_COLUMNS)

    def _get_engines(self) -> tuple[Engine, Engine]:
        engines = self._engines
        if engines is not None and self._ready:
            return engines
        with self._lock:
            if self._engines is None:
                writer = _make_engine(self._url, immediate=True, memory=self._memory)
                shared = self._memory or self._url.startswith("postgresql")
                reader = writer if shared else _make_engine(
                    self._url, immediate=False, memory=False)
                # Connect once outside any transaction: the dialect's first-connect
                # work (and its imports) happen here, not under the fork guard.
                try:
                    with writer.connect():
                        pass
                except DBAPIError as exc:
                    for engine in {writer, reader}:
                        engine.dispose()
                    raise StoreError(f"cannot open the trace store {self.uri}: "
                                     f"{exc.orig}") from exc
                self._engines = (writer, reader)
            if not self._ready:
                try:
                    self._create_schema(self._engines[0])
                except BaseException:
                    # A store refused (an older schema, say) holds no connection.
                    for engine in set(self._engines):
                        engine.dispose()
                    self._engines = None
                    raise
                self._ready = True
            return self._engines

    def _create_schema(self, engine: Engine) -> None:
        try:
            with self._fork_guard, engine.begin() as conn:
                stored = self._stored_version(conn)
                if stored is None:
                    own = _own_schema(conn, self.uri)
                    if own is not None:
                        # Created in the store's own schema, even where a schema later
                        # in the search path holds tables of the same names.
                        conn.execution_options(schema_translate_map={None: own})
                    s.ddl_metadata(conn.dialect.name).create_all(conn, checkfirst=True)
                    self._create_text_index(conn)
                    conn.execute(s.schema_version.insert(), _VERSION_ROW)
                else:
                    self._check_version(*stored, dialect=conn.dialect.name)
                self._fts = self._has_text_index(conn)
                self._newer = stored is not None and stored[0] > s.SCHEMA_VERSION
                if stored is not None and not self._newer:
                    # (A newer schema's indexes are its own: none is rebuilt here.)
                    self._restore_indexes(conn)
        except OperationalError as exc:
            raise StoreError(f"cannot open the trace store {self.uri}: {exc.orig}") from exc

    def _check_version(self, version: int, writable_by: int | None, *, dialect: str) -> None:
        """Refuse a store this assay may not write: an older schema whose tables
        differ on this database (until ``assay db upgrade``), or a newer one that
        is not writable by this assay's.

        Raises:
            StoreError: saying which, and what to do.
        """
        if version < s.SAME_TABLES_FROM.get(dialect, s.SCHEMA_VERSION):
            raise StoreError(
                f"the store {self.uri} has schema version {version}, older than this "
                f"assay's ({s.SCHEMA_VERSION}); upgrade it with: "
                f"assay db upgrade --store {self.uri}", may_pass=True)
        if version <= s.SCHEMA_VERSION:
            return
        if writable_by is None or writable_by > s.SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.uri} has schema version {version}, newer than this "
                f"assay understands ({s.SCHEMA_VERSION}), writable by the assays of schema "
                f"{writable_by if writable_by is not None else version} and later; "
                "upgrade assay", may_pass=True)
        log.info("assay: the store %s has schema version %d, newer than this assay's (%d), "
                 "which may still read and write it", self.uri, version, s.SCHEMA_VERSION)

    def _stored_version(self, conn: Connection) -> tuple[int, int | None] | None:
        """The store's schema version and the oldest one whose assay may write it,
        or ``None`` for a database (on PostgreSQL, a schema) with no assay store."""
        from sqlalchemy import inspect

        found = inspect(conn)
        own = _own_schema(conn, self.uri)
        if not found.has_table(s.schema_version.name, schema=own):
            return None
        v = s.schema_version.c
        columns = found.get_columns(s.schema_version.name, schema=own)
        if "writable_by" not in {c["name"] for c in columns}:
            value = conn.execute(select(func.max(v.version))).scalar()
            return None if value is None else (int(value), None)
        row = conn.execute(select(v.version, v.writable_by).order_by(v.version.desc())
                           .limit(1)).first()
        return None if row is None else (int(row[0]), None if row[1] is None else int(row[1]))

    def _create_text_index(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            # A plain table with a trigram GIN index, which serves LIKE and ILIKE.
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {s.FTS_TABLE} (rowid BIGINT PRIMARY KEY, "
                'trace_id VARCHAR(32) COLLATE "C" NOT NULL, content TEXT NOT NULL)')
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_{s.FTS_TABLE}_trace_id "
                                 f"ON {s.FTS_TABLE} (trace_id)")
            _create_trigram_index(conn)
            return
        if conn.dialect.name != "sqlite":
            return
        try:
            # The index holds no copy of the text: its rows are read from the spans
            # through a view (an "external content" table). detail=none keeps no
            # positions: LIKE and GLOB are still served by the trigram index, at
            # about a third of the write cost (measured 12.5 vs 32.8 us per span
            # on 2 cores); columnsize=0 keeps no token counts (nothing ranks).
            conn.exec_driver_sql(
                f"CREATE VIEW IF NOT EXISTS {_TEXT_SOURCE} AS SELECT rowid AS id, trace_id, "
                f"substr(coalesce(inputs, ''), 1, {s.TEXT_CHARS}) || char(10) || "
                f"substr(coalesce(outputs, ''), 1, {s.TEXT_CHARS}) AS content FROM spans "
                "WHERE inputs IS NOT NULL OR outputs IS NOT NULL")
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {s.FTS_TABLE} USING fts5("
                "trace_id UNINDEXED, content, tokenize = 'trigram', detail = none, "
                f"content = '{_TEXT_SOURCE}', content_rowid = 'id', columnsize = 0)")
            # Pending terms held in memory before a segment is written (default
            # 1 MiB): fewer, larger segments to merge in a large transaction
            # (measured: 27% less time per indexed text in chunks of 100,000).
            conn.exec_driver_sql(f"INSERT INTO {s.FTS_TABLE} ({s.FTS_TABLE}, rank) "
                                 "VALUES ('hashsize', 33554432)")
        except OperationalError as exc:  # an SQLite built without FTS5 or trigram
            log.warning("assay: no full-text index (%s); trace.text scans span text", exc.orig)

    @staticmethod
    def _has_text_index(conn: Connection) -> bool:
        if conn.dialect.name == "postgresql":
            return conn.exec_driver_sql(
                "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() "
                f"AND tablename = '{s.FTS_TABLE}'").first() is not None
        if conn.dialect.name != "sqlite":
            return False
        row = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (s.FTS_TABLE,)).first()
        return row is not None

    def upgrade(self) -> tuple[int, int]:
        """Upgrade an older store's schema to this assay's; returns (from, to) versions.

        Raises:
            ConfigurationError: the database holds no assay store.
            StoreError: the store is newer than this assay, or the upgrade failed
                (the transaction is rolled back; nothing is lost).
        """
        from assay.store.migrate import upgrade_schema

        writer = _make_engine(self._url, immediate=True, memory=self._memory)
        try:
            with self._fork_guard, writer.begin() as conn:
                stored = self._stored_version(conn)
                if stored is None:
                    raise ConfigurationError(f"{self.uri} holds no assay store to upgrade")
                before = stored[0]
                if before > s.SCHEMA_VERSION:
                    raise StoreError(f"the store {self.uri} has schema version {before}, newer "
                                     f"than this assay understands ({s.SCHEMA_VERSION})")
                upgrade_schema(conn, before)
                if before < s.SCHEMA_VERSION:
                    had_text = self._has_text_index(conn)
                    self._create_text_index(conn)
                    if not had_text and self._has_text_index(conn):
                        self._backfill_text(conn)
                    conn.execute(s.schema_version.delete())
                    conn.execute(s.schema_version.insert(), _VERSION_ROW)
        except OperationalError as exc:
            raise StoreError(f"cannot upgrade the trace store {self.uri}: {exc.orig}") from exc
        finally:
            if not self._memory:
                writer.dispose()
        return before, s.SCHEMA_VERSION

    def _backfill_text(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            rows = [(_span_key(span_id), trace_id, _text(inputs, outputs))
                    for trace_id, span_id, inputs, outputs in conn.exec_driver_sql(
                        "SELECT trace_id, span_id, inputs, outputs FROM spans "
                        "WHERE inputs IS NOT NULL OR outputs IS NOT NULL")]
            self._insert_text(conn, rows)
        else:
            conn.exec_driver_sql(_SQLITE_TEXT_FROM_SPANS, (0,))

    @staticmethod
    def _insert_text(conn: Connection, rows: list[tuple[int, str, str]],
                     copy: bool = False) -> None:
        """Upsert PostgreSQL full-text rows."""
        if not rows:
            return
        head = f"INSERT INTO {s.FTS_TABLE} (rowid, trace_id, content) "
        tail = (" ON CONFLICT (rowid) DO UPDATE "
                "SET trace_id = excluded.trace_id, content = excluded.content")
        clean = [(r, t, c.replace("\x00", "")) for r, t, c in rows]
        if copy and len(rows) >= _COPY_FROM_ROWS:
            # A span given twice must reach the upsert once.
            _copy_insert(conn, head, tail, ["rowid", "trace_id", "content"],
                         list({row[0]: row for row in clean}.values()))
        else:
            conn.exec_driver_sql(head + "VALUES (%(r)s, %(t)s, %(c)s)" + tail,
                                 [{"r": r, "t": t, "c": c} for r, t, c in clean])

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        writer, _ = self._get_engines()
        if self._memory:
            with self._lock, self._fork_guard, writer.begin() as conn:
                yield conn
        else:
            with self._fork_guard, writer.begin() as conn:
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        _, reader = self._get_engines()
        if self._memory:
            with self._lock, reader.connect() as conn:
                yield conn
        else:
            with reader.connect() as conn:
                yield conn

    def close(self) -> None:
        with self._lock:
            if self._engines is not None:
                for engine in set(self._engines):
                    engine.dispose()
            self._engines = None
            self._ready = False
            self._sql_cache.clear()

    # -- writing --------------------------------------------------------------
    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        """Persist spans (each stored once) and fold them into their traces.

        Raises:
            StoreError: the database stayed locked or unwritable for a minute.
        """
        if not records:
            return
        self._retried(lambda conn: self._write_batch(conn, records))
        if self._until_check <= 0:
            self._refresh_statistics()

    def _retried(self, write: Callable[[Connection], _T]) -> _T:
        """``write`` in a write transaction, run again (after a growing, jittered
        pause) while it fails only because of other writers (:func:`_is_transient`);
        what it returned.

        Raises:
            StoreError: it failed otherwise, or still failed after a minute.
        """
        deadline = time.monotonic() + _WRITE_RETRY_S
        delay = 0.01
        while True:
            try:
                with self._write() as conn:
                    return write(conn)
            except OperationalError as exc:
                if not _is_transient(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot write to the trace store {self.uri}: "
                                     f"{exc.orig}") from exc
                log.debug("assay: a write to %s met other writers (%s); retrying",
                          self.uri, " ".join(str(exc.orig).split())[:200])
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def _refresh_statistics(self) -> None:
        """Statistics for SQLite's planner as the store grows: refreshed when the
        store holds twice the spans they were taken at (from
        ``_ANALYZE_FROM_SPANS`` on), in the writer, between two batches (a few
        milliseconds to a quarter of a second)."""
        writer, _ = self._get_engines()
        try:
            # No write lock just to look; the fork guard, since opening a
            # connection while another thread forks can leave SQLite's own
            # mutexes locked in the child.
            with self._fork_guard, self._read() as conn:
                spans = int(conn.exec_driver_sql(
                    "SELECT coalesce(max(rowid), 0) FROM spans").scalar() or 0)
                analyzed = _analyzed_rows(conn, "spans")
            if spans >= _ANALYZE_FROM_SPANS and spans >= 2 * analyzed:
                with self._fork_guard:
                    writer_conn = writer.connect()
                with writer_conn:
                    self._analyze(writer_conn)
                analyzed = spans
        except OperationalError as exc:  # locked for long: try again a while later
            log.warning("assay: could not refresh statistics of %s: %s", self.uri, exc.orig)
            self._until_check = _ANALYZE_FROM_SPANS
            return
        self._until_check = max(2 * analyzed - spans, _ANALYZE_FROM_SPANS - spans, 1)

    def _insert(self, table: Any) -> Any:
        dialect = self._get_engines()[0].dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

    def _compiled(self, conn: Connection, key: str, stmt: Any,
                  columns: list[str]) -> tuple[str, bool]:
        """A statement compiled once per store, to run with raw rows: SQLAlchemy's
        per-row parameter processing would cost more than the insert itself."""
        cached = self._sql_cache.get(key)
        if cached is None:
            compiled = stmt.compile(dialect=conn.dialect, column_keys=columns)
            if compiled.positional and list(compiled.positiontup or []) != columns:
                raise StoreError(f"unexpected parameter order {compiled.positiontup} in {key}")
            cached = self._sql_cache[key] = (str(compiled), bool(compiled.positional))
        return cached

    def _run_many(self, conn: Connection, key: str, stmt_factory: Any, columns: list[str],
                  rows: list[tuple[Any, ...]], copy: bool = False) -> None:
        sql, positional = self._compiled(conn, key, stmt_factory(), columns) \
            if key not in self._sql_cache else self._sql_cache[key]
        if positional and conn.dialect.name == "sqlite":
            # Many rows per statement: one sqlite3_step, so the writer thread gives
            # up the GIL once per chunk instead of once per row, and does not
            # queue behind a busy application thread for every row it writes.
            per = max(1, min(_ROWS_PER_STATEMENT, _SQLITE_MAX_PARAMS // len(columns)))
            for i in range(0, len(rows), per):
                chunk = rows[i:i + per]
                conn.exec_driver_sql(_multi_values(sql, len(chunk)),
                                     tuple(chain.from_iterable(chunk)))
        elif positional:
            conn.exec_driver_sql(sql, rows)
        elif copy and len(rows) >= _COPY_FROM_ROWS:
            # A bulk load on PostgreSQL: the rows go by COPY (see _copy_insert).
            match = _PG_VALUES.search(sql)
            if match is None:  # pragma: no cover - our own statements always match
                raise StoreError(f"cannot stage statement {sql!r}")
            _copy_insert(conn, sql[:match.start()], sql[match.end():], columns, rows)
        else:
            conn.exec_driver_sql(sql, [dict(zip(columns, row, strict=True)) for row in rows])

    def _write_batch(self, conn: Connection, records: Sequence[SpanRecord]) -> None:
        self._write_rows(conn, self._batch_rows(records, conn.dialect.name == "postgresql"))
        self._until_check -= len(records)

    def _batch_rows(self, records: Sequence[SpanRecord], pg: bool) -> _Rows:
        """The rows a batch of spans adds to each table (no database needed, so a
        bulk load prepares the next chunk while the database writes this one)."""
        spans = [(
            r.trace_id, r.span_id, r.parent_id, r.name, r.span_type, r.status,
            r.status_message, r.start_time_ns, r.end_time_ns, r.inputs_json, r.outputs_json,
            _json_text(r.attributes) if r.attributes else "{}",
            _json_text(r.events) if r.events else "[]",
            r.end_time_ns - r.start_time_ns,
        ) for r in records]
        attrs = [(r.trace_id, r.span_id, key, *typed_value(value))
                 for r in records for key, value in r.attributes.items()]
        best: dict[str, SpanRecord] = {}
        for r in records:
            cur = best.get(r.trace_id)
            if cur is None or (r.root_rank, -r.start_time_ns) > (cur.root_rank, -cur.start_time_ns):
                best[r.trace_id] = r
        kv: list[list[tuple[str, str, str]]] = []
        for attr in ("trace_tags", "trace_metadata"):
            pairs: dict[tuple[str, str], str] = {}
            for r in sorted(records, key=lambda r: r.end_time_ns):
                for k, v in getattr(r, attr).items():
                    pairs[(r.trace_id, k)] = v
            kv.append([(t, k, v) for (t, k), v in sorted(pairs.items())])
        text = [(_span_key(r.span_id), r.trace_id, _text(r.inputs_json, r.outputs_json))
                for r in records
                if r.inputs_json is not None or r.outputs_json is not None] if pg else []
        # Rows keyed by trace go in key order: writers of the same traces in
        # several processes then lock them in one order and cannot deadlock
        # (PostgreSQL; SQLite's writers take turns).
        return _Rows(spans, attrs, [self._trace_row(best[tid]) for tid in sorted(best)],
                     kv[0], kv[1], text)

    def _write_rows(self, conn: Connection, rows: _Rows, copy: bool = False) -> None:
        first_new_rowid = None
        if self._fts and conn.dialect.name == "sqlite":
            # Inside the write transaction: every span this batch adds gets a
            # rowid above the largest one now.
            first_new_rowid = int(conn.exec_driver_sql(
                "SELECT coalesce(max(rowid), 0) + 1 FROM spans").scalar() or 1)
        self._run_many(conn, "spans", lambda: self._insert(s.spans).on_conflict_do_nothing(),
                       _SPAN_COLUMNS, rows.spans, copy)
        if rows.attributes:
            self._run_many(conn, "span_attributes",
                           lambda: self._insert(s.span_attributes).on_conflict_do_nothing(),
                           _ATTR_COLUMNS, rows.attributes, copy)
        if self._fts:
            # On SQLite a full-text row takes its span's rowid and is read from the
            # span itself: the statement names the spans just inserted (a span the
            # store already held was not inserted again, so is not indexed twice).
            # Rowids only grow, and FTS5 keeps its pending terms in memory only
            # while rowids ascend: random rowids flush a tiny segment for nearly
            # every span and cost about six times as much. PostgreSQL upserts
            # rows keyed by the span id.
            if first_new_rowid is not None:
                conn.exec_driver_sql(_SQLITE_TEXT_FROM_SPANS, (first_new_rowid,))
            else:
                self._insert_text(conn, rows.text, copy)
        self._run_many(conn, "traces", self._trace_upsert, _TRACE_COLUMNS, rows.traces, copy)
        # An upsert may have moved a trace (its root span arrived): its
        # assessments' copies of its experiment and timestamp follow.
        copies.refresh_assessed_traces(conn, [r[0] for r in rows.traces])
        for table, kv_rows in ((s.trace_tags, rows.tags), (s.trace_metadata, rows.metadata)):
            if kv_rows:
                self._run_many(conn, table.name, lambda t=table: self._kv_upsert(t),
                               ["trace_id", "key", "value"], kv_rows, copy)
        if rows.tags or rows.metadata:
            copies.refresh_pairs(conn, sorted({r[0] for r in chain(rows.tags, rows.metadata)}))

    # -- bulk loading ---------------------------------------------------------
    def bulk_load(self, records: Iterable[SpanRecord], *, chunk_spans: int = 200_000,
                  defer_indexes: bool | None = None, cache_mb: int = 1024) -> int:
        """Store many spans at once: an import, a migration, a benchmark's corpus.

        Same result as :meth:`write_spans` over the same records, several times
        faster: spans go in chunks of ``chunk_spans``, one transaction each,
        sorted by trace so that each chunk walks the primary keys once. On SQLite
        the connection gets a page cache of ``cache_mb`` for the load, and the
        secondary indexes are dropped first and built once at the end when
        ``defer_indexes`` is true (by default: when the store holds fewer spans
        than one chunk, so that rebuilding costs less than keeping them;
        PostgreSQL keeps its indexes). The planner's statistics are refreshed
        at the end (on PostgreSQL by ``VACUUM (ANALYZE)``, which also marks the
        loaded rows visible to all, for index-only reads).
        Other processes may read and write the store meanwhile (between chunks);
        their searches are slower until the indexes are back. When the records'
        source raises, the chunks written stay and the indexes are rebuilt before
        the error propagates; should the process die mid-load, the next open of
        the store rebuilds any index still missing.

        Returns the number of span records passed in.

        Raises:
            StoreError: the database stayed locked, could not be written, or
                refused a row (the chunks before it are stored).
            TypeError: a record is not a :class:`SpanRecord` (the records before
                it are stored).
            ValueError: ``chunk_spans`` or ``cache_mb`` is below 1.
        """
        if chunk_spans < 1:
            raise ValueError(f"chunk_spans must be at least 1, got {chunk_spans}")
        if cache_mb < 1:
            raise ValueError(f"cache_mb must be at least 1, got {cache_mb}")
        writer, _ = self._get_engines()
        if self._memory:
            return sum(self._write_counted(chunk) for chunk in _chunked(records, chunk_spans))
        sqlite_db = writer.dialect.name == "sqlite"
        # (A store of a newer schema keeps its indexes: they are its own.)
        load = _Load(defer=defer_indexes if sqlite_db and not self._newer else False)
        try:
            with writer.connect() as conn:
                if sqlite_db:
                    load.db_file = _db_file(conn)
                    _pragma(conn, f"cache_size = {-1024 * int(cache_mb)}")
                    # One checkpoint at the end rather than one per 40 MB: a page
                    # that several chunks dirty is copied into the file once.
                    _pragma(conn, "wal_autocheckpoint = 0")
                    if self._fts:
                        self._set_text_automerge(conn, 0)
                try:
                    self._load_chunks(conn, records, chunk_spans, load)
                finally:
                    # Also when the records' source fails: the store is left whole.
                    self._finish_load(conn, load, sqlite_db)
        except DBAPIError as exc:
            # Locked, unwritable, a row the schema refuses, the closing VACUUM:
            # each says what the database said, after how much was stored.
            raise StoreError(f"bulk load into the trace store {self.uri} failed after "
                             f"{load.total} span(s): {exc.orig}") from exc
        return load.total

    def _load_chunks(self, conn: Connection, records: Iterable[SpanRecord], chunk_spans: int,
                     load: _Load) -> None:
        """Write the records chunk by chunk; a helper thread turns the next chunk
        into rows while this one is written (SQLite and psycopg release the GIL
        as they work). The first chunks are smaller (a sixteenth of
        ``chunk_spans`` but at least ``_FIRST_CHUNK_MIN_SPANS``, doubling): the
        database starts writing after a short wait for the first rows rather
        than a long one (measured at 1,000,000 spans: 0.2 rather than 2.6 s),
        and each chunk's rows are ready before the one before them is written."""
        pg = conn.dialect.name == "postgresql"
        with ThreadPoolExecutor(1, thread_name_prefix="assay-bulk") as prepare:
            pending: Any = None
            chunks = _chunked(records, chunk_spans, first=max(
                chunk_spans // 16, min(chunk_spans, _FIRST_CHUNK_MIN_SPANS)))
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except BaseException:
                    # The source failed: what it gave before is stored.
                    if pending is not None:
                        load.total += self._write_chunk(conn, pending.result())
                    raise
                if pending is None and load.total == 0 and load.defer is not False:
                    load.deferred = self._drop_for_load(conn, chunk_spans, load.defer)
                ready = prepare.submit(self._sorted_rows, chunk, pg)
                if pending is not None:
                    load.total += self._write_chunk(conn, pending.result())
                pending = ready
            if pending is not None:
                load.total += self._write_chunk(conn, pending.result())

    def _finish_load(self, conn: Connection, load: _Load, sqlite_db: bool) -> None:
        if load.deferred:
            if sqlite_db:
                # An index build sorts its entries: with a small page cache the
                # sort runs in cache-sized pieces, which SQLite's sorter threads
                # sort side by side and merge (measured at 1,000,000 spans: the
                # span indexes in 8.9 s rather than 17.7 s with the load's 1 GiB
                # cache; 11.4 s with the small cache on one thread).
                _pragma(conn, f"cache_size = {_INDEX_BUILD_CACHE_KIB}")
                _pragma(conn, f"threads = {_sorter_threads()}")
            # The chunks' pages go from the WAL into the file meanwhile: the final
            # checkpoint is left the new indexes' pages only (measured at 1,000,000
            # spans: 5 s rather than 13 s, the index builds no slower).
            try:
                with self._fork_guard, conn.begin(), _checkpointing(load.db_file):
                    for index in load.deferred:
                        index.create(conn, checkfirst=True)
            finally:
                if sqlite_db:
                    _pragma(conn, "threads = 0")
        if load.total:
            self._analyze(conn)
        if sqlite_db and self._fts:
            self._set_text_automerge(conn, _TEXT_AUTOMERGE)
        if sqlite_db:
            _pragma(conn, f"cache_size = {_CACHE_PAGES}")
            _pragma(conn, f"wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            _pragma(conn, "wal_checkpoint(RESTART)")

    def _analyze(self, conn: Connection) -> None:
        """Refresh the planner's statistics after a load (on PostgreSQL, and the
        visibility map).

        Without them SQLite cannot tell a rare tag from a common one, and walks
        every trace newest first to find the few that carry a rare tag, rather
        than fetching those few and sorting them (measured at 10,000 traces:
        3.2 ms against 0.04 ms). SQLite samples each index (the same plans for
        the benchmark's queries at 1,000,000 spans as a full ANALYZE, in 0.25 s
        rather than 8 s).
        """
        tables = ("traces", "spans", "span_attributes", "trace_tags", "trace_metadata",
                  "assessments")
        if conn.dialect.name == "postgresql":
            # VACUUM as well, outside any transaction: the loaded rows are then
            # marked visible to every transaction, so that an index answers alone
            # rather than each entry's row being read to check that (measured at
            # 1,000,000 spans: counting the traces of a span attribute's value in
            # 8 rather than 102 ms; the VACUUM took 2.4 s).
            writer, _ = self._get_engines()
            with self._fork_guard:
                vacuum = writer.connect().execution_options(isolation_level="AUTOCOMMIT")
            with vacuum:
                vacuum.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(tables)}")
            return
        _pragma(conn, f"analysis_limit = {_ANALYSIS_ROWS}")
        try:
            with self._fork_guard, conn.begin():
                for table in tables:
                    conn.exec_driver_sql(f"ANALYZE {table}")
        finally:
            _pragma(conn, "analysis_limit = 0")

    def _set_text_automerge(self, conn: Connection, segments: int) -> None:
        """Set when the SQLite full-text index merges its segments: once it holds
        ``segments`` of one level (0: not as it is written).

        A bulk load writes its text with merging off and turns it back on at the
        end: its chunks make a few large segments, which a search reads as fast
        (measured at 1,000,000 spans: text indexed in 6.9 rather than 10.0 s, the
        full-text query 14 ms either way), while writes in small batches need the
        merging, or their many small segments would slow every search.
        """
        with self._fork_guard, conn.begin():
            _text_automerge(conn, segments)

    def _sorted_rows(self, chunk: list[SpanRecord], pg: bool) -> tuple[int, _Rows]:
        chunk.sort(key=lambda r: (r.trace_id, r.span_id))  # walks each primary key once
        return len(chunk), self._batch_rows(chunk, pg)

    def _write_chunk(self, conn: Connection, prepared: tuple[int, _Rows]) -> int:
        count, rows = prepared
        with self._fork_guard, conn.begin():
            self._write_rows(conn, rows, copy=conn.dialect.name == "postgresql")
        return count

    def _write_counted(self, records: list[SpanRecord]) -> int:
        self.write_spans(records)
        return len(records)

    def _drop_for_load(self, conn: Connection, chunk_spans: int,
                       defer: bool | None) -> list[Any]:
        indexes = _load_indexes()
        with self._fork_guard, conn.begin():
            if defer is None:
                held = conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM spans").scalar()
                defer = int(held or 0) < chunk_spans
            if not defer:
                return []
            for index in indexes:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
        return indexes

    def _restore_indexes(self, conn: Connection) -> None:
        """Build the indexes an interrupted bulk load left dropped, and turn the
        full-text index's merging back on (SQLite); on PostgreSQL, build the
        trigram index again should it be gone (with the ``pg_trgm`` extension
        it depends on, when someone dropped that)."""
        # (Nothing to say when this server has no pg_trgm: creating the store said so.)
        if conn.dialect.name == "postgresql" and self._fts and not _has_trigram_index(conn) \
                and conn.exec_driver_sql("SELECT 1 FROM pg_available_extensions "
                                         "WHERE name = 'pg_trgm'").first():
            log.warning("assay: the trigram index of %s is missing (the pg_trgm extension "
                        "dropped?); building it again", self.uri)
            _create_trigram_index(conn)
        if conn.dialect.name != "sqlite" or self._memory:
            return
        if self._fts and conn.exec_driver_sql(
                f"SELECT 1 FROM {s.FTS_TABLE}_config WHERE k = 'automerge' AND v = 0").first():
            _text_automerge(conn, _TEXT_AUTOMERGE)
        present = {name for (name,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        missing = [ix for ix in _load_indexes() if ix.name not in present]
        if missing:
            log.warning("assay: rebuilding %d index(es) of %s that an interrupted bulk load "
                        "left dropped", len(missing), self.uri)
            for index in missing:
                index.create(conn, checkfirst=True)

    def _trace_upsert(self) -> Any:
        ins = self._insert(s.traces)
        excluded = ins.excluded
        return ins.on_conflict_do_update(
            index_elements=["trace_id"], set_={c: excluded[c] for c in _TRACE_COLUMNS[1:]},
            where=excluded.root_rank > s.traces.c.root_rank)

    def _kv_upsert(self, table: Any) -> Any:
        ins = self._insert(table)
        return ins.on_conflict_do_update(index_elements=["trace_id", "key"],
                                         set_={"value": ins.excluded.value})

    @staticmethod
    def _trace_row(r: SpanRecord) -> tuple[Any, ...]:
        rooted = r.root_rank > 0
        return (
            r.trace_id,
            r.experiment,
            r.trace_name or r.name,
            r.status if rooted else "IN_PROGRESS",
            r.start_time_ns // 1_000_000,
            (r.end_time_ns - r.start_time_ns) / 1e6 if rooted else None,
            (r.inputs_json or "")[:PREVIEW_CHARS] if rooted else None,
            (r.outputs_json or "")[:PREVIEW_CHARS] if rooted else None,
            r.span_id if rooted else None,
            r.root_rank,
            r.end_time_ns // 1_000_000 if rooted else None,
            r.run_id if rooted else None,
        )

    def log_assessment(self, a: Assessment) -> None:
        """Store an assessment, marking the valid one it overrides."""
        self.log_assessments([a])

    def log_assessments(self, assessments: Sequence[Assessment], *,
                        overrides: Mapping[str, str] | None = None) -> None:
        """Store assessments in one transaction, in order: each overrides the valid
        one of the same trace, kind, name and source (type and id), whether
        stored before or earlier in ``assessments``, or logged at the same moment
        by another process (the later of two to commit overrides the other's).

        ``overrides`` maps the id of a new assessment to the id of a stored,
        valid feedback of the same trace that it overrides whatever its source
        (a reviewer correcting a judge).

        Raises:
            ValueError: an assessment id is already stored or given twice, or an
                ``overrides`` target is not a valid feedback of that trace
                (nothing is stored).
            StoreError: the database stayed locked or unwritable for a minute.
        """
        if not assessments:
            return
        rows: list[dict[str, Any]] = []
        # The first of each (trace, kind, name, source) in the batch overrides the
        # stored valid one; each later one overrides the one before it in the batch.
        first: dict[tuple[Any, ...], dict[str, Any]] = {}
        last: dict[tuple[Any, ...], dict[str, Any]] = {}
        for a in assessments:
            kind, num, text = typed_value(a.value)
            row = {
                "assessment_id": a.assessment_id, "trace_id": a.trace_id, "span_id": a.span_id,
                "name": a.name, "kind": a.kind,
                "value_json": json.dumps(a.value, ensure_ascii=False),
                "value_kind": kind, "num_value": num, "str_value": text,
                "rationale": a.rationale, "source_type": a.source_type,
                "source_id": a.source_id, "metadata_json": json.dumps(a.metadata),
                "error": a.error, "created_time_ms": a.created_time_ms, "overridden_by": None}
            group = (a.trace_id, a.kind, a.name, a.source_type, a.source_id)
            before = last.get(group)
            if before is None:
                first[group] = row
            else:
                before["overridden_by"] = a.assessment_id
            last[group] = row
            rows.append(row)
        ids = Counter(row["assessment_id"] for row in rows)
        twice = sorted(aid for aid, n in ids.items() if n > 1)
        if twice:
            raise ValueError(f"log_assessments: assessment id {twice[0]!r} is given "
                             f"{ids[twice[0]]} times")
        explicit = _explicit_overrides(rows, overrides or {})
        trace_ids = sorted({group[0] for group in first})
        try:
            self._retried(lambda conn: self._log_assessment_rows(conn, rows, first, trace_ids,
                                                                 explicit))
        except IntegrityError as exc:
            stored = self._stored_assessment_ids(list(ids))
            if not stored:
                raise
            raise ValueError(f"log_assessments: assessment id {stored[0]!r} is already "
                             "stored (nothing of this batch was)") from exc

    @staticmethod
    def _log_assessment_rows(conn: Connection, rows: list[dict[str, Any]],
                             first: dict[tuple[Any, ...], dict[str, Any]],
                             trace_ids: list[str], explicit: dict[str, dict[str, Any]]) -> None:
        prior = s.assessments.c
        _lock_assessments(conn, trace_ids)
        assessed = copies.assessed_traces(conn, trace_ids)
        for new in rows:
            new["experiment"], new["trace_timestamp_ms"] = \
                assessed.get(new["trace_id"], (None, None))
        # The stored valid assessments of the batch's groups, found by trace
        # and marked in a few statements (one UPDATE per group would cost a
        # round trip each: seconds for an evaluation's thousands on PostgreSQL).
        overrides: dict[str, str] = {}
        for i in range(0, len(trace_ids), 500):
            for aid, *stored in conn.execute(
                    select(prior.assessment_id, prior.trace_id, prior.kind, prior.name,
                           prior.source_type, prior.source_id)
                    .where(prior.trace_id.in_(trace_ids[i:i + 500]),
                           prior.overridden_by.is_(None))):
                newer = first.get(tuple(stored))
                if newer is not None:
                    overrides[aid] = newer["assessment_id"]
        if explicit:
            overrides.update(_checked_targets(conn, explicit))
        marked = list(overrides.items())
        for i in range(0, len(marked), 500):
            chunk = dict(marked[i:i + 500])
            conn.execute(s.assessments.update()
                         .where(prior.assessment_id.in_(list(chunk)),
                                prior.overridden_by.is_(None))
                         .values(overridden_by=case(chunk, value=prior.assessment_id)))
        conn.execute(s.assessments.insert(), rows)

    def _stored_assessment_ids(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` that the store holds, in order."""
        a = s.assessments.c
        found: set[str] = set()
        with self._read() as conn:
            for i in range(0, len(ids), 500):
                found.update(r[0] for r in conn.execute(
                    select(a.assessment_id).where(a.assessment_id.in_(ids[i:i + 500]))))
        return [aid for aid in ids if aid in found]

    def get_assessment(self, trace_id: str, assessment_id: str) -> Assessment | None:
        """The assessment with this id on this trace (valid or overridden), or ``None``."""
        with self._read() as conn:
            return stored_assessment(conn, trace_id, assessment_id)

    def delete_assessment(self, trace_id: str, assessment_id: str) -> bool:
        """Delete one assessment of a trace; whether there was one. What it
        overrode takes its place: valid again when it was valid, or overridden by
        its successor when it was overridden itself."""
        a = s.assessments.c

        def write(conn: Connection) -> bool:
            _lock_assessments(conn, [trace_id])
            row = conn.execute(select(a.overridden_by).where(
                a.assessment_id == assessment_id, a.trace_id == trace_id)).first()
            if row is None:
                return False
            conn.execute(s.assessments.update()
                         .where(a.trace_id == trace_id, a.overridden_by == assessment_id)
                         .values(overridden_by=row[0]))
            conn.execute(s.assessments.delete().where(a.assessment_id == assessment_id))
            return True

        return self._retried(write)

    def delete_traces(self, *, experiment: str | Sequence[str] | None,
                      filter_string: str | None, before_ms: int | None) -> int:
        """Delete the matching traces with everything attached; returns how many."""
        cond = self._where(experiment, filter_string)
        if before_ms is not None:
            cond = and_(cond, s.traces.c.timestamp_ms < before_ms)
        deleted = 0
        while True:
            found, n = self._retried(lambda conn: self._delete_some(conn, cond))
            if not found:
                return deleted
            deleted += n

    def _delete_some(self, conn: Connection, cond: Any) -> tuple[int, int]:
        """Delete up to 500 traces matching ``cond``: how many were found, and how
        many of those deleted."""
        trace_id = s.traces.c.trace_id
        ids = found = [r[0] for r in conn.execute(select(trace_id).where(cond).limit(500))]
        if ids and conn.dialect.name == "postgresql":
            # Their rows locked first, in id order as writers lock them, so that
            # a writer adding spans to one of them waits rather than deadlocks;
            # one changed meanwhile so that it no longer matches is left alone.
            ids = [r[0] for r in conn.execute(
                select(trace_id).where(trace_id.in_(ids), cond).order_by(trace_id)
                .with_for_update())]
        if ids:
            if self._fts:
                self._delete_text(conn, ids)
            for table in (s.spans, s.span_attributes, s.trace_tags, s.trace_metadata,
                          s.assessments):
                conn.execute(table.delete().where(table.c.trace_id.in_(ids)))
            conn.execute(s.traces.delete().where(s.traces.c.trace_id.in_(ids)))
        return len(found), len(ids)

    @staticmethod
    def _delete_text(conn: Connection, ids: list[str]) -> None:
        """Remove the full-text rows of these traces (before their spans go)."""
        fts = s.fts_table()
        if conn.dialect.name == "postgresql":
            conn.execute(fts.delete().where(fts.c.trace_id.in_(ids)))
            return
        # FTS5's delete command, given the text as it was indexed, by the spans'
        # rowids (FTS5 cannot find rows by an unindexed column without reading all).
        marks = ", ".join("?" * len(ids))
        conn.exec_driver_sql(
            f"INSERT INTO {s.FTS_TABLE} ({s.FTS_TABLE}, rowid, trace_id, content) "
            f"SELECT 'delete', id, trace_id, content FROM {_TEXT_SOURCE} WHERE id IN "
            f"(SELECT rowid FROM spans WHERE trace_id IN ({marks}))", tuple(ids))

    def set_tag(self, trace_id: str, key: str, value: str | None) -> None:
        """Set (or with ``None`` remove) one tag of a stored trace."""
        t = s.trace_tags

        def write(conn: Connection) -> None:
            # The trace's row first, as writers of its spans lock it (PostgreSQL).
            conn.execute(select(s.traces.c.trace_id).where(s.traces.c.trace_id == trace_id)
                         .with_for_update())
            conn.execute(t.delete().where(t.c.trace_id == trace_id, t.c.key == key))
            if value is not None:
                conn.execute(t.insert(), {"trace_id": trace_id, "key": key, "value": value})
            copies.refresh_pairs(conn, [trace_id])

        self._retried(write)

    # -- runs (SQL in assay.store._run_sql) ---------------------------------------
    def create_run(self, run_id: str, *, experiment: str, name: str | None,
                   start_time_ms: int, tags: Mapping[str, str] | None = None) -> None:
        self.runs.create_run(run_id, experiment=experiment, name=name,
                             start_time_ms=start_time_ms, tags=tags)

    def update_run(self, run_id: str, *, status: str | None = None,
                   end_time_ms: int | None = None, name: str | None = None) -> None:
        self.runs.update_run(run_id, status=status, end_time_ms=end_time_ms, name=name)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        self.runs.log_params(run_id, params)

    def log_metrics(self, run_id: str, metrics: Sequence[MetricRow]) -> None:
        self.runs.log_metrics(run_id, metrics)

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.runs.set_run_tags(run_id, tags)

    def delete_run_tag(self, run_id: str, key: str) -> None:
        self.runs.delete_run_tag(run_id, key)

    def log_run_table(self, run_id: str, name: str, content: str) -> None:
        self.runs.log_run_table(run_id, name, content)

    def load_run_table(self, run_id: str, name: str) -> str | None:
        return self.runs.load_run_table(run_id, name)

    def get_run(self, run_id: str) -> Run | None:
        return self.runs.get_run(run_id)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        return self.runs.get_metric_history(run_id, key)

    def search_runs(self, *, experiment: str | None, filter_string: str | None = None,
                    order_by: list[str] | None = None, max_results: int = 1000,
                    page_token: str | None = None) -> RunPage:
        return self.runs.search_runs(experiment=experiment, filter_string=filter_string,
                                     order_by=order_by, max_results=max_results,
                                     page_token=page_token)

    def delete_run(self, run_id: str) -> bool:
        return self.runs.delete_run(run_id)

    # -- reading --------------------------------------------------------------
    def get_trace(self, trace_id: str) -> Trace | None:
        """The trace with this id (32 hex characters), or ``None``."""
        tid = str(trace_id).lower()
        with self._read() as conn:
            columns = [s.traces.c[name] for name in PAGE_COLUMNS]
            row = conn.execute(select(*columns).where(s.traces.c.trace_id == tid)).first()
            if row is None:
                return None
            without_parallel_workers(conn)
            with collector_paused():
                traces = assemble(conn, [tuple(row)], include_spans=True)
        return traces[0]

    def _where(self, experiment: str | Sequence[str] | None, filter_string: str | None) -> Any:
        """The WHERE condition on ``traces`` for a filter."""
        return where_clause(self._get_engines()[0].dialect.name, self._fts,
                            scope_of(experiment), filter_string)

    def search(self, *, experiment: str | Sequence[str] | None, max_results: int = 100,
               page_token: str | None = None, order: Literal["newest", "oldest"] = "newest",
               include_spans: bool = True, filter_string: str | None = None,
               order_by: list[str] | None = None) -> TracePage:
        """One page of the traces matching ``filter_string``, in ``order_by`` order
        (newest first by default), continuing after ``page_token``.

        A search of a shape seen before (filter, ordering, page size) runs the SQL
        compiled for it then (see :mod:`assay.store.plans`). On SQLite a filter on
        what a trace has many of (tags, spans, attributes, assessments) is
        answered one of two ways. When its matches are few (a count that stops
        at ``plans.RARE_MATCHES`` tells), they are gathered by index and sorted.
        Otherwise the traces are walked in page order, each probed, until the
        page is full: fast when matches are common, whatever their number. Should
        that walk not fill the page within a few milliseconds, it goes on from
        its last match when the rate it found matches at says the page is close;
        if not, the matches are gathered after all.

        ``experiment`` is one name, several, or ``None`` for every experiment.

        Raises:
            InvalidFilter: the filter or the ordering is malformed.
            ValueError: the page token was not issued for this ordering; a
                malformed ``experiment``.
        """
        from assay.store import ordering

        experiment = scope_of(experiment)
        if order_by is None and order == "oldest":
            order_by = ["timestamp_ms ASC"]
        plan = self._plan(experiment, filter_string, order_by, max_results,
                          page_token is not None)
        after = None if page_token is None else ordering.decode_token(page_token, plan.keys)
        with self._read() as conn, collector_paused():
            if not conn.in_transaction():
                conn.begin()  # the page and its parts read one snapshot
            without_parallel_workers(conn)
            rows = None
            if plan.walk is not None and not _few(conn, plan.bound):
                rows = _walk(conn, plan.walk, after, max_results + 1, lambda: self._plan(
                    experiment, filter_string, order_by, max_results, True).walk)
            if rows is None:
                rows = _rows(conn, plan.gather, after)
            more = len(rows) > max_results
            rows = rows[:max_results]
            traces = assemble(conn, rows, include_spans=include_spans)
        token = None
        if more:
            token = ordering.encode_token(plan.keys, list(rows[-1][len(PAGE_COLUMNS):]))
        return TracePage(traces, token)

    def _plan(self, experiment: Scope, filter_string: str | None, order_by: Any,
              max_results: int, after: bool) -> SearchPlan:
        if isinstance(order_by, list):
            order_by = tuple(order_by)
        return _cached(self._plans, build_plan, self._get_engines()[0].dialect, self._fts,
                       experiment, filter_string, order_by, max_results, after)

    def count(self, *, experiment: str | Sequence[str] | None,
              filter_string: str | None = None) -> int:
        """How many traces match, without fetching them (the SQL compiled for a
        filter is kept, as a search's is)."""
        sql = _cached(self._count_plans, build_count, self._get_engines()[0].dialect,
                      self._fts, scope_of(experiment), filter_string)
        with self._read() as conn:
            return int(_rows(conn, sql, None)[0][0] or 0)

    def count_spans(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(s.spans)).scalar() or 0)


def _text_automerge(conn: Connection, segments: int) -> None:
    """FTS5's ``automerge`` option of the SQLite full-text index (inside ``conn``'s
    transaction)."""
    conn.exec_driver_sql(f"INSERT INTO {s.FTS_TABLE} ({s.FTS_TABLE}, rank) "
                         f"VALUES ('automerge', {int(segments)})")


def _has_trigram_index(conn: Connection) -> bool:
    return conn.exec_driver_sql(
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
        f"AND indexname = 'ix_{s.FTS_TABLE}_content'").first() is not None


def _create_trigram_index(conn: Connection) -> None:
    """The PostgreSQL full-text table's trigram GIN index, which serves LIKE and
    ILIKE; without the ``pg_trgm`` extension, none (LIKE then scans the table).

    The extension is one per database. It goes into the ``public`` schema when it
    is not there yet, not into the store's: dropping a store's schema with
    CASCADE drops the extensions in it, and with them the indexes of every
    other store in the database that uses it.
    """
    found = "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    try:
        with conn.begin_nested():
            where = conn.exec_driver_sql(found).scalar()
            if where is None:
                try:
                    with conn.begin_nested():
                        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm "
                                             "WITH SCHEMA public")
                except DBAPIError as exc:
                    log.warning("assay: cannot add the pg_trgm extension to the public "
                                "schema (%s); adding it to the store's schema, where "
                                "dropping that schema drops it for every store", exc.orig)
                    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                where = conn.exec_driver_sql(found).scalar()
            conn.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS ix_{s.FTS_TABLE}_content ON "
                f"{s.FTS_TABLE} USING gin (content {where}.gin_trgm_ops)")
    except DBAPIError as exc:  # no pg_trgm: LIKE scans the text table
        log.warning("assay: no trigram index on PostgreSQL (%s)", exc.orig)


def _text(inputs: str | None, outputs: str | None) -> str:
    """What the full-text index holds of a span: the start of its inputs and outputs
    (the SQLite view ``_TEXT_SOURCE`` computes the same in SQL)."""
    return f"{(inputs or '')[:s.TEXT_CHARS]}\n{(outputs or '')[:s.TEXT_CHARS]}"


def _json_text(value: Any) -> str:
    """A span's attributes or events as stored: compact JSON, as its inputs and
    outputs are (about 0.7 rather than 5.5 µs for a span's attributes through
    the standard library); what pydantic-core cannot write (bytes that are not
    UTF-8, say) goes through ``json``. Either way NaN and infinities stay
    numbers, and a value JSON cannot hold is written as its ``str``. Never
    raises: a value neither can write (a cycle, a ``str`` that raises) is
    written as the tracer writes inputs, with markers, rather than failing the
    batch it came in."""
    try:
        return to_json(value, fallback=str, inf_nan_mode="constants").decode()
    except Exception:
        return json_text(value)


def _span_key(span_id: str) -> int:
    """A PostgreSQL full-text row's key: from the span id, so that a span
    delivered twice replaces its own row."""
    return int(span_id, 16) & 0x7FFF_FFFF_FFFF_FFFF


class _Deadline:
    """SQLite's progress handler for a connection: statements run in the block are
    interrupted once ``budget_s`` has passed (``expired`` then says so)."""

    def __init__(self, conn: Connection, budget_s: float) -> None:
        self._raw: Any = conn.connection.dbapi_connection
        self._at = time.perf_counter() + budget_s
        self.expired = False

    def _check(self) -> int:
        self.expired = time.perf_counter() > self._at
        return 1 if self.expired else 0

    def __enter__(self) -> _Deadline:
        self._raw.set_progress_handler(self._check, _WALK_STEPS)
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.set_progress_handler(None, 0)


def _walk(conn: Connection, sql: Sql, after: Any, want: int,
          resumed: Callable[[], Sql | None]) -> list[Any] | None:
    """The first ``want`` rows of the walk ``sql`` (SQLite, inside a transaction),
    or ``None`` when they take too long to find and had better be gathered.

    The walk has ``_WALK_BUDGET_S``. Cut short with some matches found, it goes
    on from the last of them (``resumed()`` is the same walk continuing after a
    row's sort values) if, at the rate it found them, the rest should take at
    most ``_WALK_MORE_S``: a filter matching every thirtieth trace fills its
    page in about one and a half budgets rather than paying a whole budget and
    then a gather.
    """
    rows: list[Any] = []
    started = time.perf_counter()
    if _stream(conn, sql, after, want, rows, _WALK_BUDGET_S):
        return rows
    if not rows:
        return None
    more_s = (time.perf_counter() - started) * (want - len(rows)) / len(rows)
    if more_s > _WALK_MORE_S:
        return None
    again = resumed()
    if again is None:
        return None
    if _stream(conn, again, rows[-1][len(PAGE_COLUMNS):], want, rows, 1.5 * more_s):
        return rows
    return None


def _stream(conn: Connection, sql: Sql, after: Any, want: int, rows: list[Any],
            budget_s: float) -> bool:
    """Append the rows of ``sql`` to ``rows`` until it holds ``want`` of them or the
    statement ends (``True``), or until ``budget_s`` has passed (``False``; the
    rows read by then stay in ``rows``, and one the driver had read ahead is
    found again by a walk that goes on after the last of them)."""
    with _Deadline(conn, budget_s) as deadline:
        try:
            with _executed(conn, sql, after) as cursor:
                for row in cursor:
                    rows.append(row)
                    if len(rows) >= want:
                        break
            return True
        except OperationalError:
            # "interrupted", or whatever a step it cut short reports (an FTS5 table
            # being opened says "vtable constructor failed").
            if not deadline.expired:
                raise
            return False


def _few(conn: Connection, bound: tuple[str, Any] | None) -> bool:
    """Whether a filter's matches are known to be fewer than ``RARE_MATCHES``
    (SQLite): its bound counted within ``_RARE_BUDGET_S`` (longer: many)."""
    if bound is None:
        return False
    with _Deadline(conn, _RARE_BUDGET_S) as deadline:
        try:
            return bounded_matches(bound, lambda sql: int(_rows(conn, sql, None)[0][0])) \
                < RARE_MATCHES
        except OperationalError:
            if not deadline.expired:
                raise
            return False


def _rows(conn: Connection, sql: Sql, after: Any) -> list[Any]:
    """The rows of a planned statement, as tuples."""
    with _executed(conn, sql, after) as cursor:
        return cursor.fetchall()


@contextmanager
def _executed(conn: Connection, sql: Sql, after: Any) -> Iterator[Any]:
    """A planned statement executed, and the driver's cursor to read its rows
    from as plain tuples (measured at 100,000 traces: a page's 101 rows in 0.19
    rather than 0.24 ms through the result's rows). The driver's errors while
    reading (SQLite interrupting a walk) come out as SQLAlchemy's, as those of
    executing it do."""
    params = sql.params(after)
    result = conn.exec_driver_sql(sql.text, params)
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield result.cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(sql.text, params, exc, dbapi_error,
                                  dialect=conn.dialect) from exc
    finally:
        result.close()


def _cached(cache: Any, build: Any, *args: Any) -> Any:
    """``cache(*args)``; or, for arguments that cannot be a cache's key (a list
    where a string belongs), ``build(*args)``, which reports what is wrong."""
    try:
        hash(args)
    except TypeError:
        return build(*args)
    return cache(*args)


def _copy_insert(conn: Connection, head: str, tail: str, columns: list[str],
                 rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: ``head`` (``INSERT INTO t (cols)``) + ``SELECT`` of ``rows`` +
    ``tail`` (its ``ON CONFLICT`` clause), the rows sent with ``COPY`` into a
    temporary table first: several times faster than one parameter set per row."""
    table = head.split()[2]
    stage = f"assay_stage_{table}"
    names = ", ".join(columns)
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "
                         f"AS SELECT {names} FROM {table} WITH NO DATA")
    conn.exec_driver_sql(f"TRUNCATE {stage}")
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.exec_driver_sql(f"{head}SELECT {names} FROM {stage}{tail}")


def _analyzed_rows(conn: Connection, table: str) -> int:
    """The rows ``table`` had when SQLite's statistics were taken (0: never)."""
    has_stats = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'").first()
    if has_stats is None:
        return 0
    stats = [row[0] for row in conn.exec_driver_sql(
        "SELECT stat FROM sqlite_stat1 WHERE tbl = ?", (table,))]
    return max((int(stat.split()[0]) for stat in stats if stat), default=0)


def _pragma(conn: Connection, pragma: str) -> None:
    """Set an SQLite pragma on this connection, outside any transaction."""
    conn.connection.dbapi_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]


def _db_file(conn: Connection) -> str | None:
    """The file of an SQLite connection's main database (``None``: in memory)."""
    raw: Any = conn.connection.dbapi_connection
    for _seq, name, path in raw.execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


@contextmanager
def _checkpointing(db_file: str | None) -> Iterator[None]:
    """SQLite: copy the transactions committed so far from the WAL into the database
    file (and sync it) from a second connection, while the caller's transaction works:
    a PASSIVE checkpoint takes no lock a writer needs. The disk work of a bulk load
    then overlaps its CPU work rather than all coming at its final checkpoint.
    Entered within the fork guard: the thread is done before the guard is released.
    """
    if db_file is None:
        yield
        return

    import sqlite3

    def run() -> None:
        try:
            raw = sqlite3.connect(db_file, timeout=_BUSY_TIMEOUT_MS / 1000,
                                  isolation_level=None, check_same_thread=False)
            try:
                raw.execute("PRAGMA synchronous = NORMAL")
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                raw.close()
        except sqlite3.Error as exc:  # the final checkpoint does it then
            log.debug("assay: background checkpoint of %s failed: %s", db_file, exc)

    worker = threading.Thread(target=run, name="assay-checkpoint", daemon=True)
    worker.start()
    try:
        yield
    finally:
        worker.join()


def _sorter_threads() -> int:
    """Helper threads for SQLite's sorter while a bulk load builds its indexes."""
    return max(1, min(4, os.cpu_count() or 1))


def _load_indexes() -> list[Any]:
    """The secondary indexes a bulk load may drop and rebuild."""
    return [index for table in (s.spans, s.span_attributes, s.traces, s.trace_tags,
                                s.trace_metadata) for index in table.indexes]


def _chunked(records: Iterable[SpanRecord], size: int,
             first: int | None = None) -> Iterator[list[SpanRecord]]:
    """The records in lists of ``size``; with ``first``, the lists start at that
    size and double up to ``size``."""
    chunk: list[SpanRecord] = []
    limit = min(first or size, size)
    for position, record in enumerate(records):
        if not isinstance(record, SpanRecord):
            raise TypeError(f"bulk_load: record {position} is a {type(record).__name__}, "
                            "expected an assay.store.SpanRecord")
        chunk.append(record)
        if len(chunk) >= limit:
            yield chunk
            chunk = []
            limit = min(2 * limit, size)
    if chunk:
        yield chunk
