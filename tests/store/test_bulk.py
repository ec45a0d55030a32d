"""The store's bulk path: the same traces as ``write_spans``, faster, and safe to interrupt."""

from __future__ import annotations

import dataclasses
import logging
import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from assay.errors import StoreError
from assay.store import SpanRecord, TraceStore, open_store
from assay.store.schema import span_attributes, spans, trace_metadata, trace_tags, traces

T0 = 1_750_000_000_000_000_000
INDEXES = sorted(str(ix.name) for table in (spans, span_attributes, traces, trace_tags,
                                             trace_metadata) for ix in table.indexes)


def corpus(n_traces: int, seed: int = 7) -> list[SpanRecord]:
    """Traces of 4 spans with tags, metadata, typed attributes and text, in random order."""
    rng = random.Random(seed)
    out = []
    for t in range(n_traces):
        tid = f"{rng.getrandbits(128):032x}"
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(4)]
        start = T0 + t * 1_000_000_000
        for i, sid in enumerate(ids):
            root = i == 0
            out.append(SpanRecord(
                trace_id=tid, span_id=sid, parent_id=None if root else ids[0],
                name="agent" if root else rng.choice(["llm", "search", "rerank"]),
                span_type="AGENT" if root else rng.choice(["LLM", "TOOL", "RETRIEVER"]),
                start_time_ns=start + i, end_time_ns=start + 1_000_000 * (5 - i),
                status="ERROR" if root and t % 10 == 3 else "OK", status_message=None,
                inputs_json=f'{{"q": "question {t} about {rng.choice(["kettles", "tea"])}"}}',
                outputs_json=None if i == 3 else f'"answer {t}.{i}"',
                attributes={"tokens": rng.randint(1, 5000), "model": rng.choice(["a", "b"]),
                            "ok": rng.random() < 0.5},
                events=[], experiment="bulk", root_rank=2 if root else 0,
                trace_name="agent" if root else None,
                trace_tags={"user": f"u{t % 7}", "env": "prod"} if root else {},
                trace_metadata={"session": f"s{t % 3}"} if root else {}))
    rng.shuffle(out)
    return out


