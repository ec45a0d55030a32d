"""Assessments on traces: feedback (a score) and expectations (ground truth)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from enum import Enum
from typing import Any

from assay.store.query import checked_trace_id, store
from assay.tracing.models import Assessment
from assay.tracing.serialize import to_jsonable

__all__ = ["AssessmentSource", "delete_assessment", "get_assessment", "log_expectation",
           "log_feedback", "override_feedback"]

_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")


class AssessmentSource(str, Enum):
    """Who made an assessment."""

    HUMAN = "HUMAN"
    LLM_JUDGE = "LLM_JUDGE"
    CODE = "CODE"

    def __str__(self) -> str:
        return self.value


def _build(kind: str, trace_id: str, name: str, value: Any, *, rationale: str | None,
           source: str | AssessmentSource, source_id: str | None, span_id: str | None,
           metadata: Mapping[str, Any] | None, error: str | None,
           where: str | None = None) -> Assessment:
    where = where or f"log_{kind}"
    tid = checked_trace_id(trace_id, where)
    if span_id is not None and (not isinstance(span_id, str)
                                or not _SPAN_ID.match(span_id.lower())):
        raise ValueError(f"{where}(span_id={span_id!r}): expected 16 hex characters")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}(name={name!r}): expected a non-empty string")
    try:
        source_type = AssessmentSource(str(source).upper()).value
    except ValueError:
        raise ValueError(f"{where}(source={source!r}): expected one of "
                         f"{[s.value for s in AssessmentSource]}") from None
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"{where}(metadata={metadata!r}): expected a mapping")
    return Assessment(
        assessment_id=uuid.uuid4().hex, trace_id=tid, name=name, kind=kind,
        value=to_jsonable(value), rationale=rationale, source_type=source_type,
        source_id=source_id, span_id=span_id.lower() if span_id else None,
        metadata={str(k): str(v) for k, v in (metadata or {}).items()}, error=error,
        created_time_ms=time.time_ns() // 1_000_000)


def log_feedback(trace_id: str, name: str, value: Any = None, *, rationale: str | None = None,
                 source: str | AssessmentSource = AssessmentSource.HUMAN,
                 source_id: str | None = None, span_id: str | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 error: str | None = None) -> Assessment:
    """Attach a score to a stored trace (or one of its spans).

    A newer feedback with the same name and source (type and id) overrides
    the older one for filters and aggregates; the older one is kept, marked
    ``overridden_by``.

    Args:
        trace_id: the trace (32 hex characters).
        name: what is assessed, e.g. ``"correct"``; filter with ``feedback.<name>``.
        value: bool, number, string, or any JSON-like value.
        rationale: why.
        source: ``"HUMAN"``, ``"LLM_JUDGE"`` or ``"CODE"``.
        source_id: which human, judge or scorer.
        span_id: the span assessed, if not the whole trace.
        metadata: string key/values.
        error: set instead of a value when the score could not be produced.

    Returns:
        The stored :class:`~assay.Assessment`.

    Raises:
        ValueError: a malformed id, name, source or metadata.

    Example:
        >>> assay.log_feedback(trace_id, "correct", True, source="LLM_JUDGE",
        ...                    rationale="matches the reference")
    """
    return _store_it(_build("feedback", trace_id, name, value, rationale=rationale,
                            source=source, source_id=source_id, span_id=span_id,
                            metadata=metadata, error=error))


def log_expectation(trace_id: str, name: str, value: Any, *,
                    source: str | AssessmentSource = AssessmentSource.HUMAN,
                    source_id: str | None = None, span_id: str | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Assessment:
    """Attach ground truth to a stored trace; filter with ``expectation.<name>``.

    Example:
        >>> assay.log_expectation(trace_id, "expected_answer", "Paris")
    """
    return _store_it(_build("expectation", trace_id, name, value, rationale=None,
                            source=source, source_id=source_id, span_id=span_id,
                            metadata=metadata, error=None))


def override_feedback(trace_id: str, assessment_id: str, value: Any = None, *,
                      rationale: str | None = None,
                      source: str | AssessmentSource = AssessmentSource.HUMAN,
                      source_id: str | None = None,
                      metadata: Mapping[str, Any] | None = None) -> Assessment:
    """Correct a feedback, whatever its source: a new feedback of the same name
    (and span) overrides it, as a newer one of the same source would. The one
    corrected is kept, marked ``overridden_by``; deleting the correction
    (:func:`delete_assessment`) makes it valid again.

    Args:
        trace_id: the trace (32 hex characters).
        assessment_id: the feedback corrected: a valid one (not overridden).
        value: the corrected value.
        rationale: why.
        source: who corrects it (``"HUMAN"`` by default).
        source_id: which human, judge or scorer.
        metadata: string key/values.

    Returns:
        The stored :class:`~assay.Assessment`.

    Raises:
        ValueError: a malformed id, or ``assessment_id`` is not a feedback of this
            trace, or it is overridden already (override the newer one).

    Example:
        >>> judged = assay.log_feedback(trace_id, "correct", False, source="LLM_JUDGE")
        >>> assay.override_feedback(trace_id, judged.assessment_id, True,
        ...                         rationale="the answer is right, the judge misread it")
    """
    tid = checked_trace_id(trace_id, "override_feedback")
    aid = _assessment_id(assessment_id, "override_feedback")
    st = store()
    target = st.get_assessment(tid, aid)
    if target is None:
        raise ValueError(f"override_feedback(assessment_id={assessment_id!r}): trace {tid} "
                         "has no assessment with this id")
    if target.kind != "feedback":
        raise ValueError(f"override_feedback(assessment_id={assessment_id!r}): it is an "
                         f"{target.kind}, not feedback (log_expectation replaces it)")
    new = _build("feedback", tid, target.name, value, rationale=rationale, source=source,
                 source_id=source_id, span_id=target.span_id, metadata=metadata, error=None,
                 where="override_feedback")
    st.log_assessments([new], overrides={new.assessment_id: aid})
    return new


def get_assessment(trace_id: str, assessment_id: str) -> Assessment | None:
    """One assessment of a stored trace, valid or overridden, or ``None``.

    Example:
        >>> a = assay.get_assessment(trace_id, logged.assessment_id)
        >>> a.value, a.overridden_by
    """
    return store().get_assessment(checked_trace_id(trace_id, "get_assessment"),
                                   _assessment_id(assessment_id, "get_assessment"))


def delete_assessment(trace_id: str, assessment_id: str) -> bool:
    """Delete one assessment of a trace; returns whether there was one.

    What it overrode takes its place, as if it had never been logged: the feedback
    a deleted correction overrode is valid again.

    Example:
        >>> assay.delete_assessment(trace_id, logged.assessment_id)
        True
    """
    return store().delete_assessment(checked_trace_id(trace_id, "delete_assessment"),
                                      _assessment_id(assessment_id, "delete_assessment"))


def _assessment_id(assessment_id: Any, where: str) -> str:
    if not isinstance(assessment_id, str) or not assessment_id.strip():
        raise ValueError(f"{where}(assessment_id={assessment_id!r}): expected the id of "
                         "an assessment (Assessment.assessment_id)")
    return assessment_id


def _store_it(assessment: Assessment) -> Assessment:
    store().log_assessment(assessment)
    return assessment
