"""Schema versions: an older store is refused until `assay db upgrade` brings it forward."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from typing import Any

import pytest

import assay
from assay.cli import main
from assay.store.schema import LONG_TEXT, SCHEMA_VERSION, TEXT_CHARS, WRITABLE_BY

_V1 = """
CREATE TABLE assay_schema (version INTEGER NOT NULL PRIMARY KEY);
INSERT INTO assay_schema VALUES (1);
CREATE TABLE traces (trace_id VARCHAR(32) PRIMARY KEY, experiment VARCHAR(256) NOT NULL,
  name TEXT, state VARCHAR(16) NOT NULL, timestamp_ms BIGINT NOT NULL,
  execution_time_ms FLOAT, request_preview TEXT, response_preview TEXT,
  root_span_id VARCHAR(16), root_rank SMALLINT NOT NULL);
CREATE TABLE spans (trace_id VARCHAR(32), span_id VARCHAR(16), parent_id VARCHAR(16),
  name TEXT NOT NULL, span_type VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL,
  status_message TEXT, start_time_ns BIGINT NOT NULL, end_time_ns BIGINT NOT NULL,
  inputs TEXT, outputs TEXT, attributes TEXT NOT NULL, events TEXT NOT NULL,
  PRIMARY KEY (trace_id, span_id));
CREATE TABLE trace_tags (trace_id VARCHAR(32), key VARCHAR(250), value TEXT NOT NULL,
  PRIMARY KEY (trace_id, key));
CREATE TABLE trace_metadata (trace_id VARCHAR(32), key VARCHAR(250), value TEXT NOT NULL,
  PRIMARY KEY (trace_id, key));
INSERT INTO traces VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'default', 'old', 'OK',
  1700000000000, 12.5, '{"q":"kettle"}', '"ok"', 'bbbbbbbbbbbbbbbb', 2);
INSERT INTO spans VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb', NULL, 'old',
  'LLM', 'OK', NULL, 1700000000000000000, 1700000000012500000, '{"q":"kettle"}', '"ok"',
  '{"model": "m1", "tokens": 7}', '[]');
