"""From scored rows to what a run records: per-row values (reduced over repeats),
metrics with confidence intervals, and the per-row table.

Each data row is tried ``repeats`` times (an :class:`Attempt` each: a
prediction, a trace, the scorers' feedback). Per row and feedback, the values of
the attempts are reduced to one (:data:`REDUCERS`); the metrics aggregate the
reduced values over the rows, so a row counts once however often it was tried.

Confidence intervals (at ``level``): Wilson for pass rates; Student's t for means
of :data:`_T_FROM` values or more (where the sample mean is close to normal and
the bootstrap's resampling buys nothing), a bootstrap (seeded, so a rerun gives
the same interval) for smaller means, medians and percentiles.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.errors import ConfigurationError
from assay.evaluate.data import MISSING, EvalRow, canonical_text
from assay.evaluate.scorers import Feedback, Scorer, aggregate

__all__ = ["REDUCERS", "Attempt", "RowOutcome", "RowScore", "check_reducers", "metrics_of",
           "reduce_row", "row_keys", "table_of"]

#: How the attempts of one row become its value: ``mean`` (numbers; a bool's
#: share of True), ``majority`` (the most common value), ``pass@k`` (passed if
#: any attempt passed), ``pass^k`` (passed only if every attempt passed).
REDUCERS = ("mean", "majority", "pass@k", "pass^k")
_LATENCY_PERCENTILES = ("p50", "p90", "p99")
_INTERVAL_AGGREGATIONS = frozenset({"mean", "median"})
_T_FROM = 100


@dataclass
class Attempt:
    """One try of a row: its prediction, trace and feedback."""

    row: EvalRow
    repeat: int = 0
    trace_id: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    outputs: Any = MISSING
    trace: Any = None
    feedback: list[tuple[Scorer, Feedback]] = field(default_factory=list)


@dataclass
class RowScore:
    """One feedback on one data row, over its attempts.

    ``value`` is the reduced value (``None`` when every attempt errored),
    ``passed`` its verdict, ``values`` every attempt's value, ``errors`` how
    many attempts errored, ``spread`` the attempts' standard deviation
    (numbers) or whether they disagreed (1.0/0.0, bools and strings).
    """

    value: Any
    passed: bool | None
    rationale: str | None
    error: str | None
    values: list[Any]
    errors: int
    spread: float | None


@dataclass
class RowOutcome:
    """A data row with its attempts and, per feedback name, its :class:`RowScore`."""

    row: EvalRow
    key: str
    attempts: list[Attempt]
    scores: dict[str, RowScore] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """The prediction error, when every attempt's prediction failed."""
        errors = [a.error for a in self.attempts]
        return errors[0] if errors and all(e is not None for e in errors) else None

    @property
    def trace_id(self) -> str | None:
        return self.attempts[0].trace_id if self.attempts else None


def row_keys(rows: Sequence[EvalRow]) -> list[str]:
    """A stable identity per data row, to pair rows across runs: a hash of the
    row's inputs, with ``#k`` for the k-th repeat of the same inputs."""
    seen: Counter[str] = Counter()
    keys: list[str] = []
    for row in rows:
        text = canonical_text(row.inputs)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        keys.append(digest if not seen[digest] else f"{digest}#{seen[digest]}")
        seen[digest] += 1
    return keys


def check_reducers(reducer: str | Mapping[str, str] | None,
                   scorers: Sequence[Scorer]) -> dict[str, str]:
    """``{scorer name: reducer}`` for the given setting (one for all, or per scorer).

    Raises:
        ConfigurationError: an unknown reducer, or a scorer name no scorer has.
    """
    names = {s.name for s in scorers}
    if reducer is None:
        return {}
    if isinstance(reducer, str):
        _check_reducer(reducer, "reducer")
        return dict.fromkeys(names, reducer)
    if not isinstance(reducer, Mapping):
        raise ConfigurationError(f"reducer={reducer!r}: expected one of {', '.join(REDUCERS)} or a "
                          f"mapping of scorer name to one")
    chosen: dict[str, str] = {}
    for name, value in reducer.items():
        if name not in names:
            raise ConfigurationError(f"reducer[{name!r}]: no scorer has that name (scorers: "
                              f"{', '.join(sorted(names))})")
        _check_reducer(value, f"reducer[{name!r}]")
        chosen[name] = value
    return chosen


