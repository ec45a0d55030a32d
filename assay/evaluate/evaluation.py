"""``evaluate()``: run an app over data (or take its stored traces), score every
row, attach the scores to the traces and log the whole evaluation as a run.

Phases, each concurrent over ``max_workers`` threads (or one event loop for an
``async`` predict_fn), each drawn as a progress bar on a terminal:

1. check the data and scorers (every problem raised before anything runs);
2. predict: ``predict_fn(**inputs)`` per row under a trace of the run, or
   a trace per row recording the given inputs and outputs (rows that came
   from stored traces keep theirs);
3. score: every scorer on every row, a failure or timeout an error value on
   that row;
4. record: feedback on each row's trace, metrics, params and the per-row
   table on the run.
"""

from __future__ import annotations

import contextvars
import inspect
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from assay.errors import ConfigurationError, ScorerError
from assay.evaluate.data import MISSING, EvalRow, data_digest, to_rows
from assay.evaluate.progress import Progress
from assay.evaluate.results import EvaluationResult, RowError
from assay.evaluate.scorers import (
    CURRENT_REPEAT,
    JUDGE_CACHE,
    Feedback,
    Scorer,
    check_unique_names,
    run_awaitable,
)
from assay.evaluate.summarize import (
    Attempt,
    RowOutcome,
    check_reducers,
    metrics_of,
    row_keys,
    score_rows,
    table_of,
)
from assay.tracing.models import Assessment, Trace
from assay.tracing.serialize import to_jsonable
from assay.tracing.types import TRACE_EXPERIMENT

if TYPE_CHECKING:
    from assay.store import LazyStore

__all__ = ["INTERVALS_TABLE", "RESULTS_TABLE", "SCORERS_TABLE", "evaluate"]

#: The name of the per-row table logged with the run.
RESULTS_TABLE = "eval_results"
#: The table of the scorers' full specs (a param holds a shortened one when long).
SCORERS_TABLE = "scorers"
#: The table of the metrics' confidence intervals: metric, low, high, level.
INTERVALS_TABLE = "intervals"
#: Default worker threads (``ASSAY_EVAL_MAX_WORKERS`` overrides it).
DEFAULT_MAX_WORKERS = 10
_TRACE_FETCH_CHUNK = 200
_LATENCY_PERCENTILES = ("p50", "p90", "p99")