INSERT INTO trace_tags VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'env', 'prod');
"""


@pytest.fixture
def v1_store(db_path) -> str:
    with closing(sqlite3.connect(db_path)) as con:
        con.executescript(_V1)
    return f"sqlite:///{db_path}"


def test_an_older_store_is_refused_with_the_upgrade_command(v1_store):
    with pytest.raises(assay.StoreError, match="assay db upgrade"):
        assay.configure(store=v1_store)


def test_db_upgrade_brings_it_forward_and_keeps_everything(v1_store, db_path, capsys):
    assert main(["db", "upgrade", "--store", v1_store]) == 0
    assert f"from schema version 1 to {SCHEMA_VERSION}" in capsys.readouterr().out
    assay.configure(store=v1_store, experiment="default")
    trace = assay.get_trace("a" * 32)
    assert trace is not None
    assert trace.info.tags == {"env": "prod"}
    assert trace.spans[0].attributes == {"model": "m1", "tokens": 7}
    with closing(sqlite3.connect(db_path)) as con:
        assert con.execute("SELECT key, value_kind, num_value, str_value FROM span_attributes "
                           "ORDER BY key").fetchall() == [("model", "s", None, "m1"),
                                                          ("tokens", "n", 7.0, "7")]
        assert con.execute("SELECT duration_ns FROM spans").fetchall() == [(12_500_000,)]
        assert con.execute("SELECT end_time_ms FROM traces").fetchall() == [(1700000000012,)]
        assert con.execute("SELECT trace_id FROM trace_text WHERE content LIKE '%kettle%'"
                           ).fetchall() == [("a" * 32,)]
    assert main(["db", "upgrade", "--store", v1_store]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_upgrading_nothing_is_an_error(tmp_path, capsys):
    assert main(["db", "upgrade", "--store", f"sqlite:///{tmp_path / 'empty.db'}"]) == 2
    assert "no assay store" in capsys.readouterr().err


def _traced_store(uri: str) -> None:
    assay.configure(store=uri, experiment="default")

    @assay.trace
    def lookup(q: str) -> str:
        return f"found {q}"

    for q in ("kettle", "toaster", "kettle lid"):
        lookup(q)
    assay.flush()
    assay.shutdown()


def test_v2_text_rows_keyed_by_span_hash_are_rebuilt_by_upgrade(db_uri, db_path, capsys):
    _traced_store(db_uri)
    with closing(sqlite3.connect(db_path)) as con, con:
        # A version-2 store: its own copy of the text, rows keyed by a hash of the span id.
        rows = con.execute("SELECT s.span_id, t.trace_id, t.content FROM trace_text t "
                           "JOIN spans s ON s.rowid = t.rowid").fetchall()
        con.execute("DROP TABLE trace_text")
        con.execute("DROP VIEW trace_text_source")
        con.execute("CREATE VIRTUAL TABLE trace_text USING fts5(trace_id UNINDEXED, content, "
                    "tokenize = 'trigram', detail = none)")
        con.executemany("INSERT INTO trace_text (rowid, trace_id, content) VALUES (?, ?, ?)",
                        [(int(span, 16) & 0x7FFF_FFFF_FFFF_FFFF, tid, text)
                         for span, tid, text in rows])
        # ... and span_attributes keyed (trace_id, span_id, key).
        attrs = con.execute("SELECT * FROM span_attributes ORDER BY 1, 2, 3").fetchall()
        con.execute("DROP TABLE span_attributes")
        con.execute("CREATE TABLE span_attributes (trace_id VARCHAR(32), span_id VARCHAR(16), "
                    "key VARCHAR(250), value_kind VARCHAR(1) NOT NULL, num_value FLOAT, "
                    "str_value TEXT, PRIMARY KEY (trace_id, span_id, key)) WITHOUT ROWID")
        con.executemany("INSERT INTO span_attributes VALUES (?, ?, ?, ?, ?, ?)", attrs)
        con.execute("UPDATE assay_schema SET version = 2")
    with pytest.raises(assay.StoreError, match="assay db upgrade"):
        assay.configure(store=db_uri)
    assert main(["db", "upgrade", "--store", db_uri]) == 0
    assert f"from schema version 2 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")
        assert con.execute("SELECT count(*) FROM trace_text_source").fetchone() == (3,)
        assert con.execute("SELECT * FROM span_attributes ORDER BY 1, 2, 3").fetchall() == attrs
        assert [row[1] for row in sorted(
            con.execute("PRAGMA table_info(span_attributes)"), key=lambda r: r[5])
            if row[5]] == ["trace_id", "key", "span_id"]
        indexes = {row[1] for row in con.execute("PRAGMA index_list(span_attributes)")}
        assert {"ix_span_attributes_key_str_value_trace_id",
                "ix_span_attributes_key_value_kind_num_value_trace_id"} <= indexes
    assay.configure(store=db_uri, experiment="default")
    kettles = assay.search_traces("trace.text LIKE '%kettle%'", return_type="list")
    assert sorted(t.info.request_preview for t in kettles) == ['{"q":"kettle lid"}',
                                                                '{"q":"kettle"}']
    # Deleting goes by the spans' rowids and leaves no text behind.
    assert assay.delete_traces(filter_string="trace.text LIKE '%kettle%'") == 2
    assert assay.search_traces("trace.text LIKE '%kettle%'", return_type="list") == []
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")


def test_a_version_2_store_on_postgresql_is_upgraded_in_place(pg_uri, capsys):
    _traced_store(pg_uri)
    from sqlalchemy import text

    engine = _engine(pg_uri)
    with engine.begin() as conn:  # a version-2 store: span_attributes keyed (trace, span, key)
        conn.execute(text("ALTER TABLE span_attributes DROP CONSTRAINT pk_span_attributes, "
                          "ADD CONSTRAINT pk_span_attributes "
                          "PRIMARY KEY (trace_id, span_id, key)"))
        conn.execute(text("UPDATE assay_schema SET version = 2"))
    assert main(["db", "upgrade", "--store", pg_uri]) == 0
    assert f"from schema version 2 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with engine.connect() as conn:
        key = conn.execute(text(
            "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_constraint c "
            "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
            "WHERE c.conrelid = 'span_attributes'::regclass AND c.contype = 'p'")).scalar()
    engine.dispose()
    assert key == ["trace_id", "key", "span_id"]
    assay.configure(store=pg_uri, experiment="default")
    assert len(assay.search_traces("trace.text LIKE '%kettle%'", return_type="list")) == 2


_V4_TABLES = ("run_tables", "run_tags", "run_metrics", "run_params", "runs",
              "dataset_records", "datasets")


def test_a_version_3_store_gains_the_run_tables_and_keeps_its_traces(db_uri, db_path, capsys):
    _traced_store(db_uri)
    with closing(sqlite3.connect(db_path)) as con, con:  # a version-3 store: no runs, no datasets
        for table in _V4_TABLES:
            con.execute(f"DROP TABLE {table}")
        con.execute("UPDATE assay_schema SET version = 3")
    with pytest.raises(assay.StoreError, match="assay db upgrade"):
        assay.configure(store=db_uri)
    assert main(["db", "upgrade", "--store", db_uri]) == 0
    assert f"from schema version 3 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with closing(sqlite3.connect(db_path)) as con:
        tables = {name for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(_V4_TABLES) <= tables
        indexes = {name for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_runs_experiment_start_time_ms_run_id", "ix_run_tags_key_value"} <= indexes
        assert con.execute("SELECT version FROM assay_schema").fetchall() == [(SCHEMA_VERSION,)]
    assay.configure(store=db_uri, experiment="default")
    assert len(assay.search_traces("trace.text LIKE '%kettle%'", return_type="list")) == 2
    assert assay.count_traces() == 3
    from assay.store import runs as run_api

    with run_api.start_run("after-upgrade") as run:
        run_api.log_metric("m", 1.0)
        with assay.start_span("in-run"):
            pass
    assert assay.flush(timeout_s=30)
    assert run_api.get_run(run.run_id).metrics == {"m": 1.0}  # type: ignore[union-attr]
    assert [t.info.name for t in assay.search_traces(f"run_id = '{run.run_id}'",
                                                     return_type="list")] == ["in-run"]


def test_a_version_3_store_on_postgresql_gains_the_run_tables(pg_uri, capsys):
    _traced_store(pg_uri)
    from sqlalchemy import inspect, text

    engine = _engine(pg_uri)
    with engine.begin() as conn:
        for table in _V4_TABLES:
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("UPDATE assay_schema SET version = 3"))
    assert main(["db", "upgrade", "--store", pg_uri]) == 0
    assert f"from schema version 3 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with engine.connect() as conn:
        assert set(_V4_TABLES) <= set(inspect(conn).get_table_names())
    engine.dispose()
    assay.configure(store=pg_uri, experiment="default")
    assert assay.count_traces() == 3
    from assay.store import runs as run_api

    with run_api.start_run("after-upgrade") as run:
        run_api.log_param("p", "v")
    assert run_api.get_run(run.run_id).params == {"p": "v"}  # type: ignore[union-attr]


def _refused_then_upgraded(uri: str, version: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The store at ``uri`` (schema ``version``) is refused, then upgraded by the CLI."""
    with pytest.raises(assay.StoreError, match="assay db upgrade"):
        assay.configure(store=uri)
    assert main(["db", "upgrade", "--store", uri]) == 0
    assert f"from schema version {version} to {SCHEMA_VERSION}" in capsys.readouterr().out


