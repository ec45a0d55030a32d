"""Comparing an evaluation run with a baseline run, row by row.

Rows are paired by data-row identity (the ``row_key`` column of the per-row
table: a hash of the row's inputs, with a count for repeated inputs), so the
comparison is paired: each row is its own control, and a drop is told from
judge noise by a paired test per feedback: an exact McNemar test for pass/fail
verdicts, a Wilcoxon signed-rank test (or a paired bootstrap) for numbers. A
regression is a drop that is significant at ``alpha`` (one-sided) and larger
than ``tolerance``::

    comparison = assay.compare(result.run_id, "tags.branch = 'main'")
    comparison.passed, comparison.reason
    comparison.metrics[0].newly_failing      # rows that passed in the baseline

The baseline may be a run id, a run name (its latest run), or a ``search_runs``
filter (its latest matching run), so CI can compare a pull request with the
main branch's latest run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assay.errors import AssayError
from assay.evaluate.gates import Check, GateResult

if TYPE_CHECKING:
    import pandas as pd

    from assay.store.runs import Run

__all__ = ["Comparison", "MetricComparison", "RowChange", "compare", "resolve_run"]

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_FILTER_HINT = re.compile(r"(=|<|>|\bLIKE\b|\bIN\b|\bIS\b)", re.IGNORECASE)
#: The per-row table ``evaluate`` logs with its run.
RESULTS_TABLE = "eval_results"


class BaselineNotFound(AssayError, LookupError):
    """The baseline names no stored run (or a run without an evaluation table)."""


@dataclass(frozen=True)
class RowChange:
    """A row whose verdict changed between the baseline and the current run."""

    row_key: str
    row: int
    trace_id: str | None
    baseline_trace_id: str | None
    baseline_value: Any
    current_value: Any
    inputs: Any = None


@dataclass(frozen=True)
class MetricComparison:
    """One feedback compared over the paired rows.

    Attributes:
        name: the feedback name.
        kind: ``binary`` (pass/fail verdicts: the pass rate is compared) or
            ``numeric`` (the mean value is compared).
        pairs: rows present in both runs with a value in both.
        baseline, current: the pass rate or mean over the pairs, in each run.
        diff: ``current - baseline``.
        interval: the confidence interval of ``diff``.
        p_value: of the one-sided test that the current run is worse.
        significant: ``p_value < alpha``.
        regression: significant and a drop larger than the tolerance.
        method: the test used.
        newly_failing, newly_passing: for binary comparisons, the rows that changed.
    """

    name: str
    kind: str
    pairs: int
    baseline: float
    current: float
    diff: float
    interval: tuple[float, float]
    p_value: float
    significant: bool
    regression: bool
    method: str
    newly_failing: list[RowChange] = field(default_factory=list)
    newly_passing: list[RowChange] = field(default_factory=list)

    @property
    def message(self) -> str:
        lo, hi = self.interval
        verdict = "REGRESSION" if self.regression else (
            "significant change" if self.significant else "no significant change")
        extra = (f"; {len(self.newly_failing)} rows newly fail, {len(self.newly_passing)} "
                 f"newly pass" if self.kind == "binary" else "")
        what = "pass rate" if self.kind == "binary" else "mean"
        return (f"{self.name} {what} {self.baseline:.4g} -> {self.current:.4g} "
                f"(diff {self.diff:+.4g}, CI {lo:+.4g}..{hi:+.4g}, p={self.p_value:.3g}, "
                f"{self.method}, {self.pairs} pairs): {verdict}{extra}")


@dataclass(frozen=True)
class Comparison:
    """An evaluation run against a baseline run, feedback by feedback."""

    run_id: str
    baseline_run_id: str
    metrics: list[MetricComparison]
    alpha: float
    tolerance: float
    level: float
    unpaired_current: int = 0
    unpaired_baseline: int = 0

    @property
    def regressions(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.regression]

    @property
    def passed(self) -> bool:
        """No feedback regressed."""
        return not self.regressions

    @property
    def reason(self) -> str:
        if self.passed:
            return f"no regression against run {self.baseline_run_id} " \
                   f"({len(self.metrics)} feedback compared)"
        return "\n".join(f"REGRESSION {m.message}" for m in self.regressions)

    def gate(self) -> GateResult:
        """One regression check per compared feedback; a failed check when nothing
        could be compared (no paired rows, or no feedback both runs have)."""
        if not self.metrics:
            return GateResult([Check(
                "regression", f"comparison with baseline {self.baseline_run_id}", "*", False,
                None, message=f"nothing compared with baseline {self.baseline_run_id}: "
                              f"{self.unpaired_current} rows of this run and "
                              f"{self.unpaired_baseline} of the baseline have no partner, "
                              f"or the runs share no feedback")], self.level)
        return GateResult([
            Check("regression", f"{m.name} vs baseline {self.baseline_run_id}", m.name,
                  not m.regression, m.diff, m.diff, m.interval, m.message,
                  {"p_value": m.p_value, "baseline": m.baseline, "current": m.current,
                   "pairs": m.pairs, "method": m.method,
                   "newly_failing": [c.row_key for c in m.newly_failing],
                   "newly_passing": [c.row_key for c in m.newly_passing]})
            for m in self.metrics], self.level)

    def __str__(self) -> str:
        head = (f"run {self.run_id} vs baseline {self.baseline_run_id}: "
                f"{'no regression' if self.passed else f'{len(self.regressions)} regression(s)'}")
        return "\n".join([head, *(f"  {m.message}" for m in self.metrics)])


def resolve_run(ref: Any, *, experiment: str | None = None, exclude: str | None = None,
                finished: bool = False, what: str = "baseline") -> Run:
    """The run a baseline reference names: a :class:`Run`, a run id, a run name (its
    latest run), or a ``search_runs`` filter (its latest matching run).

    Args:
        exclude: a run id never to return from a name or filter (the run being
            compared: an evaluation tagged like its baseline filter finds itself).
        what: how messages name the reference (``"baseline"``, ``"run"``).
        finished: with a name or filter, only FINISHED runs count.

    Raises:
        BaselineNotFound: nothing matches.
    """
    from assay.store import runs as run_api

    if isinstance(ref, run_api.Run):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise BaselineNotFound(f"{what} {ref!r}: expected a run id, a run name or a "
                               f"search_runs filter")
    text = ref.strip()
    if _RUN_ID.match(text):
        run = run_api.get_run(text)
        if run is not None:
            return run
    extra = ""
    if exclude is not None:
        extra += f" AND attributes.run_id != '{exclude}'"
    if finished:
        extra += " AND attributes.status = 'FINISHED'"
    found = _latest(run_api, _name_filter(text) + extra, experiment, quiet=True)
    if not found and _FILTER_HINT.search(text):
        found = _latest(run_api, f"({text}){extra}", experiment, quiet=False)
    if not found:
        raise BaselineNotFound(f"{what} {ref!r}: no run matches (looked for a run id, a "
                               f"run name and a search_runs filter)")
    return found[0]


def _name_filter(name: str) -> str:
    """A filter matching exactly this run name (quoted with whichever quote it lacks)."""
    quote = "'" if "'" not in name else '"'
    return f"run_name = {quote}{name}{quote}"


def _latest(run_api: Any, where: str, experiment: str | None, *, quiet: bool) -> list[Run]:
    """The latest run matching ``where`` (a malformed filter raises unless ``quiet``)."""
    from assay.errors import InvalidFilter

    try:
        found: list[Run] = run_api.search_runs(where, experiment=experiment or "*",
                                               max_results=1, order_by=["start_time DESC"],
                                               return_type="list")
    except InvalidFilter:
        if not quiet:
            raise
        return []
    return found


def compare(run: Any, baseline: Any, *, alpha: float = 0.05, tolerance: float = 0.0,
            level: float = 0.95, metrics: Sequence[str] | None = None,
            experiment: str | None = None) -> Comparison:
    """Compare an evaluation run with a baseline run, paired by row.

    Args:
        run: the run (a :class:`~assay.Run`, a run id, a run name or a filter).
        baseline: the baseline, the same ways; a name or filter picks the latest
            FINISHED run other than ``run``, in ``experiment`` (default: the run's).
        alpha: the significance level of each one-sided test.
        tolerance: a drop this small is never a regression (a pass-rate fraction
            for verdicts, score units for numbers).
        level: the confidence level of the differences' intervals.
        metrics: the feedback names to compare (default: every one both runs have).
        experiment: where names and filters are looked up.

    Returns:
        A :class:`Comparison`; ``comparison.gate()`` gives its regression checks
        (a failed one when nothing could be paired).

    Raises:
        BaselineNotFound: a reference names no run, or a run has no evaluation table.
        ValueError: a bad ``alpha``, ``tolerance`` or feedback name.

    Example:
        >>> c = assay.compare(result.run_id, "tags.branch = 'main'")
        >>> c.passed, [m.name for m in c.regressions]
        (False, ['correctness'])
    """
    from assay.evaluate import stats
    from assay.store import runs as run_api

    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r}: expected a probability between 0 and 1")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance!r}: expected a non-negative number")
    current_run = resolve_run(run, experiment=experiment, what="run")
    base_run = resolve_run(baseline, experiment=experiment or current_run.experiment,
                           exclude=current_run.run_id, finished=True)
    current = _table(run_api, current_run)
    base = _table(run_api, base_run)
    names = _feedback_names(current, base, metrics)
    now_rows = {r["row_key"]: r for r in current.to_dict("records")}
    base_rows = {r["row_key"]: r for r in base.to_dict("records")}
    shared = [k for k in now_rows if k in base_rows]
    compared: list[MetricComparison] = []
    for name in names:
        kind = _kind(now_rows.values(), base_rows.values(), name)
        pairs: list[tuple[Any, Any, str]] = []
        for key in shared:
            now = _value(now_rows[key], name, kind)
            before = _value(base_rows[key], name, kind)
            if now is not None and before is not None:
                pairs.append((now, before, key))
        if not pairs:
            continue
        test = stats.regression_test([p[0] for p in pairs], [p[1] for p in pairs], kind=kind,
                                     alpha=alpha, tolerance=float(tolerance), level=level)
        failing, passing = ([], []) if kind != "binary" else _changes(
            pairs, now_rows, base_rows)
        compared.append(MetricComparison(
            name=name, kind=kind, pairs=len(pairs), baseline=test.baseline_value,
            current=test.current_value, diff=test.diff, interval=test.ci,
            p_value=test.p_value, significant=test.significant, regression=test.regression,
            method=test.method, newly_failing=failing, newly_passing=passing))
    return Comparison(current_run.run_id, base_run.run_id, compared, alpha, float(tolerance),
                      level, unpaired_current=len(current) - len(shared),
                      unpaired_baseline=len(base) - len(shared))


def _table(run_api: Any, run: Run) -> pd.DataFrame:
    try:
        table = run_api.load_table(run.run_id, RESULTS_TABLE)
    except Exception as exc:
        raise BaselineNotFound(f"run {run.run_id} ({run.name}) has no evaluation table "
                               f"{RESULTS_TABLE!r}: {exc}") from None
    if "row_key" not in table.columns:
        raise BaselineNotFound(f"run {run.run_id} ({run.name}): its evaluation table has no "
                               f"row_key column (logged by an older assay); evaluate again")
    return table


def _feedback_names(current: pd.DataFrame, base: pd.DataFrame,
                    wanted: Sequence[str] | None) -> list[str]:
    def names(frame: pd.DataFrame) -> list[str]:
        return [c[: -len("/value")] for c in frame.columns if c.endswith("/value")]

    both = [n for n in names(current) if n in set(names(base))]
    if wanted is None:
        return both
    missing = [n for n in wanted if n not in both]
    if missing:
        raise ValueError(f"compare(metrics=...): {missing[0]!r} is not a feedback of both runs "
                         f"(both have {', '.join(both) or 'none'})")
    return list(wanted)


def _kind(current: Iterable[dict[str, Any]], base: Iterable[dict[str, Any]], name: str) -> str:
    """``binary`` when the rows carry pass/fail verdicts for this feedback."""
    column = f"{name}/passed"
    for rows in (current, base):
        if any(_bool(r.get(column)) is not None for r in rows):
            return "binary"
    return "numeric"


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy's, from a frame column
        return bool(value)
    return None


def _value(row: dict[str, Any], name: str, kind: str) -> Any:
    if kind == "binary":
        return _bool(row.get(f"{name}/passed"))
    value = row.get(f"{name}/value")
    flag = _bool(value)
    if flag is not None:
        return float(flag)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _changes(pairs: list[tuple[Any, Any, str]], current: dict[str, dict[str, Any]],
             base: dict[str, dict[str, Any]]) -> tuple[list[RowChange], list[RowChange]]:
    failing: list[RowChange] = []
    passing: list[RowChange] = []
    for now, before, key in pairs:
        if now == before:
            continue
        row_now, row_before = current[key], base[key]
        change = RowChange(key, int(row_now["row"]), row_now.get("trace_id"),
                           row_before.get("trace_id"), before, now, row_now.get("inputs"))
        (failing if before and not now else passing).append(change)
    return failing, passing
