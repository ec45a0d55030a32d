"""The query side of the public API: ``get_trace`` and ``search_traces``.

The filter language arrives in its own module; this one turns store pages into
what users asked for (a pandas frame or a list of :class:`~assay.Trace`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from assay.errors import ConfigurationError
from assay.tracing import _runtime

if TYPE_CHECKING:
    import pandas as pd

    from assay.store import LazyStore
    from assay.tracing.models import Trace

__all__ = ["FRAME_COLUMNS", "count_traces", "get_trace", "search_traces", "traces_to_frame"]

#: Columns of the frame ``search_traces`` returns, one row per trace.
FRAME_COLUMNS = ("trace_id", "name", "experiment", "state", "timestamp_ms",
                 "execution_time_ms", "request", "response", "tags", "metadata",
                 "assessments", "trace")


def store() -> LazyStore:
    """The live configuration's trace store."""
    rt = _runtime.current()
    if rt.store is None:
        raise ConfigurationError("no trace store is configured: call assay.configure(store=...)")
    return rt.store  # type: ignore[return-value]


def get_trace(trace_id: str) -> Trace | None:
    """The stored trace with this id, or ``None``.

    Spans still in the export queue are not visible yet: call ``assay.flush()``
    first when reading back what was just traced.

    Example:
        >>> trace = assay.get_trace(assay.get_last_trace_id())
    """
    if not isinstance(trace_id, str) or not trace_id:
        raise TypeError(f"get_trace() needs a trace id string, got {trace_id!r}")
    return store().get_trace(trace_id)


def traces_to_frame(traces: list[Trace]) -> pd.DataFrame:
    """One row per trace with the columns in :data:`FRAME_COLUMNS`.

    ``request``/``response`` are the root span's inputs and outputs;
    ``trace`` is the :class:`~assay.Trace` itself.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for t in traces:
        info = t.info
        root = t.root_span
        rows.append({
            "trace_id": info.trace_id,
            "name": info.name,
            "experiment": info.experiment,
            "state": info.state,
            "timestamp_ms": info.timestamp_ms,
            "execution_time_ms": info.execution_time_ms,
            "request": root.inputs if root is not None else info.request_preview,
            "response": root.outputs if root is not None else info.response_preview,
            "tags": dict(info.tags),
            "metadata": dict(info.metadata),
            "assessments": [a.to_dict() for a in info.assessments],
            "trace": t,
        })
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def search_traces(filter_string: str | None = None, *, experiment: str | None = None,
                  order_by: list[str] | None = None, max_results: int = 100,
                  page_token: str | None = None, include_spans: bool = True,
                  return_type: Literal["pandas", "list"] = "pandas") -> Any:
    """Stored traces of an experiment, newest first.

    Args:
        filter_string: which traces, in assay's filter language (every MLflow
            ``search_traces`` filter works unchanged), e.g.
            ``"trace.status = 'ERROR' AND span.type = 'LLM'"``,
            ``"tags.env IN ('prod', 'staging') OR feedback.correct = false"``,
            ``"span.attributes.gen_ai.usage.input_tokens > 1000"``,
            ``"trace.timestamp_ms > '2026-01-01' AND trace.text LIKE '%refund%'"``.
        experiment: the experiment to search (default: the configured one);
            ``"*"`` searches every experiment.
        order_by: e.g. ``["execution_time_ms DESC"]``, ``["tags.user", "timestamp_ms"]``
            over trace fields, ``tags.<key>`` and ``metadata.<key>``; the trace id
            breaks ties. Default: newest first.
        max_results: the page size (1 to 50,000).
        page_token: continue after the page that returned it (a cursor: stable
            while traces are being added).
        include_spans: load each trace's spans too.
        return_type: ``"pandas"`` for a DataFrame (columns :data:`FRAME_COLUMNS`),
            ``"list"`` for a list of :class:`~assay.Trace`.

    Returns:
        The frame or list. The cursor of the next page (``None`` on the last
        page) is ``frame.attrs["next_page_token"]`` or ``traces.next_page_token``.

    Raises:
        InvalidFilter: the filter or ``order_by`` is malformed (the message shows
            where and what was expected).
        ValueError: a bad ``max_results``, ``return_type`` or ``page_token``.

    Example:
        >>> df = assay.search_traces("trace.status = 'ERROR'", max_results=10)
        >>> df[["trace_id", "name", "state"]]
    """
    if isinstance(max_results, bool) or not isinstance(max_results, int) \
            or not 1 <= max_results <= 50_000:
        raise ValueError(f"max_results must be an integer from 1 to 50000, got {max_results!r}")
    if return_type not in ("pandas", "list"):
        raise ValueError(f"return_type must be 'pandas' or 'list', got {return_type!r}")
    page = store().search(experiment=_experiment(experiment), max_results=max_results,
                           page_token=page_token, include_spans=include_spans,
                           filter_string=filter_string or None, order_by=order_by)
    if return_type == "list":
        return TraceList(page.traces, page.next_page_token)
    frame = traces_to_frame(page.traces)
    frame.attrs["next_page_token"] = page.next_page_token
    return frame


def _experiment(experiment: str | None) -> str | None:
    if experiment is None:
        return _runtime.current().experiment
    return None if experiment == "*" else experiment


def count_traces(filter_string: str | None = None, *, experiment: str | None = None) -> int:
    """How many stored traces match ``filter_string``, without fetching them.

    Args:
        filter_string: as for :func:`search_traces`.
        experiment: the experiment (default: the configured one); ``"*"`` for all.

    Example:
        >>> assay.count_traces("trace.status = 'ERROR'")
        3
    """
    return store().count(experiment=_experiment(experiment),
                          filter_string=filter_string or None)


class TraceList(list):
    """A list of :class:`~assay.Trace` with the cursor of the next page."""

    def __init__(self, traces: list[Trace], next_page_token: str | None) -> None:
        super().__init__(traces)
        self.next_page_token = next_page_token
