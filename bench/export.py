#!/usr/bin/env python
"""What does sending spans over OTLP cost, and what does a collector outage cost?
Run by hand:

    python bench/export.py            # full run, a few minutes
    python bench/export.py --quick    # smaller sizes, for a smoke test
    python bench/export.py --json out.json

Every figure is reported next to a baseline measured in the same run, as a ratio:
machines are noisy, absolute times are not compared with anything. The collector
is a small OTLP/HTTP receiver (HTTP/1.1 keep-alive, protobuf decoded, spans
counted) in a separate process on 127.0.0.1, so that its decoding does not share
this interpreter's GIL; "down" is a port nothing listens on (connection refused).

[1/4] exporter throughput: ``OTLPExporter.export`` on batches of 2,048 ended spans
      (made by ``@assay.trace`` beforehand), spans/s sustained to the receiver, with
      gzip (assay's default) and without, next to OpenTelemetry's own
      ``OTLPSpanExporter`` (opentelemetry-exporter-otlp-proto-http, when installed;
      no compression by default) on the same spans. Repeats interleaved, medians.
[2/4] burst: 100,000 spans from one thread with the SQLite store and an OTLP
      exporter to the receiver: delivered/produced for each, production and
      end-to-end rates; then the same burst through a raw OpenTelemetry provider with
      the default ``BatchSpanProcessor`` and ``OTLPSpanExporter``, for comparison.
[3/4] the traced call while the collector is down: ``@assay.trace`` (SQLite store and
      OTLP exporter, disk spool on) with the collector (h) healthy and (d) down,
      next to (s) the store alone and (a) the plain call. Per repeat, N back-to-back
      calls; wall clock and the calling thread's CPU; medians of interleaved repeats.
      Before a (d) repeat the exporter has found the collector down; after it, the
      collector comes back and the spool is replayed, untimed (that replay is [4/4]).
      Target: (d)/(h) <= 1.2.
[4/4] recovery: after each (d) repeat, ``assay.flush`` with the collector back:
      spooled spans replayed per second.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import logging
import multiprocessing
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

# -- sizes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    repeats: int          # R, per case
    export_spans: int     # spans per repeat of [1/4]
    burst: int            # spans in the bursts of [2/4]
    n_call: int           # calls per repeat of [3/4]


FULL = Sizes(repeats=7, export_spans=40_960, burst=100_000, n_call=20_000)
QUICK = Sizes(repeats=3, export_spans=10_240, burst=20_000, n_call=5_000)
BATCH = 2_048


def f(x):
    return x + 1


# -- the receiver, in a process of its own --------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(port: int, spans: Any, requests: Any, ready: Any) -> None:
    """The receiver's process: answer every OTLP export with 200, counting its spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            message = ExportTraceServiceRequest.FromString(body)
            count = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
            with spans.get_lock():
                spans.value += count
            with requests.get_lock():
                requests.value += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever(poll_interval=0.05)


