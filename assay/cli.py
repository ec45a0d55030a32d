"""The ``assay`` command.

    assay demo [--store URI]                 evaluate the bundled demo app, show the results
    assay eval PATH [options]                run an evaluation file and gate on it (for CI)
    assay runs list [--experiment NAME] [--filter F] [--max N]
                                             the newest runs
    assay runs show RUN                      a run: params, metrics, tags, worst rows
    assay runs compare RUN BASELINE          a run against a baseline run, row by row
    assay traces list [--filter F] [--order-by KEY] [--count] [--json]
                                             the newest traces, or those a filter finds
    assay traces show TRACE_ID [--json]      one trace as a tree (or JSON)
    assay traces delete [--filter F] [--older-than AGE] [--dry-run]
                                             delete traces (retention)
    assay traces set-tag TRACE_ID KEY VALUE  tag a trace (delete-tag TRACE_ID KEY: untag it)
    assay traces log-feedback TRACE_ID NAME VALUE [--rationale R] [--source S] [--overrides A]
                                             judge a trace, or correct a feedback
    assay traces log-expectation TRACE_ID NAME VALUE
                                             the expected answer of a trace
    assay traces delete-assessment TRACE_ID ASSESSMENT_ID
                                             remove one feedback or expectation
    assay db upgrade --store URI             upgrade an older store's schema

A RUN or BASELINE is a run id, a run name (its latest run) or a ``search_runs``
filter (its latest matching run), e.g. ``"tags.branch = 'main'"``.

Evaluation files
----------------

``assay eval evals/quality.py`` runs the evaluation a Python file defines: a
function ``evaluation`` (another name with ``--function NAME``) that takes no
arguments and returns the keyword arguments of ``assay.evaluate`` as a dict::

    # evals/quality.py
    from assay.evaluate import builtin
    from app import answer       # the current directory and the file's own are importable

    def evaluation():
        return {
            "data": [{"inputs": {"question": "..."},
                      "expectations": {"expected_response": "..."}}],
            "scorers": [builtin.exact_match()],
            "predict_fn": answer,
            "thresholds": {"exact_match/mean": ">= 0.8 @lower"},
        }

The store is not the file's business: it comes from ``--store`` or
``ASSAY_STORE`` (default ``sqlite:///assay.db``). Options override the dict's
keys; ``--threshold`` and ``--tag`` merge into its ``thresholds`` and ``tags``.
The command prints the result's summary, the comparison with the baseline and
the gate, and writes the reports asked for (``--markdown``, ``--junit``; the
Markdown is appended to ``$GITHUB_STEP_SUMMARY`` when that is set).

Exit codes
----------

``assay eval``:

    0  the gate passed, or there was nothing to gate (no thresholds, no baseline
       and no max_error_rate)
    1  a gate check failed (a threshold, an error rate, a regression)
    2  usage or data error: bad arguments, no such file or function, the file
       failed to load, bad data or scorers, a bad threshold, a configuration
       error, the baseline not found
    3  infrastructure error: the trace store failed, or a judge's model endpoint
       failed for good (``judge/endpoint_errors`` > 0); the gate is not decided

``assay runs compare``: 0 no regression, 1 a regression, 2 usage error or a run
not found, 3 store error.

Other commands: 0 success, 1 not found, 2 usage or configuration error, 3 store
error. An unexpected error in ``assay eval`` or ``assay runs`` exits 3 with its
traceback, so that it never reads as a failed gate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["EXIT_FAILED", "EXIT_INFRA", "EXIT_OK", "EXIT_USAGE", "main", "render_tree"]

#: ``assay eval`` exit codes (see the module docstring).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3


class UsageError(Exception):
    """A command-line mistake found after parsing (exit 2)."""


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _line(value: Any, width: int = 60) -> str:
    """``value`` on one line, cut to ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    return _short(" ".join(text.split()), width)


