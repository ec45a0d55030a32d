#!/usr/bin/env python
"""How much does tracing with assay cost?  Run by hand:

    python bench/overhead.py            # full run, a few minutes at most
    python bench/overhead.py --quick    # smaller sizes, for a smoke test
    python bench/overhead.py --json out.json

Every figure is reported next to a baseline measured in the same run, as a
ratio or a difference: machines are noisy, absolute times are not compared
with anything. See bench/README.md for what each part measures.

Per-call cost, on ``def f(x): return x + 1``:

  (a) the plain call;
  (b) a raw OpenTelemetry SDK span: own TracerProvider, BatchSpanProcessor with
      a do-nothing exporter, start_as_current_span, input and output set as
      string attributes;
  (c) @assay.trace with the SQLite store;
  (d) @assay.trace with tracing disabled;
  (e) @mlflow.trace to a local SQLite tracking store (only if mlflow imports).

Each case runs R repeats of N back-to-back calls; per repeat, wall-clock
(``perf_counter``) and the calling thread's CPU time (``thread_time``) are
taken, and the median over repeats is reported in microseconds per call.
Repeats of the cases are interleaved (round robin, rotating the order), and
each case's pending spans are flushed after each repeat, outside the timed
region. Garbage collection stays on, but the objects that exist before the
timed loops (the imported libraries, mlflow's included) are frozen with
``gc.freeze()``, so that the figures do not depend on which libraries happen
to be loaded; section [1b] then repeats (b) and (c) with a large application
heap in the collector's sight.

Then: a 100,000-span burst into a fresh SQLite file (counted back with
sqlite3), the store's write rate in isolation, a burst of @mlflow.trace
traces (if mlflow imports), and the import time of assay (and mlflow).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Case,
    base_environment,
    dist_version,
    load_average,
    print_run_footer,
    print_summary,
    rss_mb,
    say,
    verdict,
)

REPO = Path(__file__).resolve().parent.parent


# -- sizes ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    repeats: int          # R, per case
    mlflow_repeats: int   # R for (e): each of its repeats ends with a flush of several seconds
    n_fast: int           # calls per repeat for (a) and (d)
    n_span: int           # calls per repeat for (b) and (c)
    n_mlflow: int         # calls per repeat for (e); mlflow's async queue holds 1000 traces
    burst: int            # spans in the assay burst
    write_spans: int      # spans written by the isolated store-write measurement
    write_batch: int      # batch size for the isolated store-write measurement
    mlflow_burst: int     # traces in the mlflow burst
    import_runs: int      # fresh interpreters per import-time figure
    heap_records: int     # records in the simulated application heap (3 containers each)
    n_heap: int           # calls per repeat for (b) and (c) with that heap


FULL = Sizes(repeats=7, mlflow_repeats=5, n_fast=200_000, n_span=10_000, n_mlflow=300,
             burst=100_000, write_spans=50_000, write_batch=2048, mlflow_burst=21_000,
             import_runs=7, heap_records=200_000, n_heap=20_000)
QUICK = Sizes(repeats=3, mlflow_repeats=3, n_fast=50_000, n_span=2_000, n_mlflow=100,
              burst=20_000, write_spans=10_000, write_batch=2048, mlflow_burst=3_000,
              import_runs=3, heap_records=200_000, n_heap=5_000)

ASSAY_QUEUE = 50_000    # assay's default max_queue_size; every timed loop stays far below it


# -- the function under test ---------------------------------------------------------------------

def f(x):
    return x + 1


def print_cases(cases: list[Case]) -> None:
    say(f"\n  {'case':<44} {'N/repeat':>9} {'wall us/call':>13} {'cpu us/call':>12} "
        f"{'cpu spread':>11}")
    for case in cases:
        spread = (max(case.cpu) - min(case.cpu)) / case.cpu_us
        say(f"  {case.label:<44} {case.n:>9} {case.wall_us:>13.3f} {case.cpu_us:>12.3f} "
            f"{spread:>10.0%}")
    say("  (medians of the repeats; spread = (max - min) / median of the per-repeat CPU figures)")


def case_json(case: Case) -> dict[str, Any]:
    return {"label": case.label, "n": case.n, "repeats": len(case.cpu),
            "wall_median": case.wall_us, "cpu_median": case.cpu_us,
            "wall_all": case.wall, "cpu_all": case.cpu}


def count_rows(db: Path, table: str, where: str = "", params: tuple[Any, ...] = ()) -> int:
    con = sqlite3.connect(str(db))
    try:
        return int(con.execute(f"SELECT count(*) FROM {table} {where}", params).fetchone()[0])
    finally:
        con.close()


# -- (b): raw OpenTelemetry ----------------------------------------------------------------------

def make_otel_case(n: int) -> tuple[Case, Callable[[], int], Callable[[], None]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        """Accepts every batch and only counts the spans."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, spans):
            self.count += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    exporter = NullExporter()
    provider = TracerProvider()
    # Queue capacity matched to assay's default so that neither side drops spans in a
    # timed loop; the per-span cost of the processor does not depend on it.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=ASSAY_QUEUE))
    tracer = provider.get_tracer("bench")

    def otel_f(x):
        with tracer.start_as_current_span("f") as span:
            span.set_attribute("input", str(x))
            out = f(x)
            span.set_attribute("output", str(out))
            return out

    for i in range(200):
        otel_f(i)
    provider.force_flush()
    case = Case("b", "(b) raw OpenTelemetry span", otel_f, n,
                settle=lambda: provider.force_flush())
    return case, (lambda: exporter.count), provider.shutdown


