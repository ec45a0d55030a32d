"""Helpers shared by the benchmark scripts (printing, machine description, verdicts)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def say(text: str = "") -> None:
    print(text, flush=True)


def dist_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def assay_commit() -> str | None:
    """The repository's short commit, marked when assay/ has uncommitted changes."""
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "assay"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" (assay/ modified)" if dirty else "")
    return None


def base_environment() -> dict[str, Any]:
    """What every benchmark report says about the machine and the code measured."""
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "assay": dist_version("assay"),
        "assay_commit": assay_commit(),
        "sqlalchemy": dist_version("SQLAlchemy"),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def print_summary(rows: list[dict[str, Any]]) -> None:
    """The figure / value / target / result table every benchmark ends with."""
    w0 = max(len(r["figure"]) for r in rows)
    w1 = max(len(r["value"]) for r in rows)
    w2 = max(len(r["target"]) for r in rows)
    say(f"  {'figure':<{w0}}  {'value':>{w1}}  {'target':<{w2}}  result")
    say(f"  {'-' * w0}  {'-' * w1}  {'-' * w2}  ------")
    for r in rows:
        say(f"  {r['figure']:<{w0}}  {r['value']:>{w1}}  {r['target']:<{w2}}  {r['result']}")


def print_run_footer(env: dict[str, Any], elapsed_s: float) -> None:
    """How long the run took, the load average around it, and a warning when other work
    was already competing for the CPUs at the start."""
    say(f"\n(run took {elapsed_s:.0f} s; 1/5/15-minute load average "
        f"{env['load_average_start']} at start, {env['load_average_end']} at end)")
    # Only the load before the run says something about other work: during the run, the
    # benchmark's own threads add to the load.
    cpus = env["cpus"] or 1
    if (env["load_average_start"] or [0])[0] >= cpus:
        say(f"warning: the 1-minute load average was {env['load_average_start'][0]} on {cpus} "
            "CPUs when the run started: other work competes for the CPUs and the figures are "
            "noisier than usual; run again on a quieter machine.")