def render_tree(trace: Any) -> str:
    """A trace as an indented tree: its tags, metadata and valid assessments, then
    each span's name, type, status, duration, inputs -> outputs."""
    info = trace.info
    when = datetime.fromtimestamp(info.timestamp_ms / 1000, tz=timezone.utc)
    lines = [f"trace {info.trace_id}  {info.name}  {info.state}  "
             f"{(info.execution_time_ms or 0):.2f} ms  {when:%Y-%m-%d %H:%M:%S} UTC"]
    if info.tags:
        lines.append(f"  tags: {info.tags}")
    if info.metadata:
        lines.append(f"  metadata: {info.metadata}")
    for kind in ("feedback", "expectation"):
        valid = sorted(trace.search_assessments(kind=kind),
                       key=lambda a: (a.name, a.created_time_ms))
        if valid:
            lines.append(f"  {'feedback' if kind == 'feedback' else 'expectations'}:")
        for a in valid:
            source = a.source_type + (f" {a.source_id}" if a.source_id else "")
            value = f"error: {_line(a.error, 40)}" if a.error else _short(a.value, 40)
            why = f"  {_line(a.rationale, 50)}" if a.rationale else ""
            lines.append(f"    {a.name} = {value}  [{source}]{why}")
    for depth, span in trace.walk():
        mark = "✗" if span.status == "ERROR" else "✓"
        lines.append(f"{'  ' * (depth + 1)}{mark} {span.name} [{span.span_type}] "
                     f"{span.duration_ms or 0:.2f} ms")
        pad = "  " * (depth + 2)
        lines.append(f"{pad}in:  {_short(span.inputs)}")
        if span.status == "ERROR":
            lines.append(f"{pad}err: {span.status_message}")
        else:
            lines.append(f"{pad}out: {_short(span.outputs)}")
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    import assay
    from assay import demo

    assay.configure(store=args.store, experiment="demo")
    result = demo.run()
    assay.flush()
    print(demo.report(result, store=args.store))
    return 0


def _cmd_traces_list(args: argparse.Namespace) -> int:
    import assay

    assay.configure(store=args.store)
    try:
        if args.count:
            n = assay.count_traces(args.filter, experiment=_experiments(args))
            print(json.dumps({"count": n}) if args.json else n)
            return 0
        traces = assay.search_traces(args.filter, experiment=_experiments(args),
                                     order_by=args.order_by, max_results=args.max_results,
                                     page_token=args.page_token, include_spans=False,
                                     return_type="list")
    except ValueError as exc:  # a malformed filter, ordering or page token
        raise UsageError(str(exc)) from None
    token = traces.next_page_token
    if args.json:
        print(json.dumps({"traces": [t.info.to_dict() for t in traces],
                          "next_page_token": token}, ensure_ascii=False))
        return 0
    if not traces:
        print("no traces")
        return 0
    rows = []
    for t in traces:
        info = t.info
        feedback = ", ".join(f"{a.name}={_short(a.value, 12)}" for a in info.assessments
                             if a.valid and a.kind == "feedback")
        rows.append([info.trace_id, _when(info.timestamp_ms), _line(info.name or "-", 30),
                     info.experiment, info.state,
                     "-" if info.execution_time_ms is None else f"{info.execution_time_ms:.1f}",
                     _line(feedback, 40) if feedback else "-"])
    print(_table(["trace_id", "started (UTC)", "name", "experiment", "state", "ms",
                  "feedback"], rows))
    if token is not None:
        print(f"more: add --page-token {token}", file=sys.stderr)
    return 0


def _cmd_traces_show(args: argparse.Namespace) -> int:
    import assay

    assay.configure(store=args.store)
    trace = _checked(assay.get_trace, args.trace_id)
    if trace is None:
        print(f"no trace {args.trace_id} in {_store_uri(args)}", file=sys.stderr)
        return 1
    print(trace.to_json() if args.json else render_tree(trace))
    return 0


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def _older_than(text: str) -> Any:
    """``--older-than``: an age (``30d``, ``12h``, ``90m``, ``2w``) as a ``timedelta``,
    or an ISO date, passed on as it is."""
    from datetime import timedelta

    value = text.strip().lower()
    if value[-1:] in _AGE_UNITS and value[:-1].replace(".", "", 1).isdigit():
        return timedelta(seconds=float(value[:-1]) * _AGE_UNITS[value[-1]])
    return text


def _cmd_traces_delete(args: argparse.Namespace) -> int:
    import assay
    from assay.store.query import cutoff_ms

    if not args.filter and args.older_than is None:
        raise UsageError("say which traces: --filter F, --older-than AGE, or both (every "
                         "trace: --filter \"trace.timestamp_ms >= 0\")")
    older_than = None if args.older_than is None else _older_than(args.older_than)
    experiments = _experiments(args)
    names = [experiments] if isinstance(experiments, str) else sorted(experiments)
    where = "every experiment" if experiments == "*" else f"experiment {', '.join(names)}"
    assay.configure(store=args.store)
    try:
        cutoff = None if older_than is None else cutoff_ms(older_than)
    except ValueError:
        raise UsageError(f"--older-than {args.older_than!r}: expected an age such as 30d, "
                         "12h or 2w, or an ISO date such as 2026-01-31") from None
    try:
        if args.dry_run:
            parts = [f"({args.filter})" if args.filter else "",
                     "" if cutoff is None else f"trace.timestamp_ms < {cutoff}"]
            n = assay.count_traces(" AND ".join(p for p in parts if p),
                                   experiment=experiments)
            print(f"would delete {n:,} trace(s) of {where} in {_store_uri(args)}")
            return 0
        n = assay.delete_traces(args.filter, experiment=experiments, older_than=older_than)
    except ValueError as exc:  # a malformed filter
        raise UsageError(str(exc)) from None
    print(f"deleted {n:,} trace(s) of {where} from {_store_uri(args)}")
    return 0