def _check_reducer(value: Any, where: str) -> None:
    if value not in REDUCERS:
        raise ConfigurationError(f"{where}={value!r}: expected one of {', '.join(REDUCERS)}")


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _verdict(scorer: Scorer, value: Any) -> bool | None:
    return scorer.passed(value)


def reduce_row(scorer: Scorer, feedback: Sequence[Feedback], reducer: str | None) -> RowScore:
    """The row's value for one feedback name from its attempts' feedback.

    ``pass@k`` and ``pass^k`` need verdicts (bool values, or a ``pass_if``): their
    value is the verdict, also for a single attempt; an attempt that errored counts
    as not passed for ``pass^k`` and is skipped by ``pass@k``.
    """
    good = [f for f in feedback if f.error is None]
    errors = len(feedback) - len(good)
    values = [f.value for f in feedback]
    if not good:
        first_error = feedback[0].error if feedback else "no feedback"
        return RowScore(None, None, None, first_error, values, errors, None)
    kept = [f.value for f in good]
    numbers = [_numeric(v) for v in kept]
    all_bool = all(isinstance(v, bool) for v in kept)
    verdicts = [_verdict(scorer, v) for v in kept]
    spread: float | None = None
    if len(good) > 1:
        if all(n is not None for n in numbers) and not all_bool:
            spread = statistics.pstdev(n for n in numbers if n is not None)
        else:
            spread = float(len({json.dumps(v, default=str) for v in kept}) > 1)
    value: Any
    passed: bool | None
    if reducer in ("pass@k", "pass^k"):
        if any(v is None for v in verdicts):
            return RowScore(None, None, None,
                            f"{reducer} needs a pass/fail verdict for every value: return "
                            f"bools or give the scorer pass_if", values, errors, spread)
        passed = any(verdicts) if reducer == "pass@k" else (all(verdicts) and not errors)
        value = passed
    elif len(good) == 1:
        value, passed = kept[0], verdicts[0]
    elif (reducer or ("majority" if all_bool else "mean")) == "mean" and all(
            n is not None for n in numbers):
        value = statistics.fmean(n for n in numbers if n is not None)
        passed = (value >= 0.5) if all_bool and scorer.pass_if is None else \
            _verdict(scorer, value)
    else:
        value = Counter(kept).most_common(1)[0][0]
        passed = _verdict(scorer, value)
    rationale = next((f.rationale for f in good if f.value == value and f.rationale), None) \
        or good[0].rationale
    return RowScore(value, passed, rationale, None, values, errors, spread)


def score_rows(outcomes: Sequence[RowOutcome], names: Sequence[str],
               reducers: Mapping[str, str]) -> None:
    """Fill each outcome's ``scores`` from its attempts' feedback."""
    for outcome in outcomes:
        by_name: dict[str, tuple[Scorer, list[Feedback]]] = {}
        for attempt in outcome.attempts:
            for s, f in attempt.feedback:
                by_name.setdefault(str(f.name), (s, []))[1].append(f)
        for name in names:
            if name in by_name:
                s, feedback = by_name[name]
                outcome.scores[name] = reduce_row(s, feedback, reducers.get(s.name))