def _engine(uri: str) -> Any:
    """An engine on the store at ``uri`` (SQLite or PostgreSQL), to age it by hand."""
    from sqlalchemy import create_engine

    return create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))


def _answered(uri: str, questions: list[str]) -> list[str]:
    """One trace per question in the store at ``uri``; their ids, flushed."""
    from tests.store.test_datasets import _traced

    assay.configure(store=uri, experiment="default")
    return _traced(questions)


def _tagged_store(uri: str) -> list[str]:
    """Three traces with tags and metadata (one with neither); their ids."""
    assay.configure(store=uri, experiment="default")

    @assay.trace
    def answer(q: str, tags: dict[str, str], meta: dict[str, str]) -> str:
        assay.update_current_trace(tags=tags, metadata=meta)
        return q

    ids = []
    for q, tags, meta in (("a", {"env": "prod", "ключ": "знач"}, {"session": "s1"}),
                          ("b", {}, {}), ("c", {"env": "dev"}, {})):
        answer(q, tags, meta)
        ids.append(assay.get_last_trace_id())
    assert assay.flush(timeout_s=30)
    assay.shutdown()
    return ids


def _expected_pairs(ids: list[str]) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    return {ids[0]: ({"env": "prod", "ключ": "знач"}, {"session": "s1"}),
            ids[1]: ({}, {}), ids[2]: ({"env": "dev"}, {})}