def _cmd_traces_set_tag(args: argparse.Namespace) -> int:
    import assay

    if not _stored(args):
        return 1
    _checked(assay.set_trace_tag, args.trace_id, args.key, args.value)
    print(f"tagged {args.trace_id} {args.key}={args.value}")
    return 0


def _cmd_traces_delete_tag(args: argparse.Namespace) -> int:
    import assay

    if not _stored(args):
        return 1
    _checked(assay.delete_trace_tag, args.trace_id, args.key)
    print(f"removed the tag {args.key} of {args.trace_id}")
    return 0


def _assessment_value(text: str) -> Any:
    """A feedback or expectation value given on the command line: JSON when it is
    JSON (``true``, ``4.5``, ``["a", "b"]``, ``'"7"'`` for the text 7), else the
    text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cmd_traces_log_feedback(args: argparse.Namespace) -> int:
    import assay

    if args.overrides and args.span_id:
        raise UsageError("--span-id: a correction takes the span of the feedback it overrides")
    if not _stored(args):
        return 1
    value = _assessment_value(args.value)
    if args.overrides:
        target = _checked(assay.get_assessment, args.trace_id, args.overrides)
        if target is None:
            raise UsageError(f"--overrides {args.overrides}: trace {args.trace_id} has no "
                             "such assessment")
        if target.name != args.name:
            raise UsageError(f"--overrides {args.overrides}: that feedback is named "
                             f"{target.name!r}, not {args.name!r}")
        logged = _checked(assay.override_feedback, args.trace_id, args.overrides, value,
                          rationale=args.rationale, source=args.source,
                          source_id=args.source_id)
    else:
        logged = _checked(assay.log_feedback, args.trace_id, args.name, value,
                          rationale=args.rationale, source=args.source,
                          source_id=args.source_id, span_id=args.span_id)
    print(logged.assessment_id)
    return 0


def _cmd_traces_log_expectation(args: argparse.Namespace) -> int:
    import assay

    if not _stored(args):
        return 1
    logged = _checked(assay.log_expectation, args.trace_id, args.name,
                      _assessment_value(args.value), source=args.source,
                      source_id=args.source_id, span_id=args.span_id)
    print(logged.assessment_id)
    return 0


def _cmd_traces_delete_assessment(args: argparse.Namespace) -> int:
    import assay

    assay.configure(store=args.store)
    if not _checked(assay.delete_assessment, args.trace_id, args.assessment_id):
        print(f"no assessment {args.assessment_id} on trace {args.trace_id} in "
              f"{_store_uri(args)}", file=sys.stderr)
        return 1
    print(f"deleted the assessment {args.assessment_id} of {args.trace_id}")
    return 0


def _checked(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call``, its ``ValueError`` (a malformed id or value) a usage error."""
    try:
        return call(*args, **kwargs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _stored(args: argparse.Namespace) -> bool:
    """Whether the trace ``args.trace_id`` is in the store (said on stderr when not):
    the API takes tags and assessments for a trace not stored yet, as its spans may
    still be on their way; on the command line, a trace id not found is a mistake."""
    import assay

    assay.configure(store=args.store)
    if _checked(assay.count_traces, f"trace.request_id = '{_checked(_trace_id, args)}'",
                experiment="*"):
        return True
    print(f"no trace {args.trace_id} in {_store_uri(args)}; nothing written", file=sys.stderr)
    return False


def _trace_id(args: argparse.Namespace) -> str:
    from assay.store.query import checked_trace_id

    return checked_trace_id(args.trace_id, f"traces {args.traces_command}")


def _experiments(args: argparse.Namespace) -> str | list[str]:
    """``--experiment`` (repeatable) as ``search_traces`` takes it: ``"*"`` when none."""
    given = args.experiment or ["*"]
    return given[0] if len(given) == 1 else given


def _store_uri(args: argparse.Namespace) -> str:
    from assay.config import settings_from_env

    return str(args.store or settings_from_env().store)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from assay.store import open_store

    uri = _store_uri(args)
    before, after = open_store(uri).upgrade()
    if before == after:
        print(f"{uri} is at schema version {after}; nothing to do")
    else:
        print(f"upgraded {uri} from schema version {before} to {after}")
    return 0


# -- assay eval ---------------------------------------------------------------------------


def _cmd_eval(args: argparse.Namespace) -> int:
    import assay

    thresholds = _pairs(args.threshold, "--threshold", "METRIC=RULE")
    tags = _pairs(args.tag, "--tag", "KEY=VALUE")
    for option, target in (("--markdown", args.markdown), ("--junit", args.junit)):
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise UsageError(f"{option} {target}: the directory "
                             f"{Path(target).resolve().parent} does not exist")
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"{args.path}: no such file")
    assay.configure(store=args.store, experiment=args.experiment)
    spec = _load_evaluation(path, args.function)
    kwargs = _evaluate_arguments(spec, args, thresholds, tags, where=f"{path}:{args.function}")
    try:
        result = assay.evaluate(**kwargs)
    except (TypeError, ValueError) as exc:
        from assay.errors import AssayError

        if isinstance(exc, AssayError):
            raise
        raise UsageError(f"{path}: {args.function}() returned arguments assay.evaluate "
                         f"rejects: {type(exc).__name__}: {exc}") from None
    gate = getattr(result, "gate", None)
    comparison = getattr(result, "comparison", None)
    if gate is None and "max_error_rate" in kwargs:
        # An error policy asked for on its own is a gate too, not an ignored option.
        gate = result.check(None, max_error_rate=kwargs["max_error_rate"])
        result.gate = gate
    if not args.quiet:
        print(result.summary())  # the metrics, the comparison, the gate, the worst rows
        print()
    if args.markdown or args.junit or os.environ.get("GITHUB_STEP_SUMMARY"):
        from assay.evaluate.report import write_reports

        try:
            run = assay.get_run(result.run_id)
            for written in write_reports(args.markdown, args.junit, result=result, gate=gate,
                                         comparison=comparison,
                                         run_name=run.name if run is not None else None):
                if not args.quiet and str(written) != os.environ.get("GITHUB_STEP_SUMMARY"):
                    print(f"wrote {written}")
        except OSError as exc:
            print(f"assay eval: cannot write the reports: {exc}", file=sys.stderr)
            return EXIT_INFRA
    endpoint_errors = int(result.metrics.get("judge/endpoint_errors", 0) or 0)
    if endpoint_errors:
        print(f"assay eval: infrastructure error: {endpoint_errors} judge call(s) failed at "
              f"the model endpoint (judge/endpoint_errors); the gate is not decided "
              f"(run {result.run_id})", file=sys.stderr)
        return EXIT_INFRA
    if gate is None:
        print(f"assay eval: run {result.run_id}: no thresholds and no baseline, nothing to "
              f"gate")
        return EXIT_OK
    if gate.passed:
        print(f"assay eval: gate passed ({len(gate.checks)} checks, run {result.run_id})")
        return EXIT_OK
    print(f"assay eval: gate FAILED ({len(gate.failed)} of {len(gate.checks)} checks, run "
          f"{result.run_id})")
    for check in gate.failed:
        print(f"  FAILED {check.message or check.name}")
    return EXIT_FAILED