def evaluate(data: Any, scorers: Sequence[Scorer] | Scorer | None = None, *,
             predict_fn: Callable[..., Any] | None = None, experiment: str | None = None,
             run_name: str | None = None, max_workers: int | None = None,
             tags: dict[str, str] | None = None, progress: bool | None = None,
             thresholds: Mapping[str, str | float] | None = None,
             max_error_rate: float | None = None, repeats: int = 1,
             reducer: str | Mapping[str, str] | None = None, confidence: float = 0.95,
             baseline: Any = None, fail_on_regression: bool = False, alpha: float = 0.05,
             tolerance: float = 0.0, cache: bool | None = None) -> EvaluationResult:
    """Score an app, or its stored traces, and log the evaluation as a run.

    Args:
        data: a list of dicts (``inputs``, and optionally ``outputs``,
            ``expectations``, ``tags``, ``trace``), a pandas DataFrame with those
            columns, what ``search_traces`` returns, a list of :class:`~assay.Trace`,
            or a stored dataset (``assay.get_dataset``).
        scorers: :class:`~assay.Scorer` objects (``@assay.scorer`` functions, the
            built-ins in :mod:`assay.scorers`, judges from :mod:`assay.judges`),
            names unique.
        predict_fn: the app: called as ``predict_fn(**inputs)`` for each row (sync
            or ``async``) under a trace of the run; spans it makes nest inside.
            An exception is that row's error (recorded on its trace); the other
            rows go on. Leave it out to score outputs given with the data.
        experiment: the experiment of the run and its traces (default: the
            active run's, else the configured one).
        run_name: the run's name, when the evaluation opens its own run.
        max_workers: concurrent rows (and scorer calls); default 10 or
            ``ASSAY_EVAL_MAX_WORKERS``.
        tags: set on the run (e.g. the branch, so a later run can use it as a baseline).
        progress: draw progress bars; default only when stderr is a terminal.
        thresholds: ``{metric: rule}`` to gate on, e.g. ``{"correctness/mean":
            ">= 0.8 @lower"}`` (see :mod:`assay.evaluate.gates`); the verdict is
            ``result.gate``.
        max_error_rate: the share of rows a scorer (or ``predict_fn``) may fail on
            before the gate fails; given alone, it gates the evaluation on errors.
            With thresholds or a baseline it defaults to 0: any error fails the gate.
        repeats: try every row this many times (prediction and scores); each row's
            values are reduced to one by ``reducer`` and the spread is reported
            (``<name>/repeat_std`` or ``<name>/flip_rate``).
        reducer: ``mean``, ``majority``, ``pass@k`` or ``pass^k``, for all
            scorers or ``{scorer name: reducer}``; default ``mean`` for numbers,
            ``majority`` for bools and strings.
        confidence: the level of the confidence intervals (``result.intervals``).
        baseline: a run to compare with, row by row (a run id, a run name, or a
            ``search_runs`` filter such as ``"tags.branch = 'main'"``: its latest
            run); the comparison is ``result.comparison``.
        fail_on_regression: with ``baseline``, the gate fails on a significant drop
            (one-sided, at ``alpha``) larger than ``tolerance``.
        alpha: the significance level of the regression tests.
        tolerance: a drop this small is never a regression.
        cache: ``False`` makes every judge call its model afresh (no cache reads
            or writes) in this evaluation; ``None`` leaves each judge's setting.

    Returns:
        An :class:`~assay.evaluate.results.EvaluationResult`: ``run_id``,
        ``metrics``, ``intervals``, ``table``, ``errors``, ``gate`` and
        ``comparison``; its ``repr`` is a short summary.

    Raises:
        InvalidData: the data is empty or malformed (the message names the row).
        ScorerError: something in ``scorers`` is not a Scorer, or two share a name.
        GateError: a malformed threshold, or one on a metric the evaluation does
            not have (raised after the run is logged and ended: nothing is lost).
        ConfigurationError: no trace store is configured, a bad setting (an
            unknown reducer, repeats below 1, ...), or
            ``experiment`` contradicts the active run's.

    Inside an active run (``with assay.start_run():``) the evaluation logs into
    it; otherwise it opens its own run and ends it (FINISHED, or FAILED if the
    evaluation itself was interrupted).

    Example:
        >>> result = assay.evaluate(
        ...     [{"inputs": {"question": "2+2?"}, "expectations": {"expected_response": "4"}}],
        ...     scorers=[exact_match()], predict_fn=answer,
        ...     thresholds={"exact_match/mean": ">= 0.9"})
        >>> result.metrics["exact_match/mean"], result.gate.passed
        (1.0, True)
    """
    from assay.evaluate import gates
    from assay.store import runs as run_api
    from assay.store.query import store as configured_store
    from assay.tracing import _runtime

    scorer_list = _check_scorers(scorers)
    if predict_fn is not None and not callable(predict_fn):
        raise TypeError(f"evaluate(predict_fn=...) must be callable, got "
                        f"{type(predict_fn).__name__}")
    workers = _check_workers(max_workers)
    _check_options(repeats, confidence, alpha, tolerance, max_error_rate, cache, baseline)
    reducers = check_reducers(reducer, scorer_list)
    parsed = gates.parse_all(thresholds)
    rows = to_rows(data, has_predict_fn=predict_fn is not None)
    store = configured_store()
    active = run_api.active_run()
    if active is not None and experiment is not None and experiment != active.experiment:
        raise ConfigurationError(
            f"evaluate(experiment={experiment!r}) inside the active run {active.run_id}, "
            f"which belongs to experiment {active.experiment!r}")
    started = time.perf_counter()
    scope: AbstractContextManager[Any]
    if active is None:
        exp = experiment or _runtime.current().settings.experiment
        scope = run_api.start_run(name=run_name or _default_run_name(), experiment=exp)
    else:
        scope = _joined()
    cache_token = JUDGE_CACHE.set(False) if cache is False else None
    try:
        with _old_objects_frozen(), scope:
            run = run_api.active_run()
            assert run is not None
            run_id, exp = run.run_id, run.experiment
            params = _params(data, rows, scorer_list, predict_fn, workers)
            params.update({"repeats": str(repeats), "confidence": str(confidence)})
            if reducers:
                params["reducers"] = ", ".join(f"{k}={v}" for k, v in sorted(reducers.items()))
            run_api.log_params(params, run_id=run_id)
            if scorer_list:
                run_api.log_table([{"name": s.name, "spec": s.spec()} for s in scorer_list],
                                  SCORERS_TABLE, run_id=run_id)
            run_api.set_tags({"assay.evaluation": "true", **(tags or {})}, run_id=run_id)
            states = [Attempt(row, repeat) for row in rows for repeat in range(repeats)]
            if predict_fn is not None:
                _predict(states, predict_fn, exp, workers, progress)
            else:
                _record_given(states, exp)
            _warn_untraced(states)
            # The rows' traces are written before scoring starts: the writer and
            # the scorers would otherwise contend for the GIL, and scorers asking
            # for a trace read it back.
            _runtime.flush()
            if any("trace" in s.parameters for s in scorer_list):
                _attach_traces(store, states)
            _score(states, scorer_list, workers, progress)
            _store_feedback(store, states, run_id)
            names = _feedback_names(states, scorer_list)
            outcomes = [RowOutcome(row, key, states[i * repeats:(i + 1) * repeats])
                        for i, (row, key) in enumerate(zip(rows, row_keys(rows), strict=True))]
            score_rows(outcomes, names, reducers)
            by_name = {str(f.name): s for st in states for s, f in st.feedback}
            metrics, intervals = metrics_of(outcomes, by_name, names, repeats=repeats,
                                            predicted=predict_fn is not None,
                                            level=confidence)
            metrics["evaluation/duration_s"] = time.perf_counter() - started
            table = table_of(outcomes, names, repeats=repeats)
            run_api.log_metrics(metrics, run_id=run_id)
            run_api.log_table(table, RESULTS_TABLE, run_id=run_id)
            if intervals:
                run_api.log_table([{"metric": k, "low": lo, "high": hi, "level": confidence}
                                   for k, (lo, hi) in intervals.items()],
                                  INTERVALS_TABLE, run_id=run_id)
            result = EvaluationResult(run_id=run_id, metrics=metrics, table=table,
                                      errors=_errors(states), feedback_names=names,
                                      experiment=exp, intervals=intervals,
                                      confidence=confidence)
    finally:
        if cache_token is not None:
            JUDGE_CACHE.reset(cache_token)
    # The evaluation is done and its run ended: what follows judges it, and an
    # error here (a threshold on a metric it lacks) loses nothing already logged.
    _runtime.flush()
    if baseline is not None:
        from assay.evaluate.compare import compare

        result.comparison = compare(run_id, baseline, alpha=alpha, tolerance=tolerance,
                                    level=confidence)
    if parsed or baseline is not None or max_error_rate is not None:
        gate = gates.check(result, parsed, max_error_rate=max_error_rate or 0.0)
        if fail_on_regression and result.comparison is not None:
            gate = gate + result.comparison.gate()
        result.gate = gate
        run_api.log_metrics({"gate/passed": float(gate.passed),
                             "gate/failed_checks": float(len(gate.failed))}, run_id=run_id)
        run_api.set_tags({"assay.gate": "passed" if gate.passed else "failed"},
                         run_id=run_id)
    return result


