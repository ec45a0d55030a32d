"""The same store behaviour on SQLite and on PostgreSQL (exact id sets on both)."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

import assay
from assay.exporters import stats
from assay.store import schema as s


@assay.trace(span_type="TOOL", attributes={"model": "gpt-4o", "tokens": 1500, "ok": True})
def tool(q):
    return f"refund policy for {q}"


@assay.trace(span_type="AGENT")
def agent(q, env):
    assay.update_current_trace(tags={"env": env, "case": q}, metadata={"user": f"u-{q}"})
    if q == "boom":
        raise ValueError("boom")
    return tool(q)


@pytest.fixture
def corpus(tracing_any) -> dict[str, str]:
    ids = {}
    for q, env in [("a", "prod"), ("b", "dev"), ("boom", "prod"), ("Kettle", "staging"),
                   ("ключ", "prod")]:
        with contextlib.suppress(ValueError):
            agent(q, env)
        ids[q] = assay.get_last_trace_id()
    assert assay.flush()
    assay.log_feedback(ids["a"], "correct", True, source="LLM_JUDGE")
    assay.log_feedback(ids["a"], "correct", False, source="LLM_JUDGE")  # overrides
    assay.log_feedback(ids["b"], "correct", True)
    assay.log_feedback(ids["Kettle"], "score", 4.5)
    assay.log_expectation(ids["ключ"], "answer", "Paris")
    return ids


def _cases(flt: str, **kwargs) -> set[str]:
    found = assay.search_traces(flt, return_type="list", max_results=1000, **kwargs)
    assert assay.count_traces(flt) == len(found)
    return {t.info.tags["case"] for t in found}


@pytest.mark.parametrize(("flt", "expected"), [
    ("trace.status = 'ERROR'", {"boom"}),
    ("status != 'ERROR'", {"a", "b", "Kettle", "ключ"}),
    ("tags.env = 'prod'", {"a", "boom", "ключ"}),
    ("tags.env IN ('dev', 'staging')", {"b", "Kettle"}),
    ("tags.env != 'prod'", {"b", "Kettle"}),
    ("tags.missing IS NULL", {"a", "b", "boom", "Kettle", "ключ"}),
    ("metadata.user = 'u-a' OR metadata.user = 'u-b'", {"a", "b"}),
    ("span.type = 'TOOL'", {"a", "b", "Kettle", "ключ"}),
    ("NOT (span.type = 'TOOL')", {"boom"}),
    ("span.type = 'TOOL' AND span.name = 'agent'", set()),
    ("span.attributes.tokens > 1000", {"a", "b", "Kettle", "ключ"}),
    ("span.attributes.tokens = '1500'", {"a", "b", "Kettle", "ключ"}),
    ("span.attributes.model = 'gpt-4o' AND span.attributes.ok = true",
     {"a", "b", "Kettle", "ключ"}),
    ("feedback.correct = false", {"a"}),
    ("feedback.correct = true", {"b"}),
    ("feedback.score >= 4", {"Kettle"}),
    ("expectation.answer = 'Paris'", {"ключ"}),
    ("trace.text LIKE '%Kettle%'", {"Kettle"}),
    ("trace.text LIKE '%kettle%'", set()),
    ("trace.text ILIKE '%kettle%'", {"Kettle"}),
    ("trace.text LIKE '%ключ%'", {"ключ"}),
    ("name RLIKE '^ag' AND tags.case LIKE 'K%'", {"Kettle"}),
    ("timestamp_ms > '2020-01-01' AND execution_time_ms >= 0",
     {"a", "b", "boom", "Kettle", "ключ"}),
])
def test_filters_give_the_same_sets_on_both_backends(corpus, flt, expected):
    assert _cases(flt) == expected


def test_order_by_and_cursor_on_both_backends(corpus):
    seen, token = [], None
    while True:
        page = assay.search_traces(order_by=["tags.case ASC"], max_results=2,
                                   page_token=token, return_type="list")
        seen.extend(t.info.tags["case"] for t in page)
        token = page.next_page_token
        if token is None:
            break
    assert seen == sorted(["a", "b", "boom", "Kettle", "ключ"])


def test_overridden_feedback_is_kept_on_the_trace(corpus):
    trace = assay.get_trace(corpus["a"])
    values = [(a.value, a.overridden_by is None) for a in trace.info.assessments]
    assert values == [(True, False), (False, True)]


def test_spans_exported_twice_are_stored_once(tracing_any):
    from assay.exporters._convert import to_record
    from assay.exporters.memory import InMemorySpanExporter
    from assay.tracing import _runtime

    memory = InMemorySpanExporter()
    assay.configure(store=tracing_any, exporters=[memory])
    agent("a", "prod")
    assert assay.flush()
    store = _runtime.current().store
    store.write_spans([to_record(s) for s in memory.raw])
    store.write_spans([to_record(s) for s in reversed(memory.raw)])
    assert store.count_spans() == 2
    trace = assay.get_trace(assay.get_last_trace_id())
    assert trace.info.state == "OK" and trace.info.name == "agent"


def test_threads_writing_at_once_lose_nothing(tracing_any):
    def work():
        for i in range(20):
            agent(f"t{i}", "prod")

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert assay.flush()
    assert assay.count_traces() == 120
    assert stats()[0]["failed"] == 0


def test_delete_traces_by_filter_and_age_on_both_backends(corpus):
    from datetime import datetime, timedelta, timezone

    assert assay.delete_traces(older_than=timedelta(days=1)) == 0
    assert assay.delete_traces("tags.env = 'prod'") == 3
    assert _cases("trace.timestamp_ms >= 0") == {"b", "Kettle"}
    assert assay.get_trace(corpus["a"]) is None
    assert _cases("feedback.correct IS NOT NULL") == {"b"}
    assert _cases("trace.text LIKE '%refund%'") == {"b", "Kettle"}
    future = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert assay.delete_traces(older_than=future) == 2
    assert assay.count_traces() == 0


def test_delete_traces_needs_a_criterion(tracing_any):
    with pytest.raises(ValueError, match="filter_string or older_than"):
        assay.delete_traces()
    with pytest.raises(ValueError, match="older_than"):
        assay.delete_traces(older_than="yesterday")


def test_tags_can_be_set_and_removed_on_finished_traces(corpus):
    assay.set_trace_tag(corpus["b"], "reviewed", "yes")
    assay.set_trace_tag(corpus["b"], "env", "qa")
    assert _cases("tags.reviewed = 'yes'") == {"b"}
    assert assay.get_trace(corpus["b"]).info.tags["env"] == "qa"
    assay.delete_trace_tag(corpus["b"], "reviewed")
    assay.delete_trace_tag(corpus["b"], "never-there")
    assert _cases("tags.reviewed IS NOT NULL") == set()
    with pytest.raises(ValueError, match="32 hex"):
        assay.set_trace_tag("nope", "k", "v")


# -- PostgreSQL: the trigram index and the extension it depends on -----------------------------

def _trigram_index(uri: str) -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname = 'ix_trace_text_content'")).first() is not None
    finally:
        engine.dispose()


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test's own on the test server: what it does to the
    database's extensions touches no other test's (or anyone's) stores."""
    from urllib.parse import urlsplit

    import psycopg

    from tests.conftest import PG_URL

    name = f"assay_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(PG_URL)._replace(path=f"/{name}").geturl()
    finally:
        assay.shutdown()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dropping_one_stores_schema_leaves_the_others_trigram_index(own_database):
    """pg_trgm is one per database: it must not live in a store's own schema, where
    dropping that schema (CASCADE) would drop every other store's trigram index."""
    import psycopg

    from assay.store import open_store

    with psycopg.connect(own_database, autocommit=True) as conn:  # as on a new database
        conn.execute("DROP EXTENSION IF EXISTS pg_trgm CASCADE")
        for schema in ("first", "second"):
            conn.execute(f"CREATE SCHEMA {schema}")
    first, second = (f"{own_database}?options=-csearch_path%3D{schema}"
                     for schema in ("first", "second"))
    for uri in (first, second):
        store = open_store(uri)
        store.open()
        store.close()
    assert _trigram_index(first) and _trigram_index(second)
    with psycopg.connect(own_database, autocommit=True) as conn:
        assert conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension "
                            "WHERE extname = 'pg_trgm'").fetchone() == ("public",)
        conn.execute("DROP SCHEMA first CASCADE")
    assert _trigram_index(second)
    assay.configure(store=second, experiment="t")
    assert assay.search_traces("trace.text LIKE '%refund%'", return_type="list") == []


