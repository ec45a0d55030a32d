"""Carrying the current span (and the active run) across threads and processes.

asyncio tasks inherit the current span by themselves (contextvars). Threads do
not: :func:`wrap` and :class:`TracedThreadPoolExecutor` carry it, together
with the run that ``assay.start_run`` made active. Between
processes, the W3C ``traceparent`` header does: :func:`inject_traceparent` on
the calling side, :func:`continue_trace` on the receiving side.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["ACTIVE_RUN", "TracedThreadPoolExecutor", "continue_trace", "inject_traceparent",
           "wrap"]

T = TypeVar("T")
_PROPAGATOR = TraceContextTextMapPropagator()

#: The run active in this context (an ``assay.store.runs.ActiveRun``, which has
#: a ``run_id``), or ``None``. A root span started meanwhile records its run id.
ACTIVE_RUN: contextvars.ContextVar[Any] = contextvars.ContextVar("assay_active_run",
                                                                 default=None)


def wrap(fn: Callable[..., T]) -> Callable[..., T]:
    """Bind ``fn`` to the current span, so that spans it starts in another thread nest
    here (and to the active run, so that traces it starts there belong to it).

    Example:
        >>> threading.Thread(target=assay.tracing.wrap(work)).start()
    """
    captured = otel_context.get_current()
    run = ACTIVE_RUN.get()

    @functools.wraps(fn)
    def run_in_context(*args: Any, **kwargs: Any) -> T:
        token = otel_context.attach(captured)
        run_token = ACTIVE_RUN.set(run)
        try:
            return fn(*args, **kwargs)
        finally:
            ACTIVE_RUN.reset(run_token)
            otel_context.detach(token)

    return run_in_context


class TracedThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run under the span current at ``submit``."""

    def submit(self, fn: Callable[..., T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[T]:
        return super().submit(wrap(fn), *args, **kwargs)


def inject_traceparent(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Write the current span's ``traceparent`` (and ``tracestate``) into ``headers``.

    Returns the same mapping (a new dict when none is given), ready for an
    outgoing HTTP request. With no span running, nothing is added.
    """
    carrier: MutableMapping[str, str] = {} if headers is None else headers
    _PROPAGATOR.inject(carrier)
    return carrier


@contextlib.contextmanager
def continue_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Make spans started in this block children of the caller named by ``traceparent``.

    Header names are matched case-insensitively. Without a valid ``traceparent``
    the block starts new traces as usual.

    Example:
        >>> with assay.tracing.continue_trace(request.headers):
        ...     handle(request)
    """
    lowered = {str(k).lower(): v for k, v in headers.items()}
    ctx = _PROPAGATOR.extract(lowered)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