class Receiver:
    """Start and stop the receiver process on a fixed port; read its counters."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._ctx = multiprocessing.get_context("spawn")
        self._spans = self._ctx.Value("q", 0)
        self._requests = self._ctx.Value("q", 0)
        self._proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def start(self) -> None:
        if self._proc is not None:
            return
        ready = self._ctx.Event()
        self._proc = self._ctx.Process(target=_serve, daemon=True,
                                       args=(self.port, self._spans, self._requests, ready))
        self._proc.start()
        if not ready.wait(30):
            raise RuntimeError("the receiver did not start")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        self._proc.join(10)
        self._proc = None

    @property
    def spans(self) -> int:
        return int(self._spans.value)

    def reset(self) -> None:
        with self._spans.get_lock():
            self._spans.value = 0


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# -- [1/4] exporter throughput --------------------------------------------------------------------

def make_spans(n: int) -> list[Any]:
    import assay
    from assay.exporters import InMemorySpanExporter

    memory = InMemorySpanExporter()
    assay.configure(store="memory://", exporters=[memory])
    traced = assay.trace(f)
    for x in range(n):
        traced(x)
    assay.flush(timeout_s=300)
    spans = list(memory.raw)
    assay.configure(store="memory://")
    memory.clear()
    return spans


def exporter_rates(receiver: Receiver, sizes: Sizes) -> dict[str, Any]:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from assay.exporters import OTLPExporter

    spans = make_spans(sizes.export_spans)
    batches = [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]
    exporters: dict[str, Any] = {
        "assay OTLPExporter": OTLPExporter(receiver.url),
        "assay, compression=none": OTLPExporter(receiver.url, compression="none"),
    }
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters["OTel OTLPSpanExporter"] = OTLPSpanExporter(endpoint=receiver.url)
    except ImportError:
        say("  note: opentelemetry-exporter-otlp-proto-http is not installed: no baseline")
    rates: dict[str, list[float]] = {name: [] for name in exporters}
    failed: dict[str, int] = dict.fromkeys(exporters, 0)
    names = list(exporters)
    for r in range(sizes.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            exporter = exporters[name]
            gc.collect()
            t0 = time.perf_counter()
            for batch in batches:
                if exporter.export(batch) is not SpanExportResult.SUCCESS:
                    failed[name] += len(batch)
            rates[name].append(len(spans) / (time.perf_counter() - t0))
    for exporter in exporters.values():
        exporter.shutdown()
    out = {name: {"median_spans_per_s": statistics.median(v), "all": v, "failed": failed[name]}
           for name, v in rates.items()}
    for name, row in out.items():
        say(f"  {name:<26} {row['median_spans_per_s']:>10,.0f} spans/s   "
            f"(repeats: {', '.join(f'{x:,.0f}' for x in row['all'])}; failed {row['failed']})")
    return out


# -- [2/4] bursts ---------------------------------------------------------------------------------

def assay_burst(receiver: Receiver, tmp: Path, n: int) -> dict[str, Any]:
    import assay
    from assay.exporters import OTLPExporter, stats

    receiver.reset()
    db = tmp / "burst.db"
    assay.configure(store=f"sqlite:///{db}", exporters=[OTLPExporter(receiver.url)],
                    spool_dir=tmp / "spool-burst")
    traced = assay.trace(f)
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    for x in range(n):
        traced(x)
    t1 = time.perf_counter()
    rss1 = rss_mb()
    flushed = assay.flush(timeout_s=600)
    t2 = time.perf_counter()
    rows = stats()
    wait_until(lambda: receiver.spans >= n, 10)
    con = sqlite3.connect(str(db))
    try:
        stored = int(con.execute("SELECT count(*) FROM spans").fetchone()[0])
    finally:
        con.close()
    assay.shutdown()
    return {
        "produced": n, "store_delivered": stored, "otlp_delivered": receiver.spans,
        "flush_returned": flushed, "production_s": t1 - t0, "production_rate": n / (t1 - t0),
        "end_to_end_s": t2 - t0, "end_to_end_rate": n / (t2 - t0),
        "rss_growth_mb": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        "exporter_stats": rows,
    }


def otel_burst(receiver: Receiver, n: int) -> dict[str, Any] | None:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    receiver.reset()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url)))
    tracer = provider.get_tracer("bench")

    def otel_f(x: int) -> int:
        with tracer.start_as_current_span("f") as span:
            span.set_attribute("input", str(x))
            out = f(x)
            span.set_attribute("output", str(out))
            return out

    t0 = time.perf_counter()
    for x in range(n):
        otel_f(x)
    t1 = time.perf_counter()
    provider.force_flush(600_000)
    t2 = time.perf_counter()
    provider.shutdown()
    wait_until(lambda: receiver.spans >= n, 5)
    return {"produced": n, "delivered": receiver.spans, "production_rate": n / (t1 - t0),
            "end_to_end_s": t2 - t0}


# -- [3/4] the traced call, collector healthy and down --------------------------------------------

class Modes:
    """Switches between the store alone and the store with an OTLP exporter whose
    collector is healthy or down, keeping one configuration per mode."""

    def __init__(self, receiver: Receiver, tmp: Path) -> None:
        import assay

        self.assay = assay
        self.receiver = receiver
        self.tmp = tmp
        self.traced = assay.trace(f)
        self.config: str | None = None
        self.replays: list[tuple[int, float]] = []  # (spans, seconds) of each recovery

    def _configure(self, config: str) -> None:
        from assay.exporters import OTLPExporter

        if self.config == config:
            return
        exporters = [OTLPExporter(self.receiver.url, max_retry_s=1.0)] if config == "otlp" else []
        self.assay.configure(store=f"sqlite:///{self.tmp / 'calls.db'}", exporters=exporters,
                             spool_dir=self.tmp / "spool-calls")
        self.config = config

    def otlp_row(self) -> dict[str, Any]:
        from assay.exporters import stats

        return next(r for r in stats() if r["exporter"] == "OTLPExporter")

    def store_only(self) -> None:
        self._configure("store")
        for x in range(200):
            self.traced(x)
        self.assay.flush(timeout_s=60)

    def healthy(self) -> None:
        self._configure("otlp")
        self.receiver.start()
        for x in range(200):
            self.traced(x)
        if not self.assay.flush(timeout_s=300):
            raise RuntimeError(f"the spool was not replayed: {self.otlp_row()}")

    def down(self) -> None:
        self._configure("otlp")
        self.receiver.stop()
        for x in range(200):
            self.traced(x)
        if not wait_until(lambda: self.otlp_row()["down"], 60):
            raise RuntimeError("the exporter never found the collector down")
        self.on_disk()

    def on_disk(self) -> None:
        wait_until(lambda: (row := self.otlp_row())["queued"] + row["in_flight"] == 0, 120)

    def recover(self) -> None:
        """After an outage: the collector comes back; time the replay of the spool."""
        self.on_disk()
        pending = self.otlp_row()["spooled"]
        self.receiver.start()
        t0 = time.perf_counter()
        if not self.assay.flush(timeout_s=300):
            raise RuntimeError(f"the spool was not replayed: {self.otlp_row()}")
        self.replays.append((pending, time.perf_counter() - t0))


def overhead_cases(receiver: Receiver, tmp: Path, sizes: Sizes) -> tuple[list[Case], Modes]:
    modes = Modes(receiver, tmp)
    cases = [
        Case("a", "(a) plain call", f, sizes.n_call * 10),
        Case("s", "(s) @assay.trace, SQLite store", modes.traced, sizes.n_call,
             prepare=modes.store_only, settle=lambda: modes.assay.flush(timeout_s=60)),
        Case("h", "(h) + OTLP, collector healthy", modes.traced, sizes.n_call,
             prepare=modes.healthy, settle=lambda: modes.assay.flush(timeout_s=300)),
        Case("d", "(d) + OTLP, collector down (spool)", modes.traced, sizes.n_call,
             prepare=modes.down, settle=modes.recover),
    ]
    for r in range(sizes.repeats):
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:
            case.run_once()
        say(f"  repeat {r + 1}/{sizes.repeats} done")
    modes.assay.shutdown()
    return cases, modes


# -- report ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    json_path = Path(args.json).resolve() if args.json else None
    # The outages are on purpose, and raw OpenTelemetry's drops are counted, not logged.
    logging.getLogger("assay").setLevel(logging.CRITICAL)
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)

    started = time.perf_counter()
    env = {**base_environment(), "opentelemetry_sdk": dist_version("opentelemetry-sdk"),
           "otlp_proto_http": dist_version("opentelemetry-exporter-otlp-proto-http"),
           "httpx": dist_version("httpx")}
    env["load_average_start"] = load_average()
    say(f"assay export benchmark ({'quick' if args.quick else 'full'} run), {env['date']}")
    say(f"python {env['python']} on {env['platform']}, {env['cpus']} CPUs; assay {env['assay']} "
        f"[{env['assay_commit']}], opentelemetry-sdk {env['opentelemetry_sdk']}, "
        f"opentelemetry-exporter-otlp-proto-http {env['otlp_proto_http'] or 'not installed'}")
    receiver = Receiver()
    receiver.start()
    old_cwd = os.getcwd()
    try:
        with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp_name:
            tmp = Path(tmp_name)
            os.chdir(tmp)
            try:
                results = run(receiver, sizes, tmp)
            finally:
                os.chdir(old_cwd)
    finally:
        receiver.stop()
    env["load_average_end"] = load_average()
    results["environment"] = env
    results["sizes"] = sizes.__dict__
    results["elapsed_s"] = time.perf_counter() - started

    say("\nSummary")
    rows = results["targets"]
    print_summary(rows)
    print_run_footer(env, results["elapsed_s"])

    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"figures written to {json_path}")
    return 0


def run(receiver: Receiver, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []

    def target(figure: str, value: str, goal: str, ok: bool | None) -> None:
        targets.append({"figure": figure, "value": value, "target": goal, "ok": ok,
                        "result": verdict(ok)})

    # ---- exporter throughput -------------------------------------------------------------------
    say(f"\n[1/4] exporter throughput: {sizes.export_spans:,} spans in batches of {BATCH}, "
        f"{sizes.repeats} repeats")
    rates = exporter_rates(receiver, sizes)
    out["exporter_rates"] = rates
    ours = rates["assay OTLPExporter"]["median_spans_per_s"]
    target("OTLPExporter sustained rate", f"{ours:,.0f}/s", "(info)", None)
    if "OTel OTLPSpanExporter" in rates:
        theirs = rates["OTel OTLPSpanExporter"]["median_spans_per_s"]
        plain = rates["assay, compression=none"]["median_spans_per_s"]
        say(f"  ratio assay / OTel exporter: {ours / theirs:.2f}x with gzip (assay's default), "
            f"{plain / theirs:.2f}x without (OTel's default)")
        target("OTLPExporter (gzip) / OTel OTLPSpanExporter rate", f"{ours / theirs:.2f}x",
               "(info)", None)
        target("OTLPExporter (none) / OTel OTLPSpanExporter rate", f"{plain / theirs:.2f}x",
               "(info)", None)

    # ---- bursts ---------------------------------------------------------------------------------
    say(f"\n[2/4] burst: {sizes.burst:,} spans from one thread, SQLite store + OTLP exporter")
    burst = assay_burst(receiver, tmp, sizes.burst)
    out["burst"] = burst
    otlp = next(r for r in burst["exporter_stats"] if r["exporter"] == "OTLPExporter")
    say(f"  store delivered/produced  {burst['store_delivered']:,}/{burst['produced']:,} "
        f"({burst['store_delivered'] / burst['produced']:.2%})")
    say(f"  OTLP delivered/produced   {burst['otlp_delivered']:,}/{burst['produced']:,} "
        f"({burst['otlp_delivered'] / burst['produced']:.2%}); through the spool on the way: "
        f"{otlp['replayed']:,}; app blocked {otlp['blocked']} time(s)")
    say(f"  production {burst['production_rate']:,.0f} spans/s; end to end "
        f"{burst['end_to_end_rate']:,.0f} spans/s ({burst['end_to_end_s']:.1f} s); flush "
        f"returned {burst['flush_returned']}; RSS growth {burst['rss_growth_mb'] or 0:.0f} MB")
    target("burst store delivered/produced", f"{burst['store_delivered']}/{burst['produced']}",
           "all", burst["store_delivered"] == burst["produced"])
    target("burst OTLP delivered/produced", f"{burst['otlp_delivered']}/{burst['produced']}",
           "all", burst["otlp_delivered"] == burst["produced"])
    raw = otel_burst(receiver, sizes.burst)
    out["otel_burst"] = raw
    if raw is not None:
        say(f"  raw OTel (BatchSpanProcessor defaults + OTLPSpanExporter): delivered "
            f"{raw['delivered']:,}/{raw['produced']:,} ({raw['delivered'] / raw['produced']:.1%}),"
            f" production {raw['production_rate']:,.0f} spans/s")
        target("raw OTel burst delivered/produced", f"{raw['delivered']}/{raw['produced']}",
               "(info)", None)

    # ---- the traced call, collector down --------------------------------------------------------
    say(f"\n[3/4] the traced call with the collector healthy and down: {sizes.repeats} repeats "
        "per case, interleaved")
    cases, modes = overhead_cases(receiver, tmp, sizes)
    say(f"\n  {'case':<40} {'N/repeat':>9} {'wall us/call':>13} {'cpu us/call':>12} "
        f"{'wall spread':>12}")
    for case in cases:
        spread = (max(case.wall) - min(case.wall)) / case.wall_us
        say(f"  {case.label:<40} {case.n:>9} {case.wall_us:>13.3f} {case.cpu_us:>12.3f} "
            f"{spread:>11.0%}")
    by = {c.key: c for c in cases}
    s, h, d = by["s"], by["h"], by["d"]
    ratios = {"d_over_h_wall": d.wall_us / h.wall_us, "d_over_h_cpu": d.cpu_us / h.cpu_us,
              "h_over_s_wall": h.wall_us / s.wall_us, "d_over_s_wall": d.wall_us / s.wall_us}
    out["per_call_us"] = {c.key: {"label": c.label, "n": c.n, "wall_median": c.wall_us,
                                  "cpu_median": c.cpu_us, "wall_all": c.wall, "cpu_all": c.cpu}
                          for c in cases}
    out["ratios"] = ratios
    say(f"\n  (d)/(h) down vs healthy:   wall {ratios['d_over_h_wall']:.2f}x   "
        f"cpu {ratios['d_over_h_cpu']:.2f}x   (target <= 1.2)")
    say(f"  (h)/(s) OTLP vs store only: wall {ratios['h_over_s_wall']:.2f}x")
    target("(d)/(h) traced call, collector down vs healthy, wall",
           f"{ratios['d_over_h_wall']:.2f}x", "<= 1.2x", ratios["d_over_h_wall"] <= 1.2)
    target("(d)/(h) traced call, collector down vs healthy, thread CPU",
           f"{ratios['d_over_h_cpu']:.2f}x", "<= 1.2x", ratios["d_over_h_cpu"] <= 1.2)
    target("(h)/(s) OTLP exporter added to the store, wall", f"{ratios['h_over_s_wall']:.2f}x",
           "(info)", None)

    # ---- recovery -------------------------------------------------------------------------------
    replayed = sum(n for n, _ in modes.replays)
    seconds = sum(t for _, t in modes.replays)
    say(f"\n[4/4] recovery: {len(modes.replays)} outages, {replayed:,} spooled spans replayed "
        f"in {seconds:.1f} s")
    if seconds:
        rate = replayed / seconds
        say(f"  replay rate {rate:,.0f} spans/s ({rate / ours:.2f}x the exporter's own rate)")
        out["replay"] = {"spans": replayed, "seconds": seconds, "rate": rate}
        target("spool replay rate after an outage", f"{rate:,.0f}/s", "(info)", None)
    out["targets"] = targets
    return out


if __name__ == "__main__":
    sys.exit(main())
