"""A page of traces from the store's rows: assessments and spans read by trace id
(tags and metadata come with the trace row) and turned into :class:`~assay.Trace`
models; one assessment by its id.

Reads go through the driver's own cursor with fixed SQL (``?`` on SQLite, ``%s``
on PostgreSQL): a page of 100 traces brings about 1,000 spans, and a generic
result's per-row work would cost more than the read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import from_json
from sqlalchemy import Connection

from assay.tracing.models import Assessment, Span, SpanEvent, Trace, TraceInfo

__all__ = ["assemble", "stored_assessment", "without_parallel_workers"]

_M = TypeVar("_M", bound=BaseModel)


def without_parallel_workers(conn: Connection) -> None:
    """Let the rest of this transaction's statements run without parallel workers
    (PostgreSQL; elsewhere nothing).

    A page stops at its size and reads a few hundred rows by key: PostgreSQL's
    planner may still start workers for it, at several milliseconds each. Measured
    at 100,000 traces on 2 cores, pages interleaved: the span attribute page 8.2
    rather than 19.6 ms, the numeric range 14.0 rather than 35.2, full text 38.7
    rather than 61.4; reading the tags and metadata of 100 traces by key, 2 ms
    rather than 8.
    """
    if conn.dialect.name == "postgresql":
        _fetch(conn, "SET LOCAL max_parallel_workers_per_gather = 0", [])


def assemble(conn: Connection, rows: Sequence[Sequence[Any]],
             include_spans: bool) -> list[Trace]:
    """The traces of a page: ``rows`` hold the columns ``plans.PAGE_COLUMNS`` (in
    that order; more may follow), and each trace gets its assessments and, with
    ``include_spans``, spans (inside a transaction the caller has set
    :func:`without_parallel_workers` for).
    """
    ids = [r[0] for r in rows]
    if not ids:
        return []
    spans: dict[str, list[Span]] = {i: [] for i in ids}
    assessments: dict[str, list[Assessment]] = {i: [] for i in ids}
    pg = conn.dialect.name == "postgresql"
    for chunk in _chunks(ids, 500):
        where, params = _in_ids(chunk, pg)
        for row in _fetch(conn, f"SELECT {_ASSESSMENT_SQL_COLUMNS} FROM assessments "
                               f"WHERE {where} ORDER BY created_time_ms, assessment_id",
                         params):
            assessments[row[1]].append(_assessment_model(row))
        if include_spans:
            for row in _fetch(conn, f"SELECT {_SPAN_SQL_COLUMNS} FROM spans WHERE {where}",
                             params):
                spans[row[0]].append(_span_model(row))
    out = []
    for (tid, experiment, name, state, timestamp_ms, execution_time_ms, request_preview,
         response_preview, run_id, tags_json, metadata_json, *_) in rows:
        info = _trusted(TraceInfo, {
            "trace_id": tid, "experiment": experiment, "name": name, "state": state,
            "timestamp_ms": timestamp_ms, "execution_time_ms": execution_time_ms,
            "request_preview": request_preview, "response_preview": response_preview,
            "tags": _pairs(tags_json), "metadata": _pairs(metadata_json),
            "assessments": assessments[tid],
            "run_id": run_id})
        span_list = spans[tid]
        span_list.sort(key=_span_order)
        out.append(_trusted(Trace, {"info": info, "spans": span_list}))
    return out


def stored_assessment(conn: Connection, trace_id: str,
                      assessment_id: str) -> Assessment | None:
    """The assessment with this id on this trace, or ``None``."""
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    rows = _fetch(conn, f"SELECT {_ASSESSMENT_SQL_COLUMNS} FROM assessments "
                        f"WHERE assessment_id = {mark} AND trace_id = {mark}",
                  [assessment_id, trace_id])
    return _assessment_model(rows[0]) if rows else None


_new = object.__new__
_setattr = object.__setattr__


def _trusted(cls: type[_M], values: dict[str, Any]) -> _M:
    """A ``cls`` holding ``values``, one for each of its fields, without pydantic's
    validation: what the store holds was validated when it was written, and is
    read back as it was (a span costs 2.5 rather than 5.4 µs to build).
    ``tests/store/test_pages.py`` checks that these equal validated models."""
    obj = _new(cls)
    _setattr(obj, "__dict__", values)
    _setattr(obj, "__pydantic_fields_set__", set(values))
    _setattr(obj, "__pydantic_extra__", None)
    _setattr(obj, "__pydantic_private__", None)
    return obj


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _pairs(text: str) -> dict[str, str]:
    """``traces.tags_json``/``metadata_json`` as a dict."""
    return {} if text == "{}" else from_json(text)


def _loads(text: str | None) -> Any:
    """A stored JSON value (text that is not JSON comes back as it is)."""
    if text is None:
        return None
    try:
        return from_json(text)
    except ValueError:
        return text


_ASSESSMENT_FIELDS = ("assessment_id", "trace_id", "name", "kind", "value_json", "rationale",
                      "source_type", "source_id", "span_id", "metadata_json", "error",
                      "created_time_ms", "overridden_by")
_ASSESSMENT_SQL_COLUMNS = ", ".join(_ASSESSMENT_FIELDS)
_SPAN_FIELDS = ("trace_id", "span_id", "parent_id", "name", "span_type", "start_time_ns",
                "end_time_ns", "status", "status_message", "inputs", "outputs", "attributes",
                "events")
_SPAN_SQL_COLUMNS = ", ".join(_SPAN_FIELDS)


def _in_ids(ids: list[str], pg: bool) -> tuple[str, list[Any]]:
    """``trace_id`` among ``ids``, as SQL for the driver and its parameters."""
    if pg:
        return "trace_id = ANY(%s)", [ids]
    return f"trace_id IN ({', '.join('?' * len(ids))})", list(ids)


def _fetch(conn: Connection, sql: str, params: Any) -> Sequence[Any]:
    """All rows of a read, straight from the driver's cursor (inside ``conn``'s
    transaction)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []
    finally:
        cursor.close()


def _span_order(span: Span) -> tuple[int, str]:
    return span.start_time_ns, span.span_id


def _assessment_model(row: Any) -> Assessment:
    (assessment_id, trace_id, name, kind, value_json, rationale, source_type, source_id,
     span_id, metadata_json, error, created_time_ms, overridden_by) = row
    return _trusted(Assessment, {
        "assessment_id": assessment_id, "trace_id": trace_id, "name": name, "kind": kind,
        "value": _loads(value_json), "rationale": rationale, "source_type": source_type,
        "source_id": source_id, "span_id": span_id, "metadata": _loads(metadata_json) or {},
        "error": error, "created_time_ms": created_time_ms, "overridden_by": overridden_by})


def _span_model(row: Any) -> Span:
    (trace_id, span_id, parent_id, name, span_type, start_time_ns, end_time_ns, status,
     status_message, inputs, outputs, attributes, events) = row
    return _trusted(Span, {
        "trace_id": trace_id, "span_id": span_id, "parent_id": parent_id, "name": name,
        "span_type": span_type, "start_time_ns": start_time_ns, "end_time_ns": end_time_ns,
        "status": status, "status_message": status_message, "inputs": _loads(inputs),
        "outputs": _loads(outputs),
        "attributes": (_loads(attributes) or {}) if attributes != "{}" else {},
        "events": [] if events == "[]" else [_event_model(e) for e in (_loads(events) or [])],
    })


def _event_model(data: dict[str, Any]) -> SpanEvent:
    return _trusted(SpanEvent, {"name": data["name"], "timestamp_ns": data["timestamp_ns"],
                                "attributes": data.get("attributes") or {}})
