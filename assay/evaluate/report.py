"""Reports of an evaluation for CI: a GitHub-flavoured Markdown summary and JUnit XML.

    from assay.evaluate.report import to_junit, to_markdown, write_reports

    result = assay.evaluate(data, scorers, predict_fn=app,
                            thresholds={"correctness/mean": ">= 0.8 @lower"},
                            baseline="tags.branch = 'main'", fail_on_regression=True)
    print(to_markdown(result))                 # the run, metrics, gate, regressions, worst rows
    xml = to_junit(result.gate, result.comparison, run_id=result.run_id)
    write_reports("report.md", "report.xml", result=result, gate=result.gate,
                  comparison=result.comparison)

:func:`to_markdown` renders the run (id, experiment, name, rows), a table of
each feedback's mean and pass rate with their confidence intervals, every
metric in a collapsed section, the gate's checks (verdict, observed value,
estimate, interval), the comparison with the baseline (each feedback's change,
p-value and test, and the rows that newly fail), the worst rows with their
trace ids, and the ``search_traces`` call that finds those traces.

:func:`to_junit` makes one ``<testcase>`` per check of the gate (threshold,
error rate, regression), failed ones with a ``<failure>`` carrying the check's
message, so a CI system's test view lists each verdict. :func:`write_reports`
writes both files and, in a GitHub Actions step (``GITHUB_STEP_SUMMARY`` set),
appends the Markdown to the job summary.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.evaluate.compare import Comparison, MetricComparison
    from assay.evaluate.gates import Check, GateResult
    from assay.evaluate.results import EvaluationResult

__all__ = ["DEFAULT_TITLE", "to_junit", "to_markdown", "write_reports"]

#: The heading of the Markdown report.
DEFAULT_TITLE = "assay evaluation"
#: The most rows listed per feedback as newly failing (the rest are counted).
MAX_CHANGED_ROWS = 20
_CELL_CHARS = 120
# Characters XML 1.0 cannot carry at all (ElementTree would write them as they are).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_PASS, _FAIL = "✅", "❌"
_TAG = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?\w+;)")


# -- Markdown -------------------------------------------------------------------------


def to_markdown(result: EvaluationResult | None = None, gate: GateResult | None = None,
                comparison: Comparison | None = None, *, worst: int = 5,
                title: str = DEFAULT_TITLE, run_name: str | None = None) -> str:
    """A GitHub-flavoured Markdown summary of an evaluation, its gate and its comparison.

    Args:
        result: what ``assay.evaluate`` returned (the run, metrics, worst rows).
        gate: the verdicts; default ``result.gate``.
        comparison: the comparison with a baseline run; default ``result.comparison``.
        worst: how many of the worst rows to list (0 for none).
        title: the heading.
        run_name: the run's name, shown with its id (``assay.get_run(run_id).name``).

    Any of the three may be left out; the report shows what it is given.

    Example:
        >>> print(to_markdown(result))
        ## assay evaluation: ✅ passed
        ...
    """
    if gate is None and result is not None:
        gate = getattr(result, "gate", None)
    if comparison is None and result is not None:
        comparison = getattr(result, "comparison", None)
    level = _level(result, gate, comparison)
    lines = [f"## {_text(title)}: {_verdict(gate, comparison)}", ""]
    if result is not None:
        lines += _run_section(result, run_name)
        lines += _metrics_section(result, level)
    if gate is not None:
        lines += _gate_section(gate, level)
    if comparison is not None:
        lines += _comparison_section(comparison, gate)
    elif gate is not None and any(c.kind == "regression" for c in gate.checks):
        lines += _regression_checks_section(gate)
    if result is not None and worst > 0:
        lines += _worst_section(result, worst)
    return "\n".join(lines).rstrip() + "\n"


def _level(result: Any, gate: Any, comparison: Any) -> float:
    for source in (result, gate, comparison):
        value = getattr(source, "confidence", None) or getattr(source, "level", None)
        if isinstance(value, float) and 0 < value < 1:
            return value
    return 0.95


def _verdict(gate: GateResult | None, comparison: Comparison | None) -> str:
    if gate is not None:
        if gate.passed:
            return f"{_PASS} passed ({len(gate.checks)} checks)"
        return f"{_FAIL} failed ({len(gate.failed)} of {len(gate.checks)} checks)"
    if comparison is not None:
        regressions = len(comparison.regressions)
        return (f"{_PASS} no regression" if not regressions
                else f"{_FAIL} {regressions} regression(s)")
    return "no gate"


def _run_section(result: EvaluationResult, name: str | None) -> list[str]:
    metrics = result.metrics
    rows = int(metrics.get("rows", len(result.table)))
    parts = [f"**Run** `{result.run_id}`"]
    if result.experiment:
        parts.append(f"experiment `{_code(result.experiment)}`")
    if name:
        parts.append(f"name `{_code(name)}`")
    parts.append(f"{rows} rows")
    repeats = int(metrics.get("repeats", 1) or 1)
    if repeats > 1:
        parts.append(f"{repeats} repeats each")
    lines = [" · ".join(parts), ""]
    notes = []
    failed = int(metrics.get("predict/error_count", 0))
    if failed:
        notes.append(f"predict_fn failed on {failed} row(s)")
    if metrics.get("judge/calls"):
        judge = (f"judge: {int(metrics['judge/calls'])} calls, "
                 f"{int(metrics.get('judge/cache_hits', 0))} from the cache")
        endpoint = int(metrics.get("judge/endpoint_errors", 0))
        if endpoint:
            judge += f", **{endpoint} failed at the model endpoint**"
        if "judge/cost_usd" in metrics:
            judge += f", ${metrics['judge/cost_usd']:.4f}"
        notes.append(judge)
    if notes:
        lines += ["; ".join(notes), ""]
    return lines


def _metrics_section(result: EvaluationResult, level: float) -> list[str]:
    metrics = result.metrics
    intervals: dict[str, tuple[float, float]] = getattr(result, "intervals", None) or {}
    ci = f"{level:.0%} CI"
    lines = ["### Metrics", ""]
    if result.feedback_names:
        lines += [f"| feedback | mean | {ci} | pass rate | {ci} | errors |",
                  "|---|---:|:---:|---:|:---:|---:|"]
        for name in result.feedback_names:
            mean, rate = metrics.get(f"{name}/mean"), metrics.get(f"{name}/pass_rate")
            lines.append(
                f"| {_text(name)} | {_num(mean)} | {_interval(intervals.get(f'{name}/mean'))} | "
                f"{_pct(rate)} | {_interval(intervals.get(f'{name}/pass_rate'), pct=True)} | "
                f"{_num(metrics.get(f'{name}/error_count', 0))} |")
        lines.append("")
    lines += ["<details><summary>All metrics</summary>", "",
              f"| metric | value | {ci} |", "|---|---:|:---:|"]
    lines += [f"| {_text(key)} | {_num(value)} | {_interval(intervals.get(key))} |"
              for key, value in sorted(metrics.items())]
    lines += ["", "</details>", ""]
    return lines


def _gate_section(gate: GateResult, level: float) -> list[str]:
    head = (f"{_PASS} passed" if gate.passed
            else f"{_FAIL} failed ({len(gate.failed)} of {len(gate.checks)} checks)")
    lines = [f"### Gate: {head}", ""]
    if not gate.checks:
        return [*lines, "No checks.", ""]
    lines += [f"| | check | kind | observed | estimate | {level:.0%} CI |",
              "|:---:|---|---|---:|---:|:---:|"]
    for c in gate.checks:
        pct = c.kind == "error_rate"
        observed = _pct(c.observed) if pct else _num(c.observed, signed=c.kind == "regression")
        estimate = _pct(c.estimate) if pct else _num(c.estimate, signed=c.kind == "regression")
        lines.append(f"| {_PASS if c.passed else _FAIL} | {_text(c.name)} | {c.kind} | "
                     f"{observed} | {estimate} | "
                     f"{_interval(c.interval, signed=c.kind == 'regression')} |")
    lines.append("")
    if gate.failed:
        lines += ["**Failed:**", ""]
        lines += [f"- {_text(c.message or c.name)}" for c in gate.failed]
        lines.append("")
    return lines


def _comparison_section(comparison: Comparison, gate: GateResult | None) -> list[str]:
    gated = gate is not None and any(c.kind == "regression" for c in gate.checks)
    lines = [f"### Compared with baseline `{comparison.baseline_run_id}`", "",
             f"Paired by row; a regression is a drop significant at alpha "
             f"{comparison.alpha:g} (one-sided) and larger than the tolerance "
             f"{comparison.tolerance:g}."
             + ("" if gated else " Regressions do not fail this gate."), ""]
    unpaired = []
    if comparison.unpaired_current:
        unpaired.append(f"{comparison.unpaired_current} row(s) only in this run")
    if comparison.unpaired_baseline:
        unpaired.append(f"{comparison.unpaired_baseline} row(s) only in the baseline")
    if unpaired:
        lines += [f"Not compared: {', '.join(unpaired)}.", ""]
    if not comparison.metrics:
        return [*lines, "No feedback in common to compare.", ""]
    ci = f"{comparison.level:.0%} CI"
    lines += [f"| | feedback | compared | baseline | current | diff | {ci} | p-value | test "
              f"| pairs |", "|:---:|---|---|---:|---:|---:|:---:|---:|---|---:|"]
    for m in comparison.metrics:
        mark = _FAIL if m.regression else (_PASS if not m.significant or m.diff >= 0 else "⚠️")
        pct = m.kind == "binary"
        lines.append(
            f"| {mark} | {_text(m.name)} | {'pass rate' if pct else 'mean'} | "
            f"{_pct(m.baseline) if pct else _num(m.baseline)} | "
            f"{_pct(m.current) if pct else _num(m.current)} | {_num(m.diff, signed=True)} | "
            f"{_interval(m.interval, signed=True)} | {_p(m.p_value)} | {_text(m.method)} | "
            f"{m.pairs} |")
    lines.append("")
    lines += _newly_failing(comparison.metrics)
    return lines


def _newly_failing(metrics: Sequence[MetricComparison]) -> list[str]:
    changed = [(m, c) for m in metrics for c in m.newly_failing[:MAX_CHANGED_ROWS]]
    if not changed:
        return []
    lines = ["**Newly failing rows** (passed in the baseline, fail now):", "",
             "| feedback | row | trace | baseline trace | inputs |", "|---|---:|---|---|---|"]
    for m, c in changed:
        lines.append(f"| {_text(m.name)} | {c.row} | {_trace(c.trace_id)} | "
                     f"{_trace(c.baseline_trace_id)} | {_text(_short(c.inputs))} |")
    more = [(m.name, len(m.newly_failing) - MAX_CHANGED_ROWS) for m in metrics
            if len(m.newly_failing) > MAX_CHANGED_ROWS]
    lines.append("")
    lines += [f"… and {n} more newly failing on {_text(name)}." for name, n in more]
    if more:
        lines.append("")
    return lines


def _regression_checks_section(gate: GateResult) -> list[str]:
    """Regression checks when only the gate is at hand (no Comparison object)."""
    lines = ["### Regression checks", "",
             "| | feedback | diff | CI | p-value | newly failing rows |",
             "|:---:|---|---:|:---:|---:|---|"]
    for c in gate.checks:
        if c.kind != "regression":
            continue
        failing = list(c.details.get("newly_failing") or [])
        shown = ", ".join(f"`{_code(str(k), cell=True)}`" for k in failing[:MAX_CHANGED_ROWS])
        if len(failing) > MAX_CHANGED_ROWS:
            shown += f" … (+{len(failing) - MAX_CHANGED_ROWS})"
        lines.append(f"| {_PASS if c.passed else _FAIL} | {_text(c.metric)} | "
                     f"{_num(c.observed, signed=True)} | {_interval(c.interval, signed=True)} | "
                     f"{_p(c.details.get('p_value'))} | {shown} |")
    return [*lines, ""]


def _worst_section(result: EvaluationResult, n: int) -> list[str]:
    rows = result.worst_rows(n)
    if not rows:
        return ["### Worst rows", "", "No row failed a verdict or raised an error.", ""]
    lines = ["### Worst rows", "", "| row | trace | why |", "|---:|---|---|"]
    lines += [f"| {r['row']} | {_trace(r.get('trace_id'))} | {_text(r['why'])} |" for r in rows]
    ids = [r["trace_id"] for r in rows if isinstance(r.get("trace_id"), str)]
    lines.append("")
    if ids:
        lines += ["Find them:", "", "```python", _search_call(result.run_id, ids), "```",
                  "", f"or one at a time: `assay traces show {ids[0]}`.", ""]
    return lines


def _search_call(run_id: str, trace_ids: Sequence[str]) -> str:
    """The ``search_traces`` call that finds these traces of the run (hex ids: nothing
    to escape)."""
    quoted = ", ".join(f"'{t}'" for t in trace_ids)
    return f"assay.search_traces(\"run_id = '{run_id}' AND trace.id IN ({quoted})\")"


# -- Markdown helpers -----------------------------------------------------------------


def _text(value: Any) -> str:
    """Text safe in a Markdown table cell: one line, no column breaks, no raw HTML."""
    text = value if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    if len(text) > _CELL_CHARS:
        text = text[: _CELL_CHARS - 1] + "…"
    # Only what could start an HTML tag or an entity is escaped ("<= 0.8" stays as it is).
    text = _ENTITY.sub("&amp;", text)
    text = _TAG.sub("&lt;", text)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`") \
        .replace("*", "\\*").replace("[", "\\[").replace("]", "\\]")


def _code(value: str, *, cell: bool = False) -> str:
    """Text inside a single-backtick code span (which cannot escape a backtick); in a
    table cell a pipe still needs its backslash."""
    text = " ".join(value.split()).replace("`", "'")
    return text.replace("|", "\\|") if cell else text


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _trace(trace_id: Any) -> str:
    return f"`{trace_id}`" if isinstance(trace_id, str) and trace_id else "-"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _num(value: Any, *, signed: bool = False) -> str:
    if not _finite(value):
        return "-"
    sign = "+" if signed else ""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):{sign}d}"
    if abs(value) >= 100:
        return f"{value:{sign}.1f}"
    return f"{value:{sign}.3f}"


def _pct(value: Any) -> str:
    return f"{value:.1%}" if _finite(value) else "-"


def _p(value: Any) -> str:
    if not _finite(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _interval(interval: Any, *, pct: bool = False, signed: bool = False) -> str:
    if not interval or len(interval) != 2 or not all(_finite(v) for v in interval):
        return ""
    lo, hi = interval
    if pct:
        return f"{lo:.1%} .. {hi:.1%}"
    return f"{_num(lo, signed=signed)} .. {_num(hi, signed=signed)}"


# -- JUnit ------------------------------------------------------------------------------


def to_junit(gate: GateResult | None, comparison: Comparison | None = None, *,
             suite: str = "assay", run_id: str | None = None) -> str:
    """The gate as JUnit XML: one ``<testcase>`` per check.

    Threshold, error-rate and regression checks of the gate are test cases
    (classname ``<suite>.<kind>``), a failed one with ``<failure message=...>``
    holding the check's message. A feedback the comparison covers but the gate
    does not check (a baseline without ``fail_on_regression``) is a test case
    too, ``<skipped>`` when it regressed, so the regression shows without
    failing the suite. Properties carry the run ids and the confidence level.

    Args:
        gate: the verdicts (``None``: no checks, an empty suite).
        comparison: the comparison with a baseline, when there was one.
        suite: the test suite's name.
        run_id: the evaluated run (default: the comparison's).
    """
    checks: list[Check] = list(gate.checks) if gate is not None else []
    gated = {c.metric for c in checks if c.kind == "regression"}
    informational: list[Check] = []
    if comparison is not None:
        informational = [c for c in comparison.gate().checks if c.metric not in gated]
    failures = sum(not c.passed for c in checks)
    skipped = sum(not c.passed for c in informational)
    total = len(checks) + len(informational)
    counts = {"tests": str(total), "failures": str(failures), "errors": "0",
              "skipped": str(skipped)}
    root = ET.Element("testsuites", {"name": _xml(suite), **counts})
    element = ET.SubElement(root, "testsuite", {
        "name": _xml(suite), **counts, "time": "0",
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")})
    properties = {"run_id": run_id or (comparison.run_id if comparison else None),
                  "baseline_run_id": comparison.baseline_run_id if comparison else None,
                  "confidence": str(gate.level) if gate is not None else None,
                  "alpha": str(comparison.alpha) if comparison else None,
                  "tolerance": str(comparison.tolerance) if comparison else None}
    props = ET.SubElement(element, "properties")
    for name, value in properties.items():
        if value is not None:
            ET.SubElement(props, "property", {"name": name, "value": _xml(value)})
    for c in checks:
        case = _testcase(element, suite, c)
        if not c.passed:
            failure = ET.SubElement(case, "failure", {"message": _xml(c.message or c.name),
                                                      "type": c.kind})
            failure.text = _xml(_failure_text(c))
    for c in informational:
        case = _testcase(element, suite, c)
        if not c.passed:
            ET.SubElement(case, "skipped", {
                "message": _xml(f"regression not gated (fail_on_regression is off): "
                                f"{c.message}")})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(parent: ET.Element, suite: str, c: Check) -> ET.Element:
    case = ET.SubElement(parent, "testcase", {"classname": _xml(f"{suite}.{c.kind}"),
                                              "name": _xml(c.name), "time": "0"})
    if c.passed and c.message:
        ET.SubElement(case, "system-out").text = _xml(c.message)
    return case


def _failure_text(c: Check) -> str:
    lines = [c.message or c.name]
    if c.observed is not None:
        lines.append(f"observed: {c.observed!r}")
    if c.estimate is not None:
        lines.append(f"estimate: {c.estimate!r}")
    if c.interval is not None:
        lines.append(f"interval: {c.interval[0]!r} .. {c.interval[1]!r}")
    for key, value in c.details.items():
        lines.append(f"{key}: {_short(value)}")
    return "\n".join(lines)


def _xml(value: Any) -> str:
    """Text XML 1.0 can carry (ElementTree escapes the markup characters itself)."""
    return _XML_INVALID.sub("\ufffd", str(value))


# -- files --------------------------------------------------------------------------------


def write_reports(markdown_path: str | os.PathLike[str] | None = None,
                  junit_path: str | os.PathLike[str] | None = None, *,
                  result: EvaluationResult | None = None, gate: GateResult | None = None,
                  comparison: Comparison | None = None, worst: int = 5,
                  title: str = DEFAULT_TITLE, suite: str = "assay",
                  run_name: str | None = None) -> list[Path]:
    """Write the Markdown and JUnit reports, and append the Markdown to the GitHub
    Actions job summary when ``GITHUB_STEP_SUMMARY`` is set.

    ``gate`` and ``comparison`` default to the result's own. Returns the files
    written (the job summary included).
    """
    if result is not None:
        gate = gate if gate is not None else getattr(result, "gate", None)
        comparison = comparison if comparison is not None else getattr(result, "comparison",
                                                                       None)
    written: list[Path] = []
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if markdown_path is not None or summary:
        markdown = to_markdown(result, gate, comparison, worst=worst, title=title,
                               run_name=run_name)
        if markdown_path is not None:
            written.append(_write(Path(markdown_path), markdown))
        if summary:
            path = Path(summary)
            with path.open("a", encoding="utf-8") as out:
                out.write("\n" + markdown if _has_text(path) else markdown)
            written.append(path)
    if junit_path is not None:
        run_id = result.run_id if result is not None else None
        written.append(_write(Path(junit_path),
                              to_junit(gate, comparison, suite=suite, run_id=run_id)))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _has_text(path: Path) -> bool:
    """The file already holds something (another step's summary): a blank line
    keeps the two apart."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
