"""The ``assay`` command.

    assay demo [--store URI]                 evaluate the bundled demo app, show the results
    assay traces list [--experiment NAME]    the newest traces
    assay traces show TRACE_ID               one trace as a tree
    assay db upgrade --store URI             upgrade an older store's schema

Exit codes: 0 success, 1 not found, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = ["main", "render_tree"]


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_tree(trace: Any) -> str:
    """A trace as an indented tree: name, type, status, duration, inputs -> outputs."""
    info = trace.info
    when = datetime.fromtimestamp(info.timestamp_ms / 1000, tz=timezone.utc)
    lines = [f"trace {info.trace_id}  {info.name}  {info.state}  "
             f"{(info.execution_time_ms or 0):.2f} ms  {when:%Y-%m-%d %H:%M:%S} UTC"]
    if info.tags:
        lines.append(f"  tags: {info.tags}")
    if info.metadata:
        lines.append(f"  metadata: {info.metadata}")
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


class _pandas_display:
    def __enter__(self) -> None:
        import pandas as pd

        self._ctx = pd.option_context("display.width", 160, "display.max_colwidth", 40)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _cmd_traces_list(args: argparse.Namespace) -> int:
    import assay

    assay.configure(store=args.store)
    frame = assay.search_traces(experiment=args.experiment, max_results=args.max_results,
                                include_spans=False)
    if frame.empty:
        print("no traces")
        return 0
    with _pandas_display():
        print(frame[["trace_id", "name", "experiment", "state", "execution_time_ms"]]
              .to_string(index=False))
    return 0


def _cmd_traces_show(args: argparse.Namespace) -> int:
    import assay

    assay.configure(store=args.store)
    trace = assay.get_trace(args.trace_id)
    if trace is None:
        print(f"no trace {args.trace_id} in {args.store}", file=sys.stderr)
        return 1
    print(render_tree(trace))
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from assay.config import settings_from_env
    from assay.store import open_store

    uri = args.store or settings_from_env().store
    before, after = open_store(uri).upgrade()
    if before == after:
        print(f"{uri} is at schema version {after}; nothing to do")
    else:
        print(f"upgraded {uri} from schema version {before} to {after}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assay", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="trace and evaluate the bundled demo app, show the results")
    demo.add_argument("--store", default="sqlite:///assay.db", help="trace store URI")
    demo.set_defaults(run=_cmd_demo)
    traces = sub.add_parser("traces", help="look at stored traces")
    tsub = traces.add_subparsers(dest="traces_command", required=True)
    lst = tsub.add_parser("list", help="the newest traces")
    lst.add_argument("--store", default=None, help="trace store URI (default: ASSAY_STORE)")
    lst.add_argument("--experiment", default="*", help="experiment ('*' for all)")
    lst.add_argument("-n", "--max-results", type=int, default=20)
    lst.set_defaults(run=_cmd_traces_list)
    show = tsub.add_parser("show", help="one trace as a tree")
    show.add_argument("trace_id")
    show.add_argument("--store", default=None, help="trace store URI (default: ASSAY_STORE)")
    show.set_defaults(run=_cmd_traces_show)
    db = sub.add_parser("db", help="manage the trace store")
    dsub = db.add_subparsers(dest="db_command", required=True)
    upgrade = dsub.add_parser("upgrade", help="upgrade an older store's schema")
    upgrade.add_argument("--store", default=None, help="trace store URI (default: ASSAY_STORE)")
    upgrade.set_defaults(run=_cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``assay`` command; returns the exit code."""
    from assay.errors import AssayError

    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except AssayError as exc:
        print(f"assay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
