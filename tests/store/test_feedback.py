"""Assessments one by one: fetching, correcting and deleting feedback, on SQLite
and PostgreSQL, with the filters (and the feedback page indexes) following."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

import assay
from assay.store import schema as s
from assay.store.query import store as live_store


@assay.trace(span_type="LLM")
def answer(q: str) -> str:
    return f"answer to {q}"


@pytest.fixture
def traced(tracing_any) -> list[str]:
    ids = []
    for q in ("a", "b", "c"):
        answer(q)
        ids.append(assay.get_last_trace_id())
    assert assay.flush()
    return ids


def _matching(flt: str) -> set[str]:
    found = {t.info.trace_id for t in assay.search_traces(flt, return_type="list",
                                                          include_spans=False)}
    assert assay.count_traces(flt) == len(found)
    return found


def _stored_assessments() -> int:
    with live_store().sql._read() as conn:
        return int(conn.execute(select(func.count()).select_from(s.assessments)).scalar() or 0)


def test_get_assessment_returns_it_valid_or_overridden(traced):
    tid, other, _ = traced
    old = assay.log_feedback(tid, "correct", True, source="LLM_JUDGE", rationale="r1",
                             metadata={"judge": "v1"})
    new = assay.log_feedback(tid, "correct", False, source="LLM_JUDGE")
    got = assay.get_assessment(tid, old.assessment_id)
    assert got is not None
    assert got.model_dump(exclude={"overridden_by"}) == old.model_dump(exclude={"overridden_by"})
    assert got.overridden_by == new.assessment_id and not got.valid
    latest = assay.get_assessment(tid.upper(), new.assessment_id)
    assert latest is not None and latest.valid and latest.value is False
    assert assay.get_assessment(other, old.assessment_id) is None  # not that trace's
    assert assay.get_assessment(tid, "0" * 32) is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda: assay.get_assessment("nope", "x"), r"get_assessment\(trace_id='nope'\)"),
    (lambda: assay.get_assessment("a" * 32, ""), r"get_assessment\(assessment_id=''\)"),
    (lambda: assay.delete_assessment("a" * 32, None), r"delete_assessment\(assessment_id=None"),
    (lambda: assay.override_feedback("a" * 31, "x", 1), r"override_feedback\(trace_id="),
])
def test_malformed_ids_raise_value_error_naming_the_call(call, message, tracing_any):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_reviewer_overrides_a_judges_feedback_and_the_filters_follow(traced):
    tid, other, _ = traced
    judged = assay.log_feedback(tid, "correct", False, source="LLM_JUDGE",
                                source_id="judge-v1", span_id="ab" * 8)
    assay.log_feedback(other, "correct", False, source="LLM_JUDGE", source_id="judge-v1")
    assert _matching("feedback.correct = false") == {tid, other}

    fixed = assay.override_feedback(tid, judged.assessment_id, True,
                                    rationale="the judge misread the answer",
                                    source_id="reviewer-1")
    assert (fixed.name, fixed.kind, fixed.value, fixed.source_type, fixed.source_id,
            fixed.span_id) == ("correct", "feedback", True, "HUMAN", "reviewer-1", "ab" * 8)
    assert _matching("feedback.correct = false") == {other}
    assert _matching("feedback.correct = true") == {tid}
    assert _matching("feedback.correct = true AND tags.missing IS NULL") == {tid}

    trace = assay.get_trace(tid)
    assert trace is not None
    assert [a.assessment_id for a in trace.search_assessments("correct")] == \
        [fixed.assessment_id]
    every = trace.search_assessments("correct", include_overridden=True)
    assert {a.assessment_id: a.overridden_by for a in every} == {
        judged.assessment_id: fixed.assessment_id, fixed.assessment_id: None}
    assert trace.search_assessments(kind="expectation") == []
    assert [a.assessment_id for a in trace.search_assessments(span_id="ab" * 8)] == \
        [fixed.assessment_id]

    # The judge running again adds its own newer judgement beside the correction.
    rerun = assay.log_feedback(tid, "correct", False, source="LLM_JUDGE", source_id="judge-v1")
    stored = assay.get_assessment(tid, judged.assessment_id)
    assert stored is not None and stored.overridden_by == fixed.assessment_id
    assert {a.assessment_id for a in assay.get_trace(tid).search_assessments()} == {
        fixed.assessment_id, rerun.assessment_id}


def test_an_override_must_name_a_valid_feedback_of_that_trace(traced):
    tid, other, _ = traced
    first = assay.log_feedback(tid, "correct", False, source="LLM_JUDGE")
    second = assay.log_feedback(tid, "correct", True, source="LLM_JUDGE")
    truth = assay.log_expectation(tid, "answer", "Paris")
    before = _stored_assessments()
    with pytest.raises(ValueError, match=f"already overridden by '{second.assessment_id}'"):
        assay.override_feedback(tid, first.assessment_id, True)
    with pytest.raises(ValueError, match="it is an expectation, not feedback"):
        assay.override_feedback(tid, truth.assessment_id, "Rome")
    with pytest.raises(ValueError, match=f"trace {other} has no assessment with this id"):
        assay.override_feedback(other, second.assessment_id, False)
    assert _stored_assessments() == before

    # The store checks again in the transaction that writes (a newer judgement
    # may have arrived after the target was read).
    from tests.store.test_copies import feedback

    late = feedback(tid, True)
    with pytest.raises(ValueError, match="already overridden"):
        live_store().log_assessments([late], overrides={late.assessment_id:
                                                        first.assessment_id})
    with pytest.raises(ValueError, match="is not an assessment of this batch"):
        live_store().log_assessments([late], overrides={"f" * 32: second.assessment_id})
    with pytest.raises(ValueError, match=r"overrides=\[.*expected a mapping"):
        live_store().log_assessments([late], overrides=[late.assessment_id])  # type: ignore
    assert _stored_assessments() == before
    assert _matching("feedback.correct = true") == {tid}


def test_deleting_a_correction_makes_what_it_overrode_valid_again(traced):
    tid, other, _ = traced
    judged = assay.log_feedback(tid, "score", 2, source="LLM_JUDGE")
    assay.log_feedback(other, "score", 2, source="LLM_JUDGE")
    fixed = assay.override_feedback(tid, judged.assessment_id, 5)
    assert _matching("feedback.score = 2") == {other}
    assert _matching("feedback.score >= 5") == {tid}

    assert assay.delete_assessment(tid, fixed.assessment_id) is True
    assert assay.get_assessment(tid, fixed.assessment_id) is None
    restored = assay.get_assessment(tid, judged.assessment_id)
    assert restored is not None and restored.valid
    assert _matching("feedback.score = 2") == {tid, other}
    assert _matching("feedback.score >= 5") == set()
    assert assay.delete_assessment(tid, fixed.assessment_id) is False
    assert assay.delete_assessment(other, judged.assessment_id) is False  # not that trace's
    assert assay.get_assessment(tid, judged.assessment_id) is not None


def test_deleting_within_a_chain_joins_its_neighbours(traced):
    tid = traced[0]
    a, b, c = (assay.log_feedback(tid, "tone", v, source="CODE") for v in ("rude", "ok", "kind"))
    assert assay.delete_assessment(tid, b.assessment_id)
    chain = {x.assessment_id: x.overridden_by
             for x in assay.get_trace(tid).search_assessments(include_overridden=True)}
    assert chain == {a.assessment_id: c.assessment_id, c.assessment_id: None}
    assert assay.delete_assessment(tid, c.assessment_id)
    assert _matching("feedback.tone = 'rude'") == {tid}
    # A newer one of the same source overrides the restored one, as before.
    d = assay.log_feedback(tid, "tone", "calm", source="CODE")
    assert [x.assessment_id for x in assay.get_trace(tid).search_assessments("tone")] == \
        [d.assessment_id]
    assert _matching("feedback.tone = 'rude'") == set()


def test_an_assessment_id_stored_or_given_twice_is_refused_by_name(traced):
    from tests.store.test_copies import feedback

    tid = traced[0]
    stored = assay.log_feedback(tid, "correct", True)
    before = _stored_assessments()
    again = feedback(tid, False)
    again.assessment_id = stored.assessment_id
    fresh = feedback(traced[1], True)
    with pytest.raises(ValueError, match=f"'{stored.assessment_id}' is already stored"):
        live_store().log_assessments([fresh, again])
    with pytest.raises(ValueError, match=f"'{fresh.assessment_id}' is given 2 times"):
        live_store().log_assessments([fresh, fresh])
    assert _stored_assessments() == before
    assert _matching("feedback.correct = true") == {tid}