@contextmanager
def _old_objects_frozen() -> Iterator[None]:
    """Keep the objects that existed before the evaluation out of the cyclic garbage
    collector's way while it runs (``gc.freeze``), then hand them back.

    An evaluation allocates a few hundred objects per row; in a process that
    already holds many (earlier results, frames, a notebook's state) each full
    collection walks them all. Measured on a 1,000-row rerun served from the judge
    cache: 0.29-0.31 s without full collections, 0.38-0.46 s with them. New
    garbage is still collected. Left alone when something else froze objects (a
    server that froze before forking) or another evaluation is running.
    """
    import gc

    with _FREEZE_LOCK:
        owner = _FREEZES[0] == 0 and gc.get_freeze_count() == 0 and gc.isenabled()
        if owner:
            gc.freeze()
        _FREEZES[0] += 1
    try:
        yield
    finally:
        with _FREEZE_LOCK:
            _FREEZES[0] -= 1
            if owner:
                gc.unfreeze()


_FREEZES = [0]
_FREEZE_LOCK = threading.Lock()


def _check_options(repeats: Any, confidence: Any, alpha: Any, tolerance: Any,
                   max_error_rate: Any, cache: Any, baseline: Any) -> None:
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigurationError(f"repeats={repeats!r}: expected a positive integer")
    if not number(confidence) or not 0 < confidence < 1:
        raise ConfigurationError(f"confidence={confidence!r}: expected a level between 0 "
                                 f"and 1, such as 0.95")
    if not number(alpha) or not 0 < alpha < 1:
        raise ConfigurationError(f"alpha={alpha!r}: expected a probability between 0 and 1")
    if not number(tolerance) or tolerance < 0:
        raise ConfigurationError(f"tolerance={tolerance!r}: expected a non-negative number")
    if max_error_rate is not None and (not number(max_error_rate)
                                       or not 0 <= max_error_rate <= 1):
        raise ConfigurationError(f"max_error_rate={max_error_rate!r}: expected a share from "
                                 f"0 to 1")
    if cache not in (None, True, False):
        raise ConfigurationError(f"cache={cache!r}: expected True, False or None")
    from assay.store.runs import Run

    if baseline is not None and not (isinstance(baseline, Run) or (
            isinstance(baseline, str) and baseline.strip())):
        raise ConfigurationError(f"baseline={baseline!r}: expected a run id, a run name or a "
                                 f"search_runs filter")