def _pairs_read(uri: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    assay.configure(store=uri, experiment="default")
    return {t.info.trace_id: (t.info.tags, t.info.metadata)
            for t in assay.search_traces(return_type="list")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_4_store_gains_the_pairs_on_its_trace_rows(backend, db_uri, request, capsys):
    uri = db_uri if backend == "sqlite" else request.getfixturevalue("pg_uri")
    ids = _tagged_store(uri)
    from sqlalchemy import text

    engine = _engine(uri)
    with engine.begin() as conn:  # a version-4 store: the pairs in their own tables only
        for column in ("tags_json", "metadata_json"):
            conn.execute(text(f"ALTER TABLE traces DROP COLUMN {column}"))
        if backend == "sqlite":  # ... which had rowids
            for table in ("trace_tags", "trace_metadata"):
                conn.execute(text(f"ALTER TABLE {table} RENAME TO {table}_v4"))
                conn.execute(text(f"DROP INDEX ix_{table}_key_value"))
                conn.execute(text(f"CREATE TABLE {table} (trace_id VARCHAR(32), key VARCHAR(250), "
                                  "value TEXT NOT NULL, PRIMARY KEY (trace_id, key))"))
                conn.execute(text(f"CREATE INDEX ix_{table}_key_value ON {table} (key, value)"))
                conn.execute(text(f"INSERT INTO {table} SELECT * FROM {table}_v4"))
                conn.execute(text(f"DROP TABLE {table}_v4"))
        conn.execute(text("UPDATE assay_schema SET version = 4"))
    engine.dispose()
    _refused_then_upgraded(uri, 4, capsys)
    assert _pairs_read(uri) == _expected_pairs(ids)
    if backend == "sqlite":
        with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as con:
            for table in ("trace_tags", "trace_metadata"):
                (ddl,) = con.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                     (table,)).fetchone()
                assert "WITHOUT ROWID" in ddl
                assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = ?",
                                   (f"ix_{table}_key_value",)).fetchone() == (1,)
    assert assay.search_traces("tags.env = 'prod'", return_type="list")[0].info.metadata == \
        {"session": "s1"}
    assay.set_trace_tag(ids[1], "env", "staging")   # and the upgraded store keeps them current
    assert assay.search_traces("tags.env = 'staging'", return_type="list")[0].info.tags == \
        {"env": "staging"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_5_store_gets_the_partial_numeric_attribute_index(backend, db_uri, request,
                                                                    capsys):
    uri = db_uri if backend == "sqlite" else request.getfixturevalue("pg_uri")
    assay.configure(store=uri, experiment="default")

    @assay.trace
    def call(tokens: object) -> None:
        span = assay.get_current_span()
        assert span is not None
        span.set_attributes({"tokens": tokens})

    for tokens in (5, 500, "500", True, None):
        call(tokens)
    assert assay.flush(timeout_s=30)
    assay.shutdown()
    from sqlalchemy import text

    name = "ix_span_attributes_key_value_kind_num_value_trace_id"
    engine = _engine(uri)
    with engine.begin() as conn:  # a version-5 store: the index held every attribute
        conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text(f"CREATE INDEX {name} ON span_attributes "
                          "(key, value_kind, num_value, trace_id)"))
        conn.execute(text("UPDATE assay_schema SET version = 5"))
    _refused_then_upgraded(uri, 5, capsys)
    with engine.connect() as conn:
        ddl = conn.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = :n" if backend == "sqlite"
            else "SELECT indexdef FROM pg_indexes WHERE indexname = :n "
                 "AND schemaname = current_schema()"), {"n": name}).scalar_one()
    engine.dispose()
    assert "num_value IS NOT NULL" in ddl
    assay.configure(store=uri, experiment="default")
    assert assay.count_traces("span.attributes.tokens > 100") == 1
    assert assay.count_traces("span.attributes.tokens >= 5") == 2
    assert assay.count_traces("span.attributes.tokens = true") == 1
    assert assay.count_traces("span.attributes.tokens != true") == 0  # booleans only
    assert assay.count_traces("span.attributes.tokens = '500'") == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_6_store_gets_the_assessed_traces_copies_and_page_indexes(backend, db_uri,
                                                                            request, capsys):
    uri = db_uri if backend == "sqlite" else request.getfixturevalue("pg_uri")
    ids = _answered(uri, ["a", "b", "c"])
    for tid, good in zip(ids, (True, False, True), strict=True):
        assay.log_feedback(tid, "correct", good)
    assay.log_feedback("f" * 32, "correct", True)  # a trace not stored
    assay.shutdown()
    from sqlalchemy import text

    engine = _engine(uri)
    with engine.begin() as conn:  # a version-6 store: no copies, no page indexes
        for index in ("ix_assessments_num_page", "ix_assessments_str_page"):
            conn.execute(text(f"DROP INDEX {index}"))
        for column in ("experiment", "trace_timestamp_ms"):
            conn.execute(text(f"ALTER TABLE assessments DROP COLUMN {column}"))
        conn.execute(text("UPDATE assay_schema SET version = 6"))
    _refused_then_upgraded(uri, 6, capsys)
    with engine.connect() as conn:
        copied = dict(conn.execute(text(
            "SELECT a.trace_id, a.experiment = t.experiment "
            "AND a.trace_timestamp_ms = t.timestamp_ms FROM assessments a "
            "LEFT JOIN traces t ON t.trace_id = a.trace_id")).all())
        unstored = conn.execute(text(
            "SELECT experiment, trace_timestamp_ms FROM assessments "
            "WHERE trace_id = :t"), {"t": "f" * 32}).one()
        indexes = {row[0] for row in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index'" if backend == "sqlite"
            else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"))}
    engine.dispose()
    assert copied == {ids[0]: True, ids[1]: True, ids[2]: True, "f" * 32: None}
    assert tuple(unstored) == (None, None)
    assert {"ix_assessments_num_page", "ix_assessments_str_page"} <= indexes
    assay.configure(store=uri, experiment="default")
    found = assay.search_traces("feedback.correct = true", return_type="list")
    # Newest first, as the general plan orders them (the three may share a millisecond).
    general = assay.search_traces("feedback.correct = true AND trace.timestamp_ms > 0",
                                  return_type="list")
    assert [t.trace_id for t in found] == [t.trace_id for t in general]
    assert sorted(t.trace_id for t in found) == sorted([ids[0], ids[2]])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_7_store_gets_the_index_of_spans_with_long_text(backend, db_uri, request,
                                                                   capsys):
    uri = db_uri if backend == "sqlite" else request.getfixturevalue("pg_uri")
    long_id = _answered(uri, ["short", "x" * (TEXT_CHARS + 10) + " needle"])[1]
    assay.shutdown()
    from sqlalchemy import text

    engine = _engine(uri)
    with engine.begin() as conn:  # a version-7 store: no index of the long texts...
        conn.execute(text("DROP INDEX ix_spans_long_text"))
        conn.execute(text("ALTER TABLE assay_schema DROP COLUMN writable_by"))  # ...nor this
        conn.execute(text("UPDATE assay_schema SET version = 7"))
    _refused_then_upgraded(uri, 7, capsys)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version, writable_by FROM assay_schema")).all() == [
            (SCHEMA_VERSION, WRITABLE_BY)]
        indexed = conn.execute(text(
            "SELECT count(*) FROM spans INDEXED BY ix_spans_long_text "
            f"WHERE {LONG_TEXT}" if backend == "sqlite" else
            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() "
            "AND indexname = 'ix_spans_long_text'")).scalar()
    engine.dispose()
    assert indexed == 1
    assay.configure(store=uri, experiment="default")
    assert [t.trace_id for t in assay.search_traces("trace.text LIKE '%needle%'",
                                                    return_type="list")] == [long_id]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_newer_store_that_says_this_assay_may_write_it_is_read_and_written(backend, db_uri,
                                                                              request, caplog,
                                                                              capsys):
    """After ``assay db upgrade`` to a schema that only adds, the processes not
    upgraded yet keep writing the store; one that may not write it is refused."""
    uri = db_uri if backend == "sqlite" else request.getfixturevalue("pg_uri")
    assay.configure(store=uri, experiment="default")
    assay.shutdown()
    from sqlalchemy import text

    engine = _engine(uri)

    def mark(version: int, writable_by: int | None) -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE assay_schema SET version = :v, writable_by = :w"),
                         {"v": version, "w": writable_by})

    mark(SCHEMA_VERSION + 1, SCHEMA_VERSION)
    with caplog.at_level(logging.INFO, logger="assay"):
        assay.configure(store=uri, experiment="default")
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this assay's" in caplog.text

    @assay.trace
    def answer(q: str) -> str:
        return q

    answer("still written")
    tid = assay.get_last_trace_id()
    assert assay.flush(timeout_s=30)
    assert assay.exporters.stats()[0]["failed"] == 0
    trace = assay.get_trace(tid)
    assert trace is not None and trace.root_span.inputs == {"q": "still written"}
    assert main(["db", "upgrade", "--store", uri]) != 0  # nothing to upgrade it to
    assert "newer than this assay understands" in capsys.readouterr().err
    assay.shutdown()

    for writable_by, who in ((SCHEMA_VERSION + 1, SCHEMA_VERSION + 1),
                             (None, SCHEMA_VERSION + 1)):
        mark(SCHEMA_VERSION + 1, writable_by)
        with pytest.raises(assay.StoreError, match=f"writable by the assays of schema {who} "
                                                   "and later; upgrade assay"):
            assay.configure(store=uri, experiment="default")
    engine.dispose()