# -- (c), (d): assay -----------------------------------------------------------------------------

class AssayModes:
    """Switches the live assay configuration between enabled and disabled."""

    def __init__(self, uri: str) -> None:
        import assay

        self.assay = assay
        self.uri = uri
        self.mode: str | None = None
        self.traced = assay.trace(f)
        self.warmups = 0

    def _switch(self, mode: str) -> None:
        if self.mode == mode:
            return
        self.assay.configure(store=self.uri, enabled=(mode == "on"))
        self.mode = mode
        for i in range(200):     # starts the writer thread, opens the database
            self.traced(i)
        if mode == "on":
            self.warmups += 200
        self.assay.flush()

    def enabled(self) -> None:
        self._switch("on")

    def disabled(self) -> None:
        self._switch("off")


# -- (e): mlflow ---------------------------------------------------------------------------------

class Mlflow:
    def __init__(self, tmp: Path) -> None:
        import mlflow

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.mlflow = mlflow
        self.db = tmp / "mlflow.db"
        mlflow.set_tracking_uri(f"sqlite:///{self.db}")
        exp_id = mlflow.create_experiment(
            "assay-bench", artifact_location=(tmp / "mlflow-artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp_id)
        self.experiment_id = exp_id
        self.traced = mlflow.trace(f)
        for i in range(20):
            self.traced(i)
        self.flush()

    def flush(self) -> None:
        self.mlflow.flush_trace_async_logging()

    def kept(self) -> int:
        return count_rows(self.db, "trace_info", "WHERE experiment_id = ?",
                          (int(self.experiment_id),))


def try_mlflow(tmp: Path) -> tuple[Mlflow | None, str]:
    try:
        import mlflow  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return None, f"mlflow is not importable ({type(exc).__name__}: {exc})"
    try:
        return Mlflow(tmp), ""
    except Exception as exc:
        return None, f"mlflow imports but could not be set up ({type(exc).__name__}: {exc})"


# -- bursts and store writes ---------------------------------------------------------------------

def assay_burst(tmp: Path, n: int) -> dict[str, Any]:
    import assay
    import assay.exporters

    db = tmp / "burst.db"
    assay.configure(store=f"sqlite:///{db}")
    traced = assay.trace(f)
    gc.collect()
    rss0 = rss_mb()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for x in range(n):
        traced(x)
    t1 = time.perf_counter()
    c1 = time.thread_time()
    rss1 = rss_mb()
    flushed = assay.flush(timeout_s=300)
    t2 = time.perf_counter()
    stats = assay.exporters.stats()
    delivered = count_rows(db, "spans")
    return {
        "produced": n,
        "delivered": delivered,
        "delivered_ratio": delivered / n,
        "flush_returned": flushed,
        "production_s": t1 - t0,
        "production_cpu_s": c1 - c0,
        "production_rate": n / (t1 - t0),
        "flush_s": t2 - t1,
        "end_to_end_s": t2 - t0,
        "end_to_end_rate": n / (t2 - t0),
        "rss_growth_mb": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        "exporter_stats": stats,
    }


def store_write_rate(tmp: Path, n: int, batch: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace.export import SpanExportResult

    import assay
    from assay.exporters import InMemorySpanExporter, StoreSpanExporter
    from assay.store import open_store

    mem = InMemorySpanExporter()
    assay.configure(store="memory://", exporters=[mem])
    traced = assay.trace(f)
    for x in range(n + 1):
        traced(x)
    assay.flush(timeout_s=300)
    spans = list(mem.raw)
    assay.configure(store="memory://")   # let go of the in-memory copies
    mem.clear()
    if len(spans) != n + 1:
        raise RuntimeError(f"InMemorySpanExporter kept {len(spans)} of {n + 1} spans")

    db = tmp / "w.db"
    exporter = StoreSpanExporter(open_store(f"sqlite:///{db}"))
    if exporter.export(spans[:1]) is not SpanExportResult.SUCCESS:   # opens the file, untimed
        raise RuntimeError("StoreSpanExporter.export failed on the warm-up span")
    spans = spans[1:]
    batches = [spans[i:i + batch] for i in range(0, len(spans), batch)]
    failed = 0
    gc.collect()
    t0 = time.perf_counter()
    for b in batches:
        if exporter.export(b) is not SpanExportResult.SUCCESS:
            failed += len(b)
    elapsed = time.perf_counter() - t0
    stored = count_rows(db, "spans") - 1
    return {"spans": n, "batch": batch, "batches": len(batches), "seconds": elapsed,
            "rate": n / elapsed, "stored": stored, "failed": failed}


def mlflow_burst(ml: Mlflow, n: int) -> dict[str, Any]:
    before = ml.kept()
    gc.collect()
    t0 = time.perf_counter()
    for x in range(n):
        ml.traced(x)
    t1 = time.perf_counter()
    ml.flush()
    t2 = time.perf_counter()
    kept = ml.kept() - before
    return {"produced": n, "kept": kept, "kept_ratio": kept / n, "production_s": t1 - t0,
            "production_rate": n / (t1 - t0), "flush_s": t2 - t1, "end_to_end_s": t2 - t0}


# -- import time ---------------------------------------------------------------------------------

def import_time(module: str, runs: int, cwd: Path) -> dict[str, Any]:
    code = (f"import time; t=time.perf_counter(); import {module}; "
            f"print(time.perf_counter()-t)")
    cmd = [sys.executable, "-c", code]
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)   # warm the disk cache
    times = []
    for _ in range(runs):
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return {"median_s": statistics.median(times), "runs_s": times}


def heavy_modules_after_import(cwd: Path) -> dict[str, bool]:
    code = ("import json, sys, assay; "
            "print(json.dumps({m: m in sys.modules for m in "
            "('pandas', 'sqlalchemy', 'numpy', 'httpx', 'opentelemetry.sdk.trace')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------------

def environment() -> dict[str, Any]:
    return {**base_environment(),
            "opentelemetry_sdk": dist_version("opentelemetry-sdk"),
            "mlflow": (dist_version("mlflow") or dist_version("mlflow-skinny")
                       or dist_version("mlflow-tracing"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    json_path = Path(args.json).resolve() if args.json else None

    started = time.perf_counter()
    env = environment()
    env["load_average_start"] = load_average()
    say(f"assay overhead benchmark ({'quick' if args.quick else 'full'} run), {env['date']}")
    say(f"python {env['python']} on {env['platform']}, {env['cpus']} CPUs; assay {env['assay']} "
        f"[{env['assay_commit']}], opentelemetry-sdk {env['opentelemetry_sdk']}, "
        f"mlflow {env['mlflow'] or 'not installed'}")

    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.chdir(tmp)       # anything written relative to the cwd lands in the temp dir
        try:
            results = run(sizes, tmp)
        finally:
            os.chdir(old_cwd)
    env["load_average_end"] = load_average()
    results["environment"] = env
    results["sizes"] = sizes.__dict__
    results["elapsed_s"] = time.perf_counter() - started

    say()
    say("Summary")
    rows = results["targets"]
    print_summary(rows)
    print_run_footer(env, results["elapsed_s"])

    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"figures written to {json_path}")
    return 0


def run(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    import assay

    R = sizes.repeats
    out: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []

    def target(figure: str, value: str, goal: str, ok: bool | None) -> None:
        targets.append({"figure": figure, "value": value, "target": goal, "ok": ok,
                        "result": verdict(ok)})

    # ---- per-call cost ---------------------------------------------------------------------
    say(f"\n[1/4] per-call cost: {R} repeats per case, interleaved")
    bench_db = tmp / "bench.db"
    modes = AssayModes(f"sqlite:///{bench_db}")
    otel_case, otel_count, otel_shutdown = make_otel_case(sizes.n_span)
    cases = [
        Case("a", "(a) plain call", f, sizes.n_fast),
        otel_case,
        Case("c", "(c) @assay.trace, SQLite store", modes.traced, sizes.n_span,
             prepare=modes.enabled, settle=lambda: assay.flush(timeout_s=60)),
        Case("d", "(d) @assay.trace, disabled", modes.traced, sizes.n_fast,
             prepare=modes.disabled),
    ]
    ml, ml_note = try_mlflow(tmp)
    if ml is not None:
        cases.append(Case("e", "(e) @mlflow.trace, SQLite tracking store", ml.traced,
                          sizes.n_mlflow, repeats=sizes.mlflow_repeats, settle=ml.flush))
    else:
        say(f"  note: (e) skipped: {ml_note}")

    # Everything imported so far (assay, OpenTelemetry, SQLAlchemy, mlflow and what it pulls
    # in) is moved out of the collector's sight: a full collection then costs the same
    # whichever libraries this interpreter happens to hold, and the timed loops pay only
    # for the garbage collection of what tracing itself allocates. Section [1b] puts a
    # large application heap back in sight.
    gc.collect()
    gc.freeze()
    say(f"  (gc.freeze(): {gc.get_freeze_count():,} objects present before the timed loops "
        "are left out of garbage collection)")

    for r in range(R):
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:
            if r < (case.repeats or R):
                case.run_once()
        say(f"  repeat {r + 1}/{R} done")

    print_cases(cases)
    by = {c.key: c for c in cases}
    out["per_call_us"] = {c.key: case_json(c) for c in cases}

    a, b, c, d = by["a"], by["b"], by["c"], by["d"]
    ratios: dict[str, Any] = {
        "c_over_b_cpu": c.cpu_us / b.cpu_us, "c_over_b_wall": c.wall_us / b.wall_us,
        "d_minus_a_cpu_us": d.cpu_us - a.cpu_us, "d_minus_a_wall_us": d.wall_us - a.wall_us,
        "b_minus_a_cpu_us": b.cpu_us - a.cpu_us, "c_minus_a_cpu_us": c.cpu_us - a.cpu_us,
    }
    say("\n  ratios and differences (same run):")
    say(f"    (c)/(b) assay vs raw OTel:     cpu {ratios['c_over_b_cpu']:.2f}x   "
        f"wall {ratios['c_over_b_wall']:.2f}x   (target <= 1.5 on the calling thread's CPU)")
    say(f"    (d)-(a) disabled overhead:      cpu {ratios['d_minus_a_cpu_us']:.3f} us   "
        f"wall {ratios['d_minus_a_wall_us']:.3f} us   (target < 1 us)")
    target("(c)/(b) assay vs raw OTel span, thread CPU", f"{ratios['c_over_b_cpu']:.2f}x",
           "<= 1.5x", ratios["c_over_b_cpu"] <= 1.5)
    target("(c)/(b) assay vs raw OTel span, wall", f"{ratios['c_over_b_wall']:.2f}x",
           "(info)", None)
    target("(d)-(a) disabled @assay.trace, thread CPU", f"{ratios['d_minus_a_cpu_us']:.3f} us",
           "< 1 us", ratios["d_minus_a_cpu_us"] < 1.0)
    target("(d)-(a) disabled @assay.trace, wall", f"{ratios['d_minus_a_wall_us']:.3f} us",
           "< 1 us", ratios["d_minus_a_wall_us"] < 1.0)
    if "e" in by:
        e = by["e"]
        ratios["e_over_c_cpu"] = e.cpu_us / c.cpu_us
        ratios["e_over_c_wall"] = e.wall_us / c.wall_us
        say(f"    (e)/(c) mlflow vs assay:        cpu {ratios['e_over_c_cpu']:.2f}x   "
            f"wall {ratios['e_over_c_wall']:.2f}x   (target >= 10)")
        target("(e)/(c) @mlflow.trace vs @assay.trace, thread CPU",
               f"{ratios['e_over_c_cpu']:.2f}x", ">= 10x", ratios["e_over_c_cpu"] >= 10)
        target("(e)/(c) @mlflow.trace vs @assay.trace, wall",
               f"{ratios['e_over_c_wall']:.2f}x", ">= 10x", ratios["e_over_c_wall"] >= 10)
    else:
        target("(e)/(c) @mlflow.trace vs @assay.trace", "skipped", ">= 10x", None)
    out["ratios"] = ratios
    out["mlflow_note"] = ml_note or None

    # ---- the same with a large application heap -------------------------------------------
    say(f"\n[1b] (b) and (c) again with a larger application heap, {R} repeats")
    ballast = [{"id": i, "tags": [str(i)], "pair": (i, str(i))}
               for i in range(sizes.heap_records)]
    gc.collect()
    t0 = time.perf_counter()
    gc.collect()
    full_gc_ms = (time.perf_counter() - t0) * 1000
    say(f"  heap: {sizes.heap_records:,} records, {len(gc.get_objects()):,} GC-tracked objects "
        f"outside the frozen set; one full collection takes {full_gc_ms:.0f} ms here")
    heap_cases = [
        Case("b_heap", "(b') raw OpenTelemetry span, large heap", otel_case.fn, sizes.n_heap,
             settle=otel_case.settle),
        Case("c_heap", "(c') @assay.trace, SQLite store, large heap", modes.traced,
             sizes.n_heap, prepare=modes.enabled, settle=lambda: assay.flush(timeout_s=60)),
    ]
    for r in range(R):
        for case in (heap_cases if r % 2 == 0 else heap_cases[::-1]):
            case.run_once()
    del ballast
    gc.collect()
    print_cases(heap_cases)
    bh, ch = heap_cases
    heap = {"records": sizes.heap_records, "full_collection_ms": full_gc_ms,
            "c_over_b_cpu": ch.cpu_us / bh.cpu_us, "c_over_b_wall": ch.wall_us / bh.wall_us,
            "b_extra_cpu_us": bh.cpu_us - b.cpu_us, "c_extra_cpu_us": ch.cpu_us - c.cpu_us}
    out["large_heap"] = {**heap, "cases": {x.key: case_json(x) for x in heap_cases}}
    say(f"    (c')/(b') assay vs raw OTel:   cpu {heap['c_over_b_cpu']:.2f}x   "
        f"wall {heap['c_over_b_wall']:.2f}x")
    say(f"    cost of the larger heap, per call: (b) +{heap['b_extra_cpu_us']:.1f} us, "
        f"(c) +{heap['c_extra_cpu_us']:.1f} us (thread CPU)")
    target("(c')/(b') with the larger heap, thread CPU",
           f"{heap['c_over_b_cpu']:.2f}x", "(info)", None)

    modes.enabled()
    assay.flush(timeout_s=60)
    c_expected = modes.warmups + sizes.n_span * len(c.cpu) + sizes.n_heap * len(ch.cpu)
    c_stored = count_rows(bench_db, "spans")
    b_expected = 200 + sizes.n_span * len(b.cpu) + sizes.n_heap * len(bh.cpu)
    b_exported = otel_count()
    otel_shutdown()
    out["per_call_delivery"] = {"b": [b_exported, b_expected], "c": [c_stored, c_expected]}
    say(f"  spans delivered by all timed loops: (b) {b_exported}/{b_expected} to the null "
        f"exporter, (c) {c_stored}/{c_expected} rows in the SQLite store")
    target("(c) spans stored from the timed loops", f"{c_stored}/{c_expected}", "all",
           c_stored == c_expected)

    # ---- burst -----------------------------------------------------------------------------
    say(f"\n[2/4] burst: {sizes.burst:,} spans from one thread into a fresh SQLite file")
    burst = assay_burst(tmp, sizes.burst)
    out["burst"] = burst
    say(f"  delivered/produced     {burst['delivered']:,}/{burst['produced']:,} "
        f"({burst['delivered_ratio']:.2%}); flush returned {burst['flush_returned']}")
    say(f"  production             {burst['production_s']:.2f} s, "
        f"{burst['production_rate']:,.0f} spans/s (calling-thread CPU "
        f"{burst['production_cpu_s']:.2f} s)")
    say(f"  flush after production {burst['flush_s']:.2f} s")
    say(f"  end to end             {burst['end_to_end_s']:.2f} s, "
        f"{burst['end_to_end_rate']:,.0f} spans/s (first call to flush return)")
    if burst["rss_growth_mb"] is not None:
        say(f"  RSS growth during production {burst['rss_growth_mb']:.0f} MB")
    for row in burst["exporter_stats"]:
        say("  exporter stats         " + ", ".join(f"{k}={v}" for k, v in row.items()))
    store_stats = next((s for s in burst["exporter_stats"]
                        if s.get("exporter") == "StoreSpanExporter"), None)
    target("burst delivered/produced", f"{burst['delivered']}/{burst['produced']}", "all",
           burst["delivered"] == burst["produced"])
    if store_stats is not None:
        bad = store_stats.get("dropped", 0) + store_stats.get("failed", 0)
        target("burst exporter dropped+failed", str(bad), "0", bad == 0)
    target("burst production rate", f"{burst['production_rate']:,.0f}/s", "(info)", None)
    target("burst end-to-end rate", f"{burst['end_to_end_rate']:,.0f}/s", "(info)", None)

    say(f"\n[3/4] store write rate in isolation: {sizes.write_spans:,} spans, "
        f"batches of {sizes.write_batch}")
    write = store_write_rate(tmp, sizes.write_spans, sizes.write_batch)
    out["store_write"] = write
    say(f"  {write['spans']:,} spans in {write['seconds']:.2f} s = {write['rate']:,.0f} spans/s; "
        f"stored {write['stored']:,}, failed {write['failed']}")
    target("store write rate (StoreSpanExporter.export)", f"{write['rate']:,.0f}/s",
           ">= 20,000/s", write["rate"] >= 20_000)

    if ml is not None:
        say(f"\n  mlflow burst: {sizes.mlflow_burst:,} traces with @mlflow.trace")
        mb = mlflow_burst(ml, sizes.mlflow_burst)
        out["mlflow_burst"] = mb
        say(f"  kept/produced {mb['kept']:,}/{mb['produced']:,} ({mb['kept_ratio']:.1%}); "
            f"production {mb['production_s']:.2f} s ({mb['production_rate']:,.0f}/s), "
            f"flush {mb['flush_s']:.2f} s")
        target("mlflow burst kept/produced", f"{mb['kept']}/{mb['produced']}", "(info)", None)
        with contextlib.suppress(Exception):
            ml.mlflow.flush_trace_async_logging(terminate=True)
    assay.shutdown()

    # ---- import time -----------------------------------------------------------------------
    say(f"\n[4/4] import time, median of {sizes.import_runs} fresh interpreters")
    imp = {"assay": import_time("assay", sizes.import_runs, tmp)}
    heavy = heavy_modules_after_import(tmp)
    imp["modules_after_import_assay"] = heavy
    say(f"  import assay   {imp['assay']['median_s'] * 1000:.0f} ms  (runs: "
        + ", ".join(f"{t * 1000:.0f}" for t in imp["assay"]["runs_s"]) + " ms)")
    say("  in sys.modules after `import assay`: "
        + ", ".join(f"{m}={'yes' if v else 'no'}" for m, v in heavy.items()))
    target("import assay (median)", f"{imp['assay']['median_s'] * 1000:.0f} ms", "< 200 ms",
           imp["assay"]["median_s"] < 0.2)
    target("pandas not imported by `import assay`", "absent" if not heavy["pandas"] else "present",
           "absent", not heavy["pandas"])
    target("sqlalchemy not imported by `import assay`",
           "absent" if not heavy["sqlalchemy"] else "present", "absent", not heavy["sqlalchemy"])
    if ml is not None:
        imp["mlflow"] = import_time("mlflow", sizes.import_runs, tmp)
        say(f"  import mlflow  {imp['mlflow']['median_s'] * 1000:.0f} ms  (runs: "
            + ", ".join(f"{t * 1000:.0f}" for t in imp["mlflow"]["runs_s"]) + " ms)")
        target("import mlflow (median)", f"{imp['mlflow']['median_s'] * 1000:.0f} ms", "(info)",
               None)
    out["import"] = imp
    out["targets"] = targets
    return out


if __name__ == "__main__":
    sys.exit(main())