# -- checks -------------------------------------------------------------------

def _check_scorers(scorers: Sequence[Scorer] | Scorer | None) -> list[Scorer]:
    if scorers is None:
        return []
    items: Iterable[Any] = [scorers] if isinstance(scorers, Scorer) else scorers
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ScorerError(f"evaluate(scorers=...) takes a list of scorers, got "
                          f"{type(scorers).__name__}")
    found: list[Scorer] = []
    for position, item in enumerate(items):
        if not isinstance(item, Scorer):
            hint = (" (decorate the function with @assay.scorer)" if callable(item) else "")
            shown = getattr(item, "__name__", None) or repr(item)[:60]
            raise ScorerError(f"scorers[{position}] is {type(item).__name__} {shown}, not an "
                              f"assay Scorer{hint}")
        found.append(item)
    try:
        check_unique_names(found)
    except ValueError as exc:
        raise ScorerError(str(exc)) from None
    return found


def _check_workers(max_workers: int | None) -> int:
    if max_workers is None:
        raw = os.environ.get("ASSAY_EVAL_MAX_WORKERS")
        if raw is None:
            return DEFAULT_MAX_WORKERS
        try:
            max_workers = int(raw)
        except ValueError:
            raise ConfigurationError(f"ASSAY_EVAL_MAX_WORKERS={raw!r}: expected a positive "
                                     f"integer") from None
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ConfigurationError(f"max_workers={max_workers!r}: expected a positive integer")
    return max_workers


def _default_run_name() -> str:
    return "eval-" + time.strftime("%Y%m%d-%H%M%S")


@contextmanager
def _joined() -> Iterator[None]:
    """The scope of an evaluation logging into a run it did not open."""
    yield


def _qualified(func: Any) -> str:
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}" if module else name


def _params(data: Any, rows: list[EvalRow], scorers: list[Scorer],
            predict_fn: Callable[..., Any] | None, workers: int) -> dict[str, str]:

    params = {"data.rows": str(len(rows)), "data.digest": data_digest(rows),
              "max_workers": str(workers),
              "scorers": ", ".join(s.name for s in scorers) or "(none)"}
    for s in scorers:
        params[f"scorer.{s.name}"] = _spec_param(s.spec())
    if predict_fn is not None:
        params["predict_fn"] = _qualified(predict_fn)
    name = getattr(data, "name", None)
    if isinstance(name, str) and hasattr(data, "digest") and hasattr(data, "version"):
        params["dataset.name"] = name
        params["dataset.version"] = str(data.version)
        params["dataset.digest"] = str(data.digest)
    return params


