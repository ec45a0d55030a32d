"""What ``evaluate()`` returns: :class:`EvaluationResult`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from assay.evaluate.compare import Comparison
    from assay.evaluate.gates import GateResult

__all__ = ["EvaluationResult", "RowError"]

_WORST_ROWS = 3


@dataclass(frozen=True)
class RowError:
    """A failure on one row: of ``predict_fn`` (``scorer`` is ``None``) or of a scorer."""

    row: int
    trace_id: str | None
    scorer: str | None
    error: str

    def __str__(self) -> str:
        what = "predict_fn" if self.scorer is None else f"scorer {self.scorer!r}"
        return f"row {self.row}: {what}: {self.error}"


@dataclass
class EvaluationResult:
    """The outcome of one evaluation.

    Attributes:
        run_id: the run the evaluation was logged as (``assay.get_run(run_id)``).
        metrics: ``<feedback>/<aggregation>`` (``correctness/mean``),
            ``<feedback>/error_count``, ``<feedback>/pass_rate`` where scores
            have a verdict, ``rows``, ``predict/*`` and ``judge/*`` figures.
        table: one row per data row: ``row``, ``trace_id``, ``inputs``,
            ``outputs``, ``expectations``, ``error`` (of ``predict_fn``), and
            for each feedback ``<name>/value``, ``<name>/rationale``,
            ``<name>/error``.
        errors: every failure, row by row.
        feedback_names: the feedback names, in scorer order.

    Its ``repr`` (what a notebook shows) is :meth:`summary`.
    """

    run_id: str
    metrics: dict[str, float]
    table: pd.DataFrame
    errors: list[RowError] = field(default_factory=list)
    feedback_names: list[str] = field(default_factory=list)
    experiment: str | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float = 0.95
    gate: GateResult | None = None
    comparison: Comparison | None = None

    def check(self, thresholds: Mapping[str, str | float] | None = None, *,
              max_error_rate: float = 0.0) -> GateResult:
        """Gate this result on thresholds and the error policy (see
        :func:`assay.evaluate.gates.check`).

        Example:
            >>> gate = result.check({"exact_match/mean": ">= 0.8 @lower"})
            >>> gate.passed, gate.reason
        """
        from assay.evaluate.gates import check

        return check(self, thresholds, max_error_rate=max_error_rate)

    def summary(self) -> str:
        """A short text: the run, each feedback's mean and errors, and the worst rows.

        Example:
            >>> print(result.summary())
            Evaluation run 3f2a... (experiment 'default'): 20 rows
              exact_match      mean 0.850  pass 0.850  errors 0
            ...
        """
        rows = int(self.metrics.get("rows", len(self.table)))
        lines = [f"Evaluation run {self.run_id} (experiment {self.experiment!r}): "
                 f"{rows} rows"]
        width = max((len(n) for n in self.feedback_names), default=0)
        for name in self.feedback_names:
            parts = [f"  {name:<{width}}"]
            mean = self.metrics.get(f"{name}/mean")
            if mean is not None and math.isfinite(mean):
                parts.append(f"mean {mean:.3f}{self._interval(f'{name}/mean')}")
            rate = self.metrics.get(f"{name}/pass_rate")
            if rate is not None:
                parts.append(f"pass {rate:.3f}{self._interval(f'{name}/pass_rate')}")
            parts.append(f"errors {int(self.metrics.get(f'{name}/error_count', 0))}")
            lines.append("  ".join(parts))
        failed = int(self.metrics.get("predict/error_count", 0))
        if failed:
            lines.append(f"  predict_fn failed on {failed} row(s)")
        judge_calls = self.metrics.get("judge/calls")
        if judge_calls:
            lines.append(f"  judge: {int(judge_calls)} calls, "
                         f"{int(self.metrics.get('judge/cache_hits', 0))} cached, "
                         f"{int(self.metrics.get('judge/input_tokens', 0))} in / "
                         f"{int(self.metrics.get('judge/output_tokens', 0))} out tokens"
                         + (f", ${self.metrics['judge/cost_usd']:.4f}"
                            if "judge/cost_usd" in self.metrics else ""))
        if self.comparison is not None:
            lines.append("  " + str(self.comparison).replace("\n", "\n  "))
        if self.gate is not None:
            lines.append("  " + str(self.gate).replace("\n", "\n  "))
        worst = self.worst_rows(_WORST_ROWS)
        if worst:
            lines.append("  worst rows:")
            lines.extend(f"    row {r['row']}  trace {r['trace_id']}  {r['why']}"
                         for r in worst)
            lines.append(f"  find them: assay.search_traces(\"run_id = '{self.run_id}'\")")
        return "\n".join(lines)

    def _interval(self, metric: str) -> str:
        interval = self.intervals.get(metric)
        if interval is None:
            return ""
        return f" [{interval[0]:.3f}, {interval[1]:.3f}]"

    def worst_rows(self, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` rows that did worst: errors first, then the most failed verdicts
        (a false bool, a ``pass_if`` miss), then the lowest numeric scores.

        Each is a dict with ``row``, ``trace_id`` and ``why`` (what went wrong).
        """
        scored: list[tuple[tuple[int, int, float], dict[str, Any]]] = []
        for record in self.table.to_dict("records"):
            if _text(record.get("error")):
                # The scorers' errors only repeat that the row was not scored.
                errors = [f"predict_fn: {record['error']}"]
            else:
                errors = [f"{name}: {record.get(f'{name}/error')}"
                          for name in self.feedback_names
                          if _text(record.get(f"{name}/error"))]
            failed = [name for name in self.feedback_names
                      if record.get(f"{name}/passed") is False]
            numeric = [float(v) for name in self.feedback_names
                       if isinstance(v := record.get(f"{name}/value"), (int, float))
                       and not isinstance(v, bool) and math.isfinite(v)]
            if not errors and not failed:
                continue
            why = "; ".join(errors) if errors else "failed " + ", ".join(failed)
            key = (-len(errors), -len(failed), min(numeric, default=math.inf))
            scored.append((key, {"row": record["row"], "trace_id": record.get("trace_id"),
                                 "why": why}))
        scored.sort(key=lambda item: item[0])
        return [item[1] for item in scored[:n]]

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.summary())}</pre>"

    def __str__(self) -> str:
        return self.summary()


def _text(value: Any) -> bool:
    """A non-empty string (a table cell may hold None or, from pandas, NaN)."""
    return isinstance(value, str) and bool(value)
