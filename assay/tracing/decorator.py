"""``@assay.trace``: a span around every call of a function, of any of the four kinds."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context

from assay.tracing import _runtime
from assay.tracing._runtime import internal_error
from assay.tracing.serialize import dumps, to_jsonable
from assay.tracing.span import (
    LiveSpan,
    attribute_value,
    begin,
    finish,
    record_error,
    record_first_item,
    record_interrupt,
    set_outputs_json,
)
from assay.tracing.types import SPAN_JSON_ATTRIBUTES, SPAN_TYPE, SpanType

__all__ = ["trace"]

F = TypeVar("F", bound=Callable[..., Any])
_EMPTY = inspect.Parameter.empty
_MAX_ITEMS = 10_000  # generator items kept for the outputs; the rest are counted


class _Binder:
    """Maps a call's arguments to parameter names, with defaults, fast.

    The signature is inspected once, at decoration time. ``self`` and ``cls``
    are left out. Calls that do not fit the signature are recorded as
    ``{"args": [...], "kwargs": {...}}``; the call itself then raises as usual.
    """

    __slots__ = ("_sig", "_simple", "_spec")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        self._sig = sig
        self._spec: list[tuple[str, Any, bool]] = []
        self._simple = sig is not None
        if sig is None:
            return
        for index, param in enumerate(sig.parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                self._simple = False
            skip = index == 0 and param.name in ("self", "cls")
            self._spec.append((param.name, param.default, skip))

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._simple:
            out: dict[str, Any] = {}
            n = len(args)
            if n > len(self._spec):
                return {"args": list(args), "kwargs": kwargs}
            for i, (name, default, skip) in enumerate(self._spec):
                if i < n:
                    value = args[i]
                elif name in kwargs:
                    value = kwargs[name]
                elif default is not _EMPTY:
                    value = default
                else:
                    continue
                if not skip:
                    out[name] = value
            return out
        if self._sig is None:
            return {"args": list(args), "kwargs": kwargs}
        try:
            bound = self._sig.bind_partial(*args, **kwargs)
        except TypeError:
            return {"args": list(args), "kwargs": kwargs}
        bound.apply_defaults()
        out = dict(bound.arguments)
        if self._spec and self._spec[0][2]:
            out.pop(self._spec[0][0], None)
        return out


def _static_attributes(span_type: str, attributes: dict[str, Any] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {SPAN_TYPE: span_type}
    json_keys: set[str] = set()
    for key, value in (attributes or {}).items():
        attrs[str(key)] = attribute_value(str(key), value, json_keys)
    if json_keys:
        attrs[SPAN_JSON_ATTRIBUTES] = tuple(sorted(json_keys))
    return attrs


def _reduce(items: list[Any], extra: int, reducer: Callable[[list[Any]], Any] | None,
            live: LiveSpan) -> Any:
    if reducer is None:
        if extra:
            return [*items, f"...[{extra} more items not kept by assay]"]
        return items
    try:
        return reducer(items)
    except Exception as exc:
        live.set_attribute("assay.span.output_reducer_error", f"{type(exc).__name__}: {exc}")
        return [to_jsonable(i) for i in items]


def _wrap(fn: Callable[..., Any], name: str | None, span_type: str,
          attributes: dict[str, Any] | None,
          output_reducer: Callable[[list[Any]], Any] | None) -> Callable[..., Any]:
    span_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    attrs = _static_attributes(span_type, attributes)
    bind = _Binder(fn)
    state = _runtime._STATE
    current = _runtime.current

    def start(rt: _runtime.Runtime, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> tuple[LiveSpan, Any] | None:
        try:
            return begin(rt, span_name, span_type, attrs,
                         dumps(bind(args, kwargs), rt.max_value_bytes))
        except Exception as exc:
            internal_error(f"@trace {span_name} (start)", exc)
            return None

    def end_error(rt: _runtime.Runtime, live: LiveSpan, token: Any,
                  exc: BaseException) -> None:
        try:
            if isinstance(exc, Exception):
                record_error(live, exc)
            else:
                record_interrupt(live, exc)
            finish(rt, live, token)
        except Exception as err:
            internal_error(f"@trace {span_name} (error)", err)

    def end_ok(rt: _runtime.Runtime, live: LiveSpan, token: Any, result: Any) -> None:
        try:
            set_outputs_json(live, result)
            finish(rt, live, token)
        except Exception as err:
            internal_error(f"@trace {span_name} (end)", err)

    target = fn
    if not inspect.isfunction(fn) and not inspect.ismethod(fn) and callable(fn):
        call = type(fn).__dict__.get("__call__") or getattr(type(fn), "__call__", None)  # noqa: B004
        if call is not None and (inspect.iscoroutinefunction(call)
                                 or inspect.isasyncgenfunction(call)
                                 or inspect.isgeneratorfunction(call)):
            target = call

    if inspect.iscoroutinefunction(target):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = state.rt or current()
            if not rt.enabled:
                return await fn(*args, **kwargs)
            started = start(rt, args, kwargs)
            if started is None:
                return await fn(*args, **kwargs)
            live, token = started
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                end_error(rt, live, token, exc)
                raise
            end_ok(rt, live, token, result)
            return result

        wrapper: Callable[..., Any] = async_wrapper

    elif inspect.isasyncgenfunction(target):

        async def asyncgen_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = state.rt or current()
            started = start(rt, args, kwargs) if rt.enabled else None
            if started is None:
                agen = fn(*args, **kwargs)
                live = ctx = None
            else:
                live, token = started
                ctx = _context()
                _detach(token)
                try:
                    tok: Any = _attach(ctx)
                    try:
                        agen = fn(*args, **kwargs)
                    finally:
                        _detach(tok)
                except BaseException as exc:
                    end_error(rt, live, None, exc)
                    raise
            items: list[Any] = []
            extra = 0
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                tok = _attach(ctx) if ctx is not None else None
                try:
                    if thrown is not None:
                        exc_in, thrown = thrown, None
                        item = await agen.athrow(exc_in)
                    else:
                        item = await agen.asend(sent)
                except StopAsyncIteration:
                    if live is not None:
                        end_ok(rt, live, None, _reduce(items, extra, output_reducer, live))
                    return
                except BaseException as exc:
                    if live is not None:
                        end_error(rt, live, None, exc)
                    raise
                finally:
                    if tok is not None:
                        _detach(tok)
                if live is not None:
                    if not items and not extra:
                        record_first_item(rt, live)
                    if len(items) < _MAX_ITEMS:
                        items.append(item if output_reducer else to_jsonable(item))
                    else:
                        extra += 1
                try:
                    sent = yield item
                except GeneratorExit as exc:
                    tok = _attach(ctx) if ctx is not None else None
                    try:
                        await agen.aclose()
                    finally:
                        if tok is not None:
                            _detach(tok)
                        if live is not None:
                            set_outputs_json(live, _reduce(items, extra, output_reducer, live))
                            end_error(rt, live, None, exc)
                    raise
                except BaseException as exc:
                    thrown = exc

        wrapper = asyncgen_wrapper

    elif inspect.isgeneratorfunction(target):

        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = state.rt or current()
            if not rt.enabled:
                return (yield from fn(*args, **kwargs))
            started = start(rt, args, kwargs)
            if started is None:
                return (yield from fn(*args, **kwargs))
            live, token = started
            ctx = _context()
            _detach(token)
            try:
                tok = _attach(ctx)
                try:
                    gen = fn(*args, **kwargs)
                finally:
                    _detach(tok)
            except BaseException as exc:
                end_error(rt, live, None, exc)
                raise
            items: list[Any] = []
            extra = 0
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                tok = _attach(ctx)
                try:
                    if thrown is not None:
                        exc_in, thrown = thrown, None
                        item = gen.throw(exc_in)
                    else:
                        item = gen.send(sent)
                except StopIteration as stop:
                    end_ok(rt, live, None, _reduce(items, extra, output_reducer, live))
                    return stop.value
                except BaseException as exc:
                    end_error(rt, live, None, exc)
                    raise
                finally:
                    _detach(tok)
                if not items and not extra:
                    record_first_item(rt, live)
                if len(items) < _MAX_ITEMS:
                    items.append(item if output_reducer else to_jsonable(item))
                else:
                    extra += 1
                try:
                    sent = yield item
                except GeneratorExit as exc:
                    tok = _attach(ctx)
                    try:
                        gen.close()
                    finally:
                        _detach(tok)
                        set_outputs_json(live, _reduce(items, extra, output_reducer, live))
                        end_error(rt, live, None, exc)
                    raise
                except BaseException as exc:
                    thrown = exc

        wrapper = gen_wrapper

    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = state.rt or current()
            if not rt.enabled:
                return fn(*args, **kwargs)
            started = start(rt, args, kwargs)
            if started is None:
                return fn(*args, **kwargs)
            live, token = started
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                end_error(rt, live, token, exc)
                raise
            end_ok(rt, live, token, result)
            return result

        wrapper = sync_wrapper

    functools.update_wrapper(wrapper, fn)
    if not hasattr(wrapper, "__name__"):
        wrapper.__name__ = span_name
    wrapper.__assay_traced__ = True  # type: ignore[attr-defined]
    return wrapper


_context = otel_context.get_current
_attach = otel_context.attach
_detach = otel_context.detach


@overload
def trace(func: F, /) -> F: ...


@overload
def trace(*, name: str | None = None, span_type: str | SpanType = SpanType.UNKNOWN,
          attributes: dict[str, Any] | None = None,
          output_reducer: Callable[[list[Any]], Any] | None = None) -> Callable[[F], F]: ...


def trace(func: Any = None, /, *, name: str | None = None,
          span_type: str | SpanType = SpanType.UNKNOWN,
          attributes: dict[str, Any] | None = None,
          output_reducer: Callable[[list[Any]], Any] | None = None) -> Any:
    """Record every call of a function as a span.

    Works bare (``@assay.trace``) or with options, on plain functions,
    coroutines, generators, async generators, methods, classmethods and
    staticmethods, and as ``assay.trace(fn)`` on any callable. The span's inputs
    are the call's arguments by parameter name (defaults applied, no
    ``self``/``cls``) and its outputs the return value; for generators, the
    list of items (or ``output_reducer(items)``), with a ``first_item`` event.
    The function's result and exceptions pass through unchanged.

    Args:
        name: span name (default: the function's ``__name__``).
        span_type: a :class:`SpanType` or any string.
        attributes: attributes set on every span of this function.
        output_reducer: for generators, folds the list of items into the outputs.

    Example:
        >>> @assay.trace(span_type="RETRIEVER")
        ... def retrieve(query: str, k: int = 3) -> list[str]: ...
    """
    kind = str(span_type.value if isinstance(span_type, SpanType) else span_type)
    if output_reducer is not None and not callable(output_reducer):
        raise TypeError(
            f"@assay.trace(output_reducer=...) must be callable, got {output_reducer!r}")

    def decorate(fn: Any) -> Any:
        if isinstance(fn, classmethod):
            return classmethod(_wrap(fn.__func__, name, kind, attributes, output_reducer))
        if isinstance(fn, staticmethod):
            return staticmethod(_wrap(fn.__func__, name, kind, attributes, output_reducer))
        if not callable(fn):
            raise TypeError(f"@assay.trace needs a callable, got {fn!r}")
        return _wrap(fn, name, kind, attributes, output_reducer)

    if func is not None:
        return decorate(func)
    return decorate