def _pairs(items: Sequence[str] | None, option: str, form: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {item!r}: expected {form}")
        found[key.strip()] = value.strip()
    return found


def _load_evaluation(path: Path, function: str) -> Mapping[str, Any]:
    """Import the evaluation file and call its function; what it returned."""
    import importlib.util

    from assay.errors import AssayError

    for entry in (str(path.resolve().parent), os.getcwd()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    name = f"_assay_eval_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except AssayError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: importing it failed:\n{_traceback(exc)}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and getattr(v, "__module__", None) == name)
        raise UsageError(f"{path} defines no function {function!r}"
                         + (f" (it defines {', '.join(found)})" if found else ""))
    try:
        spec_dict = fn()
    except AssayError:
        raise
    except Exception as exc:
        if _is_store_failure(exc):
            raise
        raise UsageError(f"{path}: {function}() raised:\n{_traceback(exc)}") from None
    if not isinstance(spec_dict, Mapping):
        raise UsageError(f"{path}: {function}() must return a dict of assay.evaluate "
                         f"arguments, got {type(spec_dict).__name__}")
    return spec_dict


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def _evaluate_arguments(spec: Mapping[str, Any], args: argparse.Namespace,
                        thresholds: dict[str, str], tags: dict[str, str], *,
                        where: str) -> dict[str, Any]:
    """The file's arguments with the command line's over them."""
    import inspect

    import assay

    accepted = set(inspect.signature(assay.evaluate).parameters)
    unknown = sorted(str(k) for k in spec if k not in accepted)
    if unknown:
        raise UsageError(f"{where}() returned {', '.join(map(repr, unknown))}, which "
                         f"assay.evaluate does not take (it takes {', '.join(sorted(accepted))})")
    if "data" not in spec:
        raise UsageError(f"{where}() returned no 'data'")
    kwargs = dict(spec)
    if thresholds:
        kwargs["thresholds"] = _merge_thresholds(kwargs.get("thresholds"), thresholds)
    if tags:
        kwargs["tags"] = {**(kwargs.get("tags") or {}), **tags}
    options = {"repeats": args.repeats, "baseline": args.baseline,
               "tolerance": args.tolerance, "alpha": args.alpha,
               "max_error_rate": args.max_error_rate, "max_workers": args.max_workers,
               "experiment": args.experiment, "run_name": args.run_name}
    kwargs.update({k: v for k, v in options.items() if v is not None})
    if args.fail_on_regression:
        kwargs["fail_on_regression"] = True
    if args.no_cache:
        kwargs["cache"] = False
    if args.quiet:
        kwargs["progress"] = False
    missing = sorted(k for k in kwargs if k not in accepted)
    if missing:
        raise UsageError(f"this assay.evaluate does not take {', '.join(missing)}")
    return kwargs


def _merge_thresholds(given: Any, extra: dict[str, str]) -> Any:
    if given is None or isinstance(given, Mapping):
        return {**(given or {}), **extra}
    from assay.evaluate.gates import parse_threshold

    parsed = [parse_threshold(metric, rule) for metric, rule in extra.items()]
    return [t for t in given if getattr(t, "metric", None) not in extra] + parsed


# -- assay runs ---------------------------------------------------------------------------


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{datetime.fromtimestamp(ms / 1000, tz=timezone.utc):%Y-%m-%d %H:%M:%S}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(f"{c!s:<{w}}" for c, w in zip(r, widths, strict=True))
                     .rstrip() for r in [header, *rows])


def _user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items()
            if not k.startswith(("assay.", "mlflow."))}


