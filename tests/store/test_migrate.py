"""Schema versions: an older store is refused until `assay db upgrade` brings it forward."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

import assay
from assay.cli import main
from assay.store.schema import SCHEMA_VERSION

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
        con.execute("UPDATE assay_schema SET version = 2")
    with pytest.raises(assay.StoreError, match="assay db upgrade"):
        assay.configure(store=db_uri)
    assert main(["db", "upgrade", "--store", db_uri]) == 0
    assert f"from schema version 2 to {SCHEMA_VERSION}" in capsys.readouterr().out
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")
        assert con.execute("SELECT count(*) FROM trace_text_source").fetchone() == (3,)
    assay.configure(store=db_uri, experiment="default")
    kettles = assay.search_traces("trace.text LIKE '%kettle%'", return_type="list")
    assert sorted(t.info.request_preview for t in kettles) == ['{"q":"kettle lid"}',
                                                                '{"q":"kettle"}']
    # Deleting goes by the spans' rowids and leaves no text behind.
    assert assay.delete_traces(filter_string="trace.text LIKE '%kettle%'") == 2
    assert assay.search_traces("trace.text LIKE '%kettle%'", return_type="list") == []
    with closing(sqlite3.connect(db_path)) as con:
        con.execute("INSERT INTO trace_text (trace_text, rank) VALUES ('integrity-check', 1)")
