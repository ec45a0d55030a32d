"""Runs as a public API: ``start_run``, ``log_param``, ``log_metric``, ``log_table``,
``get_run``, ``search_runs``, ...

A run groups what one evaluation (or any experiment) logged: parameters,
metrics by step, tags and tables. ``start_run`` makes a run active in the
current context (a :class:`contextvars.ContextVar`, so each asyncio task and
thread has its own; a thread pool's tasks see the run when the submitting
context is copied, e.g. with ``contextvars.copy_context().run`` or
:func:`assay.tracing.wrap`). While a run is active, every trace that starts
records its run id, so ``search_traces("run_id = '...'")`` finds the traces
the run made.

Values:

- keys (params, metrics, tags, tables) are non-empty strings of at most
  :data:`MAX_KEY_CHARS` characters;
- param values are converted with ``str`` and hold at most
  :data:`MAX_PARAM_CHARS` characters, tag values :data:`MAX_TAG_CHARS`;
- metric values are real numbers (``int``, ``float``, numpy numbers); a
  ``bool`` is logged as 1.0 or 0.0; NaN and infinities are accepted (a NaN
  matches no filter comparison and sorts last). A metric logged without a step
  is logged at step 0, replacing what step 0 held.
"""

from __future__ import annotations

import math
import numbers
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.errors import AssayError
from assay.tracing._runtime import log
from assay.tracing.context import ACTIVE_RUN

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_KEY_CHARS", "MAX_PARAM_CHARS", "MAX_TAG_CHARS", "PARENT_RUN_TAG", "RUN_STATUSES",
           "ActiveRun", "Metric", "Run", "RunList", "active_run", "delete_run", "delete_tag",
           "end_run", "get_metric_history", "get_run", "load_table", "log_metric",
           "log_metrics", "log_param", "log_params", "log_table", "runs_to_frame",
           "search_runs", "set_tag", "set_tags", "start_run"]

#: The statuses a run can have.
RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
MAX_KEY_CHARS = 250
MAX_PARAM_CHARS = 6_000
MAX_TAG_CHARS = 8_000
#: The tag a nested run carries: its parent's run id (MLflow's key).
PARENT_RUN_TAG = "mlflow.parentRunId"
_MAX_STEP = 2 ** 63 - 1


class Run(BaseModel):
    """A stored run: its attributes, params, latest metrics and tags.

    ``metrics`` holds each metric's value at its highest step (every logged
    value: :func:`get_metric_history`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    experiment: str
    name: str | None = None
    status: str = "RUNNING"
    start_time_ms: int
    end_time_ms: int | None = None
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of this run (metric values stay floats, NaN included)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        """Rebuild a run from :meth:`to_dict` output (validated)."""
        return cls.model_validate(data)


class Metric(BaseModel):
    """One logged value of a metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    value: float
    step: int
    timestamp_ms: int

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class ActiveRun:
    """A run that ``start_run`` made active; a context manager.

    Leaving the ``with`` block ends the run: FINISHED, or FAILED when the block
    raised an exception (KILLED for ``KeyboardInterrupt`` and the like); the
    exception propagates unchanged.
    """

    __slots__ = ("_ended", "_parent", "experiment", "name", "run_id")

    def __init__(self, run_id: str, experiment: str, name: str | None,
                 parent: ActiveRun | None) -> None:
        self.run_id = run_id
        self.experiment = experiment
        self.name = name
        self._parent = parent
        self._ended = False

    @property
    def parent(self) -> ActiveRun | None:
        """The run this one is nested in, or ``None``."""
        return self._parent

    @property
    def run(self) -> Run | None:
        """The run as stored now (its params, metrics and tags so far)."""
        return get_run(self.run_id)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.end("FINISHED")
            return
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        try:
            self.end(status)
        except Exception as err:  # the block's own exception is what the caller sees
            log.warning("assay: could not mark run %s %s: %s", self.run_id, status, err)

    def end(self, status: str = "FINISHED") -> None:
        """End this run (and runs still active inside it in this context) with
        ``status``; the run it was nested in becomes active again. Ending a run
        twice does nothing."""
        _check_status(status, "end_run")
        if self._ended:
            return
        # Runs nested in this one and still active here end with it.
        chain: list[ActiveRun] = []
        current = ACTIVE_RUN.get()
        while current is not None and current is not self:
            chain.append(current)
            current = current._parent
        if current is self:
            ACTIVE_RUN.set(self._parent)
        else:
            chain = []
        for run in [*chain, self]:
            if not run._ended:
                run._ended = True
                _store().update_run(run.run_id, status=status, end_time_ms=_now_ms())

    def __repr__(self) -> str:
        return f"ActiveRun(run_id={self.run_id!r}, name={self.name!r}, " \
               f"experiment={self.experiment!r})"


