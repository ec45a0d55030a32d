#!/usr/bin/env python
"""Does the CI gate tell a regression from judge noise? A simulation of
``assay.evaluate.stats.regression_test`` with a judge of known noise. Run by hand:

    python bench/gate.py            # full run, about three minutes
    python bench/gate.py --quick    # fewer comparisons, a smoke test (about 10 s)
    python bench/gate.py --json out.json

Binary verdicts. Each of R rows has a latent true verdict (pass with probability 0.8)
that an unchanged application keeps from run to run; the judge reports it flipped with
probability epsilon, independently in each run. A "no change" comparison runs the
same noisy judge twice over the same latent rows; a "d-point drop" makes round(d% of R)
rows that truly passed truly fail in the current run (10 of 200 for 5 points). The
gate is ``regression_test(kind="binary")`` at alpha 0.05: the mid-p McNemar test (the
default) and the exact McNemar test (``method="exact"``).

Numeric scores. Each row has a latent quality from Beta(5, 2); the judge reports it
plus Gaussian noise (standard deviation 0.1), independently in each run; a drop of d
lowers every row's latent quality by d. The gate is ``regression_test(kind="numeric")``
with the Wilcoxon signed-rank test (the default) and the paired bootstrap.

[1/4] false alarms: 10,000 no-change comparisons of 200 rows each, for every test;
      and a true drop exactly at the tolerance (2 points, ``tolerance=0.02``).
      Target: at most 6% (alpha is 5%).
[2/4] binary power curve: the share of comparisons that fire, drops of 1-10 points,
      100/200/500 rows, epsilon 0.02. Target: at least 80% on a 5-point drop, 200 rows.
[3/4] binary noise sweep: false alarms and 5-point-drop power on 200 rows against
      epsilon, to find the noise level at which both targets are met.
[4/4] numeric power curve: drops of 0.01-0.05 (0.1-0.5 noise standard deviations),
      100/200/500 rows.

Every rate is printed with its 95% Wilson interval over the simulated comparisons.
All draws are seeded: the same run prints the same figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    base_environment,
    dist_version,
    load_average,
    print_run_footer,
    print_summary,
    say,
    verdict,
)

from assay.evaluate.stats import regression_test, wilson_interval

ALPHA = 0.05
BASE_PASS = 0.8
EPSILON = 0.02
SIGMA = 0.1
FALSE_ALARM_LIMIT = 0.06
POWER_TARGET = 0.80
ROW_COUNTS = (100, 200, 500)
BINARY_DROPS = (1, 2, 3, 4, 5, 6, 8, 10)        # points
NUMERIC_DROPS = (0.01, 0.02, 0.03, 0.04, 0.05)
EPSILONS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.05)
NUMERIC_RESAMPLES = 1000                         # bootstrap resamples, numeric gate


@dataclass(frozen=True)
class Sizes:
    no_change: int       # comparisons per false-alarm figure
    curve: int           # comparisons per point of a power curve
    bootstrap: int       # comparisons for the (slower) paired-bootstrap false alarms


FULL = Sizes(no_change=10_000, curve=2_000, bootstrap=10_000)
QUICK = Sizes(no_change=1_000, curve=100, bootstrap=200)


# -- simulation ------------------------------------------------------------------------------


def binary_runs(rng: np.random.Generator, comparisons: int, rows: int, epsilon: float,
                drop_points: float) -> tuple[np.ndarray, np.ndarray]:
    """(current, baseline) verdicts, one comparison per row of each array."""
    dropped_rows = round(drop_points / 100 * rows)
    truth = rng.random((comparisons, rows)) < BASE_PASS
    dropped = truth & (np.cumsum(truth, axis=1) <= dropped_rows)
    baseline = truth ^ (rng.random((comparisons, rows)) < epsilon)
    current = (truth & ~dropped) ^ (rng.random((comparisons, rows)) < epsilon)
    return current, baseline


def numeric_runs(rng: np.random.Generator, comparisons: int, rows: int, drop: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    quality = rng.beta(5.0, 2.0, (comparisons, rows))
    baseline = quality + rng.normal(0.0, SIGMA, (comparisons, rows))
    current = quality - drop + rng.normal(0.0, SIGMA, (comparisons, rows))
    return current, baseline


def fire_rate(current: np.ndarray, baseline: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    fired = sum(regression_test(now.tolist(), before.tolist(), alpha=ALPHA, **kwargs).regression
                for now, before in zip(current, baseline, strict=True))
    total = len(current)
    low, high = wilson_interval(fired, total)
    return {"rate": fired / total, "fired": fired, "comparisons": total, "ci": [low, high]}


def pct(r: dict[str, Any]) -> str:
    return f"{r['rate']:6.1%} [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}]"


def short(r: dict[str, Any]) -> str:
    return f"{r['rate']:5.1%}"


GATES: dict[str, dict[str, Any]] = {
    "binary exact McNemar": {"kind": "binary", "method": "exact"},
    "binary mid-p McNemar": {"kind": "binary"},
    "numeric Wilcoxon": {"kind": "numeric", "resamples": 100},
    "numeric paired bootstrap": {"kind": "numeric", "method": "bootstrap",
                                 "resamples": NUMERIC_RESAMPLES},
}


# -- the four parts --------------------------------------------------------------------------


def run(sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(20260101)

    say(f"\n[1/4] false alarms: no-change comparisons of 200 rows, alpha {ALPHA}; binary "
        f"epsilon {EPSILON}, numeric noise sd {SIGMA}")
    false_alarms: dict[str, Any] = {}
    current, baseline = binary_runs(rng, sizes.no_change, 200, EPSILON, 0)
    for name in ("binary exact McNemar", "binary mid-p McNemar"):
        false_alarms[name] = fire_rate(current, baseline, **GATES[name])
    current, baseline = numeric_runs(rng, sizes.no_change, 200, 0.0)
    false_alarms["numeric Wilcoxon"] = fire_rate(current, baseline, **GATES["numeric Wilcoxon"])
    false_alarms["numeric paired bootstrap"] = fire_rate(
        current[: sizes.bootstrap], baseline[: sizes.bootstrap],
        **GATES["numeric paired bootstrap"])
    current, baseline = binary_runs(rng, sizes.no_change, 200, EPSILON, 2)
    false_alarms["binary mid-p, 2-point drop, tolerance 0.02"] = fire_rate(
        current, baseline, kind="binary", tolerance=0.02)
    current, baseline = numeric_runs(rng, sizes.no_change, 200, 0.02)
    false_alarms["numeric Wilcoxon, 0.02 drop, tolerance 0.02"] = fire_rate(
        current, baseline, kind="numeric", tolerance=0.02, resamples=NUMERIC_RESAMPLES)
    for name, r in false_alarms.items():
        say(f"  {name:<44} {pct(r)}  ({r['fired']:,} of {r['comparisons']:,})")
    out["false_alarms"] = false_alarms

    say(f"\n[2/4] binary power: share of comparisons that fire, epsilon {EPSILON}, "
        f"{sizes.curve:,} comparisons per point")
    binary_curve: dict[str, Any] = {}
    for name in ("binary exact McNemar", "binary mid-p McNemar"):
        say(f"  {name}")
        say("    drop (points) " + "".join(f"{d:>7}" for d in BINARY_DROPS))
        binary_curve[name] = {}
        for rows in ROW_COUNTS:
            cells = {}
            for drop in BINARY_DROPS:
                current, baseline = binary_runs(rng, sizes.curve, rows, EPSILON, drop)
                cells[str(drop)] = fire_rate(current, baseline, **GATES[name])
            binary_curve[name][str(rows)] = cells
            say(f"    {rows:>4} rows      " + "".join(f"{short(c):>7}" for c in cells.values()))
    out["binary_power"] = binary_curve

    say(f"\n[3/4] binary noise sweep: 200 rows, false alarms and power on a 5-point drop, "
        f"{sizes.curve:,} comparisons per point")
    say(f"    {'epsilon':>7}  {'exact: false alarms':>19}  {'power':>6}   "
        f"{'mid-p: false alarms':>19}  {'power':>6}")
    sweep: dict[str, Any] = {}
    for epsilon in EPSILONS:
        row: dict[str, Any] = {}
        still, drop = (binary_runs(rng, sizes.curve, 200, epsilon, points) for points in (0, 5))
        for name, key in (("binary exact McNemar", "exact"), ("binary mid-p McNemar", "mid-p")):
            row[key] = {"false_alarms": fire_rate(*still, **GATES[name]),
                        "power": fire_rate(*drop, **GATES[name])}
        sweep[str(epsilon)] = row
        say(f"    {epsilon:>7}  {short(row['exact']['false_alarms']):>19}  "
            f"{short(row['exact']['power']):>6}   {short(row['mid-p']['false_alarms']):>19}  "
            f"{short(row['mid-p']['power']):>6}")
    out["noise_sweep"] = sweep

    say(f"\n[4/4] numeric power: share of comparisons that fire, noise sd {SIGMA}, "
        f"{sizes.curve:,} comparisons per point (bootstrap: {NUMERIC_RESAMPLES} resamples)")
    numeric_curve: dict[str, Any] = {}
    for name in ("numeric Wilcoxon", "numeric paired bootstrap"):
        say(f"  {name}")
        say("    drop          " + "".join(f"{d:>7}" for d in NUMERIC_DROPS))
        numeric_curve[name] = {}
        for rows in ROW_COUNTS:
            cells = {}
            for drop_size in NUMERIC_DROPS:
                current, baseline = numeric_runs(rng, sizes.curve, rows, drop_size)
                cells[str(drop_size)] = fire_rate(current, baseline, **GATES[name])
            numeric_curve[name][str(rows)] = cells
            say(f"    {rows:>4} rows      " + "".join(f"{short(c):>7}" for c in cells.values()))
    out["numeric_power"] = numeric_curve
    return out


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(figure: str, r: dict[str, Any], low: bool) -> None:
        ok = r["rate"] <= FALSE_ALARM_LIMIT if low else r["rate"] >= POWER_TARGET
        goal = f"<= {FALSE_ALARM_LIMIT:.0%}" if low else f">= {POWER_TARGET:.0%}"
        rows.append({"figure": figure, "value": f"{r['rate']:.1%}", "target": goal,
                     "ok": ok, "result": verdict(ok)})

    fa = out["false_alarms"]
    for name, r in fa.items():
        add(f"false alarms, {name}", r, low=True)
    exact = out["binary_power"]["binary exact McNemar"]["200"]["5"]
    mid = out["binary_power"]["binary mid-p McNemar"]["200"]["5"]
    add(f"5-point drop, 200 rows, eps {EPSILON}, exact", exact, low=False)
    add(f"5-point drop, 200 rows, eps {EPSILON}, mid-p", mid, low=False)
    add("5-point drop, 500 rows, eps 0.02, exact",
        out["binary_power"]["binary exact McNemar"]["500"]["5"], low=False)
    add("0.03 drop, 200 rows, numeric Wilcoxon",
        out["numeric_power"]["numeric Wilcoxon"]["200"]["0.03"], low=False)
    for key in ("exact", "mid-p"):
        met = [float(eps) for eps, row in out["noise_sweep"].items()
               if row[key]["false_alarms"]["rate"] <= FALSE_ALARM_LIMIT
               and row[key]["power"]["rate"] >= POWER_TARGET]
        largest = max(met) if met else None
        rows.append({"figure": f"largest epsilon meeting both targets, {key}, 200 rows",
                     "value": "none" if largest is None else f"{largest}",
                     "target": "(info)", "ok": None, "result": verdict(None)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer simulated comparisons")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    started = time.perf_counter()
    env = {**base_environment(), "numpy": dist_version("numpy")}
    env["load_average_start"] = load_average()
    say(f"assay gate soundness simulation ({'quick' if args.quick else 'full'} run), "
        f"{env['date']}")
    say(f"python {env['python']} on {env['platform']}; assay {env['assay']} "
        f"[{env['assay_commit']}], numpy {env['numpy']}")
    results = run(sizes)
    env["load_average_end"] = load_average()
    results["targets"] = targets(results)
    results["environment"] = env
    results["sizes"] = sizes.__dict__
    results["elapsed_s"] = time.perf_counter() - started

    say("\nSummary")
    print_summary(results["targets"])
    if args.quick:
        say("\n(quick run: the rates carry several points of simulation error; see the "
            "intervals above)")
    print_run_footer(env, results["elapsed_s"])
    if args.json:
        path = Path(args.json).resolve()
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
