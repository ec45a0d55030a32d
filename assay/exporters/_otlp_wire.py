"""OTLP/protobuf: OpenTelemetry ``ReadableSpan`` to ``ExportTraceServiceRequest``, and back.

Encoding groups spans by resource, then by instrumentation scope (by identity:
spans of one provider and tracer share those objects). Ids travel as bytes,
times as nanoseconds since the epoch; span kind, status, events, links,
attributes (arrays and maps included) and the dropped counts are kept.

With ``conventions`` (the default), each span also carries the attributes that
other tools read (see :mod:`assay.exporters._conventions`), computed from its
own without changing the span in memory. The keys so added are listed in the
span attribute ``assay.otlp.derived``, so that :func:`decode_request` can take
them off again and give back the spans as they were before encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from assay.exporters._conventions import derive, lift

__all__ = ["DERIVED_KEYS", "decode_request", "encode_request"]

#: The span attribute listing the keys that encoding added (and decoding removes).
DERIVED_KEYS = "assay.otlp.derived"

# SpanFlags of trace.proto: bits 0-7 the W3C trace flags; bit 8 says whether bit 9
# is known, bit 9 that the parent (of a span) or the linked span (of a link) is remote.
_TRACE_FLAGS = 0xFF
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_STATUS_OUT = {
    StatusCode.UNSET: PbStatus.STATUS_CODE_UNSET,
    StatusCode.OK: PbStatus.STATUS_CODE_OK,
    StatusCode.ERROR: PbStatus.STATUS_CODE_ERROR,
}
_STATUS_IN = {v: k for k, v in _STATUS_OUT.items()}
_KIND_OUT = {
    SpanKind.INTERNAL: PbSpan.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PbSpan.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PbSpan.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: PbSpan.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: PbSpan.SPAN_KIND_CONSUMER,
}
_KIND_IN = {v: k for k, v in _KIND_OUT.items()}


# -- encoding --------------------------------------------------------------------------


def encode_request(spans: Iterable[ReadableSpan], *,
                   conventions: bool = True) -> ExportTraceServiceRequest:
    """The OTLP request carrying ``spans``."""
    by_resource: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None,
                                                            list[ReadableSpan]]]]] = {}
    for span in spans:
        resource = span.resource
        scopes = by_resource.setdefault(id(resource), (resource, {}))[1]
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(span)
    request = ExportTraceServiceRequest()
    for resource, scopes in by_resource.values():
        resource_spans = request.resource_spans.add(schema_url=resource.schema_url or "")
        _fill(resource_spans.resource.attributes, resource.attributes)
        for scope, members in scopes.values():
            scope_spans = resource_spans.scope_spans.add()
            if scope is not None:
                scope_spans.schema_url = scope.schema_url or ""
                scope_spans.scope.name = scope.name
                scope_spans.scope.version = scope.version or ""
                _fill(scope_spans.scope.attributes, getattr(scope, "attributes", None))
            add = scope_spans.spans.add
            for span in members:
                _fill_span(add(), span, conventions)
    return request


def _fill_span(pb: PbSpan, span: ReadableSpan, conventions: bool) -> None:
    # Fields are set in place: building messages apart and copying them in costs twice.
    ctx = span.context
    assert ctx is not None, "an ended SDK span always has a context"
    parent = span.parent
    pb.trace_id = ctx.trace_id.to_bytes(16, "big")
    pb.span_id = ctx.span_id.to_bytes(8, "big")
    if ctx.trace_state:
        pb.trace_state = ctx.trace_state.to_header()
    flags = int(ctx.trace_flags) | _HAS_IS_REMOTE
    if parent is not None:
        pb.parent_span_id = parent.span_id.to_bytes(8, "big")
        if parent.is_remote:
            flags |= _IS_REMOTE
    pb.flags = flags
    pb.name = span.name
    pb.kind = _KIND_OUT[span.kind]
    pb.start_time_unix_nano = span.start_time or 0
    pb.end_time_unix_nano = span.end_time or 0
    attributes: Mapping[str, Any] = span.attributes or {}
    _fill(pb.attributes, attributes)
    if conventions:
        added = derive(attributes)
        if added:
            _fill(pb.attributes, added)
            _set(pb.attributes.add(key=DERIVED_KEYS).value, tuple(added))
    pb.dropped_attributes_count = span.dropped_attributes
    for event in span.events:
        pb_event = pb.events.add(time_unix_nano=event.timestamp, name=event.name,
                                 dropped_attributes_count=event.dropped_attributes)
        _fill(pb_event.attributes, event.attributes)
    pb.dropped_events_count = span.dropped_events
    for link in span.links:
        link_ctx = link.context
        pb_link = pb.links.add(
            trace_id=link_ctx.trace_id.to_bytes(16, "big"),
            span_id=link_ctx.span_id.to_bytes(8, "big"),
            trace_state=link_ctx.trace_state.to_header() if link_ctx.trace_state else "",
            dropped_attributes_count=link.dropped_attributes,
            flags=int(link_ctx.trace_flags) | _HAS_IS_REMOTE | (
                _IS_REMOTE if link_ctx.is_remote else 0))
        _fill(pb_link.attributes, link.attributes)
    pb.dropped_links_count = span.dropped_links
    status = span.status
    pb.status.code = _STATUS_OUT[status.status_code]
    if status.description:
        pb.status.message = status.description


def _fill(target: Any, attributes: Attributes | Mapping[str, Any]) -> None:
    """Append ``attributes`` to a repeated ``KeyValue`` field."""
    if attributes:
        add = target.add
        for key, value in attributes.items():
            _set(add(key=key).value, value)


def _set(target: AnyValue, value: Any) -> None:
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, (bytes, bytearray)):
        target.bytes_value = bytes(value)
    elif isinstance(value, Mapping):
        target.kvlist_value.SetInParent()
        _fill(target.kvlist_value.values, value)
    elif isinstance(value, Sequence):
        target.array_value.SetInParent()
        add = target.array_value.values.add
        for item in value:
            _set(add(), item)
    elif value is not None:
        target.string_value = str(value)


# -- decoding --------------------------------------------------------------------------


def decode_request(data: bytes | ExportTraceServiceRequest, *,
                   raw: bool = False) -> list[ReadableSpan]:
    """The spans of an OTLP request (its protobuf bytes or the message).

    By default the convention keys that encoding added are taken off again, and
    spans from other instrumentations get assay's keys from the conventions they
    carry (``input.value``, ``openinference.span.kind``, ...). With ``raw`` the
    attributes are exactly those on the wire.

    Raises:
        google.protobuf.message.DecodeError: ``data`` is not a valid request.
    """
    if isinstance(data, ExportTraceServiceRequest):
        request = data
    else:
        request = ExportTraceServiceRequest()
        request.ParseFromString(data)
    spans: list[ReadableSpan] = []
    for resource_spans in request.resource_spans:
        resource = Resource(_attributes(resource_spans.resource.attributes),
                            resource_spans.schema_url or None)
        for scope_spans in resource_spans.scope_spans:
            pb_scope = scope_spans.scope
            scope = InstrumentationScope(
                pb_scope.name, pb_scope.version or None, scope_spans.schema_url or None,
                _attributes(pb_scope.attributes) or None)
            spans.extend(_readable(pb, resource, scope, raw) for pb in scope_spans.spans)
    return spans


def _readable(pb: PbSpan, resource: Resource, scope: InstrumentationScope,
              raw: bool) -> ReadableSpan:
    trace_id = int.from_bytes(pb.trace_id, "big")
    flags = TraceFlags(pb.flags & _TRACE_FLAGS)
    trace_state = _trace_state(pb.trace_state)
    context = SpanContext(trace_id, int.from_bytes(pb.span_id, "big"), is_remote=False,
                          trace_flags=flags, trace_state=trace_state)
    parent = None
    if pb.parent_span_id:
        # OTLP carries no flags or trace state of the parent: a child inherits both.
        parent = SpanContext(trace_id, int.from_bytes(pb.parent_span_id, "big"),
                             is_remote=bool(pb.flags & _IS_REMOTE), trace_flags=flags,
                             trace_state=trace_state)
    attributes = _attributes(pb.attributes)
    if not raw:
        attributes = _undo_conventions(attributes)
    events: Sequence[Event] = [
        Event(e.name, _bounded(_attributes(e.attributes), e.dropped_attributes_count),
              e.time_unix_nano) for e in pb.events]
    if pb.dropped_events_count:
        events = _bounded_list(events, pb.dropped_events_count)
    links: Sequence[Link] = [_readable_link(link) for link in pb.links]
    if pb.dropped_links_count:
        links = _bounded_list(links, pb.dropped_links_count)
    return ReadableSpan(
        name=pb.name, context=context, parent=parent, resource=resource,
        attributes=_bounded(attributes, pb.dropped_attributes_count), events=events,
        links=links, kind=_KIND_IN.get(pb.kind, SpanKind.INTERNAL),
        status=Status(_STATUS_IN.get(pb.status.code, StatusCode.UNSET),
                      pb.status.message or None),
        start_time=pb.start_time_unix_nano, end_time=pb.end_time_unix_nano,
        instrumentation_scope=scope,
    )


def _undo_conventions(attributes: dict[str, Any]) -> dict[str, Any]:
    derived = attributes.pop(DERIVED_KEYS, None)
    if isinstance(derived, tuple):
        for key in derived:
            attributes.pop(key, None)
        return attributes
    return lift(attributes) or attributes


def _readable_link(pb: PbSpan.Link) -> Link:
    context = SpanContext(int.from_bytes(pb.trace_id, "big"), int.from_bytes(pb.span_id, "big"),
                          is_remote=bool(pb.flags & _IS_REMOTE),
                          trace_flags=TraceFlags(pb.flags & _TRACE_FLAGS),
                          trace_state=_trace_state(pb.trace_state))
    return Link(context, _bounded(_attributes(pb.attributes), pb.dropped_attributes_count))


def _trace_state(header: str) -> TraceState | None:
    return TraceState.from_header([header]) if header else None


def _bounded(attributes: dict[str, Any], dropped: int) -> Any:
    """Attributes that report ``dropped`` as the SDK's own do."""
    bounded = BoundedAttributes(maxlen=None, attributes=attributes, immutable=True)
    bounded.dropped = dropped
    return bounded


def _bounded_list(items: Sequence[Any], dropped: int) -> BoundedList:
    bounded: BoundedList = BoundedList(None)
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded


def _attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value
    return None
