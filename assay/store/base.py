"""The store seam: :class:`TraceStore`, and :class:`SpanRecord`, the unit it writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from assay.tracing.models import Assessment, Trace

__all__ = ["SpanRecord", "TracePage", "TraceStore"]


@dataclass(slots=True)
class SpanRecord:
    """One ended span as the store receives it.

    ``inputs_json``/``outputs_json`` are JSON text (serialised when recorded);
    ``attributes`` no longer holds the ``assay.*`` keys lifted into fields here.
    ``root_rank`` says how much this span speaks for its trace: 2 for a span
    without a parent, 1 for the first span of a process continuing a remote or
    foreign parent, 0 for any other.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    span_type: str
    start_time_ns: int
    end_time_ns: int
    status: str
    status_message: str | None
    inputs_json: str | None
    outputs_json: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    experiment: str
    root_rank: int = 0
    trace_name: str | None = None
    trace_tags: dict[str, str] = field(default_factory=dict)
    trace_metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TracePage:
    """One page of a search: the traces and the cursor for the next page (or ``None``)."""

    traces: list[Trace]
    next_page_token: str | None


@runtime_checkable
class TraceStore(Protocol):
    """Where traces live. A new backend is one class with these methods."""

    uri: str

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        """Persist ended spans; a span already stored is not stored again."""

    def get_trace(self, trace_id: str) -> Trace | None:
        """The trace with its spans, or ``None``."""

    def search(self, *, experiment: str | None, max_results: int, page_token: str | None,
               order: Literal["newest", "oldest"] = "newest",
               include_spans: bool = True, filter_string: str | None = None,
               order_by: list[str] | None = None) -> TracePage:
        """One page of the traces of an experiment (all when ``None``) that match
        ``filter_string``, ordered by ``order_by`` (newest first by default)."""

    def count(self, *, experiment: str | None, filter_string: str | None = None) -> int:
        """How many traces match, without fetching them."""

    def log_assessment(self, assessment: Assessment) -> None:
        """Store feedback or an expectation; it overrides the valid one of the same
        trace, kind, name and source."""

    def delete_traces(self, *, experiment: str | None, filter_string: str | None,
                      before_ms: int | None) -> int:
        """Delete matching traces (started before ``before_ms`` when given) and
        everything attached to them; returns how many were deleted."""

    def set_tag(self, trace_id: str, key: str, value: str | None) -> None:
        """Set, or with ``None`` remove, one tag of a stored trace."""

    def close(self) -> None:
        """Release connections."""