# -- starting and ending ----------------------------------------------------------------


def start_run(name: str | None = None, experiment: str | None = None, *,
              run_id: str | None = None, tags: Mapping[str, Any] | None = None,
              nested: bool = False) -> ActiveRun:
    """Start a run (or resume one) and make it the active run of this context.

    Traces started while it is active record its id (``trace.info.run_id``;
    ``search_traces("run_id = '...'")``).

    Args:
        name: the run's name (when resuming: a new name, or ``None`` to keep it).
        experiment: the experiment (default: the configured one).
        run_id: resume this stored run instead of creating one: it becomes
            RUNNING again and keeps what it logged.
        tags: tags to set on the run.
        nested: start the run inside the active one (it gets the tag
            ``mlflow.parentRunId``); without it, a run already active is an error.

    Returns:
        The :class:`ActiveRun`; use it as a context manager to end the run.

    Raises:
        AssayError: a run is already active and ``nested`` is false, or
            ``run_id`` names no stored run, or one of another experiment.
        ValueError: a malformed name, experiment or tag.

    Example:
        >>> with assay.start_run("baseline") as run:
        ...     assay.log_param("model", "gpt-4o-mini")
        ...     assay.log_metric("accuracy", 0.91)
        >>> assay.get_run(run.run_id).metrics
        {'accuracy': 0.91}
    """
    parent = ACTIVE_RUN.get()
    if parent is not None and not nested:
        raise AssayError(
            f"start_run(): run {parent.run_id} ({parent.name or 'unnamed'}) is already active "
            "in this context; end it first (assay.end_run(), or leave its `with` block), "
            "or pass nested=True to start a run inside it")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"start_run(name={name!r}): expected a string or None")
    if experiment is not None and (not isinstance(experiment, str) or not experiment.strip()
                                   or experiment == "*"):
        raise ValueError(f"start_run(experiment={experiment!r}): expected an experiment name")
    clean_tags = _tags(tags, "start_run")
    if parent is not None:
        clean_tags.setdefault(PARENT_RUN_TAG, parent.run_id)
    store = _store()
    if run_id is not None:
        rid = _run_id(run_id, "start_run")
        stored = store.get_run(rid)
        if stored is None:
            raise AssayError(f"start_run(run_id={run_id!r}): no such run in {store.uri}")
        if experiment is not None and experiment != stored.experiment:
            raise AssayError(f"start_run(run_id={run_id!r}): the run belongs to experiment "
                             f"{stored.experiment!r}, not {experiment!r}")
        store.update_run(rid, status="RUNNING", name=name)
        if clean_tags:
            store.set_run_tags(rid, clean_tags)
        active = ActiveRun(rid, stored.experiment, name or stored.name, parent)
    else:
        from assay.tracing import _runtime

        exp = experiment or _runtime.current().experiment
        rid = uuid.uuid4().hex
        store.create_run(rid, experiment=exp, name=name, start_time_ms=_now_ms(),
                         tags=clean_tags)
        active = ActiveRun(rid, exp, name, parent)
    ACTIVE_RUN.set(active)
    return active


def active_run() -> ActiveRun | None:
    """The run active in this context (the innermost one when nested), or ``None``."""
    run: ActiveRun | None = ACTIVE_RUN.get()
    return run


def end_run(status: str = "FINISHED") -> None:
    """End the active run with ``status`` (RUNNING, FINISHED, FAILED or KILLED); the
    run it was nested in becomes active again. Without an active run, nothing
    happens.

    Raises:
        ValueError: an unknown status.

    Example:
        >>> assay.start_run("sweep-1")
        >>> assay.log_metric("loss", 0.3)
        >>> assay.end_run()
    """
    _check_status(status, "end_run")
    run = active_run()
    if run is not None:
        run.end(status)


# -- logging ----------------------------------------------------------------------------


def log_param(key: str, value: Any, *, run_id: str | None = None) -> None:
    """Log a parameter of the active run (or of ``run_id``); the value is kept as
    ``str(value)``, and a key logged again takes the new value.

    Raises:
        AssayError: no run is active and no ``run_id`` was given, or no such run.
        ValueError: a malformed key, or a value longer than 6,000 characters.

    Example:
        >>> assay.log_param("temperature", 0.2)
    """
    log_params({key: value}, run_id=run_id)