@pytest.fixture
def two_stores(store_uri: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A store filled by ``write_spans`` (SQLite) and the store under test."""
    reference = open_store(f"sqlite:///{tmp_path / 'reference.db'}")
    bulk = open_store(store_uri)
    yield reference, bulk
    reference.close()
    bulk.close()


def _everything(store: Any) -> list[Any]:
    page = store.search(experiment="bulk", max_results=2000, include_spans=True)
    return [t.to_dict() for t in page.traces]


FILTERS = ["trace.status = 'ERROR'", "tags.user = 'u3'", "metadata.session = 's1'",
           "span.attributes.tokens > 2500", "span.attributes.model = 'a'",
           "span.attributes.ok = true", "span.name = 'rerank' AND span.type = 'RETRIEVER'",
           "trace.text LIKE '%kettles%'", "trace.text LIKE '%answer 17.2%'"]


@pytest.mark.parametrize(("n_traces", "chunk_spans"), [(120, 97), (1300, 5000)])
def test_bulk_load_stores_what_write_spans_stores(two_stores, n_traces, chunk_spans):
    # 1,300 traces: a first chunk of more than 1,000 rows for every table, which
    # PostgreSQL sends by COPY.
    reference, bulk = two_stores
    records = corpus(n_traces)
    for i in range(0, len(records), 500):
        reference.write_spans(records[i:i + 500])
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        assert bulk.bulk_load(iter(records), chunk_spans=chunk_spans) == len(records)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    staged = {s.split()[2] for s in statements if s.startswith("INSERT INTO")
              and "FROM assay_stage_" in s}
    copied = bulk.uri.startswith("postgresql") and n_traces > 1000
    assert staged == ({"spans", "span_attributes", "trace_text", "traces", "trace_tags",
                       "trace_metadata"} if copied else set())

    assert _everything(bulk) == _everything(reference)
    for flt in FILTERS:
        want = {t.info.trace_id for t in reference.search(
            experiment="bulk", max_results=2000, filter_string=flt, include_spans=False).traces}
        got = {t.info.trace_id for t in bulk.search(
            experiment="bulk", max_results=2000, filter_string=flt, include_spans=False).traces}
        assert got == want, flt
        assert want, f"the corpus should match {flt}"


def test_a_store_loads_through_the_trace_store_seam(two_stores):
    """``bulk_load`` is part of :class:`TraceStore`: a caller that knows only the
    protocol loads through it with the defaults."""
    _, bulk = two_stores
    assert isinstance(bulk, TraceStore)
    store: TraceStore = bulk
    records = corpus(30)
    assert store.bulk_load(records) == len(records)
    assert store.count(experiment="bulk") == 30


def test_bulk_load_into_a_store_that_holds_the_spans_stores_them_once(db_path):
    store = open_store(f"sqlite:///{db_path}")
    records = corpus(30)
    store.write_spans(records[:50])
    store.bulk_load(records + records[:10], chunk_spans=40)
    store.close()
    with closing(sqlite3.connect(db_path)) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchone() == (120,)
        assert con.execute("SELECT count(*) FROM traces").fetchone() == (30,)
        # The full-text index holds each span once (FTS5 checks it against the spans).
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")


def _indexes(db_path: Path) -> list[str]:
    with closing(sqlite3.connect(db_path)) as con:
        return sorted(name for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_%' "
            "AND tbl_name IN ('spans', 'span_attributes', 'traces', 'trace_tags', "
            "'trace_metadata')"))


def test_bulk_load_rebuilds_the_indexes_and_restores_the_connection(db_path):
    store = open_store(f"sqlite:///{db_path}")
    store.bulk_load(corpus(40), chunk_spans=64, defer_indexes=True)
    assert _indexes(db_path) == INDEXES
    writer = store.sql._get_engines()[0]
    assert writer.pool.checkedin() == 1  # the connection the load used, back in the pool
    with writer.connect() as conn:
        raw = conn.connection.dbapi_connection
        pragmas = {p: raw.execute(f"PRAGMA {p}").fetchone()[0]
                   for p in ("cache_size", "wal_autocheckpoint", "threads")}
    store.close()
    assert pragmas == {"cache_size": -65_536, "wal_autocheckpoint": 10_000, "threads": 0}
    with closing(sqlite3.connect(db_path)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")
        plan = " ".join(str(row) for row in con.execute(
            "EXPLAIN QUERY PLAN SELECT trace_id FROM span_attributes "
            "WHERE key = 'model' AND str_value = 'a'"))
    assert "COVERING INDEX ix_span_attributes_key_str_value_trace_id" in plan


def test_a_failing_source_keeps_the_chunks_written_and_the_indexes(db_path):
    records = corpus(50)

    def failing() -> Iterator[SpanRecord]:
        yield from records[:120]
        raise RuntimeError("source went away")

    store = open_store(f"sqlite:///{db_path}")
    with pytest.raises(RuntimeError, match="source went away"):
        store.bulk_load(failing(), chunk_spans=50, defer_indexes=True)
    store.close()
    with closing(sqlite3.connect(db_path)) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchone() == (100,)  # two chunks
    assert _indexes(db_path) == INDEXES


def test_indexes_a_dead_bulk_load_left_dropped_are_rebuilt_on_the_next_open(db_path, caplog):
    store = open_store(f"sqlite:///{db_path}")
    store.bulk_load(corpus(20))
    store.close()
    with closing(sqlite3.connect(db_path)) as con:  # as a process killed mid-load leaves it
        for name in INDEXES:
            con.execute(f"DROP INDEX {name}")
    assert _indexes(db_path) == []

    with caplog.at_level(logging.WARNING, logger="assay"):
        again = open_store(f"sqlite:///{db_path}")
        again.open()
    assert f"rebuilding {len(INDEXES)} index(es)" in caplog.text
    assert len(INDEXES) == 15
    assert _indexes(db_path) == INDEXES
    assert again.count(experiment="bulk", filter_string="tags.user = 'u3'") == 3
    again.close()


def test_a_store_of_a_newer_schema_keeps_its_indexes_through_a_bulk_load(db_path):
    """The indexes of a newer schema are its own: a bulk load by an older assay
    that may write it drops none (and an open rebuilds none)."""
    open_store(f"sqlite:///{db_path}").count(experiment=None)
    with closing(sqlite3.connect(db_path)) as con, con:
        con.execute("UPDATE assay_schema SET version = version + 1, writable_by = version")
        con.execute("CREATE INDEX ix_spans_newer ON spans (name, span_type)")  # the newer one's
        con.execute("DROP INDEX ix_spans_long_text")  # which the newer schema no longer has
    store = open_store(f"sqlite:///{db_path}")
    statements: list[str] = []
    writer = store.sql._get_engines()[0]
    with writer.connect() as conn:
        conn.connection.dbapi_connection.set_trace_callback(statements.append)
    assert store.bulk_load(corpus(60), defer_indexes=True) == 240
    store.close()
    assert not [s for s in statements if "INDEX" in s.upper()]
    assert _indexes(db_path) == sorted({*INDEXES, "ix_spans_newer"} - {"ix_spans_long_text"})
    assert open_store(f"sqlite:///{db_path}").count(experiment="bulk") == 60


def test_bulk_load_keeps_the_indexes_of_a_store_larger_than_its_first_chunk(db_path):
    store = open_store(f"sqlite:///{db_path}")
    records = corpus(60)
    store.write_spans(records[:200])
    statements: list[str] = []
    writer = store.sql._get_engines()[0]
    with writer.connect() as conn:  # the pool's one writer connection, which the load takes
        conn.connection.dbapi_connection.set_trace_callback(statements.append)
    store.bulk_load(records[200:], chunk_spans=20)
    assert statements, "the load ran on another connection"
    assert not [s for s in statements if "INDEX" in s.upper()]
    assert [s for s in statements if s.startswith("ANALYZE")]  # statistics for the planner
    assert store.count(experiment="bulk") == 60
    store.close()


def test_bulk_load_on_the_memory_store():
    store = open_store("memory://")
    assert store.bulk_load(corpus(10), chunk_spans=7) == 40
    assert store.count(experiment="bulk") == 10
    store.close()


def test_bulk_load_refuses_bad_sizes(db_path):
    store = open_store(f"sqlite:///{db_path}")
    with pytest.raises(ValueError, match="chunk_spans"):
        store.bulk_load(corpus(1), chunk_spans=0)
    with pytest.raises(ValueError, match="cache_mb"):
        store.bulk_load(corpus(1), cache_mb=0)
    store.close()


def test_a_record_of_another_type_is_named_and_what_came_before_is_kept(db_path):
    records: list[Any] = corpus(30)
    records.insert(100, {"trace_id": "not a record"})
    store = open_store(f"sqlite:///{db_path}")
    with pytest.raises(TypeError, match=r"record 100 is a dict, expected an assay\.store"):
        store.bulk_load(records, chunk_spans=40, defer_indexes=True)
    store.close()
    with closing(sqlite3.connect(db_path)) as con:
        assert con.execute("SELECT count(*) FROM spans").fetchone() == (80,)  # two chunks
    assert _indexes(db_path) == INDEXES


def _automerge(db_path: Path) -> int | None:
    with closing(sqlite3.connect(db_path)) as con:
        row = con.execute("SELECT v FROM trace_text_config WHERE k = 'automerge'").fetchone()
    return None if row is None else int(row[0])


def test_the_text_index_is_written_unmerged_during_a_load_and_merges_after(db_path):
    store = open_store(f"sqlite:///{db_path}")
    store.open()
    statements: list[str] = []
    writer = store.sql._get_engines()[0]
    with writer.connect() as conn:
        conn.connection.dbapi_connection.set_trace_callback(statements.append)
    store.bulk_load(corpus(40), chunk_spans=50)
    store.close()
    settings = [s for s in statements if "'automerge'" in s]
    assert settings == ["INSERT INTO trace_text (trace_text, rank) VALUES ('automerge', 0)",
                        "INSERT INTO trace_text (trace_text, rank) VALUES ('automerge', 4)"]
    text_rows = [i for i, s in enumerate(statements) if s.startswith("INSERT INTO trace_text (")
                 and "SELECT" in s]
    first, last = (i for i, s in enumerate(statements) if "'automerge'" in s)
    assert text_rows and all(first < i < last for i in text_rows)
    assert _automerge(db_path) == 4
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")


def test_a_text_index_a_dead_load_left_unmerged_merges_again_on_the_next_open(db_path):
    store = open_store(f"sqlite:///{db_path}")
    store.bulk_load(corpus(10))
    store.close()
    with closing(sqlite3.connect(db_path)) as con:  # as a process killed mid-load leaves it
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('automerge', 0)")
        con.commit()
    assert _automerge(db_path) == 0
    again = open_store(f"sqlite:///{db_path}")
    again.open()
    again.close()
    assert _automerge(db_path) == 4
    # and a store whose merging was set otherwise by hand keeps that setting
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('automerge', 8)")
        con.commit()
    open_store(f"sqlite:///{db_path}").close()
    assert _automerge(db_path) == 8


def test_a_load_starts_with_small_chunks_that_double(db_path):
    from assay.store.sql import _chunked

    records = corpus(25)  # 100 records
    assert [len(c) for c in _chunked(records, 40, first=5)] == [5, 10, 20, 40, 25]
    assert [len(c) for c in _chunked(records, 40)] == [40, 40, 20]
    assert [len(c) for c in _chunked(records, 3, first=5)] == [3] * 33 + [1]
    # 20,000 spans in chunks of 160,000: 10,000 first (the smallest first chunk), then the rest
    many = corpus(5_000)
    store = open_store(f"sqlite:///{db_path}")
    writes: list[int] = []
    original = store.sql._write_chunk
    store.sql._write_chunk = lambda conn, prepared: writes.append(prepared[0]) or original(
        conn, prepared)
    assert store.bulk_load(many, chunk_spans=160_000) == 20_000
    assert writes == [10_000, 10_000]
    assert store.count(experiment="bulk") == 5_000
    store.close()


def test_a_postgresql_load_leaves_its_rows_visible_to_index_only_reads(pg_uri):
    """The load ends with VACUUM (ANALYZE): the visibility map covers the loaded
    pages, so that an index answers alone, and the planner has statistics."""
    from sqlalchemy import text

    store = open_store(pg_uri)
    store.bulk_load(corpus(200))
    writer = store.sql._get_engines()[0]
    with writer.connect() as conn:
        for table in ("spans", "span_attributes", "traces"):
            pages, visible, rows = conn.execute(text(
                "SELECT relpages, relallvisible, reltuples FROM pg_class "
                "WHERE oid = CAST(:t AS regclass)"), {"t": table}).one()
            assert pages > 0 and visible == pages, (table, pages, visible)
            assert rows > 0, table  # analyzed
        assert conn.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
    store.close()


def test_a_row_the_database_refuses_is_a_store_error_and_the_chunks_before_stay(store_uri):
    """A span without a name (the schema's NOT NULL): the load stops with a
    StoreError saying how much was stored, and the chunks before it are kept."""
    records: list[Any] = corpus(30)
    bad = records[100]
    records[100] = dataclasses.replace(bad, name=None)
    store = open_store(store_uri)
    try:
        with pytest.raises(StoreError, match=r"bulk load into the trace store .* failed "
                                             r"after 80 span\(s\): .*name"):
            store.bulk_load(records, chunk_spans=40, defer_indexes=True)
        assert store.count_spans() == 80  # two chunks
        assert store.search(experiment="bulk", max_results=5).traces  # and searchable
    finally:
        store.close()
