"""Copied columns (assay.store.copies): an assessment's copy of its trace's
experiment and timestamp follows the trace's row, whichever is written first,
on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from assay.store import SpanRecord, TraceStore, copies
from assay.store import schema as s
from assay.tracing.models import Assessment

T0_NS = 1_700_000_000_000_000_000


def span(trace_id: str, span_id: str, *, start_ms: int, root: bool,
         experiment: str = "exp") -> SpanRecord:
    start = T0_NS + start_ms * 1_000_000
    return SpanRecord(
        trace_id=trace_id, span_id=span_id, parent_id=None if root else "a" * 16,
        name="root" if root else "child", span_type="CHAIN", status="OK",
        status_message=None, start_time_ns=start, end_time_ns=start + 1_000_000,
        inputs_json=None, outputs_json=None, attributes={}, events=[], experiment=experiment,
        root_rank=2 if root else 0, trace_name="root" if root else None)


def feedback(trace_id: str, value: Any, *, source: str = "HUMAN") -> Assessment:
    return Assessment(assessment_id=uuid.uuid4().hex, trace_id=trace_id, name="correct",
                      kind="feedback", value=value, source_type=source,
                      created_time_ms=int(time.time() * 1000))


def copied(store: TraceStore) -> dict[str, tuple[Any, Any]]:
    a = s.assessments.c
    with store._read() as conn:
        return {aid: (exp, ts) for aid, exp, ts in conn.execute(
            select(a.assessment_id, a.experiment, a.trace_timestamp_ms))}


def page(store: TraceStore, filter_string: str = "feedback.correct = true",
         experiment: str = "exp") -> list[str]:
    return [t.info.trace_id for t in store.search(
        experiment=experiment, filter_string=filter_string, include_spans=False).traces]


def test_feedback_logged_on_a_stored_trace_copies_its_row(store):
    tid = "1" * 32
    store.write_spans([span(tid, "a" * 16, start_ms=500, root=True)])
    fb = feedback(tid, True)
    store.log_assessment(fb)
    assert copied(store) == {fb.assessment_id: ("exp", 1_700_000_000_500)}
    assert page(store) == [tid]


def test_feedback_logged_before_its_trace_is_stored_gets_the_copy_when_it_is(store):
    tid = "2" * 32
    fb = feedback(tid, True)
    store.log_assessment(fb)
    assert copied(store) == {fb.assessment_id: (None, None)}
    assert page(store) == []
    store.write_spans([span(tid, "a" * 16, start_ms=700, root=True)])
    assert copied(store) == {fb.assessment_id: ("exp", 1_700_000_000_700)}
    assert page(store) == [tid]


def test_a_root_span_arriving_later_moves_the_trace_and_its_copies(store):
    """A child span first gives the trace its start; the root, later, its real
    one and experiment. The feedback page follows the trace's row."""
    early, late = "3" * 32, "4" * 32
    store.write_spans([span(early, "b" * 16, start_ms=100, root=True),
                       span(late, "c" * 16, start_ms=900, root=False, experiment="other")])
    fb_early, fb_late = feedback(early, True), feedback(late, True)
    store.log_assessments([fb_early, fb_late])
    assert copied(store)[fb_late.assessment_id] == ("other", 1_700_000_000_900)
    assert page(store) == [early]
    # The root of `late` started before `early` did, in experiment "exp".
    store.write_spans([span(late, "a" * 16, start_ms=50, root=True)])
    assert copied(store)[fb_late.assessment_id] == ("exp", 1_700_000_000_050)
    assert page(store) == [early, late]
    assert page(store, experiment="other") == []


def test_deleting_a_trace_deletes_its_feedback_from_the_page(store):
    tid = "5" * 32
    store.write_spans([span(tid, "a" * 16, start_ms=1, root=True)])
    store.log_assessment(feedback(tid, True))
    assert page(store) == [tid]
    assert store.delete_traces(experiment="exp", filter_string=None, before_ms=None) == 1
    assert page(store) == [] and copied(store) == {}


def test_refresh_of_every_assessment_repairs_the_copies(store):
    tid = "6" * 32
    store.write_spans([span(tid, "a" * 16, start_ms=3, root=True)])
    fb = feedback(tid, "yes")
    store.log_assessment(fb)
    with store._write() as conn:
        conn.execute(s.assessments.update().values(experiment=None, trace_timestamp_ms=None))
    assert page(store, "feedback.correct = 'yes'") == []
    with store._write() as conn:
        copies.refresh_assessed_traces(conn, None)
    assert copied(store) == {fb.assessment_id: ("exp", 1_700_000_000_003)}
    assert page(store, "feedback.correct = 'yes'") == [tid]


@pytest.mark.parametrize("store_uri", ["postgresql"], indirect=True)
def test_spans_written_while_feedback_on_their_missing_trace_commits_wait_for_it(store):
    """PostgreSQL: feedback logged for a trace not stored yet locks the traces
    table until it commits, so the spans written meanwhile see it and refresh
    its copies (without the lock they would commit first, seeing no feedback,
    and its copies would stay NULL)."""
    tid = "7" * 32
    fb = feedback(tid, True)
    writer: threading.Thread | None = None
    with store._write() as conn:
        assert copies.assessed_traces(conn, [tid]) == {}
        writer = threading.Thread(
            target=store.write_spans, args=([span(tid, "a" * 16, start_ms=8, root=True)],))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive()  # waiting for the lock
        conn.execute(s.assessments.insert(), [{
            "assessment_id": fb.assessment_id, "trace_id": tid, "name": fb.name,
            "kind": fb.kind, "value_json": "true", "value_kind": "b", "num_value": 1.0,
            "str_value": "true", "source_type": "HUMAN", "metadata_json": "{}",
            "created_time_ms": fb.created_time_ms}])
    writer.join(30)
    assert not writer.is_alive()
    assert copied(store) == {fb.assessment_id: ("exp", 1_700_000_000_008)}
    assert page(store) == [tid]
