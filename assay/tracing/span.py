"""Live spans: :class:`LiveSpan`, ``start_span`` and the begin/end steps shared with ``@trace``."""

from __future__ import annotations

import contextvars
import json
import sys
import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util import types as otel_types

from assay.tracing import _runtime
from assay.tracing._runtime import internal_error
from assay.tracing.context import ACTIVE_RUN
from assay.tracing.serialize import dumps
from assay.tracing.types import (
    EVENT_FIRST_ITEM,
    SPAN_INPUTS,
    SPAN_INTERRUPTED,
    SPAN_JSON_ATTRIBUTES,
    SPAN_LOCAL_ROOT,
    SPAN_OUTPUTS,
    SPAN_STOPPED_EARLY,
    SPAN_TYPE,
    TRACE_METADATA,
    TRACE_NAME,
    TRACE_RUN_ID,
    TRACE_TAGS,
    SpanStatus,
    SpanType,
)

__all__ = ["LiveSpan", "get_current_span", "get_last_trace_id", "start_span",
           "update_current_trace"]

_PRIMITIVES = (str, bool, int, float)
_LAST_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "assay_last_trace_id", default=None)
_LAST_IN_THREAD = threading.local()
_INVALID = trace_api.INVALID_SPAN


def attribute_value(key: str, value: Any, json_keys: set[str] | None) -> Any:
    """An OpenTelemetry-valid attribute value; other values become JSON text."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(value)
    if json_keys is not None:
        json_keys.add(key)
    return dumps(value, 64_000)


class LiveSpan(trace_api.Span):
    """A span that is still running, as yielded by ``start_span`` or ``get_current_span()``.

    It is a real OpenTelemetry span: instrumentations running inside it make
    their spans its children. Everything here is safe to call on a span that
    is not recorded (sampled out or tracing disabled): it does nothing then.
    """

    __slots__ = ("_json_keys", "_max_bytes", "_root", "_span", "_trace_metadata",
                 "_trace_tags", "span_type")

    def __init__(self, span: trace_api.Span, root: LiveSpan | None, max_bytes: int,
                 span_type: str = "UNKNOWN") -> None:
        self._span = span
        self._root = root
        self._max_bytes = max_bytes
        self._json_keys: set[str] | None = None
        self._trace_tags: dict[str, str] | None = None
        self._trace_metadata: dict[str, str] | None = None
        self.span_type = span_type

    # -- identity -------------------------------------------------------------
    @property
    def trace_id(self) -> str:
        """The OpenTelemetry trace id, 32 lowercase hex characters."""
        return format(self._span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        """The OpenTelemetry span id, 16 lowercase hex characters."""
        return format(self._span.get_span_context().span_id, "016x")

    @property
    def name(self) -> str | None:
        return getattr(self._span, "name", None)

    @property
    def local_root(self) -> LiveSpan:
        """The outermost assay span of this trace in this process."""
        return self._root or self

    def get_span_context(self) -> trace_api.SpanContext:
        return self._span.get_span_context()

    def is_recording(self) -> bool:
        return self._span.is_recording()

    # -- recording ------------------------------------------------------------
    def set_inputs(self, inputs: Any) -> None:
        """Record the span's inputs (serialised now, so later mutation does not show)."""
        if self._span.is_recording():
            self._span.set_attribute(SPAN_INPUTS, dumps(inputs, self._max_bytes))

    def set_outputs(self, outputs: Any) -> None:
        """Record the span's outputs (serialised now)."""
        if self._span.is_recording():
            self._span.set_attribute(SPAN_OUTPUTS, dumps(outputs, self._max_bytes))

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute. Values that OpenTelemetry cannot carry are kept as JSON."""
        if not self._span.is_recording():
            return
        try:
            if self._json_keys is None:
                self._json_keys = set()
            before = len(self._json_keys)
            self._span.set_attribute(key, attribute_value(key, value, self._json_keys))
            if len(self._json_keys) != before:
                self._span.set_attribute(SPAN_JSON_ATTRIBUTES, tuple(sorted(self._json_keys)))
        except Exception as exc:
            internal_error("LiveSpan.set_attribute", exc)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_span_type(self, span_type: str | SpanType) -> None:
        """Change the span's type (LLM, TOOL, RETRIEVER, ... or any string)."""
        self.span_type = str(span_type)
        if self._span.is_recording():
            self._span.set_attribute(SPAN_TYPE, self.span_type)

    def add_event(self, name: str, attributes: otel_types.Attributes = None,
                  timestamp: int | None = None) -> None:
        """Record an event now (or at ``timestamp``, ns since the epoch)."""
        if not self._span.is_recording():
            return
        try:
            clean = None
            if attributes:
                clean = {k: attribute_value(k, v, None) for k, v in attributes.items()}
            rt = _runtime._STATE.rt
            when = timestamp if timestamp is not None else (rt.clock() if rt else None)
            self._span.add_event(name, clean, when)
        except Exception as exc:
            internal_error("LiveSpan.add_event", exc)

    def set_status(self, status: str | SpanStatus | Status | StatusCode,
                   description: str | None = None) -> None:
        """Set the status: ``"OK"``, ``"ERROR"`` (with a description) or ``"UNSET"``."""
        if isinstance(status, Status):
            self._span.set_status(status)
            return
        if isinstance(status, StatusCode):
            code = status
        else:
            try:
                code = StatusCode[str(status).upper()]
            except KeyError:
                raise ValueError(
                    f"unknown span status {status!r}: use 'OK', 'ERROR' or 'UNSET'") from None
        self._span.set_status(Status(code, description if code is StatusCode.ERROR else None))

    def record_exception(self, exception: BaseException, attributes: otel_types.Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        """Add an ``exception`` event (type, message, stack trace) per OpenTelemetry."""
        if self._span.is_recording():
            attrs = _exception_attributes(exception, escaped)
            if attributes:
                attrs.update(attributes)
            self.add_event("exception", attrs, timestamp)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def add_link(self, context: trace_api.SpanContext,
                 attributes: otel_types.Attributes = None) -> None:
        self._span.add_link(context, attributes)

    def end(self, end_time: int | None = None) -> None:
        """End the span. ``start_span`` and ``@trace`` do this for you."""
        self._span.end(end_time)

    def __repr__(self) -> str:
        return (f"LiveSpan(name={self.name!r}, type={self.span_type}, "
                f"trace_id={self.trace_id}, span_id={self.span_id})")


_NOOP = LiveSpan(_INVALID, None, 0)

# -- begin / end, shared by start_span and @trace -------------------------------------


def begin(rt: _runtime.Runtime, name: str, span_type: str, attributes: dict[str, Any],
          inputs_json: str | None) -> tuple[LiveSpan, Any]:
    """Start a span as the current one; returns it and the context token."""
    ctx = otel_context.get_current()
    parent = trace_api.get_current_span(ctx)
    attrs = attributes
    if isinstance(parent, LiveSpan):
        root = parent._root or parent
        if inputs_json is not None:
            attrs = dict(attrs)
            attrs[SPAN_INPUTS] = inputs_json
    else:
        root = None
        pctx = parent.get_span_context()
        attrs = dict(attrs)
        if inputs_json is not None:
            attrs[SPAN_INPUTS] = inputs_json
        if pctx.is_valid and not pctx.is_remote:
            attrs[SPAN_LOCAL_ROOT] = True
        run = ACTIVE_RUN.get()
        if run is not None:
            attrs[TRACE_RUN_ID] = run.run_id
    assert rt.tracer is not None
    span = rt.tracer.start_span(name, ctx, attributes=attrs, start_time=rt.clock())
    live = LiveSpan(span, root, rt.max_value_bytes, span_type)
    token = otel_context.attach(trace_api.set_span_in_context(live, ctx))
    return live, token


def finish(rt: _runtime.Runtime, live: LiveSpan, token: Any) -> None:
    """End ``live`` (if still running) and make its parent current again."""
    try:
        live._span.end(rt.clock())
        if live._root is None:
            trace_id = live._span.get_span_context().trace_id
            _LAST_TRACE_ID.set(trace_id)
            _LAST_IN_THREAD.value = trace_id
    finally:
        if token is not None:
            otel_context.detach(token)


def set_outputs_json(live: LiveSpan, outputs: Any) -> None:
    span = live._span
    if span.is_recording():
        span.set_attribute(SPAN_OUTPUTS, dumps(outputs, live._max_bytes))


def _exception_attributes(exc: BaseException, escaped: bool) -> dict[str, Any]:
    """OpenTelemetry's ``exception`` event attributes, computed without trusting ``str(exc)``."""
    cls = type(exc)
    module = cls.__module__
    qualname = cls.__qualname__
    try:
        message = str(exc)
    except Exception:
        message = f"<{qualname}: str() failed>"
    stack = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return {
        "exception.type": (qualname if module in ("builtins", "__main__")
                           else f"{module}.{qualname}"),
        "exception.message": message,
        "exception.stacktrace": stack,
        "exception.escaped": escaped,
    }


def record_error(live: LiveSpan, exc: BaseException) -> None:
    """Mark the span ERROR with an ``exception`` event; never raises."""
    span = live._span
    if not span.is_recording():
        return
    try:
        attrs = _exception_attributes(exc, True)
        rt = _runtime._STATE.rt
        span.add_event("exception", attrs, rt.clock() if rt is not None else None)
        message = f"{type(exc).__name__}: {attrs['exception.message']}"
        span.set_status(Status(StatusCode.ERROR, message))
    except Exception as err:
        internal_error("record_error", err)


def record_interrupt(live: LiveSpan, exc: BaseException) -> None:
    """A control-flow exception (cancellation, Ctrl-C, generator close) is not an error."""
    span = live._span
    if span.is_recording():
        name = "stopped_early" if isinstance(exc, GeneratorExit) else type(exc).__name__
        if isinstance(exc, GeneratorExit):
            span.set_attribute(SPAN_STOPPED_EARLY, True)
        else:
            span.set_attribute(SPAN_INTERRUPTED, name)


def record_first_item(rt: _runtime.Runtime, live: LiveSpan) -> None:
    span = live._span
    if span.is_recording():
        span.add_event(EVENT_FIRST_ITEM, None, rt.clock())


# -- the public context manager and accessors -----------------------------------------


class _SpanScope:
    """The context manager behind ``start_span``."""

    __slots__ = ("_attributes", "_inputs", "_live", "_name", "_rt", "_span_type", "_token")

    def __init__(self, name: str, span_type: str, attributes: dict[str, Any],
                 inputs: Any) -> None:
        self._name = name
        self._span_type = span_type
        self._attributes = attributes
        self._inputs = inputs
        self._live: LiveSpan | None = None
        self._token: object | None = None
        self._rt: _runtime.Runtime | None = None

    def __enter__(self) -> LiveSpan:
        rt = _runtime._STATE.rt or _runtime.current()
        if not rt.enabled:
            return _NOOP
        try:
            attrs: dict[str, Any] = {SPAN_TYPE: self._span_type}
            json_keys: set[str] = set()
            for key, value in self._attributes.items():
                attrs[key] = attribute_value(key, value, json_keys)
            if json_keys:
                attrs[SPAN_JSON_ATTRIBUTES] = tuple(sorted(json_keys))
            inputs = None if self._inputs is None else dumps(self._inputs, rt.max_value_bytes)
            self._live, self._token = begin(rt, self._name, self._span_type, attrs, inputs)
            if json_keys:
                self._live._json_keys = json_keys
            self._rt = rt
            return self._live
        except Exception as exc:
            internal_error("start_span", exc)
            return _NOOP

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        live, rt = self._live, self._rt
        if live is None or rt is None:
            return
        self._live = None
        try:
            if exc is not None:
                if isinstance(exc, Exception):
                    record_error(live, exc)
                else:
                    record_interrupt(live, exc)
        finally:
            finish(rt, live, self._token)


def start_span(name: str, span_type: str | SpanType = SpanType.UNKNOWN,
               attributes: Mapping[str, Any] | None = None, *,
               inputs: Any = None) -> _SpanScope:
    """Open a span around a block of code, as a child of the current span.

    Args:
        name: the span's name.
        span_type: LLM, CHAT_MODEL, RETRIEVER, TOOL, ... (:class:`SpanType`) or any string.
        attributes: initial attributes; values OpenTelemetry cannot carry are kept as JSON.
        inputs: the span's inputs, if known up front (``span.set_inputs`` works too).

    Returns:
        A context manager yielding a :class:`LiveSpan`. An exception leaving the
        block marks the span ERROR and propagates unchanged.

    Example:
        >>> with assay.start_span("call_llm", span_type="LLM") as span:
        ...     span.set_inputs({"prompt": "hi"})
        ...     span.set_outputs("hello")
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"start_span(name=...) needs a non-empty string, got {name!r}")
    return _SpanScope(name, str(span_type), dict(attributes or {}), inputs)


def get_current_span() -> LiveSpan | None:
    """The innermost running assay span in this thread or task, or ``None``."""
    span = trace_api.get_current_span()
    return span if isinstance(span, LiveSpan) and span is not _NOOP else None


def get_last_trace_id() -> str | None:
    """The trace id of the last root span that finished in this task or thread.

    Inside an asyncio task: the last one finished in that task (or inherited
    by it). Elsewhere: the last one finished in this thread, including inside
    an ``asyncio.run()`` that has returned.
    """
    asyncio = sys.modules.get("asyncio")
    in_task = asyncio is not None and asyncio.events._get_running_loop() is not None
    value = _LAST_TRACE_ID.get() if in_task else getattr(_LAST_IN_THREAD, "value", None)
    return None if value is None else format(value, "032x")


def update_current_trace(*, tags: Mapping[str, Any] | None = None,
                         metadata: Mapping[str, Any] | None = None,
                         name: str | None = None, session_id: str | None = None,
                         user: str | None = None) -> None:
    """Add tags and metadata to the trace that is running, or rename it.

    Values are stored as strings. ``session_id`` and ``user`` are kept as the
    metadata keys ``session_id`` and ``user``. Called with no trace running, it
    logs a warning and does nothing.

    Example:
        >>> @assay.trace
        ... def handle(request):
        ...     assay.update_current_trace(tags={"route": "/chat"}, user=request.user)
    """
    span = get_current_span()
    if span is None:
        _runtime.log.warning("assay.update_current_trace() called with no trace running; ignored")
        return
    root = span.local_root
    if not root.is_recording():
        return
    meta = dict(metadata or {})
    if session_id is not None:
        meta["session_id"] = session_id
    if user is not None:
        meta["user"] = user
    if tags:
        root._trace_tags = {**(root._trace_tags or {}), **{str(k): str(v) for k, v in tags.items()}}
        root._span.set_attribute(TRACE_TAGS, json.dumps(root._trace_tags))
    if meta:
        root._trace_metadata = {**(root._trace_metadata or {}),
                                **{str(k): str(v) for k, v in meta.items()}}
        root._span.set_attribute(TRACE_METADATA, json.dumps(root._trace_metadata))
    if name is not None:
        root._span.set_attribute(TRACE_NAME, str(name))