def log_params(params: Mapping[str, Any], *, run_id: str | None = None) -> None:
    """Log several parameters at once (one transaction); see :func:`log_param`.

    Example:
        >>> assay.log_params({"model": "gpt-4o-mini", "k": 5})
    """
    rid = _target(run_id, "log_params")
    _store().log_params(rid, _strings(params, "log_params", "param", MAX_PARAM_CHARS,
                                      " (log long text with log_table)"))


def log_metric(key: str, value: float, step: int | None = None, *,
               run_id: str | None = None) -> None:
    """Log a metric value of the active run (or of ``run_id``) at ``step``.

    Every value is kept by step (:func:`get_metric_history`); the run's value
    of the metric is the one at its highest step.

    Args:
        key: the metric, e.g. ``"correctness/mean"``.
        value: a real number; ``True``/``False`` are logged as 1.0/0.0; NaN is accepted.
        step: an integer (default 0; a value logged again at a step replaces it).
        run_id: the run to log into instead of the active one.

    Raises:
        AssayError: no run is active and no ``run_id`` was given, or no such run.
        ValueError: a malformed key, a value that is not a real number, a step
            that is not an integer.

    Example:
        >>> for epoch, loss in enumerate(losses):
        ...     assay.log_metric("loss", loss, step=epoch)
    """
    log_metrics({key: value}, step=step, run_id=run_id)


def log_metrics(metrics: Mapping[str, float], step: int | None = None, *,
                run_id: str | None = None) -> None:
    """Log several metric values at one step, in one transaction; see :func:`log_metric`.

    Example:
        >>> assay.log_metrics({"correctness/mean": 0.82, "latency/p50": 1.4})
    """
    where = "log_metrics"
    rid = _target(run_id, where)
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{where}(metrics={metrics!r}): expected a mapping of key to number")
    at = _step(step, where)
    now = _now_ms()
    rows = [(_key(key, where, "metric"), _metric_value(key, value, where), at, now)
            for key, value in metrics.items()]
    _store().log_metrics(rid, rows)


def set_tag(key: str, value: Any, *, run_id: str | None = None) -> None:
    """Set a tag of the active run (or of ``run_id``), kept as ``str(value)``.

    Raises:
        AssayError: no run is active and no ``run_id`` was given, or no such run.
        ValueError: a malformed key, or a value longer than 8,000 characters.

    Example:
        >>> assay.set_tag("dataset", "qa-v3")
    """
    set_tags({key: value}, run_id=run_id)


