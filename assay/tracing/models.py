"""The data model: :class:`Trace` = :class:`TraceInfo` + a list of :class:`Span`.

These are what ``get_trace`` and ``search_traces`` return and what ``redact``
receives. Values are JSON-safe, so ``to_dict``/``from_dict`` and
``to_json``/``from_json`` round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assay.tracing.types import SpanStatus, SpanType, TraceState

__all__ = ["Assessment", "Span", "SpanEvent", "Trace", "TraceInfo"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-safe dict of this object."""
        return self.model_dump(mode="json")

    def to_json(self, *, indent: int | None = None) -> str:
        """The JSON text of this object."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild an object from :meth:`to_dict` output (validated)."""
        return cls.model_validate(data)

    @classmethod
    def from_json(cls, text: str | bytes):
        """Rebuild an object from :meth:`to_json` output (validated)."""
        return cls.model_validate_json(text)


class SpanEvent(_Model):
    """Something that happened at a point in a span's life (an exception, the first item)."""

    name: str
    timestamp_ns: int
    attributes: dict[str, Any] = Field(default_factory=dict)


class Span(_Model):
    """One finished (or in-flight) unit of work inside a trace."""

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    span_type: str = SpanType.UNKNOWN.value
    start_time_ns: int
    end_time_ns: int | None = None
    status: str = SpanStatus.UNSET.value
    status_message: str | None = None
    inputs: Any = None
    outputs: Any = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[SpanEvent] = Field(default_factory=list)

    @property
    def duration_ms(self) -> float | None:
        """Wall-clock duration in milliseconds, ``None`` while the span is open."""
        if self.end_time_ns is None:
            return None
        return (self.end_time_ns - self.start_time_ns) / 1e6


class Assessment(_Model):
    """A judgement attached to a trace: feedback (a score) or an expectation (ground truth)."""

    assessment_id: str
    trace_id: str
    name: str
    kind: str  # "feedback" | "expectation"
    value: Any = None
    rationale: str | None = None
    source_type: str = "HUMAN"
    source_id: str | None = None
    span_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    created_time_ms: int
    overridden_by: str | None = None

    @property
    def valid(self) -> bool:
        """Whether this is the assessment in force: no newer one overrides it."""
        return self.overridden_by is None


class TraceInfo(_Model):
    """Everything about a trace except its spans; ``run_id`` is the run that was
    active when its root span started (``assay.start_run``), if any."""

    trace_id: str
    experiment: str
    name: str | None = None
    state: str = TraceState.IN_PROGRESS.value
    timestamp_ms: int
    execution_time_ms: float | None = None
    request_preview: str | None = None
    response_preview: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    assessments: list[Assessment] = Field(default_factory=list)
    run_id: str | None = None


class Trace(_Model):
    """A trace: its :class:`TraceInfo` and its spans, ordered by start time."""

    info: TraceInfo
    spans: list[Span] = Field(default_factory=list)

    @property
    def trace_id(self) -> str:
        return self.info.trace_id

    @property
    def root_span(self) -> Span | None:
        """The span without a parent in this trace (the earliest one if several)."""
        ids = {s.span_id for s in self.spans}
        for span in self.spans:
            if span.parent_id is None or span.parent_id not in ids:
                return span
        return None

    def children(self, span: Span) -> list[Span]:
        """Direct children of ``span``, by start time."""
        return [s for s in self.spans if s.parent_id == span.span_id]

    def search_spans(self, *, name: str | None = None,
                     span_type: str | SpanType | None = None) -> list[Span]:
        """Spans with the given name and/or type."""
        kind = None if span_type is None else str(span_type)
        return [s for s in self.spans
                if (name is None or s.name == name) and (kind is None or s.span_type == kind)]

    def search_assessments(self, name: str | None = None, *, kind: str | None = None,
                           span_id: str | None = None,
                           include_overridden: bool = False) -> list[Assessment]:
        """The trace's assessments with the given name, kind (``"feedback"`` or
        ``"expectation"``) and span, oldest first; only the valid ones unless
        ``include_overridden``.

        Example:
            >>> [a.value for a in trace.search_assessments("correct")]
        """
        return [a for a in self.info.assessments
                if (name is None or a.name == name) and (kind is None or a.kind == kind)
                and (span_id is None or a.span_id == span_id)
                and (include_overridden or a.overridden_by is None)]

    def walk(self) -> Iterator[tuple[int, Span]]:
        """(depth, span) pairs in tree order, roots first."""
        ids = {s.span_id for s in self.spans}
        by_parent: dict[str | None, list[Span]] = {}
        for s in self.spans:
            key = s.parent_id if s.parent_id in ids else None
            by_parent.setdefault(key, []).append(s)
        stack = [(0, s) for s in reversed(by_parent.get(None, []))]
        while stack:
            depth, span = stack.pop()
            yield depth, span
            stack.extend((depth + 1, c) for c in reversed(by_parent.get(span.span_id, [])))
