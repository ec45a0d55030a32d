"""A page's traces are built without pydantic's validation (assay.store.pages):
they must be the same models that validation builds, and behave like them."""

from __future__ import annotations

import copy
import math
import pickle

import pytest

from assay.store import SpanRecord, TraceStore
from assay.tracing.models import Assessment, Span, SpanEvent, Trace, TraceInfo

TID = "ab" * 16
TS_NS = 1_700_000_000_000 * 1_000_000


def _record(span_id: str, parent_id: str | None, start_ns: int, **kw) -> SpanRecord:
    base = dict(
        trace_id=TID, span_id=span_id, parent_id=parent_id, name=f"span-{span_id[:2]}",
        span_type="LLM", start_time_ns=start_ns, end_time_ns=start_ns + 2_000_000,
        status="OK", status_message=None, inputs_json='{"q": "héllo", "n": [1, 2.5, null]}',
        outputs_json='"done"', attributes={"model": "gpt-4o", "tokens": 12, "ok": True},
        events=[], experiment="exp", root_rank=0)
    base.update(kw)
    return SpanRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def stored(store: TraceStore) -> Trace:
    store.write_spans([
        _record("1" * 16, None, TS_NS, root_rank=2, trace_name="root",
                trace_tags={"user": "u-1", "ключ": "значение"},
                trace_metadata={"session": "s-9"}, span_type="CHAIN", outputs_json=None,
                events=[{"name": "exception", "timestamp_ns": TS_NS + 5,
                         "attributes": {"exception.type": "ValueError"}},
                        {"name": "first_token", "timestamp_ns": TS_NS + 9}]),
        _record("2" * 16, "1" * 16, TS_NS + 1_000, status="ERROR", status_message="boom",
                inputs_json=None, attributes={}),
        _record("3" * 16, "1" * 16, TS_NS + 500),
    ])
    store.log_assessment(Assessment(
        assessment_id="a" * 32, trace_id=TID, name="correct", kind="feedback", value=True,
        rationale="fine", source_type="LLM_JUDGE", source_id="judge", span_id="2" * 16,
        metadata={"m": "1"}, created_time_ms=1_700_000_000_001))
    store.log_assessment(Assessment(
        assessment_id="b" * 32, trace_id=TID, name="answer", kind="expectation",
        value={"text": "x", "n": 3}, created_time_ms=1_700_000_000_002))
    trace = store.get_trace(TID)
    assert trace is not None
    return trace


def test_read_models_equal_validated_models(stored: Trace) -> None:
    validated = Trace.model_validate(stored.model_dump())
    assert stored == validated
    assert stored.to_dict() == validated.to_dict()
    assert stored.to_json() == validated.to_json()
    for made, checked in [(stored, validated), (stored.info, validated.info),
                          *zip(stored.spans, validated.spans, strict=True),
                          *zip(stored.info.assessments, validated.info.assessments,
                               strict=True)]:
        assert type(made) is type(checked)
        assert made.model_fields_set == checked.model_fields_set
        assert made.__pydantic_extra__ == checked.__pydantic_extra__
        assert made.__pydantic_private__ == checked.__pydantic_private__


def test_read_values(stored: Trace) -> None:
    info = stored.info
    assert isinstance(info, TraceInfo)
    assert info.tags == {"user": "u-1", "ключ": "значение"}
    assert info.metadata == {"session": "s-9"}
    assert [a.name for a in info.assessments] == ["correct", "answer"]
    assert info.assessments[1].value == {"text": "x", "n": 3}
    assert [s.span_id[0] for s in stored.spans] == ["1", "3", "2"]  # by start time
    root = stored.spans[0]
    assert isinstance(root, Span)
    assert root.inputs == {"q": "héllo", "n": [1, 2.5, None]} and root.outputs is None
    assert root.attributes == {"model": "gpt-4o", "tokens": 12, "ok": True}
    assert root.events == [
        SpanEvent(name="exception", timestamp_ns=TS_NS + 5,
                  attributes={"exception.type": "ValueError"}),
        SpanEvent(name="first_token", timestamp_ns=TS_NS + 9)]
    assert all(isinstance(e, SpanEvent) for e in root.events)
    err = stored.spans[2]
    assert (err.status, err.status_message, err.inputs, err.attributes) == \
        ("ERROR", "boom", None, {})
    assert err.duration_ms == 2.0


def test_read_models_behave_like_models(stored: Trace) -> None:
    span = stored.spans[1]
    span.name = "renamed"            # assignment works, and touches one object only
    assert span.name == "renamed" and stored.spans[2].name == "span-22"
    assert "name" in span.model_fields_set
    changed = span.model_copy(update={"status": "ERROR"})
    assert changed.status == "ERROR" and span.status == "OK"
    assert pickle.loads(pickle.dumps(stored)) == stored
    assert copy.deepcopy(stored) == stored
    assert Trace.from_json(stored.to_json()) == stored
    assert stored.spans[0].model_fields_set is not stored.spans[1].model_fields_set


def test_search_pages_hold_the_same_models(store: TraceStore, stored: Trace) -> None:
    page = store.search(experiment="exp", include_spans=True)
    assert page.traces == [stored]
    bare = store.search(experiment="exp", include_spans=False).traces[0]
    assert bare.spans == [] and bare.info == stored.info
    assert bare == Trace.model_validate(bare.model_dump())


def _ids(store: TraceStore, filter_string: str) -> list[str]:
    return [t.trace_id for t in store.search(experiment="exp", filter_string=filter_string,
                                             include_spans=False).traces]


