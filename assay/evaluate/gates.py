"""Quality gates: thresholds on an evaluation's metrics, an error policy, and
regression checks against a baseline run, each a :class:`Check` with the
observed value, its confidence interval and a verdict.

A threshold names a metric and a comparison: ``{"correctness/mean": ">= 0.8"}``.
Appending ``@lower`` (or ``@upper``) makes it hold at that bound of the metric's
confidence interval instead of on the point estimate, so that a mean that
passes only by the luck of a noisy judge does not pass the gate::

    result = assay.evaluate(data, scorers, predict_fn=app,
                            thresholds={"correctness/mean": ">= 0.8 @lower",
                                        "latency/p90": "<= 2000"})
    result.gate.passed, result.gate.reason

A threshold on a metric the evaluation does not have is an error, not a pass.
Errors are never dropped silently from a mean: a feedback whose error rate
exceeds ``max_error_rate`` (default 0) fails the gate.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assay.errors import AssayError

if TYPE_CHECKING:
    from assay.evaluate.results import EvaluationResult

__all__ = ["Check", "GateError", "GateResult", "Threshold", "check", "parse_all",
           "parse_threshold"]

_THRESHOLD = re.compile(
    r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
    r"(?:@\s*(lower|upper|point))?\s*$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq,
    "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
_CLOSE = 1e-9  # == and != compare floats to within this
#: Aggregations that exist only when a feedback has values (``count`` always does).
_VALUE_METRICS = frozenset({"mean", "min", "max", "median", "std", "sum"})
#: Aggregations that carry a confidence interval (with percentiles ``p<N>``).
_INTERVAL_METRICS = frozenset({"mean", "median", "pass_rate"})


class GateError(AssayError, ValueError):
    """A threshold is malformed or names a metric the evaluation does not have."""


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold: ``metric op value`` at a bound of the interval."""

    metric: str
    op: str
    value: float
    bound: str = "point"  # point | lower | upper

    def __str__(self) -> str:
        at = "" if self.bound == "point" else f" @{self.bound}"
        return f"{self.metric} {self.op} {self.value:g}{at}"

    def holds(self, observed: float) -> bool:
        if self.op == "==":
            return math.isclose(observed, self.value, rel_tol=_CLOSE, abs_tol=_CLOSE)
        if self.op == "!=":
            return not math.isclose(observed, self.value, rel_tol=_CLOSE, abs_tol=_CLOSE)
        return _OPERATORS[self.op](observed, self.value)


def parse_threshold(metric: str, rule: str | float | Threshold) -> Threshold:
    """Parse one threshold; a bare number means ``>=`` that number.

    Raises:
        GateError: the rule is not ``<op> <number> [@lower|@upper|@point]``.

    Example:
        >>> parse_threshold("correctness/mean", ">= 0.8 @lower")
        Threshold(metric='correctness/mean', op='>=', value=0.8, bound='lower')
    """
    if isinstance(rule, Threshold):
        return rule
    if not isinstance(metric, str) or not metric:
        raise GateError(f"a threshold needs a metric name, got {metric!r}")
    if isinstance(rule, bool) or not isinstance(rule, (str, int, float)):
        raise GateError(f"threshold for {metric!r}: expected a rule such as '>= 0.8', "
                        f"got {rule!r}")
    if isinstance(rule, (int, float)):
        return Threshold(metric, ">=", float(rule))
    match = _THRESHOLD.match(rule)
    if match is None:
        raise GateError(f"threshold for {metric!r}: cannot read {rule!r}; expected "
                        f"'<op> <number>' with op one of >=, >, <=, <, ==, != and an optional "
                        f"'@lower' or '@upper' (hold at that bound of the confidence interval)")
    op, value, bound = match.groups()
    return Threshold(metric, op, float(value), bound or "point")


@dataclass(frozen=True)
class Check:
    """One verdict of a gate.

    Attributes:
        kind: ``threshold``, ``error_rate`` or ``regression``.
        name: what was checked, e.g. ``"correctness/mean >= 0.8 @lower"``.
        metric: the metric (or feedback name, for error rates and regressions).
        passed: the verdict.
        observed: the value compared (the point estimate, or the interval bound).
        estimate: the metric's point estimate.
        interval: its confidence interval, when there is one.
        message: the verdict in words, with the figures.
        details: more figures (a regression's p-value, newly failing rows, ...).
    """

    kind: str
    name: str
    metric: str
    passed: bool
    observed: float | None
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    """Every check of a gate; ``passed`` when all passed. ``bool(gate)`` is ``passed``."""

    checks: list[Check]
    level: float = 0.95

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def reason(self) -> str:
        """Each failed check with its figures, one per line; or that all passed."""
        failed = self.failed
        if not failed:
            return f"all {len(self.checks)} checks passed"
        return "\n".join(f"FAILED {c.message}" for c in failed)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = "gate passed" if self.passed else f"gate failed ({len(self.failed)} of " \
            f"{len(self.checks)} checks)"
        return "\n".join([head, *(f"  {'ok  ' if c.passed else 'FAIL'} {c.message}"
                                  for c in self.checks)])

    def __add__(self, other: GateResult) -> GateResult:
        return GateResult(self.checks + other.checks, self.level)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _interval_text(interval: tuple[float, float] | None, level: float) -> str:
    if interval is None:
        return ""
    return f" ({level:.0%} CI {_fmt(interval[0])}..{_fmt(interval[1])})"