_TEXT_COLUMNS = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), coll.collname
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
    WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0
      AND NOT a.attisdropped AND a.atttypid IN ('text'::regtype, 'varchar'::regtype)
"""


def test_a_version_8_store_on_postgresql_sorts_text_by_code_point_once_upgraded(
        pg_language_db, capsys):
    """On a database that sorts as English does, a version-8 store sorted tags
    'a' < 'B' < 'b'; version 9 sorts them by code point, as SQLite does."""
    from sqlalchemy import text

    from tests.conftest import _drop_pg_schema, _pg_schema

    schema = _pg_schema(pg_language_db)
    uri = f"{pg_language_db}?options=-csearch_path%3D{schema}"
    try:
        assay.configure(store=uri, experiment="default")

        @assay.trace
        def answer(case: str) -> str:
            assay.update_current_trace(tags={"case": case})
            return case

        for case in ("b", "B", "a", "Ä"):
            answer(case)
        assert assay.flush(timeout_s=30)
        assay.shutdown()
        engine = _engine(uri)
        with engine.begin() as conn:  # as version 8 made it: the database's collation
            for table, column, declared, _ in conn.execute(text(_TEXT_COLUMNS)).all():
                conn.execute(text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" '
                                  f'TYPE {declared} COLLATE "default"'))
            conn.execute(text("UPDATE assay_schema SET version = 8"))
        with engine.connect() as conn:
            assert [row[0] for row in conn.execute(text(
                "SELECT value FROM trace_tags ORDER BY value"))] == ["a", "Ä", "b", "B"]
        _refused_then_upgraded(uri, 8, capsys)
        with engine.connect() as conn:
            collations = {(table, column): collation for table, column, _, collation
                          in conn.execute(text(_TEXT_COLUMNS)).all()}
        engine.dispose()
        assert collations.pop(("trace_text", "content")) == "default"
        assert set(collations.values()) == {"C"}
        assert len(collations) > 40
        assay.configure(store=uri, experiment="default")
        found = assay.search_traces(order_by=["tags.case"], return_type="list")
        assert [t.info.tags["case"] for t in found] == ["B", "a", "b", "Ä"]
        assert len(assay.search_traces("tags.case ILIKE 'ä'", return_type="list")) == 1
    finally:
        _drop_pg_schema(schema, pg_language_db)


def test_a_version_8_store_on_sqlite_opens_as_it_is(db_uri, capsys):
    """Version 9 changed PostgreSQL's tables only: a version-8 SQLite store is read
    and written without an upgrade, and ``assay db upgrade`` marks it version 9."""
    from sqlalchemy import text

    first = _answered(db_uri, ["before"])[0]
    assay.shutdown()
    engine = _engine(db_uri)
    with engine.begin() as conn:
        conn.execute(text("UPDATE assay_schema SET version = 8"))
    second = _answered(db_uri, ["after"])[0]
    assert {t.trace_id for t in assay.search_traces(return_type="list")} == {first, second}
    assay.shutdown()
    assert main(["db", "upgrade", "--store", db_uri]) == 0
    assert f"from schema version 8 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM assay_schema")).scalar() == SCHEMA_VERSION
    engine.dispose()
