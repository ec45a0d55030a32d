"""Conversions between OpenTelemetry ``ReadableSpan`` and assay's records and models."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status, StatusCode

from assay.store.base import SpanRecord
from assay.tracing.models import Span, SpanEvent
from assay.tracing.serialize import dumps
from assay.tracing.types import (
    RESERVED_KEYS,
    RESOURCE_EXPERIMENT,
    SPAN_INPUTS,
    SPAN_JSON_ATTRIBUTES,
    SPAN_LOCAL_ROOT,
    SPAN_OUTPUTS,
    SPAN_TYPE,
    TRACE_EXPERIMENT,
    TRACE_METADATA,
    TRACE_NAME,
    TRACE_RUN_ID,
    TRACE_TAGS,
)

__all__ = ["readable_from_model", "to_record", "to_span_model"]

_STATUS = {StatusCode.UNSET: "OK", StatusCode.OK: "OK", StatusCode.ERROR: "ERROR"}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _json_dict(text: Any) -> dict[str, str]:
    if not isinstance(text, str):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _raw_attributes(span: ReadableSpan) -> Any:
    # ReadableSpan.attributes wraps its BoundedAttributes in a MappingProxy; reading
    # the plain dict underneath is several times faster on the export path.
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    return inner if isinstance(inner, dict) else (span.attributes or {})


def _split_attributes(span: ReadableSpan) -> tuple[dict[str, Any], dict[str, Any]]:
    """(assay's own keys, the user's attributes as plain JSON-safe values)."""
    own: dict[str, Any] = {}
    user: dict[str, Any] = {}
    for key, value in _raw_attributes(span).items():
        if key in RESERVED_KEYS:
            own[key] = value
        else:
            user[key] = list(value) if isinstance(value, tuple) else value
    json_keys = own.get(SPAN_JSON_ATTRIBUTES)
    if json_keys:
        for key in json_keys:
            if isinstance(user.get(key), str):
                with contextlib.suppress(ValueError):
                    user[key] = json.loads(user[key])
    return own, user


def _events(span: ReadableSpan) -> list[dict[str, Any]]:
    events = span._events if hasattr(span, "_events") else span.events
    if not events:
        return []
    return [{"name": e.name, "timestamp_ns": e.timestamp,
             "attributes": {k: _plain(v) for k, v in (e.attributes or {}).items()}}
            for e in events]


_resource_experiments: dict[int, tuple[Any, str | None]] = {}


def _experiment(span: ReadableSpan, own: dict[str, Any], default: str) -> str:
    value = own.get(TRACE_EXPERIMENT)
    if isinstance(value, str) and value:
        return value
    resource = span.resource
    cached = _resource_experiments.get(id(resource))
    if cached is None or cached[0] is not resource:
        found = resource.attributes.get(RESOURCE_EXPERIMENT) if resource is not None else None
        cached = (resource, found if isinstance(found, str) and found else None)
        if len(_resource_experiments) > 64:
            _resource_experiments.clear()
        _resource_experiments[id(resource)] = cached
    return cached[1] or default


def to_record(span: ReadableSpan, default_experiment: str = "default") -> SpanRecord:
    """The store's record of an ended OpenTelemetry span."""
    ctx = span.context
    parent = span.parent
    own, user = _split_attributes(span)
    if parent is None:
        rank = 2
    elif parent.is_remote or own.get(SPAN_LOCAL_ROOT):
        rank = 1
    else:
        rank = 0
    status = span.status
    name = own.get(TRACE_NAME)
    tags = own.get(TRACE_TAGS)
    meta = own.get(TRACE_METADATA)
    run_id = own.get(TRACE_RUN_ID)
    start = span.start_time or 0
    return SpanRecord(
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        None if parent is None else format(parent.span_id, "016x"),
        span.name,
        str(own.get(SPAN_TYPE) or "UNKNOWN"),
        start,
        span.end_time or start,
        _STATUS[status.status_code],
        status.description or None,
        own.get(SPAN_INPUTS),
        own.get(SPAN_OUTPUTS),
        user,
        _events(span),
        _experiment(span, own, default_experiment),
        rank,
        name if isinstance(name, str) else None,
        _json_dict(tags) if tags else {},
        _json_dict(meta) if meta else {},
        run_id if isinstance(run_id, str) and run_id else None,
    )


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def to_span_model(span: ReadableSpan) -> Span:
    """The assay :class:`Span` of an ended OpenTelemetry span (what ``redact`` sees)."""
    rec = to_record(span)
    return Span(
        trace_id=rec.trace_id, span_id=rec.span_id, parent_id=rec.parent_id, name=rec.name,
        span_type=rec.span_type, start_time_ns=rec.start_time_ns, end_time_ns=rec.end_time_ns,
        status=rec.status, status_message=rec.status_message,
        inputs=_loads(rec.inputs_json), outputs=_loads(rec.outputs_json),
        attributes=rec.attributes, events=[SpanEvent(**e) for e in rec.events],
    )


def readable_from_model(model: Span, original: ReadableSpan) -> ReadableSpan:
    """A copy of ``original`` carrying the inputs, outputs, attributes, name and events
    of ``model`` (after ``redact`` changed them)."""
    from assay.tracing.span import attribute_value

    own = {k: v for k, v in (original.attributes or {}).items()
           if k in RESERVED_KEYS and k not in (SPAN_INPUTS, SPAN_OUTPUTS, SPAN_JSON_ATTRIBUTES)}
    attrs: dict[str, Any] = dict(own)
    json_keys: set[str] = set()
    for key, value in (model.attributes or {}).items():
        attrs[key] = attribute_value(key, value, json_keys)
    if json_keys:
        attrs[SPAN_JSON_ATTRIBUTES] = tuple(sorted(json_keys))
    attrs[SPAN_TYPE] = model.span_type
    if model.inputs is not None:
        attrs[SPAN_INPUTS] = dumps(model.inputs, 10**9)
    if model.outputs is not None:
        attrs[SPAN_OUTPUTS] = dumps(model.outputs, 10**9)
    events = [Event(e.name, {k: attribute_value(k, v, None) for k, v in e.attributes.items()},
                    e.timestamp_ns) for e in model.events]
    status = original.status
    if model.status == "ERROR" and status.status_code is not StatusCode.ERROR:
        status = Status(StatusCode.ERROR, model.status_message)
    return ReadableSpan(
        name=model.name, context=original.context, parent=original.parent,
        resource=original.resource, attributes=attrs, events=events, links=original.links,
        kind=original.kind, status=status, start_time=original.start_time,
        end_time=original.end_time, instrumentation_scope=original.instrumentation_scope,
    )
