"""Helpers shared by the benchmark scripts (printing, machine description, verdicts)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


# -- timing ----------------------------------------------------------------------------------

def time_loop(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    """Per-call microseconds (wall, calling-thread CPU) of ``n`` back-to-back calls."""
    xs = range(n)
    gc.collect()
    c0 = time.thread_time()
    w0 = time.perf_counter()
    for x in xs:
        fn(x)
    w1 = time.perf_counter()
    c1 = time.thread_time()
    return (w1 - w0) / n * 1e6, (c1 - c0) / n * 1e6


@dataclass
class Case:
    """One timed case: R repeats of ``n`` calls of ``fn``, with untimed steps around each."""

    key: str
    label: str
    fn: Callable[[int], Any]
    n: int
    repeats: int = 0                             # 0: as many as the other cases
    prepare: Callable[[], object] = lambda: None   # before each repeat, untimed
    settle: Callable[[], object] = lambda: None    # after each repeat, untimed
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run_once(self) -> None:
        self.prepare()
        w, c = time_loop(self.fn, self.n)
        self.wall.append(w)
        self.cpu.append(c)
        self.settle()

    @property
    def wall_us(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_us(self) -> float:
        return statistics.median(self.cpu)


def rss_mb() -> float | None:
    """Resident set size of this process in MB (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