def set_tags(tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
    """Set several tags of a run at once; see :func:`set_tag`."""
    rid = _target(run_id, "set_tags")
    _store().set_run_tags(rid, _tags(tags, "set_tags"))


def delete_tag(key: str, *, run_id: str | None = None) -> None:
    """Remove a tag of the active run (or of ``run_id``); nothing happens if it has none."""
    rid = _target(run_id, "delete_tag")
    _store().delete_run_tag(rid, _key(key, "delete_tag", "tag"))


def log_table(data: Any, name: str, *, run_id: str | None = None) -> None:
    """Store a table with the active run (or ``run_id``), replacing one of that name.

    Args:
        data: a pandas DataFrame, a list of dicts (one per row) or a dict of
            equal-length columns. Values are made JSON-safe as trace values are
            (numpy and pandas values natively, anything else by ``repr``);
            missing values (NaN, None) are stored as null.
        name: the table's name, e.g. ``"eval_results"``.
        run_id: the run to log into instead of the active one.

    Raises:
        AssayError: no run is active and no ``run_id`` was given, or no such run.
        ValueError: ``data`` is none of the accepted forms, or a bad name.

    Example:
        >>> assay.log_table([{"question": "2+2?", "score": 1.0}], "results")
        >>> assay.load_table(run.run_id, "results")
    """
    import json

    where = "log_table"
    rid = _target(run_id, where)
    _key(name, where, "table")
    records = _records(data, where)
    _store().log_run_table(rid, name, json.dumps(records, ensure_ascii=False,
                                                 allow_nan=False))


def load_table(run_id: str, name: str) -> pd.DataFrame:
    """A table logged with :func:`log_table`, as a pandas DataFrame (nulls as NaN/None).

    Raises:
        AssayError: the run has no table of that name.

    Example:
        >>> df = assay.load_table(result.run_id, "eval_results")
    """
    import json

    import pandas as pd

    rid = _run_id(run_id, "load_table")
    store = _store()
    content = store.load_run_table(rid, name)
    if content is None:
        raise AssayError(f"load_table(): run {rid} has no table {name!r} in {store.uri}")
    return pd.DataFrame(json.loads(content))


def delete_run(run_id: str) -> bool:
    """Delete a stored run with its params, metrics, tags and tables; the traces it
    made stay (still carrying its id). Returns whether it existed."""
    return _store().delete_run(_run_id(run_id, "delete_run"))


# -- reading ----------------------------------------------------------------------------


def get_run(run_id: str) -> Run | None:
    """The stored run with this id, or ``None``.

    Example:
        >>> assay.get_run(run_id).metrics["correctness/mean"]
        0.82
    """
    return _store().get_run(_run_id(run_id, "get_run"))


def get_metric_history(run_id: str, key: str) -> list[Metric]:
    """Every value of metric ``key`` logged in the run, by step.

    Example:
        >>> [m.value for m in assay.get_metric_history(run_id, "loss")]
        [0.9, 0.5, 0.3]
    """
    return _store().get_metric_history(_run_id(run_id, "get_metric_history"), key)


#: The fixed columns of the frame ``search_runs`` returns; ``metrics.<key>``,
#: ``params.<key>`` and ``tags.<key>`` columns follow.
RUN_FRAME_COLUMNS = ("run_id", "experiment", "name", "status", "start_time_ms", "end_time_ms")


def runs_to_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: :data:`RUN_FRAME_COLUMNS`, then one column per metric
    (``metrics.<key>``), param (``params.<key>``) and tag (``tags.<key>``)."""
    import pandas as pd

    metric_keys = sorted({k for r in runs for k in r.metrics})
    param_keys = sorted({k for r in runs for k in r.params})
    tag_keys = sorted({k for r in runs for k in r.tags})
    columns = [*RUN_FRAME_COLUMNS, *(f"metrics.{k}" for k in metric_keys),
               *(f"params.{k}" for k in param_keys), *(f"tags.{k}" for k in tag_keys)]
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run_id": r.run_id, "experiment": r.experiment, "name": r.name,
                               "status": r.status, "start_time_ms": r.start_time_ms,
                               "end_time_ms": r.end_time_ms}
        row.update({f"metrics.{k}": r.metrics.get(k, math.nan) for k in metric_keys})
        row.update({f"params.{k}": r.params.get(k) for k in param_keys})
        row.update({f"tags.{k}": r.tags.get(k) for k in tag_keys})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def search_runs(filter_string: str | None = None, *, experiment: str | None = None,
                order_by: list[str] | None = None, max_results: int = 1000,
                page_token: str | None = None,
                return_type: Literal["pandas", "list"] = "pandas") -> Any:
    """Stored runs of an experiment, newest first, in MLflow's run-search syntax.

    Args:
        filter_string: which runs, e.g. ``"metrics.`correctness/mean` >= 0.8"``,
            ``"params.model = 'gpt-4o' AND attributes.status = 'FINISHED'"``,
            ``"tags.dataset IN ('qa-v3', 'qa-v4') OR run_name LIKE 'baseline%'"``.
            Fields: ``metrics.<key>`` (its latest value), ``params.<key>``,
            ``tags.<key>``, and ``status``, ``run_name``, ``run_id``,
            ``start_time``, ``end_time`` (ms or an ISO date), ``experiment``,
            bare or after ``attributes.``; keys with special characters in
            backticks. Operators ``= != < <= > >= LIKE ILIKE IN NOT IN IS [NOT]
            NULL``, joined with ``AND``, ``OR``, ``NOT`` and parentheses.
        experiment: the experiment (default: the configured one); ``"*"`` for all.
        order_by: e.g. ``["metrics.`correctness/mean` DESC", "start_time"]``;
            runs missing a metric, param or tag come last; the run id breaks
            ties. Default: newest first.
        max_results: the page size (1 to 50,000).
        page_token: continue after the page that returned it (a cursor).
        return_type: ``"pandas"`` for a DataFrame (:func:`runs_to_frame`),
            ``"list"`` for a list of :class:`Run`.

    Returns:
        The frame or list; the next page's cursor (``None`` on the last page) is
        ``frame.attrs["next_page_token"]`` or ``runs.next_page_token``.

    Raises:
        InvalidFilter: the filter or ``order_by`` is malformed (the message shows
            where and what was expected).
        ValueError: a bad ``max_results``, ``return_type`` or ``page_token``.

    Example:
        >>> assay.search_runs("metrics.`correctness/mean` >= 0.8",
        ...                   order_by=["metrics.`correctness/mean` DESC"])
    """
    if isinstance(max_results, bool) or not isinstance(max_results, int) \
            or not 1 <= max_results <= 50_000:
        raise ValueError(f"max_results must be an integer from 1 to 50000, got {max_results!r}")
    if return_type not in ("pandas", "list"):
        raise ValueError(f"return_type must be 'pandas' or 'list', got {return_type!r}")
    from assay.store.query import _experiment

    page = _store().search_runs(experiment=_experiment(experiment),
                                filter_string=filter_string or None, order_by=order_by,
                                max_results=max_results, page_token=page_token)
    if return_type == "list":
        return RunList(page.runs, page.next_page_token)
    frame = runs_to_frame(page.runs)
    frame.attrs["next_page_token"] = page.next_page_token
    return frame


class RunList(list):
    """A list of :class:`Run` with the cursor of the next page."""

    def __init__(self, runs: list[Run], next_page_token: str | None) -> None:
        super().__init__(runs)
        self.next_page_token = next_page_token


# -- helpers ----------------------------------------------------------------------------


def _store() -> Any:
    from assay.store.query import store

    return store()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_status(status: Any, where: str) -> str:
    if status not in RUN_STATUSES:
        raise ValueError(f"{where}(status={status!r}): expected one of {list(RUN_STATUSES)}")
    return str(status)


def _run_id(run_id: Any, where: str) -> str:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 32:
        raise ValueError(f"{where}(run_id={run_id!r}): expected a run id (a string of 1 to 32 "
                         "characters)")
    return run_id


def _target(run_id: str | None, where: str) -> str:
    """The run to log into: ``run_id``, else the active run."""
    if run_id is not None:
        return _run_id(run_id, where)
    active = active_run()
    if active is None:
        raise AssayError(f"{where}(): no run is active in this context; start one "
                         "(`with assay.start_run(): ...`) or pass run_id=")
    return active.run_id


def _key(key: Any, where: str, what: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{where}: {what} key {key!r} must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"{where}: {what} key {key[:40]!r}... is {len(key)} characters long; "
                         f"keys hold at most {MAX_KEY_CHARS}")
    return key


def _tags(tags: Mapping[str, Any] | None, where: str) -> dict[str, str]:
    return {} if tags is None else _strings(tags, where, "tag", MAX_TAG_CHARS)


def _strings(values: Any, where: str, what: str, limit: int, hint: str = "") -> dict[str, str]:
    """Keys checked and values as text no longer than ``limit``, or a ValueError."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}({what}s={values!r}): expected a mapping of key to value")
    clean: dict[str, str] = {}
    for key, value in values.items():
        _key(key, where, what)
        text = str(value)
        if len(text) > limit:
            raise ValueError(f"{where}: the value of {what} {key!r} is {len(text)} characters "
                             f"long; a {what} holds at most {limit}{hint}")
        clean[key] = text
    return clean