def _cmd_runs_list(args: argparse.Namespace) -> int:
    import assay

    assay.configure(store=args.store)
    runs = assay.search_runs(args.filter, experiment=args.experiment,
                             max_results=args.max, return_type="list")
    if not runs:
        print("no runs")
        return 0
    rows = []
    for run in runs:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(_user_tags(run.tags).items()))
        rows.append([run.run_id, run.experiment, run.name or "-", run.status,
                     _when(run.start_time_ms), _fmt_count(run.metrics.get("rows")),
                     run.tags.get("assay.gate", "-"), _line(tags, 40) if tags else "-"])
    print(_table(["run_id", "experiment", "name", "status", "started (UTC)", "rows", "gate",
                  "tags"], rows))
    return 0


def _fmt_count(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:g}"


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def _resolve(ref: str, experiment: str | None = None) -> Any:
    from assay.evaluate.compare import resolve_run

    return resolve_run(ref, experiment=experiment)


def _table_intervals(run: Any, table: Any) -> dict[str, tuple[float, float]]:
    """The confidence intervals the evaluation logged with the run (its
    ``intervals`` table), by metric; none for a run without one."""
    from assay.errors import AssayError
    from assay.evaluate.evaluation import INTERVALS_TABLE
    from assay.store.runs import load_table

    try:
        rows = load_table(run.run_id, INTERVALS_TABLE).to_dict("records")
    except AssayError:  # no such table: a run logged without intervals
        return {}
    return {str(r["metric"]): (float(r["low"]), float(r["high"])) for r in rows}


def _load_results_table(run: Any) -> Any:
    """The run's per-row evaluation table, or ``None`` when it has none."""
    import assay

    try:
        return assay.load_table(run.run_id, "eval_results")
    except Exception as exc:
        if _is_store_failure(exc):
            raise
        return None


def _cmd_runs_show(args: argparse.Namespace) -> int:
    import assay
    from assay.evaluate.compare import BaselineNotFound

    assay.configure(store=args.store)
    try:
        run = _resolve(args.run_ref)
    except BaselineNotFound:
        print(f"assay runs show: no run matches {args.run_ref!r} (looked for a run id, a run "
              f"name and a search_runs filter)", file=sys.stderr)
        return 1
    duration = ("" if run.end_time_ms is None
                else f"  {(run.end_time_ms - run.start_time_ms) / 1000:.1f} s")
    print(f"run {run.run_id}  {run.name or '-'}  {run.status}  experiment "
          f"{run.experiment!r}  started {_when(run.start_time_ms)} UTC{duration}")
    if run.params:
        print("\nParams:")
        width = max(len(k) for k in run.params)
        for key in sorted(run.params):
            print(f"  {key:<{width}}  {_line(run.params[key], 80)}")
    table = _load_results_table(run)
    intervals = _table_intervals(run, table) if table is not None else {}
    if run.metrics:
        level = run.params.get("confidence", "0.95")
        print("\nMetrics:" + (f" (with {float(level):.0%} confidence intervals)"
                              if intervals else ""))
        width = max(len(k) for k in run.metrics)
        for key in sorted(run.metrics):
            interval = intervals.get(key)
            ci = "" if interval is None else f"  [{_fmt(interval[0])}, {_fmt(interval[1])}]"
            print(f"  {key:<{width}}  {_fmt(run.metrics[key])}{ci}")
    if run.tags:
        print("\nTags:")
        width = max(len(k) for k in run.tags)
        for key in sorted(run.tags):
            print(f"  {key:<{width}}  {_line(run.tags[key], 80)}")
    if table is not None:
        _print_worst_rows(run, table, args.worst)
    return 0