def test_a_missing_trigram_index_is_built_again_on_the_next_open(pg_uri, caplog):
    import logging

    from sqlalchemy import create_engine, text

    from assay.store import open_store

    store = open_store(pg_uri)
    store.open()
    store.close()
    engine = create_engine(pg_uri.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_trace_text_content"))
    engine.dispose()
    assert not _trigram_index(pg_uri)
    with caplog.at_level(logging.WARNING, logger="assay"):
        again = open_store(pg_uri)
        again.open()
        again.close()
    assert "trigram index" in caplog.text and "building it again" in caplog.text
    assert _trigram_index(pg_uri)


@assay.trace(span_type="RETRIEVER")
def retrieve(query: str, document: str) -> str:
    return document


@pytest.mark.parametrize(("flt", "expected"), [
    ("trace.text LIKE '%needle in the input%'", {"long input"}),
    ("trace.text LIKE '%needle in the output%'", {"long output"}),
    ("trace.text ILIKE '%NEEDLE IN THE%'", {"long input", "long output"}),
    ("trace.text LIKE '%Needle in the%'", set()),
    ("trace.text LIKE '%needle%' AND trace.text LIKE '%the output%'", {"long output"}),
    ("trace.text NOT LIKE '%needle in the%'", {"short", "edge"}),
    ("trace.text LIKE '%haystack%'", {"short", "long input", "long output", "edge"}),
    ("trace.text NOT ILIKE '%NEEDLE IN THE OUTPUT%'", {"short", "long input", "edge"}),
    ("trace.text LIKE '%at the edge%'", {"edge"}),
])
def test_text_past_what_the_full_text_index_holds_is_found(tracing_any, flt, expected):
    """The full-text index holds the first TEXT_CHARS characters of a span's inputs
    and of its outputs; a text search still finds what comes after."""
    from assay.store.schema import TEXT_CHARS

    hay = "haystack " * (TEXT_CHARS // 9 + 100)
    edge = "haystack at the edge"
    cases = {"short": ("haystack", "short answer"),
             "long input": (hay + "needle in the input", "ok"),
             "long output": ("q", hay + "needle in the output"),
             # Stored as a JSON string (with its quotes), the output ends exactly
             # where the index stops: it is all in the index.
             "edge": ("q", "h" * (TEXT_CHARS - 2 - len(edge)) + edge)}
    names = {}
    for label, (query, document) in cases.items():
        retrieve(query, document)
        names[assay.get_last_trace_id()] = label
    assert assay.flush()
    found = assay.search_traces(flt, return_type="list", include_spans=False)
    assert {names[t.info.trace_id] for t in found} == expected
    assert assay.count_traces(flt) == len(expected)


def _racing(uri: str, workers: int, work: Callable[[Any, int], None]) -> list[BaseException]:
    """Run ``work(store, k)`` for k in range(workers) at once, each on a store of
    its own (as separate processes would: a store's own writes take turns); the
    errors they raised."""
    from assay.store import open_store

    errors: list[BaseException] = []
    start = threading.Barrier(workers, timeout=60)

    def run(k: int) -> None:
        own = open_store(uri)
        try:
            own.open()
            start.wait()
            work(own, k)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return errors


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "met other writers" in r.getMessage()]


def test_racing_loggers_of_one_name_and_source_leave_one_valid_assessment(store, caplog):
    """Loggers of the same feedback on the same traces at the same moment, in
    opposite orders: none fails, and each trace ends with one valid assessment,
    every other one overridden by one of the same trace (on PostgreSQL each
    logger waits for those logging on its traces, so it sees what they logged)."""
    from tests.store.test_copies import feedback, span

    tids = [f"{i:032x}" for i in range(1, 31)]
    store.write_spans([span(t, "a" * 16, start_ms=i, root=True) for i, t in enumerate(tids)])
    rounds = 8

    def log(own: Any, k: int) -> None:
        for _ in range(rounds):
            own.log_assessments([feedback(t, k) for t in (tids if k % 2 else tids[::-1])])

    caplog.set_level(logging.DEBUG, logger="assay")
    assert _racing(store.uri, 4, log) == []
    assert _retries(caplog) == []
    a = s.assessments.c
    with store._read() as conn:
        rows = conn.execute(select(a.assessment_id, a.trace_id, a.overridden_by)).all()
    assert len(rows) == 4 * rounds * len(tids)
    trace_of = {aid: tid for aid, tid, _ in rows}
    valid = Counter(tid for _, tid, by in rows if by is None)
    assert valid == dict.fromkeys(tids, 1)
    assert all(trace_of[by] == tid for _, tid, by in rows if by is not None)
    # The overrides form one chain per trace: each assessment overridden once.
    assert len({by for *_, by in rows if by is not None}) == len(rows) - len(tids)


def test_deleting_assessments_while_others_log_leaves_one_chain_per_trace(store, caplog):
    """One store deletes the valid feedback of each trace again and again while
    others log newer feedback of the same name and source: at the end each trace
    has one valid assessment and one unbroken chain of overrides (on PostgreSQL a
    delete waits for the loggers of its trace, so that it does not restore an
    assessment a logger has just overridden)."""
    from tests.store.test_copies import feedback, span

    tids = [f"{i:032x}" for i in range(1, 21)]
    store.write_spans([span(t, "a" * 16, start_ms=i, root=True) for i, t in enumerate(tids)])
    store.log_assessments([feedback(t, -1) for t in tids])
    a = s.assessments.c
    deleted = Counter[str]()

    def work(own: Any, k: int) -> None:
        for r in range(12):
            if k == 0:
                with own.sql._read() as conn:
                    valid = conn.execute(select(a.trace_id, a.assessment_id)
                                         .where(a.overridden_by.is_(None))).all()
                for tid, aid in valid:
                    if own.delete_assessment(tid, aid):
                        deleted[tid] += 1
            else:
                own.log_assessments([feedback(t, r) for t in
                                     (tids if k % 2 else tids[::-1])])

    caplog.set_level(logging.DEBUG, logger="assay")
    assert _racing(store.uri, 4, work) == []
    assert _retries(caplog) == []
    assert sum(deleted.values()) > 0
    with store._read() as conn:
        rows = conn.execute(select(a.assessment_id, a.trace_id, a.overridden_by)).all()
    trace_of = {aid: tid for aid, tid, _ in rows}
    assert Counter(tid for _, tid, by in rows if by is None) == dict.fromkeys(tids, 1)
    assert all(trace_of.get(by) == tid for _, tid, by in rows if by is not None)
    assert len({by for *_, by in rows if by is not None}) == len(rows) - len(tids)
    assert len(rows) == len(tids) * (1 + 3 * 12) - sum(deleted.values())


def test_reviewers_correcting_one_feedback_at_once_one_wins_the_others_are_told(store):
    """Corrections of the same feedback from several processes at the same moment:
    one is stored, each of the others is refused naming the one that won (the
    target is checked again under the loggers' lock)."""
    from tests.store.test_copies import feedback, span

    tid = "c" * 32
    store.write_spans([span(tid, "a" * 16, start_ms=0, root=True)])
    judged = feedback(tid, False, source="LLM_JUDGE")
    store.log_assessments([judged])
    corrections = [feedback(tid, True) for _ in range(4)]
    for k, c in enumerate(corrections):
        c.source_id = f"reviewer-{k}"

    def correct(own: Any, k: int) -> None:
        own.log_assessments([corrections[k]],
                            overrides={corrections[k].assessment_id: judged.assessment_id})

    errors = _racing(store.uri, 4, correct)
    a = s.assessments.c
    with store._read() as conn:
        rows = dict(conn.execute(select(a.assessment_id, a.overridden_by)).all())
    assert len(errors) == 3 and all(isinstance(e, ValueError) for e in errors), errors
    winner = rows[judged.assessment_id]
    assert winner in {c.assessment_id for c in corrections}
    assert set(rows) == {judged.assessment_id, winner}
    assert all(f"already overridden by '{winner}'" in str(e) for e in errors)


def test_racing_writers_of_the_same_traces_all_commit(store, caplog):
    """Span batches of the same traces written at once through several stores (as
    from several processes), the traces in opposite orders (as when two services
    export one trace): every batch is stored, and none is aborted as a deadlock
    and retried."""
    from tests.store.test_copies import span

    tids = [f"{i:032x}" for i in range(1, 41)]
    store.open()

    def write(own: Any, k: int) -> None:
        for r in range(6):
            order = tids if k % 2 else tids[::-1]
            batch = [span(t, f"{k:02x}{r:02x}{i:012x}", start_ms=i, root=False)
                     for i, t in enumerate(order)]
            for record in batch:
                record.trace_tags = {"writer": str(k)}
            own.write_spans(batch)

    caplog.set_level(logging.DEBUG, logger="assay")
    assert _racing(store.uri, 4, write) == []
    assert _retries(caplog) == []  # the traces are locked in one order: no deadlock
    assert store.count_spans() == 4 * 6 * len(tids)
    assert store.count(experiment=None) == len(tids)


def test_deleting_and_tagging_traces_while_their_spans_arrive(store, caplog):
    """One store deletes the traces, another sets a tag on them, while others
    write spans and feedback to them: nobody fails or is aborted as a deadlock,
    and no span is left without its trace's row (a span written after the
    delete brings the row back)."""
    from tests.store.test_copies import feedback, span

    tids = [f"{i:032x}" for i in range(1, 31)]
    store.write_spans([span(t, "a" * 16, start_ms=i, root=True) for i, t in enumerate(tids)])
    caplog.set_level(logging.DEBUG, logger="assay")

    def work(own: Any, k: int) -> None:
        for r in range(5):
            if k == 0:
                own.delete_traces(experiment=None, filter_string=None, before_ms=None)
            elif k == 1:
                for t in tids[::-3]:
                    own.set_tag(t, "round", str(r))
            elif k == 2:
                own.log_assessments([feedback(t, r) for t in tids[::-1]])
            else:
                own.write_spans([span(t, f"{r:04x}{i:012x}", start_ms=i, root=False)
                                 for i, t in enumerate(tids)])

    assert _racing(store.uri, 4, work) == []
    assert _retries(caplog) == []
    with store._read() as conn:
        orphans = conn.execute(select(s.spans.c.trace_id).where(
            s.spans.c.trace_id.not_in(select(s.traces.c.trace_id)))).all()
    assert orphans == []


def test_feedback_on_25_000_traces_in_one_call(store):
    """An evaluation logs its feedback in one call: on PostgreSQL the loggers'
    locks stay within the server's lock table however many traces it covers."""
    from tests.store.test_copies import feedback

    batch = [feedback(f"{i:032x}", i % 2 == 0) for i in range(1, 25_001)]
    store.log_assessments(batch)
    store.log_assessments([feedback(f"{i:032x}", True) for i in (1, 2, 3)])  # overrides
    a = s.assessments.c
    with store._read() as conn:
        valid = conn.execute(select(func.count()).where(a.overridden_by.is_(None))).scalar()
    assert valid == 25_000


def test_a_store_in_a_schema_of_its_own_ignores_stores_later_in_the_search_path(pg_uri):
    """search_path=mine,theirs, with a store in 'theirs' (of another schema version,
    too): the store is created in 'mine', empty, and what it writes stays there."""
    import psycopg

    from assay.store import open_store
    from tests.conftest import PG_URL, _drop_pg_schema, _pg_schema

    theirs = pg_uri.rsplit("%3D", 1)[1]
    assay.configure(store=pg_uri, experiment="test")
    agent("theirs", "prod")
    assert assay.flush()
    assay.shutdown()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'UPDATE "{theirs}".assay_schema SET version = version - 1')
    mine = _pg_schema()
    try:
        uri = f"{PG_URL}?options=-csearch_path%3D{mine}%2C{theirs}"
        store = open_store(uri)
        assert store.count(experiment=None) == 0
        assay.configure(store=uri, experiment="test")
        agent("mine", "dev")
        assert assay.flush()
        assert [t.info.tags["case"] for t in assay.search_traces(return_type="list")] == ["mine"]
        store.close()
        assay.shutdown()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", [mine])}
            theirs_cases = [row[0] for row in conn.execute(
                f'SELECT value FROM "{theirs}".trace_tags WHERE key = %s', ["case"])]
        assert {"assay_schema", "traces", "spans", "trace_text"} <= tables
        assert theirs_cases == ["theirs"]
    finally:
        _drop_pg_schema(mine)


def test_a_search_path_naming_no_schema_that_exists_is_a_store_error():
    from assay.store import open_store
    from tests.conftest import PG_URL

    store = open_store(f"{PG_URL}?options=-csearch_path%3Dassay_no_such_schema")
    with pytest.raises(assay.StoreError, match=r"none of its search path \(assay_no_such_schema"):
        store.count(experiment=None)
    store.close()