def _metric_value(key: str, value: Any, where: str) -> float:
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: the value of metric {key!r} must be a real number, got "
                         f"{type(value).__name__} {value!r}")
    return float(value)


def _step(step: Any, where: str) -> int:
    if step is None:
        return 0
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) \
            or not -_MAX_STEP - 1 <= int(step) <= _MAX_STEP:
        raise ValueError(f"{where}(step={step!r}): expected a 64-bit integer or None")
    return int(step)


def _records(data: Any, where: str) -> list[dict[str, Any]]:
    """The rows of a table as JSON-safe dicts."""
    from assay.tracing.serialize import to_jsonable

    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        rows: list[Any] = data.to_dict(orient="records")
    elif isinstance(data, Mapping):
        columns = {str(k): list(v) for k, v in data.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"{where}: the columns of a dict table must have equal lengths, "
                             f"got {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        rows = [{k: v[i] for k, v in columns.items()} for i in range(n)]
    elif isinstance(data, (list, tuple)):
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"{where}: row {i} is a {type(row).__name__}, expected a dict "
                                 "(one per row)")
    else:
        raise ValueError(f"{where}: expected a pandas DataFrame, a list of dicts or a dict of "
                         f"columns, got {type(data).__name__}")
    return [{str(k): _cell(v, to_jsonable) for k, v in row.items()} for row in rows]


def _cell(value: Any, to_jsonable: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    converted = to_jsonable(value)
    if isinstance(converted, float) and not math.isfinite(converted):
        return None if math.isnan(converted) else str(converted)
    return converted