def _print_worst_rows(run: Any, table: Any, n: int) -> None:
    from assay.evaluate.results import EvaluationResult

    names = [c[: -len("/value")] for c in table.columns if c.endswith("/value")]
    result = EvaluationResult(run_id=run.run_id, metrics=dict(run.metrics), table=table,
                              feedback_names=names, experiment=run.experiment)
    worst = result.worst_rows(n) if n > 0 else []
    print(f"\nWorst rows ({len(table)} rows in the table):")
    if not worst:
        print("  none: no row failed a verdict or raised an error")
        return
    for r in worst:
        print(f"  row {r['row']:>4}  trace {r['trace_id']}  {_line(r['why'], 90)}")
    ids = ", ".join(f"'{r['trace_id']}'" for r in worst if r.get("trace_id"))
    if ids:
        print(f"  find them: assay.search_traces(\"run_id = '{run.run_id}' AND trace.id IN "
              f"({ids})\")")


def _cmd_runs_compare(args: argparse.Namespace) -> int:
    import assay
    from assay.evaluate.compare import BaselineNotFound, compare

    assay.configure(store=args.store)
    runs = []
    for what, ref in (("RUN", args.run_ref), ("BASELINE", args.baseline_ref)):
        try:
            runs.append(_resolve(ref))
        except BaselineNotFound:
            raise UsageError(f"{what} {ref!r}: no run matches (looked for a run id, a run "
                             f"name and a search_runs filter)") from None
    comparison = compare(runs[0], runs[1], alpha=args.alpha, tolerance=args.tolerance)
    print(comparison)
    for m in comparison.metrics:
        for change in m.newly_failing:
            print(f"  newly failing on {m.name}: row {change.row}  trace {change.trace_id}  "
                  f"(baseline trace {change.baseline_trace_id})  {_line(change.inputs)}")
    if comparison.unpaired_current or comparison.unpaired_baseline:
        print(f"  not paired: {comparison.unpaired_current} row(s) only in the run, "
              f"{comparison.unpaired_baseline} only in the baseline")
    return 0 if comparison.passed else 1


# -- the parser -----------------------------------------------------------------------------


def _number(kind: Callable[[str], Any], test: Callable[[Any], bool], what: str
            ) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_probability = _number(float, lambda v: 0 < v < 1, "a number between 0 and 1")
_share = _number(float, lambda v: 0 <= v <= 1, "a share from 0 to 1")
_non_negative = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")

