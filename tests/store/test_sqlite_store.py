"""The SQLite trace store: schema and version, store URIs, idempotent and
order-independent writes, tags and metadata, and concurrent writers in one process."""

from __future__ import annotations

import itertools
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

import assay
import assay.exporters
from assay.exporters import InMemorySpanExporter, StoreSpanExporter
from assay.exporters._convert import to_record
from assay.store import SpanRecord, TraceStore, open_store
from assay.store.schema import SCHEMA_VERSION, WRITABLE_BY

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
T0 = 1_700_000_000_000_000_000  # ns


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def stores() -> Iterator[Callable[[str], TraceStore]]:
    """Opens stores and closes every one of them at the end of the test."""
    opened: list[TraceStore] = []

    def _open(uri: str) -> TraceStore:
        store = open_store(uri)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def sql(path: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one query on the SQLite file with the standard library (not through assay)."""
    with closing(sqlite3.connect(path)) as con:
        return con.execute(query, params).fetchall()


def record(trace_id: str, span_id: str, parent_id: str | None = None, *, name: str = "span",
           start: int = T0, end: int | None = None, rank: int | None = None,
           status: str = "OK", inputs: str | None = None, outputs: str | None = None,
           experiment: str = "test", tags: dict[str, str] | None = None,
           metadata: dict[str, str] | None = None) -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=name, span_type="UNKNOWN",
        start_time_ns=start, end_time_ns=start + 5_000_000 if end is None else end,
        status=status, status_message=None, inputs_json=inputs, outputs_json=outputs,
        attributes={"k": 1}, events=[], experiment=experiment,
        root_rank=(2 if parent_id is None else 0) if rank is None else rank,
        trace_tags=dict(tags or {}), trace_metadata=dict(metadata or {}),
    )


def real_spans(app: Callable[[], Any]) -> list[ReadableSpan]:
    """The ended OpenTelemetry spans of running ``app`` under assay, in the order they ended."""
    exporter = InMemorySpanExporter()
    assay.configure(store="memory://", experiment="test", exporters=[exporter])
    with suppress(RuntimeError):  # an app that fails on purpose
        app()
    assert assay.flush(timeout_s=30)
    assay.shutdown()
    return list(exporter.raw)


@assay.trace(span_type="RETRIEVER")
def retrieve(question: str) -> list[str]:
    return [f"doc about {question}"]


@assay.trace(span_type="LLM")
def generate(question: str, docs: list[str]) -> str:
    return f"answer to {question}"


def agent_app(fail: bool = False) -> Callable[[], Any]:
    @assay.trace(span_type="AGENT")
    def agent(question: str) -> str:
        docs = retrieve(question)
        answer = generate(question, docs)
        if fail:
            raise RuntimeError("agent failed")
        return answer

    return lambda: agent("what is assay?")


# -- schema ---------------------------------------------------------------------------


def test_schema_is_created_on_first_use_and_carries_the_current_version(db_path, stores):
    store = stores(f"sqlite:///{db_path}")
    assert not db_path.exists(), "open_store must not touch the file before first use"

    assert store.count(experiment=None) == 0

    assert sql(db_path, "SELECT version, writable_by FROM assay_schema") == [
        (SCHEMA_VERSION, WRITABLE_BY)]
    tables = {r[0] for r in sql(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"assay_schema", "traces", "spans", "trace_tags", "trace_metadata"} <= tables


def test_reopening_a_store_keeps_a_single_schema_version_row(db_path, stores):
    stores(f"sqlite:///{db_path}").write_spans([record("a" * 32, "1" * 16)])
    again = stores(f"sqlite:///{db_path}")
    assert again.get_trace("a" * 32) is not None
    assert sql(db_path, "SELECT version FROM assay_schema") == [(SCHEMA_VERSION,)]


def test_sqlite_file_is_in_wal_mode(db_path, stores):
    stores(f"sqlite:///{db_path}").write_spans([record("a" * 32, "1" * 16)])
    assert sql(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_file_store_reads_through_a_memory_map(db_path, stores):
    store = stores(f"sqlite:///{db_path}")
    store.write_spans([record("a" * 32, "1" * 16)])
    writer, reader = store.sql._get_engines()
    with reader.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() > 0
    with writer.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
    # Written through the WAL and read back through the map.
    assert store.get_trace("a" * 32) is not None


def test_store_with_a_newer_schema_version_is_refused(db_path, stores):
    stores(f"sqlite:///{db_path}").count(experiment=None)
    with closing(sqlite3.connect(db_path)) as con, con:
        con.execute("UPDATE assay_schema SET version = 99, writable_by = 99")

    newer = stores(f"sqlite:///{db_path}")
    with pytest.raises(assay.StoreError, match=r"schema version 99") as err:
        newer.count(experiment=None)
    assert "upgrade assay" in str(err.value)
    with pytest.raises(assay.StoreError, match=r"schema version 99"):
        newer.write_spans([record("a" * 32, "1" * 16)])
    assert sql(db_path, "SELECT count(*) FROM spans") == [(0,)]


def test_configure_refuses_a_store_with_a_newer_schema(db_path, stores):
    stores(f"sqlite:///{db_path}").count(experiment=None)
    with closing(sqlite3.connect(db_path)) as con, con:
        con.execute("UPDATE assay_schema SET version = 99, writable_by = 99")
    with pytest.raises(assay.StoreError, match=r"schema version 99"):
        assay.configure(store=f"sqlite:///{db_path}", experiment="test")


def test_a_traced_call_with_a_newer_schema_store_raises_nothing(db_path, stores, monkeypatch):
    stores(f"sqlite:///{db_path}").count(experiment=None)
    with closing(sqlite3.connect(db_path)) as con, con:
        con.execute("UPDATE assay_schema SET version = 99, writable_by = 99")
    monkeypatch.setenv("ASSAY_STORE", f"sqlite:///{db_path}")

    @assay.trace
    def f():
        return 1

    assert f() == 1
    assay.flush()
    assert assay.exporters.stats()[0]["failed"] == 1
    with pytest.raises(assay.StoreError, match=r"schema version 99"):
        assay.get_trace("a" * 32)


# -- store URIs -----------------------------------------------------------------------


def test_relative_sqlite_uri_is_a_file_under_the_working_directory(tmp_path, monkeypatch,
                                                                   stores):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    store = stores("sqlite:///sub/rel.db")
    store.write_spans([record("a" * 32, "1" * 16)])
    assert (tmp_path / "sub" / "rel.db").is_file()
    assert sql(tmp_path / "sub" / "rel.db", "SELECT trace_id FROM traces") == [("a" * 32,)]


def test_absolute_sqlite_uri_with_four_slashes_is_that_file(tmp_path, stores):
    target = tmp_path / "abs.db"
    uri = f"sqlite:///{target}"
    assert uri.startswith("sqlite:////")
    stores(uri).write_spans([record("b" * 32, "2" * 16)])
    assert sql(target, "SELECT trace_id FROM traces") == [("b" * 32,)]


@pytest.mark.parametrize("uri", ["memory://", "sqlite://", "sqlite:///:memory:"])
def test_in_memory_uris_store_and_read_back_without_creating_files(uri, tmp_path, monkeypatch,
                                                                   stores):
    monkeypatch.chdir(tmp_path)
    store = stores(uri)
    store.write_spans([record("c" * 32, "3" * 16, name="root")])
    trace = store.get_trace("c" * 32)
    assert trace is not None
    assert [s.name for s in trace.spans] == ["root"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uri", ["mysql://x", "foo", "nope://", "sqlite:/one-slash.db",
                                 ""])
def test_unknown_store_uri_raises_configuration_error_naming_it(uri):
    with pytest.raises(assay.ConfigurationError) as err:
        open_store(uri)
    assert repr(uri) in str(err.value)


def test_sqlite_uri_without_a_path_raises_configuration_error():
    with pytest.raises(assay.ConfigurationError, match="names no file"):
        open_store("sqlite:///")


def test_sqlite_path_in_a_missing_directory_raises_configuration_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(assay.ConfigurationError) as err:
        open_store(f"sqlite:///{missing}/t.db")
    assert str(missing) in str(err.value)
    assert "does not exist" in str(err.value)
    assert not (tmp_path / "no").exists()


def test_configure_with_an_unknown_store_scheme_raises_configuration_error():
    with pytest.raises(assay.ConfigurationError, match=re.escape("'nope://'")):
        assay.configure(store="nope://")


# -- writing: idempotence and order independence -------------------------------------


def test_span_records_written_twice_are_stored_once(db_path, stores):
    store = stores(f"sqlite:///{db_path}")
    tid = "d" * 32
    batch = [record(tid, "1" * 16, name="root", inputs='"a"'),
             record(tid, "2" * 16, "1" * 16, name="child", start=T0 + 1, inputs='"b"'),
             record(tid, "3" * 16, "2" * 16, name="grandchild", start=T0 + 2, outputs='"c"')]

    store.write_spans(batch)
    first = store.get_trace(tid)
    store.write_spans(batch)
    store.write_spans(batch + batch)  # duplicates inside one batch too

    assert sql(db_path, "SELECT count(*) FROM spans") == [(3,)]
    assert sql(db_path, "SELECT count(*) FROM traces") == [(1,)]
    assert store.get_trace(tid) == first
    # The full-text index matches its spans' text exactly (FTS5 checks the index
    # against the content it reads from the spans; a span indexed twice fails it).
    assert sql(db_path, "INSERT INTO trace_text (trace_text, rank) "
                        "VALUES ('integrity-check', 1)") == []


def test_readable_spans_exported_twice_through_the_store_exporter_are_stored_once(
        db_path, stores):
    spans = real_spans(agent_app())
    assert len(spans) == 3
    store = stores(f"sqlite:///{db_path}")
    exporter = StoreSpanExporter(store)

    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans[:1]) is SpanExportResult.SUCCESS

    rows = sql(db_path, "SELECT name, count(*) FROM spans GROUP BY span_id ORDER BY name")
    assert rows == [("agent", 1), ("generate", 1), ("retrieve", 1)]
    (trace,) = store.search(experiment=None, max_results=10, page_token=None).traces
    assert trace.info.name == "agent"
    assert len(trace.spans) == 3


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "error"])
def test_trace_whose_children_arrive_before_the_root_is_completed_by_the_root(
        fail, db_path, stores):
    spans = real_spans(agent_app(fail=fail))
    records = [to_record(s, "test") for s in spans]
    children = [r for r in records if r.parent_id is not None]
    (root,) = [r for r in records if r.parent_id is None]
    assert len(children) == 2
    store = stores(f"sqlite:///{db_path}")

    store.write_spans(children)
    partial = store.get_trace(root.trace_id)
    assert partial is not None
    assert partial.info.state == "IN_PROGRESS"
    assert partial.info.execution_time_ms is None
    assert {s.name for s in partial.spans} == {"retrieve", "generate"}

    store.write_spans([root])
    done = store.get_trace(root.trace_id)
    assert done is not None
    info = done.info
    assert info.state == ("ERROR" if fail else "OK")
    assert info.name == "agent"
    assert info.experiment == "test"
    assert info.request_preview == root.inputs_json
    assert '"what is assay?"' in (info.request_preview or "")
    if not fail:
        assert info.response_preview == '"answer to what is assay?"'
    assert info.timestamp_ms == root.start_time_ns // 1_000_000
    assert info.execution_time_ms == pytest.approx(
        (root.end_time_ns - root.start_time_ns) / 1e6)
    assert {s.name for s in done.spans} == {"agent", "retrieve", "generate"}
    assert done.root_span is not None and done.root_span.name == "agent"


def test_root_before_children_ends_in_the_same_state_as_children_before_root(db_path,
                                                                              tmp_path, stores):
    spans = real_spans(agent_app())
    records = [to_record(s, "test") for s in spans]
    children = [r for r in records if r.parent_id is not None]
    roots = [r for r in records if r.parent_id is None]
    children_first = stores(f"sqlite:///{tmp_path / 'a.db'}")
    root_first = stores(f"sqlite:///{tmp_path / 'b.db'}")
    one_batch = stores(f"sqlite:///{tmp_path / 'c.db'}")

    children_first.write_spans(children)
    children_first.write_spans(roots)
    root_first.write_spans(roots)
    after_root_only = root_first.get_trace(roots[0].trace_id)
    root_first.write_spans(children)
    one_batch.write_spans(list(reversed(records)))

    tid = roots[0].trace_id
    expected = one_batch.get_trace(tid)
    assert expected is not None and expected.info.state == "OK"
    assert children_first.get_trace(tid) == expected
    assert root_first.get_trace(tid) == expected
    assert after_root_only is not None and after_root_only.info == expected.info


def _tree_records() -> list[SpanRecord]:
    """A trace of 6 spans: the true root, a local child chain, and the local root of a
    second process that continued the trace remotely (rank 1) with a child of its own."""
    tid = "e" * 32
    return [
        record(tid, "0000000000000001", name="root", start=T0, end=T0 + 90_000_000,
               inputs='{"q": 1}', outputs='"done"'),
        record(tid, "0000000000000002", "0000000000000001", name="plan", start=T0 + 1,
               status="ERROR"),
        record(tid, "0000000000000003", "0000000000000002", name="tool", start=T0 + 2),
        record(tid, "0000000000000004", "0000000000000001", name="remote", start=T0 + 3,
               rank=1, inputs='{"r": 2}', status="ERROR"),
        record(tid, "0000000000000005", "0000000000000004", name="remote_child", start=T0 + 4),
        record(tid, "0000000000000006", "0000000000000001", name="last", start=T0 + 5),
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(6)),
       cuts=st.sets(st.integers(min_value=1, max_value=5), max_size=5))
def test_any_arrival_order_and_batching_ends_in_the_same_trace(order, cuts):
    records = _tree_records()
    reference_store = open_store("memory://")
    store = open_store("memory://")
    try:
        reference_store.write_spans(records)
        reference = reference_store.get_trace("e" * 32)
        assert reference is not None
        assert reference.info.name == "root" and reference.info.state == "OK"

        shuffled = [records[i] for i in order]
        bounds = [0, *sorted(cuts), 6]
        for lo, hi in itertools.pairwise(bounds):
            store.write_spans(shuffled[lo:hi])
        assert store.get_trace("e" * 32) == reference
    finally:
        reference_store.close()
        store.close()


# -- tags and metadata ---------------------------------------------------------------


def test_tags_and_metadata_from_update_current_trace_are_stored(tracing, fetch):
    @assay.trace
    def inner() -> None:
        assay.update_current_trace(tags={"route": "/chat", "n": 3},
                                   metadata={"release": "v1"}, user="ann", session_id="s-1")

    @assay.trace
    def handler() -> str:
        assay.update_current_trace(tags={"stage": "draft"})
        inner()
        assay.update_current_trace(tags={"stage": "final"}, metadata={"release": "v2"})
        return "ok"

    handler()
    trace = fetch()
    assert trace.info.tags == {"route": "/chat", "n": "3", "stage": "final"}
    assert trace.info.metadata == {"release": "v2", "user": "ann", "session_id": "s-1"}


def test_update_current_trace_name_renames_the_stored_trace(tracing, fetch):
    @assay.trace
    def handler() -> None:
        assay.update_current_trace(name="checkout")

    handler()
    trace = fetch()
    assert trace.info.name == "checkout"
    assert [s.name for s in trace.spans] == ["handler"]


def test_a_later_batch_overrides_the_value_of_the_same_tag_key(db_path, stores):
    store = stores(f"sqlite:///{db_path}")
    tid = "f" * 32
    store.write_spans([record(tid, "1" * 16, tags={"k": "old", "a": "1"},
                              metadata={"m": "old"})])
    store.write_spans([record(tid, "2" * 16, "1" * 16, start=T0 + 10, tags={"k": "new"},
                              metadata={"m": "new", "z": "26"})])
    trace = store.get_trace(tid)
    assert trace is not None
    assert trace.info.tags == {"k": "new", "a": "1"}
    assert trace.info.metadata == {"m": "new", "z": "26"}
    assert sql(db_path, "SELECT count(*) FROM trace_tags WHERE trace_id = ?", tid) == [(2,)]


# -- reading back ----------------------------------------------------------------------


def test_get_trace_of_an_unknown_id_returns_none(tracing, stores, db_path):
    assert assay.get_trace("0" * 32) is None
    assert stores(f"sqlite:///{db_path}").get_trace("0123456789abcdef" * 2) is None


def test_trace_and_span_ids_are_lowercase_hex(tracing, fetch):
    agent_app()()
    trace = fetch()
    assert HEX32.fullmatch(trace.info.trace_id)
    assert len(trace.spans) == 3
    span_ids = {s.span_id for s in trace.spans}
    for span in trace.spans:
        assert span.trace_id == trace.info.trace_id
        assert HEX16.fullmatch(span.span_id)
        assert span.parent_id is None or (HEX16.fullmatch(span.parent_id)
                                         and span.parent_id in span_ids)
    assert assay.get_trace(trace.info.trace_id.upper()) == trace


# -- concurrency in one process --------------------------------------------------------


def test_eight_threads_tracing_at_once_store_every_span_exactly_once(tracing, db_path):
    threads_n, traces_n = 8, 25
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    @assay.trace
    def leaf(t: int, i: int, which: str) -> str:
        return f"{t}-{i}-{which}"

    def worker(t: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(traces_n):
                with assay.start_span(f"root-{t}-{i}"):
                    leaf(t, i, "a")
                    leaf(t, i, "b")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors
    assert assay.flush(timeout_s=30)

    total = threads_n * traces_n
    assert sql(db_path, "SELECT count(*), count(DISTINCT trace_id) FROM spans") == [
        (3 * total, total)]
    roots = {r[0] for r in sql(db_path, "SELECT name FROM spans WHERE parent_id IS NULL")}
    assert roots == {f"root-{t}-{i}" for t in range(threads_n) for i in range(traces_n)}
    assert sql(db_path, "SELECT count(*) FROM traces WHERE state = 'OK' AND name LIKE 'root-%'"
               ) == [(total,)]
    assert sql(db_path, "SELECT trace_id FROM spans GROUP BY trace_id HAVING count(*) != 3"
               ) == []


def test_eight_threads_writing_into_one_store_object_lose_nothing(db_path, stores):
    store = stores(f"sqlite:///{db_path}")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(40):
                tid = f"{t:02x}{i:030x}"
                store.write_spans([record(tid, f"{1:016x}", start=T0 + i),
                                   record(tid, f"{2:016x}", f"{1:016x}", start=T0 + i + 1)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    assert sql(db_path, "SELECT count(*), count(DISTINCT trace_id) FROM spans") == [(640, 320)]
    assert store.count(experiment="test") == 320
    assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]


# -- planner statistics ---------------------------------------------------------------


def _stats(path: Path) -> dict[str, int]:
    if not sql(path, "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"):
        return {}
    return {tbl: int(stat.split()[0]) for tbl, stat in sql(
        path, "SELECT tbl, stat FROM sqlite_stat1 WHERE tbl IN ('spans', 'traces')")}


def test_statistics_are_refreshed_each_time_the_store_doubles(db_path, stores, monkeypatch):
    from assay.store import sql as store_sql

    monkeypatch.setattr(store_sql, "_ANALYZE_FROM_SPANS", 40)
    store = stores(f"sqlite:///{db_path}")

    def batch(first: int, n: int) -> list[SpanRecord]:
        return [record(f"{i:032x}", f"{i:016x}", start=T0 + i) for i in range(first, first + n)]

    store.write_spans(batch(1, 30))
    assert _stats(db_path) == {}  # below the threshold: no statistics yet
    store.write_spans(batch(31, 20))
    assert _stats(db_path) == {"spans": 50, "traces": 50}
    store.write_spans(batch(51, 30))  # 80 spans: not yet twice 50
    assert _stats(db_path)["spans"] == 50
    for first in range(81, 1200, 20):
        store.write_spans(batch(first, 20))
    assert _stats(db_path)["spans"] == 800  # refreshed at 100, 200, 400 and 800 spans

    # Another process writing to the store looks at the statistics already there.
    statements: list[str] = []
    other = stores(f"sqlite:///{db_path}")
    other.open()
    with other.sql._get_engines()[0].connect() as conn:
        conn.connection.dbapi_connection.set_trace_callback(statements.append)
    other.write_spans(batch(2000, 10))
    assert statements and not [s for s in statements if s.startswith("ANALYZE")]
