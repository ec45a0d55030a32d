"""The query side of the public API: ``get_trace`` and ``search_traces``.

The filter language arrives in its own module; this one turns store pages into
what users asked for (a pandas frame or a list of :class:`~assay.Trace`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from assay.errors import ConfigurationError
from assay.tracing import _runtime

if TYPE_CHECKING:
    import pandas as pd

    from assay.store import LazyStore
    from assay.tracing.models import Trace

__all__ = ["ALL_PAGE_SIZE", "FRAME_COLUMNS", "count_traces", "delete_trace_tag", "delete_traces",
           "get_trace", "search_traces", "set_trace_tag", "traces_to_frame"]

#: Columns of the frame ``search_traces`` returns, one row per trace.
FRAME_COLUMNS = ("trace_id", "name", "experiment", "state", "timestamp_ms",
                 "execution_time_ms", "request", "response", "tags", "metadata",
                 "assessments", "run_id", "trace")


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
            "run_id": info.run_id,
            "trace": t,
        })
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def search_traces(filter_string: str | None = None, *,
                  experiment: str | Sequence[str] | None = None,
                  order_by: list[str] | None = None, max_results: int | None = 100,
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
        experiment: the experiment to search (default: the configured one), a
            list of experiments, or ``"*"`` for every experiment.
        order_by: e.g. ``["execution_time_ms DESC"]``, ``["tags.user", "timestamp_ms"]``
            over trace fields, ``tags.<key>`` and ``metadata.<key>``; the trace id
            breaks ties. Default: newest first.
        max_results: the page size (1 to 50,000), or ``None`` for every match
            (from ``page_token`` on, if given), read in pages of
            :data:`ALL_PAGE_SIZE` traces, as MLflow's ``max_results=None`` does.
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
        ValueError: a bad ``max_results``, ``return_type``, ``page_token`` or
            ``experiment``.

    Example:
        >>> df = assay.search_traces("trace.status = 'ERROR'", max_results=10)
        >>> df[["trace_id", "name", "state"]]
    """
    if max_results is not None and (isinstance(max_results, bool)
                                    or not isinstance(max_results, int)
                                    or not 1 <= max_results <= 50_000):
        raise ValueError("max_results must be an integer from 1 to 50000, or None for every "
                         f"match, got {max_results!r}")
    if return_type not in ("pandas", "list"):
        raise ValueError(f"return_type must be 'pandas' or 'list', got {return_type!r}")
    scope, filter_string = _experiment(experiment), filter_string or None
    traces: list[Trace] = []
    while True:
        page = store().search(experiment=scope, max_results=max_results or ALL_PAGE_SIZE,
                              page_token=page_token, include_spans=include_spans,
                              filter_string=filter_string, order_by=order_by)
        traces.extend(page.traces)
        page_token = page.next_page_token
        if max_results is not None or page_token is None:
            break
    if return_type == "list":
        return TraceList(traces, page_token)
    frame = traces_to_frame(traces)
    frame.attrs["next_page_token"] = page_token
    return frame


#: How many traces ``search_traces(max_results=None)`` reads at a time.
ALL_PAGE_SIZE = 1_000


def _experiment(experiment: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """The experiments a search covers: the configured one for ``None``, every one
    (``None``) for ``"*"``, else the name or names given.

    Raises:
        ValueError: not a name or a non-empty list of names.
    """
    if experiment is None:
        return _runtime.current().experiment
    if experiment == "*":
        return None
    if isinstance(experiment, str) and experiment:
        return experiment
    if isinstance(experiment, (list, tuple, set, frozenset)) and experiment \
            and all(isinstance(name, str) and name for name in experiment):
        return None if "*" in experiment else tuple(sorted(set(experiment)))
    raise ValueError(f"experiment={experiment!r}: expected an experiment name, a list of "
                     "names, or '*' for every experiment")


def count_traces(filter_string: str | None = None, *,
                 experiment: str | Sequence[str] | None = None) -> int:
    """How many stored traces match ``filter_string``, without fetching them.

    Args:
        filter_string: as for :func:`search_traces`.
        experiment: the experiment (default: the configured one), a list of
            experiments, or ``"*"`` for all.

    Example:
        >>> assay.count_traces("trace.status = 'ERROR'")
        3
    """
    return store().count(experiment=_experiment(experiment),
                          filter_string=filter_string or None)


def delete_traces(filter_string: str | None = None, *,
                  experiment: str | Sequence[str] | None = None,
                  older_than: timedelta | datetime | str | None = None) -> int:
    """Delete stored traces (their spans, tags, metadata and assessments with them).

    Args:
        filter_string: which traces, as for :func:`search_traces`.
        experiment: the experiment (default: the configured one), a list of
            experiments, or ``"*"`` for all.
        older_than: only traces that started before this: a ``timedelta`` (age),
            a ``datetime`` or an ISO date string (naive means UTC).

    Returns:
        The number of traces deleted.

    Raises:
        ValueError: neither a filter nor ``older_than`` was given (to delete every
            trace of the experiment say so: ``delete_traces("trace.timestamp_ms >= 0")``).
        InvalidFilter: a malformed filter.

    Example:
        >>> assay.delete_traces(older_than=timedelta(days=30))
        1204
    """
    if not filter_string and older_than is None:
        raise ValueError("delete_traces() needs filter_string or older_than")
    before_ms = None if older_than is None else cutoff_ms(older_than)
    return store().delete_traces(experiment=_experiment(experiment),
                                 filter_string=filter_string or None, before_ms=before_ms)


def cutoff_ms(older_than: timedelta | datetime | str) -> int:
    """The epoch milliseconds before which a trace is ``older_than``.

    Raises:
        ValueError: not a timedelta, a datetime or an ISO date.
    """
    if isinstance(older_than, timedelta):
        return int((datetime.now(timezone.utc) - older_than).timestamp() * 1000)
    if isinstance(older_than, datetime):
        when = older_than if older_than.tzinfo else older_than.replace(tzinfo=timezone.utc)
        return int(when.timestamp() * 1000)
    if isinstance(older_than, str):
        from assay.store.filter_ast import parse_iso_datetime

        parsed = parse_iso_datetime(older_than)
        if parsed is not None:
            return cutoff_ms(parsed)
    raise ValueError(f"older_than={older_than!r}: expected a timedelta, a datetime or an "
                     "ISO date such as '2026-01-31'")


def set_trace_tag(trace_id: str, key: str, value: str) -> None:
    """Set a tag on a stored trace (finished or not); filter with ``tags.<key>``."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"set_trace_tag(key={key!r}): expected a non-empty string")
    store().set_tag(checked_trace_id(trace_id, "set_trace_tag"), key, str(value))


def delete_trace_tag(trace_id: str, key: str) -> None:
    """Remove a tag from a stored trace (nothing happens if it has none)."""
    store().set_tag(checked_trace_id(trace_id, "delete_trace_tag"), key, None)


def checked_trace_id(trace_id: Any, where: str) -> str:
    """``trace_id`` in lower case, or a ``ValueError`` naming ``where`` it was given."""
    if not isinstance(trace_id, str) or len(trace_id) != 32 or \
            any(c not in "0123456789abcdefABCDEF" for c in trace_id):
        raise ValueError(f"{where}(trace_id={trace_id!r}): expected 32 hex characters")
    return trace_id.lower()


class TraceList(list):
    """A list of :class:`~assay.Trace` with the cursor of the next page."""

    def __init__(self, traces: list[Trace], next_page_token: str | None) -> None:
        super().__init__(traces)
        self.next_page_token = next_page_token