def _spec_param(spec: dict[str, Any]) -> str:
    """A scorer's spec as a run param: its JSON, with long texts (a judge's
    instructions) cut to fit and the whole spec's SHA-256, so that two runs scored
    by different prompts never look alike. The full specs are the run's
    ``scorers`` table."""
    import hashlib
    import json

    from assay.store.runs import MAX_PARAM_CHARS

    text = json.dumps(spec, sort_keys=True, default=str)
    if len(text) <= MAX_PARAM_CHARS:
        return text
    cut = {k: (v[:_SPEC_TEXT_CHARS] + "...[cut]" if isinstance(v, str)
               and len(v) > _SPEC_TEXT_CHARS else v) for k, v in spec.items()}
    cut["spec_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    shown = json.dumps(cut, sort_keys=True, default=str)
    if len(shown) > MAX_PARAM_CHARS:
        shown = json.dumps({"name": spec.get("name"), "kind": spec.get("kind"),
                            "spec_sha256": cut["spec_sha256"]}, sort_keys=True)
    return shown


_SPEC_TEXT_CHARS = 1_000


# -- running jobs -------------------------------------------------------------

_T = TypeVar("_T")


def _run_all(jobs: list[_T], fn: Callable[[_T], None], workers: int, name: str) -> None:
    """``fn(job)`` for every job on up to ``workers`` threads that pull the next job
    as they finish one; each call runs in its own copy of the caller's context (the
    active run, the current span). An exception from ``fn`` (a bug, not a row's
    failure: those are caught inside) is raised here once every thread has stopped.

    Threads are added only while the jobs wait on something: one starts, and the
    rest join when every running thread has been inside one job for longer than
    :data:`_BUSY_S` (a model call, a sleep). Jobs that only compute (a cache hit, a
    string check) then run on one thread instead of contending for the GIL on many.
    """
    base = contextvars.copy_context()
    feed = iter(jobs)
    lock = threading.Lock()
    failures: list[BaseException] = []
    remaining = [len(jobs)]
    since: dict[int, float] = {}  # thread index -> when its current job began
    finished = threading.Event()

    def work(index: int) -> None:
        while not failures:
            with lock:
                job = next(feed, _DONE)
                if job is _DONE:
                    since.pop(index, None)
                    return
                since[index] = time.monotonic()
            try:
                base.copy().run(fn, job)
            except BaseException as exc:
                failures.append(exc)
            finally:
                with lock:
                    since[index] = math.inf
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        finished.set()

    wanted = min(workers, len(jobs))
    threads: list[threading.Thread] = []

    def add() -> None:
        thread = threading.Thread(target=work, args=(len(threads),),
                                  name=f"{name}-{len(threads)}", daemon=True)
        threads.append(thread)
        thread.start()

    if wanted:
        add()
    # The watch backs off while the jobs compute, so that it does not take the GIL
    # from them every millisecond; it looks again soon after adding a thread.
    pause = _BUSY_S / 2
    while len(threads) < wanted and not finished.wait(pause) and not failures:
        now = time.monotonic()
        with lock:
            busy = [began for began in since.values() if began != math.inf]
            all_waiting = len(busy) == len(threads) and all(now - b > _BUSY_S for b in busy)
        if all_waiting:
            add()
            pause = _BUSY_S / 2
        else:
            pause = min(pause * 2, _WATCH_MAX_S)
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


#: How long every running job must have waited before another thread is added.
_BUSY_S = 0.002
_WATCH_MAX_S = 0.050
_DONE: Any = object()


# -- predict ------------------------------------------------------------------

def _predict(states: list[Attempt], predict_fn: Callable[..., Any], experiment: str,
             workers: int, progress: bool | None) -> None:
    name = getattr(predict_fn, "__name__", None) or type(predict_fn).__name__
    with Progress("predict", len(states), enabled=progress) as bar:
        if inspect.iscoroutinefunction(predict_fn) or inspect.iscoroutinefunction(
                getattr(predict_fn, "__call__", None)):  # noqa: B004 - async callables
            run_awaitable(_predict_async(states, predict_fn, name, experiment, workers, bar))
            return
        _run_all(states, lambda state: _predict_one(state, predict_fn, name, experiment, bar),
                 workers, "assay-predict")


async def _predict_async(states: list[Attempt], predict_fn: Callable[..., Any], name: str,
                         experiment: str, workers: int, bar: Progress) -> None:
    import asyncio

    gate = asyncio.Semaphore(workers)

    async def one(state: Attempt) -> None:
        async with gate:
            await _predict_one_async(state, predict_fn, name, experiment, bar)

    await asyncio.gather(*(one(s) for s in states))


def _begin_row(span: Any, state: Attempt, experiment: str) -> None:
    from assay.tracing.span import update_current_trace

    if span.is_recording():
        span.set_attribute(TRACE_EXPERIMENT, experiment)
        state.trace_id = span.trace_id
        if state.row.tags:
            update_current_trace(tags=state.row.tags)


@contextmanager
def _new_trace() -> Iterator[None]:
    """Make the next span a root: each row is a trace of its own, even when
    ``evaluate()`` is called inside a span (a traced CI entry point). The active
    run and everything else in the context stay."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace as trace_api

    token = otel_context.attach(trace_api.set_span_in_context(trace_api.INVALID_SPAN))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def _attempting(state: Attempt, name: str, experiment: str, bar: Progress) -> Iterator[Any]:
    """The trace and bookkeeping around one prediction: yields the row's root span;
    an exception from the block becomes the attempt's error (recorded on the span)."""
    from assay.tracing.span import start_span

    began = time.perf_counter()
    try:
        with _new_trace(), start_span(name, span_type="CHAIN", inputs=state.row.inputs) as span:
            _begin_row(span, state, experiment)
            yield span
    except Exception as exc:
        state.error = f"{type(exc).__name__}: {exc}"
        state.outputs = None
    finally:
        state.latency_ms = (time.perf_counter() - began) * 1000
        bar.advance(failed=state.error is not None)


def _predict_one(state: Attempt, predict_fn: Callable[..., Any], name: str, experiment: str,
                 bar: Progress) -> None:
    with _attempting(state, name, experiment, bar) as span:
        outputs = predict_fn(**state.row.inputs)
        if inspect.isawaitable(outputs):
            outputs = run_awaitable(outputs)
        span.set_outputs(outputs)
        state.outputs = outputs


async def _predict_one_async(state: Attempt, predict_fn: Callable[..., Any], name: str,
                             experiment: str, bar: Progress) -> None:
    with _attempting(state, name, experiment, bar) as span:
        outputs = await predict_fn(**state.row.inputs)
        span.set_outputs(outputs)
        state.outputs = outputs


def _record_given(states: list[Attempt], experiment: str) -> None:
    """A trace for each row that brought outputs but no trace, so that its feedback
    has a place and the run's traces show every row (one per row, whatever the
    repeats)."""
    from assay.tracing.span import start_span

    traced: dict[int, str | None] = {}
    for state in states:
        row = state.row
        state.outputs = row.outputs
        state.trace = row.trace
        if row.source_trace_id is not None:
            state.trace_id = row.source_trace_id
            continue
        if row.index in traced:
            state.trace_id = traced[row.index]
            continue
        with _new_trace(), start_span("evaluation_row", span_type="CHAIN",
                                      inputs=row.inputs) as span:
            _begin_row(span, state, experiment)
            span.set_outputs(row.outputs)
        traced[row.index] = state.trace_id


def _warn_untraced(states: list[Attempt]) -> None:
    """Say so when rows got no trace although tracing is on (a sampling ratio below
    1 drops evaluation rows too): their feedback has nowhere to go."""
    from assay.tracing import _runtime

    rt = _runtime.current()
    missing = sum(s.trace_id is None for s in states)
    if missing and rt.enabled:
        _runtime.log.warning(
            "assay.evaluate: %d of %d rows have no trace (sampling_ratio=%s): their scores "
            "are in the run's table but not stored as feedback on a trace", missing,
            len(states), rt.settings.sampling_ratio)


def _attach_traces(store: LazyStore, states: list[Attempt]) -> None:
    """Read back the traces scorers ask for (those the evaluation just made)."""
    from assay.tracing import _runtime

    wanted = [s for s in states if s.trace is None and s.trace_id is not None]
    if not wanted:
        return
    _runtime.flush()
    by_id: dict[str, Trace] = {}
    for start in range(0, len(wanted), _TRACE_FETCH_CHUNK):
        ids = [s.trace_id for s in wanted[start:start + _TRACE_FETCH_CHUNK]]
        quoted = ", ".join(f"'{i}'" for i in ids)  # hex ids: nothing to escape
        page = store.search(experiment=None, max_results=len(ids),
                            filter_string=f"trace.id IN ({quoted})")
        by_id.update((t.trace_id, t) for t in page.traces)
    for state in wanted:
        state.trace = by_id.get(state.trace_id or "")


# -- score --------------------------------------------------------------------

def _score(states: list[Attempt], scorers: list[Scorer], workers: int,
           progress: bool | None) -> None:
    if not scorers:
        return
    jobs = [(state, s) for state in states for s in scorers]
    results: list[list[Feedback]] = [[] for _ in jobs]

    def one(position: int) -> None:
        state, s = jobs[position]
        CURRENT_REPEAT.set(state.repeat)
        feedback = _score_one(state, s)
        results[position] = feedback
        bar.advance(failed=sum(f.error is not None for f in feedback))

    with Progress("score", len(jobs), enabled=progress) as bar:
        _run_all(list(range(len(jobs))), one, workers, "assay-score")
    owners: dict[str, Scorer] = {s.name: s for s in scorers}
    for (state, s), feedback in zip(jobs, results, strict=True):
        for f in feedback:
            name = str(f.name)
            owner = owners.setdefault(name, s)
            if owner is not s:
                f = Feedback.from_error(
                    f"returned feedback named {name!r}, which scorer {owner.name!r} also "
                    f"gives; feedback names must be unique across scorers", name=s.name)
            elif isinstance(f.value, float) and not math.isfinite(f.value):
                f = replace(f, value=None, error=f"returned {f.value!r}, not a score: a "
                                                 f"number to aggregate must be finite")
            state.feedback.append((s, f))


def _score_one(state: Attempt, s: Scorer) -> list[Feedback]:
    if state.error is not None:
        return [Feedback.from_error(f"not scored: predict_fn failed ({state.error})",
                                    name=s.name)]
    row = state.row
    fields = {"inputs": row.inputs,
              "outputs": None if state.outputs is MISSING else state.outputs,
              "expectations": row.expectations, "trace": state.trace}
    if s.timeout is None:
        return s.run(**fields)
    return _run_with_timeout(s, fields, s.timeout)


def _run_with_timeout(s: Scorer, fields: dict[str, Any], timeout: float) -> list[Feedback]:
    """``s.run`` with a deadline: past it the row gets a timeout error and the call
    is left to finish on its own (a thread cannot be stopped). At most
    :data:`_MAX_OVERDUE` calls of one scorer may be left running at a time; past
    that, its further rows get an error at once instead of another thread."""
    with _OVERDUE_LOCK:
        if _OVERDUE.get(s, 0) >= _MAX_OVERDUE:
            return [Feedback.from_error(
                f"not scored: {_MAX_OVERDUE} earlier calls of this scorer are still running "
                f"past their {timeout:g} s timeout", name=s.name)]
    box: list[list[Feedback]] = []
    done = threading.Event()
    overdue = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box.append(s.run(**fields))
        finally:
            with _OVERDUE_LOCK:
                done.set()
                if overdue.is_set():
                    _OVERDUE[s] -= 1

    threading.Thread(target=context.run, args=(target,), daemon=True,
                     name=f"assay-scorer-{s.name}").start()
    if done.wait(timeout):
        return box[0]
    with _OVERDUE_LOCK:
        if not done.is_set():
            overdue.set()
            _OVERDUE[s] = _OVERDUE.get(s, 0) + 1
            return [Feedback.from_error(f"timed out after {timeout:g} s", name=s.name)]
    return box[0]


#: Calls past their timeout still running, by scorer (a hung judge endpoint must
#: not leave a thread behind for every row).
_OVERDUE: weakref.WeakKeyDictionary[Scorer, int] = weakref.WeakKeyDictionary()
_OVERDUE_LOCK = threading.Lock()
_MAX_OVERDUE = 32


# -- record -------------------------------------------------------------------

def _store_feedback(store: LazyStore, states: list[Attempt], run_id: str) -> None:
    now = time.time_ns() // 1_000_000
    assessments = [
        Assessment(assessment_id=uuid.uuid4().hex, trace_id=state.trace_id, name=str(f.name),
                   kind="feedback", value=to_jsonable(f.value), rationale=f.rationale,
                   source_type=s.source_type, source_id=s.source_id,
                   metadata={**f.metadata, "assay.run_id": run_id}, error=f.error,
                   created_time_ms=now)
        for state in states if state.trace_id is not None
        for s, f in state.feedback]
    if assessments:
        store.log_assessments(assessments)


def _feedback_names(states: list[Attempt], scorers: list[Scorer]) -> list[str]:
    order = {s.name: i for i, s in enumerate(scorers)}
    names: dict[str, tuple[int, int]] = {}
    for state in states:
        for position, (s, f) in enumerate(state.feedback):
            names.setdefault(str(f.name), (order[s.name], position))
    return sorted(names, key=lambda n: names[n])


def _errors(states: list[Attempt]) -> list[RowError]:
    errors: list[RowError] = []
    for state in states:
        if state.error is not None:
            errors.append(RowError(state.row.index, state.trace_id, None, state.error))
            continue
        errors.extend(RowError(state.row.index, state.trace_id, str(f.name), f.error)
                      for _, f in state.feedback if f.error is not None)
    return errors