_EVAL_EPILOG = """\
The file defines `evaluation()` (or --function NAME): no arguments, returns a dict
of assay.evaluate keyword arguments (data, scorers, predict_fn, thresholds, ...).
Options override its keys; --threshold and --tag merge into them.

examples:
  assay eval evals/quality.py --threshold "correctness/mean=>= 0.8 @lower"
  assay eval evals/quality.py --tag branch=main --junit report.xml
  assay eval evals/quality.py --baseline "tags.branch = 'main'" --fail-on-regression

exit codes:
  0  the gate passed, or nothing to gate (no thresholds, baseline or
     max error rate)
  1  a gate check failed (threshold, error rate, regression)
  2  usage or data error (bad arguments, no such file or function, the file
     failed, bad data or scorers, bad threshold, configuration, baseline not found)
  3  infrastructure error (trace store failed; a judge's model endpoint failed:
     judge/endpoint_errors > 0)
"""


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, metavar="URI",
                        help="trace store URI (default: ASSAY_STORE, else sqlite:///assay.db)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assay", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="trace and evaluate the bundled demo app, show the results")
    demo.add_argument("--store", default="sqlite:///assay.db", help="trace store URI")
    demo.set_defaults(handler=_cmd_demo)

    ev = sub.add_parser("eval", help="run an evaluation file and gate on it (for CI)",
                        description="Run the evaluation a Python file defines, print the "
                                    "result and the gate, write reports.",
                        epilog=_EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("path", metavar="PATH", help="the evaluation file (a .py file)")
    ev.add_argument("--function", default="evaluation", metavar="NAME",
                    help="the function that returns the evaluate() arguments "
                         "(default: evaluation)")
    ev.add_argument("--threshold", action="append", metavar="METRIC=RULE",
                    help="a threshold, e.g. 'correctness/mean=>= 0.8 @lower' (repeatable)")
    ev.add_argument("--repeats", type=_positive_int, metavar="N",
                    help="try every row N times")
    ev.add_argument("--baseline", metavar="REF",
                    help="compare with this run: a run id, a run name or a search_runs "
                         "filter such as \"tags.branch = 'main'\"")
    ev.add_argument("--fail-on-regression", action="store_true",
                    help="a significant drop against the baseline fails the gate")
    ev.add_argument("--tolerance", type=_non_negative, metavar="X",
                    help="drops up to X are not regressions (default 0)")
    ev.add_argument("--alpha", type=_probability, metavar="X",
                    help="significance level of the regression tests (default 0.05)")
    ev.add_argument("--max-error-rate", type=_share, metavar="X",
                    help="the largest share of rows a scorer may fail on (default 0)")
    ev.add_argument("--no-cache", action="store_true",
                    help="ask the judges' models again, ignoring their caches")
    ev.add_argument("--max-workers", type=_positive_int, metavar="N",
                    help="rows evaluated at once (default 10)")
    _add_store(ev)
    ev.add_argument("--experiment", metavar="NAME", help="the experiment of the run")
    ev.add_argument("--run-name", metavar="NAME", help="the run's name")
    ev.add_argument("--tag", action="append", metavar="KEY=VALUE",
                    help="a tag on the run, e.g. branch=main (repeatable)")
    ev.add_argument("--markdown", metavar="PATH", help="write a Markdown report here")
    ev.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here")
    ev.add_argument("-q", "--quiet", action="store_true",
                    help="print only the verdict (and errors)")
    ev.set_defaults(handler=_cmd_eval)

    runs = sub.add_parser("runs", help="look at evaluation runs")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    rlist = rsub.add_parser("list", help="the newest runs")
    rlist.add_argument("--experiment", default="*", help="experiment ('*' for all)")
    rlist.add_argument("--filter", default=None, metavar="F",
                       help="a search_runs filter, e.g. \"tags.branch = 'main'\"")
    rlist.add_argument("-n", "--max", type=_positive_int, default=20, metavar="N",
                       help="at most N runs (default 20)")
    _add_store(rlist)
    rlist.set_defaults(handler=_cmd_runs_list)
    rshow = rsub.add_parser("show", help="a run: params, metrics, tags, worst rows")
    rshow.add_argument("run_ref", metavar="RUN", help="a run id, run name or search_runs filter")
    rshow.add_argument("--worst", type=int, default=5, metavar="N",
                       help="how many of the worst rows to list (default 5)")
    _add_store(rshow)
    rshow.set_defaults(handler=_cmd_runs_show)
    rcmp = rsub.add_parser("compare", help="a run against a baseline run, row by row "
                                           "(exit 1 on a regression)")
    rcmp.add_argument("run_ref", metavar="RUN", help="a run id, run name or search_runs filter")
    rcmp.add_argument("baseline_ref", metavar="BASELINE",
                      help="a run id, run name or search_runs filter")
    rcmp.add_argument("--alpha", type=_probability, default=0.05, metavar="X",
                      help="significance level (default 0.05)")
    rcmp.add_argument("--tolerance", type=_non_negative, default=0.0, metavar="X",
                      help="drops up to X are not regressions (default 0)")
    _add_store(rcmp)
    rcmp.set_defaults(handler=_cmd_runs_compare)

    traces = sub.add_parser("traces", help="look at stored traces")
    tsub = traces.add_subparsers(dest="traces_command", required=True)
    lst = tsub.add_parser("list", help="the newest traces, or those a filter finds")
    _add_store(lst)
    lst.add_argument("--experiment", action="append", metavar="NAME",
                     help="an experiment (repeatable; default: every experiment)")
    lst.add_argument("--filter", default=None, metavar="F",
                     help="a search_traces filter, e.g. \"trace.status = 'ERROR'\"")
    lst.add_argument("--order-by", action="append", default=None, metavar="KEY",
                     help="e.g. 'execution_time_ms DESC' (repeatable; default: newest first)")
    lst.add_argument("-n", "--max-results", type=_positive_int, default=20, metavar="N",
                     help="traces to show (default 20)")
    lst.add_argument("--page-token", default=None, metavar="T",
                     help="continue after the page that printed it")
    lst.add_argument("--count", action="store_true", help="print how many match, only")
    lst.add_argument("--json", action="store_true",
                     help="print JSON: the traces' info and the next page's token")
    lst.set_defaults(handler=_cmd_traces_list)
    show = tsub.add_parser("show", help="one trace as a tree")
    show.add_argument("trace_id")
    show.add_argument("--json", action="store_true",
                      help="print the whole trace as JSON (its assessments with their ids)")
    _add_store(show)
    show.set_defaults(handler=_cmd_traces_show)
    delete = tsub.add_parser("delete", help="delete traces (retention): by filter, age or both")
    _add_store(delete)
    delete.add_argument("--experiment", action="append", metavar="NAME",
                        help="an experiment (repeatable; default: every experiment)")
    delete.add_argument("--filter", default=None, metavar="F", help="a search_traces filter")
    delete.add_argument("--older-than", default=None, metavar="AGE",
                        help="started more than AGE ago (30d, 12h, 2w) or before a date "
                             "(2026-01-31)")
    delete.add_argument("--dry-run", action="store_true",
                        help="count what would be deleted, delete nothing")
    delete.set_defaults(handler=_cmd_traces_delete)
    tag = tsub.add_parser("set-tag", help="set a tag on a trace")
    tag.add_argument("trace_id")
    tag.add_argument("key")
    tag.add_argument("value")
    _add_store(tag)
    tag.set_defaults(handler=_cmd_traces_set_tag)
    untag = tsub.add_parser("delete-tag", help="remove a tag from a trace")
    untag.add_argument("trace_id")
    untag.add_argument("key")
    _add_store(untag)
    untag.set_defaults(handler=_cmd_traces_delete_tag)
    value_help = ("the value: JSON (true, 4.5, '[\"a\"]', '\"7\"' for the text 7), "
                  "else the text itself")
    sources = ["HUMAN", "LLM_JUDGE", "CODE"]
    feedback = tsub.add_parser(
        "log-feedback", help="log a feedback on a trace, or correct one (--overrides); "
                             "prints the new feedback's id")
    feedback.add_argument("trace_id")
    feedback.add_argument("name")
    feedback.add_argument("value", help=value_help)
    feedback.add_argument("--rationale", metavar="TEXT", help="why")
    feedback.add_argument("--source", choices=sources, default="HUMAN",
                          help="who judged (default HUMAN)")
    feedback.add_argument("--source-id", metavar="ID", help="which one, e.g. a reviewer")
    feedback.add_argument("--span-id", metavar="ID", help="the span judged (default: the trace)")
    feedback.add_argument("--overrides", metavar="ASSESSMENT_ID",
                          help="correct this feedback of the same name, whatever its source")
    _add_store(feedback)
    feedback.set_defaults(handler=_cmd_traces_log_feedback)
    expectation = tsub.add_parser("log-expectation", help="log the expected value of a trace; "
                                                          "prints the new expectation's id")
    expectation.add_argument("trace_id")
    expectation.add_argument("name")
    expectation.add_argument("value", help=value_help)
    expectation.add_argument("--source", choices=sources, default="HUMAN",
                             help="who said so (default HUMAN)")
    expectation.add_argument("--source-id", metavar="ID", help="which one")
    expectation.add_argument("--span-id", metavar="ID", help="the span (default: the trace)")
    _add_store(expectation)
    expectation.set_defaults(handler=_cmd_traces_log_expectation)
    unassess = tsub.add_parser("delete-assessment",
                               help="delete one feedback or expectation (what it overrode "
                                    "is valid again)")
    unassess.add_argument("trace_id")
    unassess.add_argument("assessment_id")
    _add_store(unassess)
    unassess.set_defaults(handler=_cmd_traces_delete_assessment)
    db = sub.add_parser("db", help="manage the trace store")
    dsub = db.add_subparsers(dest="db_command", required=True)
    upgrade = dsub.add_parser("upgrade", help="upgrade an older store's schema")
    _add_store(upgrade)
    upgrade.set_defaults(handler=_cmd_db_upgrade)
    return parser


def _is_store_failure(exc: BaseException) -> bool:
    """The trace store failed (not the caller's mistake): StoreError, or a database
    driver error that reached the command."""
    from assay.errors import StoreError

    if isinstance(exc, StoreError):
        return True
    return any(cls.__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "psycopg")
               for cls in type(exc).__mro__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``assay`` command; returns the exit code."""
    from assay.errors import AssayError

    args = _parser().parse_args(argv)
    prog = f"assay {args.command}"
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if _is_store_failure(exc):
            print(f"{prog}: the trace store failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return EXIT_INFRA
        if isinstance(exc, AssayError):
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.command in ("eval", "runs"):
            # Exit 1 means "a gate failed" here: an unexpected error must not look like it.
            print(f"{prog}: internal error:\n{_traceback(exc)}", file=sys.stderr)
            return EXIT_INFRA
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