def threshold_check(threshold: Threshold, metrics: Mapping[str, float],
                    intervals: Mapping[str, tuple[float, float]], level: float) -> Check:
    """Check one threshold against an evaluation's metrics and intervals.

    Raises:
        GateError: the metric does not exist, or the threshold asks for an interval
            bound the metric has none for.
    """
    feedback, _, aggregation = threshold.metric.rpartition("/")
    if threshold.metric not in metrics and metrics.get(f"{feedback}/error_count", 0) > 0 \
            and f"{feedback}/pass_rate" not in metrics and not any(
                k.startswith(f"{feedback}/") and k.rsplit("/", 1)[1] in _VALUE_METRICS
                for k in metrics):
        # The feedback exists but has no value to aggregate: every row errored.
        errors = int(metrics[f"{feedback}/error_count"])
        return Check("threshold", str(threshold), threshold.metric, False, None, None, None,
                     f"{threshold}: no value ({feedback} errored on every row: "
                     f"{errors} errors)")
    if threshold.metric not in metrics:
        known = ", ".join(sorted(m for m in metrics if "/" in m)[:12])
        raise GateError(f"threshold on {threshold.metric!r}: the evaluation has no such metric "
                        f"(it has {known}{', ...' if len(metrics) > 12 else ''})")
    estimate = float(metrics[threshold.metric])
    interval = intervals.get(threshold.metric)
    if threshold.bound != "point" and interval is None:
        if aggregation in _INTERVAL_METRICS or aggregation.startswith("p"):
            # Too few values for an interval: the bound cannot be shown to hold.
            return Check("threshold", str(threshold), threshold.metric, False, None,
                         estimate, None, f"{threshold}: no interval (fewer than 2 values; "
                                         f"estimate {_fmt(estimate)}), so the "
                                         f"{threshold.bound} bound cannot be shown to hold")
        raise GateError(f"threshold {threshold}: {threshold.metric!r} has no confidence "
                        f"interval; drop the @{threshold.bound}")
    observed = estimate if threshold.bound == "point" else (
        interval[0] if threshold.bound == "lower" else interval[1])  # type: ignore[index]
    passed = math.isfinite(observed) and threshold.holds(observed)
    where = "" if threshold.bound == "point" else f" at the interval's {threshold.bound} bound"
    message = (f"{threshold}: observed {_fmt(observed)}{where}, estimate {_fmt(estimate)}"
               f"{_interval_text(interval, level)}")
    return Check("threshold", str(threshold), threshold.metric, passed, observed, estimate,
                 interval, message)


def error_rate_checks(result: EvaluationResult, max_error_rate: float) -> list[Check]:
    """One check per feedback: its error rate must not exceed ``max_error_rate``."""
    checks: list[Check] = []
    scored = result.metrics.get("rows", 0.0) * result.metrics.get("repeats", 1.0)
    for name in result.feedback_names:
        errors = result.metrics.get(f"{name}/error_count", 0.0)
        rate = errors / scored if scored else 0.0
        passed = rate <= max_error_rate + _CLOSE
        message = (f"{name} error rate {rate:.2%} ({int(errors)} of {int(scored)}) "
                   f"{'<=' if passed else '>'} max_error_rate {max_error_rate:.2%}")
        checks.append(Check("error_rate", f"{name}/error_rate <= {max_error_rate:g}", name,
                            passed, rate, rate, None, message))
    predict_errors = result.metrics.get("predict/error_count")
    if predict_errors is not None:
        rate = predict_errors / scored if scored else 0.0
        passed = rate <= max_error_rate + _CLOSE
        checks.append(Check(
            "error_rate", f"predict/error_rate <= {max_error_rate:g}", "predict", passed, rate,
            rate, None, f"predict_fn error rate {rate:.2%} ({int(predict_errors)} of "
                        f"{int(scored)}) {'<=' if passed else '>'} max_error_rate "
                        f"{max_error_rate:.2%}"))
    return checks


def check(result: EvaluationResult,
          thresholds: Mapping[str, str | float] | Sequence[Threshold] | None = None, *,
          max_error_rate: float = 0.0) -> GateResult:
    """Gate an evaluation: every threshold, and every feedback's error rate.

    Args:
        result: what ``evaluate()`` returned.
        thresholds: ``{metric: rule}`` (see :func:`parse_threshold`).
        max_error_rate: the largest share of rows a scorer (or ``predict_fn``) may
            fail on; default 0, so an error fails the gate rather than vanishing
            from a mean.

    Raises:
        GateError: a malformed threshold, or one on a metric that does not exist.

    Example:
        >>> gate = check(result, {"exact_match/mean": ">= 0.9"})
        >>> gate.passed, gate.reason
        (False, 'FAILED exact_match/mean >= 0.9: observed 0.85, estimate 0.85 (95% CI ...)')
    """
    if not (isinstance(max_error_rate, (int, float)) and 0 <= max_error_rate <= 1):
        raise GateError(f"max_error_rate={max_error_rate!r}: expected a share from 0 to 1")
    parsed = parse_all(thresholds)
    level = result.confidence
    checks = [threshold_check(t, result.metrics, result.intervals, level) for t in parsed]
    checks.extend(error_rate_checks(result, float(max_error_rate)))
    return GateResult(checks, level)


def parse_all(thresholds: Mapping[str, str | float] | Sequence[Threshold] | None
              ) -> list[Threshold]:
    """Every threshold of a ``{metric: rule}`` mapping (or a list of :class:`Threshold`).

    Raises:
        GateError: a malformed rule.
    """
    if thresholds is None:
        return []
    if isinstance(thresholds, Mapping):
        return [parse_threshold(m, r) for m, r in thresholds.items()]
    if isinstance(thresholds, (str, bytes)):
        raise GateError(f"thresholds must be a mapping of metric to rule, got {thresholds!r}")
    found: list[Threshold] = []
    for item in thresholds:
        if not isinstance(item, Threshold):
            raise GateError(f"thresholds: expected a mapping of metric to rule, got an item "
                            f"{item!r}")
        found.append(item)
    return found
