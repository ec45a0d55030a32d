"""The store seam: :class:`TraceStore`, and :class:`SpanRecord`, the unit it writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from assay.store.runs import Metric, Run
    from assay.tracing.models import Assessment, Trace

__all__ = ["MetricRow", "RunPage", "SpanRecord", "TracePage", "TraceStore"]

#: One logged metric value: (key, value, step, timestamp_ms).
MetricRow = tuple[str, float, int, int]


@dataclass(slots=True)
class SpanRecord:
    """One ended span as the store receives it.

    ``inputs_json``/``outputs_json`` are JSON text (serialised when recorded);
    ``attributes`` no longer holds the ``assay.*`` keys lifted into fields here.
    ``root_rank`` says how much this span speaks for its trace: 2 for a span
    without a parent, 1 for the first span of a process continuing a remote or
    foreign parent, 0 for any other. ``run_id`` is the run that was active when
    the trace's root span started (``None`` outside a run, and on other spans).
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
    run_id: str | None = None


@dataclass(frozen=True)
class TracePage:
    """One page of a search: the traces and the cursor for the next page (or ``None``)."""

    traces: list[Trace]
    next_page_token: str | None


@dataclass(frozen=True)
class RunPage:
    """One page of a run search: the runs and the cursor for the next page (or ``None``)."""

    runs: list[Run]
    next_page_token: str | None


@runtime_checkable
class TraceStore(Protocol):
    """Where traces live. A new backend is one class with these methods."""

    uri: str

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        """Persist ended spans; a span already stored is not stored again."""

    def bulk_load(self, records: Iterable[SpanRecord]) -> int:
        """Store many spans at once (an import, a migration, a benchmark's corpus)
        with the same result as :meth:`write_spans` over the same records; returns
        how many records were passed in. A backend may take keyword options (the
        SQL store's chunk size, for one)."""

    def get_trace(self, trace_id: str) -> Trace | None:
        """The trace with its spans, or ``None``."""

    def search(self, *, experiment: str | Sequence[str] | None, max_results: int,
               page_token: str | None,
               order: Literal["newest", "oldest"] = "newest",
               include_spans: bool = True, filter_string: str | None = None,
               order_by: list[str] | None = None) -> TracePage:
        """One page of the traces of an experiment (several; all when ``None``) that match
        ``filter_string``, ordered by ``order_by`` (newest first by default)."""

    def count(self, *, experiment: str | Sequence[str] | None,
              filter_string: str | None = None) -> int:
        """How many traces match, without fetching them."""

    def log_assessment(self, assessment: Assessment) -> None:
        """Store feedback or an expectation; it overrides the valid one of the same
        trace, kind, name and source."""

    def delete_traces(self, *, experiment: str | Sequence[str] | None,
                      filter_string: str | None, before_ms: int | None) -> int:
        """Delete matching traces (started before ``before_ms`` when given) and
        everything attached to them; returns how many were deleted."""

    def set_tag(self, trace_id: str, key: str, value: str | None) -> None:
        """Set, or with ``None`` remove, one tag of a stored trace."""

    def log_assessments(self, assessments: Sequence[Assessment], *,
                        overrides: Mapping[str, str] | None = None) -> None:
        """Store many assessments in one transaction, each overriding as
        :meth:`log_assessment` does (in the order given); ``overrides`` maps a new
        assessment's id to a stored valid feedback of its trace that it also
        overrides, whatever that one's source."""

    def get_assessment(self, trace_id: str, assessment_id: str) -> Assessment | None:
        """One assessment of a trace (valid or overridden), or ``None``."""

    def delete_assessment(self, trace_id: str, assessment_id: str) -> bool:
        """Delete one assessment of a trace, restoring what it overrode; whether
        there was one."""

    # -- runs (see assay.store._run_sql) ---------------------------------------
    def create_run(self, run_id: str, *, experiment: str, name: str | None,
                   start_time_ms: int, tags: Mapping[str, str] | None = None) -> None:
        """Create a RUNNING run (with its first tags)."""

    def update_run(self, run_id: str, *, status: str | None = None,
                   end_time_ms: int | None = None, name: str | None = None) -> None:
        """Change a run's status, end time or name; RUNNING clears the end time."""

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Set parameters of a run (a key logged again takes the new value)."""

    def log_metrics(self, run_id: str, metrics: Sequence[MetricRow]) -> None:
        """Log metric values, each at its step, in one transaction."""

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags of a run."""

    def delete_run_tag(self, run_id: str, key: str) -> None:
        """Remove a tag of a run (nothing happens if it has none)."""

    def log_run_table(self, run_id: str, name: str, content: str) -> None:
        """Store a table with a run: JSON text, a list of row objects."""

    def load_run_table(self, run_id: str, name: str) -> str | None:
        """A table's JSON text, or ``None``."""

    def get_run(self, run_id: str) -> Run | None:
        """The run with its params, latest metrics and tags, or ``None``."""

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every logged value of a run's metric, by step."""

    def search_runs(self, *, experiment: str | None, filter_string: str | None = None,
                    order_by: list[str] | None = None, max_results: int = 1000,
                    page_token: str | None = None) -> RunPage:
        """One page of the runs of an experiment (all when ``None``) matching
        ``filter_string``, ordered by ``order_by`` (newest first by default)."""

    def delete_run(self, run_id: str) -> bool:
        """Delete a run with its params, metrics, tags and tables (not its traces);
        returns whether it existed."""

    def close(self) -> None:
        """Release connections."""