def metrics_of(outcomes: Sequence[RowOutcome], scorers_by_name: Mapping[str, Scorer],
               names: Sequence[str], *, repeats: int, predicted: bool, level: float
               ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The run's metrics and the confidence intervals of its aggregates."""
    from assay.evaluate import stats

    metrics: dict[str, float] = {"rows": float(len(outcomes)), "repeats": float(repeats)}
    intervals: dict[str, tuple[float, float]] = {}
    for name in names:
        s = scorers_by_name[name]
        scores = [o.scores[name] for o in outcomes if name in o.scores]
        values = [n for sc in scores if sc.error is None and (n := _numeric(sc.value)) is not None]
        for agg, value in aggregate(values, s.aggregations).items():
            metrics[f"{name}/{agg}"] = value
            if len(values) < 2 or not (agg in _INTERVAL_AGGREGATIONS or agg.startswith("p")):
                continue
            if agg == "mean" and len(values) >= _T_FROM:
                intervals[f"{name}/{agg}"] = stats.t_interval(values, level)
            else:
                intervals[f"{name}/{agg}"] = stats.bootstrap_interval(
                    values, statistic=agg, level=level)
        metrics[f"{name}/error_count"] = float(sum(sc.errors for sc in scores))
        verdicts = [sc.passed for sc in scores if sc.error is None and sc.passed is not None]
        if verdicts:
            passes = sum(verdicts)
            metrics[f"{name}/pass_rate"] = passes / len(verdicts)
            intervals[f"{name}/pass_rate"] = stats.wilson_interval(passes, len(verdicts), level)
        if repeats > 1:
            spreads = [sc.spread for sc in scores if sc.spread is not None]
            if spreads:
                key = "repeat_std" if all(
                    isinstance(_numeric(v), float) and not isinstance(v, bool)
                    for sc in scores for v in sc.values if v is not None) else "flip_rate"
                metrics[f"{name}/{key}"] = statistics.fmean(spreads)
    attempts = [a for o in outcomes for a in o.attempts]
    if predicted:
        metrics["predict/error_count"] = float(sum(a.error is not None for a in attempts))
        latencies = [a.latency_ms for a in attempts if a.latency_ms is not None]
        for agg, value in aggregate(latencies, ["mean", *_LATENCY_PERCENTILES]).items():
            metrics[f"predict/latency_ms_{agg}"] = value
    _judge_metrics(attempts, metrics)
    return metrics, intervals


def _judge_metrics(attempts: Sequence[Attempt], metrics: dict[str, float]) -> None:
    calls = hits = misses = endpoint_errors = 0
    tokens_in = tokens_out = 0.0
    cost: float | None = None
    for attempt in attempts:
        for s, f in attempt.feedback:
            if s.source_type != "LLM_JUDGE":
                continue
            meta = f.metadata
            cache = meta.get("cache")
            if cache not in ("hit", "miss", "off"):
                continue  # not judged (the row could not be, or was not scored)
            calls += 1
            hits += cache == "hit"
            misses += cache == "miss"
            endpoint_errors += meta.get("endpoint_error") == "true"
            tokens_in += _number(meta.get("input_tokens"))
            tokens_out += _number(meta.get("output_tokens"))
            if "cost_usd" in meta:
                cost = (cost or 0.0) + _number(meta.get("cost_usd"))
    if not calls:
        return
    metrics.update({"judge/calls": float(calls), "judge/cache_hits": float(hits),
                    "judge/cache_misses": float(misses), "judge/input_tokens": tokens_in,
                    "judge/output_tokens": tokens_out,
                    "judge/endpoint_errors": float(endpoint_errors)})
    if cost is not None:
        metrics["judge/cost_usd"] = cost


def _number(text: str | None) -> float:
    try:
        value = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def table_of(outcomes: Sequence[RowOutcome], names: Sequence[str], *, repeats: int) -> Any:
    """One row per data row: its identity, inputs, outputs, and each feedback's
    reduced value, rationale, error and verdict (and, with repeats, every
    attempt's value and trace)."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    for outcome in outcomes:
        row = outcome.row
        first = outcome.attempts[0]
        record: dict[str, Any] = {
            "row": row.index, "row_key": outcome.key, "trace_id": outcome.trace_id,
            "inputs": row.inputs, "outputs": None if first.outputs is MISSING else first.outputs,
            "expectations": row.expectations, "error": outcome.error,
        }
        if repeats > 1:
            record["trace_ids"] = [a.trace_id for a in outcome.attempts]
            record["outputs_all"] = [None if a.outputs is MISSING else a.outputs
                                     for a in outcome.attempts]
        for name in names:
            sc = outcome.scores.get(name)
            record.update({
                f"{name}/value": None if sc is None else sc.value,
                f"{name}/rationale": None if sc is None else sc.rationale,
                f"{name}/error": None if sc is None else sc.error,
                f"{name}/passed": None if sc is None else sc.passed,
            })
            if repeats > 1:
                record[f"{name}/values"] = None if sc is None else sc.values
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    # Text columns keep None for "no error", "no rationale" (pandas would infer a
    # string dtype and turn None into NaN).
    for column in ["error", *(f"{n}/{part}" for n in names for part in ("error", "rationale"))]:
        if column in frame.columns:
            frame[column] = pd.Series([r[column] for r in records], dtype=object)
    return frame
