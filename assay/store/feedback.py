"""Assessments on traces: feedback (a score) and expectations (ground truth)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from enum import Enum
from typing import Any

from assay.tracing.models import Assessment
from assay.tracing.serialize import to_jsonable

__all__ = ["AssessmentSource", "log_expectation", "log_feedback"]

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
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
           metadata: Mapping[str, Any] | None, error: str | None) -> Assessment:
    where = f"log_{kind}"
    tid = str(trace_id).lower() if isinstance(trace_id, str) else trace_id
    if not isinstance(tid, str) or not _TRACE_ID.match(tid):
        raise ValueError(f"{where}(trace_id={trace_id!r}): expected 32 hex characters")
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


def _store_it(assessment: Assessment) -> Assessment:
    from assay.store.query import store

    store().log_assessment(assessment)
    return assessment