def test_tags_and_metadata_on_the_trace_row_follow_every_write(store: TraceStore) -> None:
    """A page reads the pairs from the trace row; filters read the pair tables.
    The two agree after spans of one trace arrive in separate batches, after
    set_tag and after a tag's removal."""
    other = "cd" * 16
    store.write_spans([_record("2" * 16, "1" * 16, TS_NS + 10, trace_tags={"a": "1"},
                               trace_metadata={"m": "early"})])
    store.write_spans([
        _record("1" * 16, None, TS_NS, root_rank=2, trace_tags={"a": "2", "b": "x"},
                trace_metadata={"session": "s"}),
        _record("9" * 16, None, TS_NS, trace_id=other, root_rank=2)])
    trace = store.get_trace(TID)
    assert trace is not None
    assert trace.info.tags == {"a": "2", "b": "x"}
    assert trace.info.metadata == {"m": "early", "session": "s"}
    assert _ids(store, "tags.a = '2' AND tags.b = 'x' AND metadata.m = 'early'") == [TID]
    assert _ids(store, "tags.a = '1'") == []
    bare = store.get_trace(other)
    assert bare is not None and (bare.info.tags, bare.info.metadata) == ({}, {})

    store.set_tag(TID, "c", "y")
    store.set_tag(TID, "a", None)
    store.set_tag(other, "only", "here")
    page = {t.trace_id: t.info.tags for t in store.search(experiment="exp").traces}
    assert page == {TID: {"b": "x", "c": "y"}, other: {"only": "here"}}
    assert _ids(store, "tags.a IS NULL AND tags.c = 'y'") == [TID]
    store.set_tag(other, "only", None)
    again = store.get_trace(other)
    assert again is not None and again.info.tags == {}


def test_attribute_values_json_cannot_hold_are_stored_and_read_back(store: TraceStore) -> None:
    """Attributes and events are stored as JSON text: NaN and infinities stay
    numbers, bytes that are not UTF-8 and other values JSON cannot hold are
    stored as their ``str``; the span's other values are untouched."""
    store.write_spans([_record(
        "4" * 16, None, TS_NS, root_rank=2,
        attributes={"nan": float("nan"), "inf": float("-inf"), "raw": b"\xff\xfe",
                    "pair": (1, "two"), "nested": {"é": [True, None, 1.5]}},
        events=[{"name": "odd", "timestamp_ns": TS_NS + 1, "attributes": {"n": float("inf")}}])])
    trace = store.get_trace(TID)
    assert trace is not None
    attrs = trace.spans[0].attributes
    assert math.isnan(attrs["nan"]) and attrs["inf"] == float("-inf")
    assert attrs["raw"] == str(b"\xff\xfe")
    assert attrs["pair"] == [1, "two"] and attrs["nested"] == {"é": [True, None, 1.5]}
    assert trace.spans[0].events[0].attributes == {"n": float("inf")}
    assert trace.spans[0].inputs == {"q": "héllo", "n": [1, 2.5, None]}


def test_stored_text_that_is_not_json_is_read_back_as_text(store: TraceStore) -> None:
    store.write_spans([
        _record("5" * 16, None, TS_NS, root_rank=2, inputs_json="plain {text",
                outputs_json='"done"', attributes={"k": 1}),
        _record("6" * 16, "5" * 16, TS_NS + 1, inputs_json='{"q": 1}', outputs_json="]["),
    ])
    trace = store.get_trace(TID)
    assert trace is not None
    first, second = trace.spans
    assert (first.inputs, first.outputs, first.attributes) == ("plain {text", "done", {"k": 1})
    assert (second.inputs, second.outputs) == ({"q": 1}, "][")
    assert second.attributes == {"model": "gpt-4o", "tokens": 12, "ok": True}


def test_a_page_is_read_without_parallel_workers(store: TraceStore, stored: Trace,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a page's statements run with ``max_parallel_workers_per_gather``
    at 0 (a page stops at its size; workers cost more to start than they save), and
    only for the page's own transaction."""
    from assay.store import pages, sql

    seen: list[str] = []
    real = sql._rows

    def rows(conn, stmt, after):  # type: ignore[no-untyped-def]
        if conn.dialect.name == "postgresql":
            seen.append(conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar())
        return real(conn, stmt, after)

    monkeypatch.setattr(sql, "_rows", rows)
    page = store.search(experiment="exp", max_results=10, filter_string="trace.status = 'OK'")
    assert [t.info.trace_id for t in page.traces] == [stored.info.trace_id]
    engine = store.sql._get_engines()[1]  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        assert seen == ["0"]
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() != "0"
    else:
        with engine.connect() as conn:
            pages.without_parallel_workers(conn)  # nothing to do on SQLite


def test_attribute_values_no_json_writer_can_hold_do_not_lose_the_batch(
        store: TraceStore) -> None:
    """A cyclic value, or one whose ``str`` raises, is stored with markers, and the
    other spans of its batch are stored with it."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    cyclic: dict[str, object] = {"name": "loop"}
    cyclic["self"] = cyclic
    store.write_spans([
        _record("7" * 16, None, TS_NS, root_rank=2,
                attributes={"cyclic": cyclic, "odd": Unprintable(), "plain": 1}),
        _record("8" * 16, "7" * 16, TS_NS + 1),
    ])
    trace = store.get_trace(TID)
    assert trace is not None
    assert [s.span_id for s in trace.spans] == ["7" * 16, "8" * 16]
    attrs = trace.spans[0].attributes
    assert attrs["plain"] == 1 and attrs["cyclic"]["name"] == "loop"
    assert "cycle" in str(attrs["cyclic"]["self"])
    assert "Unprintable" in str(attrs["odd"])
    hits = store.search(experiment="exp", max_results=10,
                        filter_string="span.attributes.plain = 1", include_spans=False)
    assert [t.info.trace_id for t in hits.traces] == [TID]
