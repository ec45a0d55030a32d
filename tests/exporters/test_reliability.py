"""The bad days, for real: an OTLP collector that is down and comes back, a process
killed during the outage and its spool delivered by the next ones, a collector that
takes seconds per request, a fork with spans queued (and spooled), a burst, every way
out of a process, and a trace shared with the application's own OpenTelemetry SDK.

Applications run in child interpreters; the collector is ``OTLPReceiver`` on
127.0.0.1 in the test process. No assertion is on an absolute time except the
deadlines that assay promises (``flush(timeout_s)``), and those with a margin.
Each test prints its figures (``pytest -s`` shows them).

The SIGKILL of a process writing to SQLite and the 8 x 4 writers on one SQLite file
are in ``test_processes.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_python
from tests.exporters.otlp_receiver import OTLPReceiver, ReceivedSpan, free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")


# -- helpers ---------------------------------------------------------------------------


def code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def child_env(spool_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "OTEL_"))}
    env["ASSAY_INTERNAL_ERRORS"] = "raise"
    env["ASSAY_SPOOL_DIR"] = str(spool_root)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def spawn(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def expect_line(proc: subprocess.Popen[str], wanted: str) -> str:
    """Read the child's stdout up to a line starting with ``wanted``."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"the child ended before {wanted!r}:\n{err}")
        if line.startswith(wanted):
            return line


def tell(proc: subprocess.Popen[str], text: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    """Wait for the child; its last stdout line, as JSON."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return dict(json.loads(out.strip().splitlines()[-1]))


def names(spans: list[ReceivedSpan]) -> Counter[str]:
    return Counter(s.name for s in spans)


def span_ids(spans: list[ReceivedSpan]) -> Counter[bytes]:
    return Counter(s.span.span_id for s in spans)


def otlp_row(stats: list[dict[str, Any]]) -> dict[str, Any]:
    (row,) = [r for r in stats if r["exporter"] == "OTLPExporter"]
    return row


def assert_balanced(row: dict[str, Any]) -> None:
    assert row["produced"] + row["inherited"] == (
        row["exported"] + row["failed"] + row["dropped"] + row["queued"] + row["in_flight"]
        + row["spooled"]), row


def figures(test: str, **values: Any) -> None:
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in values.items())
    print(f"\n[figures] {test}: {shown}")


# The application of most tests: `run(phase, n)` traces n root spans with one child
# each (2n spans named "<phase>-<i>" and "step"), returning the median per-call time.
_APP_HEAD = code("""
    import json, os, statistics, sys, time
    import assay
    from assay.exporters import OTLPExporter, stats

    @assay.trace
    def step(i):
        return i

    def run(phase, n):
        times = []
        for i in range(n):
            t = time.perf_counter()
            with assay.start_span(f"{phase}-{i}"):
                step(i)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6

    def otlp_row():
        return [r for r in stats() if r["exporter"] == "OTLPExporter"][0]

    def wait_for(condition, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, otlp_row()
            time.sleep(0.01)

    def rss_mb():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0
""")


# -- 2. the collector down, then back ---------------------------------------------------

_OUTAGE = _APP_HEAD + code("""
    url, n = sys.argv[1], int(sys.argv[2])
    assay.configure(store="memory://", flush_interval_ms=50,
                    exporters=[OTLPExporter(url, max_retry_s=1.0, initial_backoff_s=0.05)])
    outage_us = run("outage", n)
    # the exporter gave up on its first batch: everything is on disk
    wait_for(lambda: otlp_row()["down"] and otlp_row()["queued"] + otlp_row()["in_flight"] == 0)
    during = otlp_row()
    print("outage-done", flush=True)
    sys.stdin.readline()                     # the collector is back
    healthy_us = run("healthy", n)
    flushed = assay.flush(timeout_s=60)
    print(json.dumps({"flushed": flushed, "outage_us": outage_us, "healthy_us": healthy_us,
                      "during": during, "after": otlp_row()}))
""")


def test_collector_down_then_back_delivers_every_span_and_accounts_for_each(spool_root):
    port = free_port()
    receiver = OTLPReceiver(port=port)
    n = 3000
    proc = spawn(_OUTAGE, f"http://127.0.0.1:{port}/v1/traces", str(n),
                 env=child_env(spool_root))
    try:
        expect_line(proc, "outage-done")
        assert receiver.attempts == []
        receiver.start()
        tell(proc)
        result = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.stop()

    during, after = result["during"], result["after"]
    assert during["spooled"] == during["produced"] == 2 * n, "the outage went to disk"
    assert during["exported"] == during["dropped"] == during["failed"] == 0
    assert_balanced(during)
    assert result["flushed"] is True
    assert (after["produced"], after["exported"], after["spooled"], after["dropped"],
            after["failed"], after["queued"], after["in_flight"]) == (4 * n, 4 * n, 0, 0, 0, 0, 0)
    assert after["replayed"] >= 2 * n
    assert_balanced(after)

    spans = receiver.spans()
    assert max(span_ids(spans).values()) == 1, "each span arrived once"
    counts = names(spans)
    assert counts["step"] == 2 * n
    assert all(counts[f"{phase}-{i}"] == 1 for phase in ("outage", "healthy")
               for i in range(n))
    ratio = result["outage_us"] / result["healthy_us"]
    figures("collector down then back", spans=4 * n, spooled_during_outage=during["spooled"],
            spool_bytes=during["spool_bytes"], replayed=after["replayed"],
            outage_us_per_call=result["outage_us"], healthy_us_per_call=result["healthy_us"],
            outage_over_healthy=ratio)
    assert ratio < 3.0, "the traced calls are not slowed by the outage"


# -- 2b. killed during the outage; the next processes deliver --------------------------

_KILLED_IN_OUTAGE = _APP_HEAD + code("""
    url, n = sys.argv[1], int(sys.argv[2])
    assay.configure(store="memory://", flush_interval_ms=50,
                    exporters=[OTLPExporter(url, max_retry_s=0.5, initial_backoff_s=0.05)])
    run("lost-process", n)
    wait_for(lambda: otlp_row()["spooled"] == 2 * n)
    print("spooled", json.dumps(otlp_row()), flush=True)
    sys.stdin.readline()                     # SIGKILL comes first
""")

_NEXT_PROCESS = _APP_HEAD + code("""
    url, tag = sys.argv[1], sys.argv[2]
    assay.configure(store="memory://", flush_interval_ms=50, exporters=[OTLPExporter(url)])
    print("started", flush=True)
    sys.stdin.readline()                     # all of them are up
    run(tag, 10)
    flushed = assay.flush(timeout_s=60)
    print(json.dumps({"flushed": flushed, "row": otlp_row()}))
""")


def test_a_process_killed_during_the_outage_is_delivered_by_the_next_ones(spool_root):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/traces"
    n = 3000
    # A small bound makes small segments (64 KiB): several, for the next processes to share.
    env = child_env(spool_root, ASSAY_SPOOL_MAX_BYTES="1MiB")
    victim = spawn(_KILLED_IN_OUTAGE, url, str(n), env=env)
    try:
        line = expect_line(victim, "spooled")
        before = json.loads(line.split(" ", 1)[1])
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate(timeout=30)
    (spool_dir,) = spool_root.iterdir()
    left = sorted(spool_dir.glob("*.seg"))
    assert len(left) > 1, "the killed process left its spool, in several segments"

    # Three processes start at once on the same spool: each segment is delivered by one.
    with OTLPReceiver(port=port) as receiver:
        nexts = [spawn(_NEXT_PROCESS, url, f"next{k}", env=env) for k in range(3)]
        try:
            for proc in nexts:
                expect_line(proc, "started")
            for proc in nexts:
                tell(proc)
            results = [finish(proc) for proc in nexts]
        finally:
            for proc in nexts:
                if proc.poll() is None:
                    proc.kill()
        spans = receiver.spans()

    assert all(r["flushed"] for r in results)
    rows = [r["row"] for r in results]
    for row in rows:
        assert_balanced(row)
        assert row["spooled"] == row["dropped"] == row["failed"] == 0
    assert sum(r["inherited"] for r in rows) == 2 * n == before["spooled"]
    assert sum(r["replayed"] for r in rows) == 2 * n
    assert max(span_ids(spans).values()) == 1, "no segment was delivered twice"
    counts = names(spans)
    assert all(counts[f"lost-process-{i}"] == 1 for i in range(n))
    assert all(counts[f"next{k}-{i}"] == 1 for k in range(3) for i in range(10))
    assert counts["step"] == n + 30
    assert list(spool_dir.glob("*.seg")) == []
    figures("killed during the outage", spooled_before_kill=before["spooled"],
            segments_left=len(left), inherited_per_process=[r["inherited"] for r in rows],
            delivered=len(spans))


# -- 4. a slow collector -------------------------------------------------------------------

_SLOW = _APP_HEAD + code("""
    url, n, max_queue, db = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    assay.configure(store=f"sqlite:///{db}", flush_interval_ms=50, max_queue_size=max_queue,
                    exporters=[OTLPExporter(url)])
    run("warmup", 500)
    assert assay.flush(timeout_s=30)

    def timed(phase):
        peak_queued = peak_rss = 0
        t0 = time.perf_counter()
        for k in range(10):
            run(f"{phase}{k}", n // 10)
            row = otlp_row()
            peak_queued = max(peak_queued, row["queued"] + row["in_flight"])
            peak_rss = max(peak_rss, rss_mb())
        return {"rate": n / (time.perf_counter() - t0), "peak_queued": peak_queued,
                "peak_rss": peak_rss}

    rss0 = rss_mb()
    healthy = timed("healthy")
    healthy["rss_growth"] = rss_mb() - rss0
    assert assay.flush(timeout_s=60)
    print("healthy-done", flush=True)
    sys.stdin.readline()                       # the collector turns slow
    rss1 = rss_mb()
    slow = timed("slow")
    slow["rss_growth"] = rss_mb() - rss1
    during = otlp_row()
    print("slow-done", flush=True)
    sys.stdin.readline()                       # and fast again
    flushed = assay.flush(timeout_s=120)
    print(json.dumps({"healthy": healthy, "slow": slow, "rss0": rss0, "during": during,
                      "flushed": flushed, "after": otlp_row()}))
""")


def test_a_slow_collector_neither_slows_the_application_nor_grows_its_memory(
        spool_root, tmp_path):
    n, max_queue = 20_000, 2_000
    with OTLPReceiver() as receiver:
        proc = spawn(_SLOW, receiver.url, str(n), str(max_queue), str(tmp_path / "slow.db"),
                     env=child_env(spool_root))
        try:
            expect_line(proc, "healthy-done")
            receiver.delays.extend([2.0] * 10_000)  # seconds per request
            tell(proc)
            expect_line(proc, "slow-done")
            receiver.delays.clear()
            tell(proc)
            result = finish(proc, timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
        spans = receiver.spans()

    healthy, slow, during = result["healthy"], result["slow"], result["during"]
    ratio = slow["rate"] / healthy["rate"]
    figures("slow collector (2 s per request)", healthy_spans_per_s=healthy["rate"] * 2,
            slow_spans_per_s=slow["rate"] * 2, slow_over_healthy=ratio,
            peak_queued=slow["peak_queued"], spooled_at_end_of_slow_phase=during["spooled"],
            rss_growth_healthy_mb=healthy["rss_growth"], rss_growth_slow_mb=slow["rss_growth"])
    assert ratio > 0.5, "the application's throughput does not follow the collector's"
    assert slow["peak_queued"] <= 3 * max_queue, "memory is bounded by the queue (plus a " \
        "batch being exported and one being written to the spool)"
    assert during["spooled"] > 0 and during["dropped"] == 0
    # Both phases grow SQLite's page cache alike (up to 64 MiB); the slow collector's
    # backlog is on disk, not in memory.
    assert slow["rss_growth"] < healthy["rss_growth"] + 50
    assert result["flushed"] is True
    after = result["after"]
    assert after["exported"] == after["produced"] == 2 * (500 + 2 * n)
    assert_balanced(after)
    assert max(span_ids(spans).values()) == 1
    assert len(spans) == 2 * (500 + 2 * n)


# -- 5. fork with queued and spooled spans --------------------------------------------------

_FORK = _APP_HEAD + code("""
    url, scenario = sys.argv[1], sys.argv[2]
    assay.configure(store="memory://", flush_interval_ms=60_000,
                    exporters=[OTLPExporter(url, max_retry_s=0.3, initial_backoff_s=0.02)])
    run("parent-before", 5)
    if scenario == "spooled":                # the collector is down: wait for the spool
        assay.flush(timeout_s=0.1)
        wait_for(lambda: otlp_row()["spooled"] == 10)
    else:
        assert otlp_row()["queued"] == 10
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            run("child", 3)
            if scenario == "spooled":
                assay.shutdown()             # down: its spans go to a segment of its own
                print(json.dumps({"child": True}), flush=True)
            else:
                assert assay.flush(timeout_s=30)
            status = 0
        finally:
            os._exit(status)
    run("parent-after", 3)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    print("children-done", flush=True)
    sys.stdin.readline()                       # the collector is up
    flushed = assay.flush(timeout_s=60)
    print(json.dumps({"flushed": flushed, "row": otlp_row()}))
""")


@pytest.mark.parametrize("scenario", ["queued", "spooled"])
def test_fork_with_spans_queued_or_spooled_delivers_each_span_once(scenario, spool_root):
    port = free_port()
    receiver = OTLPReceiver(port=port)
    if scenario == "queued":
        receiver.start()
    proc = spawn(_FORK, receiver.url, scenario, env=child_env(spool_root))
    try:
        expect_line(proc, "children-done")
        if scenario == "spooled":
            receiver.start()
        tell(proc)
        result = finish(proc)
        spans = receiver.spans()
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.stop()

    assert result["flushed"] is True
    assert max(span_ids(spans).values()) == 1, "nothing twice"
    expected = {f"parent-before-{i}" for i in range(5)} | {f"child-{i}" for i in range(3)} \
        | {f"parent-after-{i}" for i in range(3)}
    counts = names(spans)
    assert {k for k in counts if k != "step"} == expected
    assert counts["step"] == 11
    row = result["row"]
    assert_balanced(row)
    if scenario == "spooled":
        assert row["inherited"] == 6, "the parent delivered the child's segment"
    figures(f"fork ({scenario})", delivered=len(spans), parent_inherited=row["inherited"],
            parent_replayed=row["replayed"])


# -- 6. a burst -------------------------------------------------------------------------------

_BURST = _APP_HEAD + code("""
    url, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assay.configure(store=f"sqlite:///{db}", exporters=[OTLPExporter(url)])
    t0 = time.perf_counter()
    run("burst", n // 2)
    t1 = time.perf_counter()
    flushed = assay.flush(timeout_s=300)
    t2 = time.perf_counter()
    print(json.dumps({"flushed": flushed, "production_s": t1 - t0, "flush_s": t2 - t1,
                      "stats": stats()}))
""")


def test_a_burst_is_delivered_whole_to_the_store_and_the_collector(spool_root, tmp_path):
    n = 20_000  # bench/export.py runs the full 100,000
    db = tmp_path / "burst.db"
    with OTLPReceiver() as receiver:
        proc = spawn(_BURST, receiver.url, str(db), str(n), env=child_env(spool_root))
        result = finish(proc, timeout=300)
        spans = receiver.spans()
    with closing(sqlite3.connect(db)) as con:
        stored = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    rows = {r["exporter"]: r for r in result["stats"]}
    otlp = rows["OTLPExporter"]
    figures("burst", produced=n, store_delivered_ratio=stored / n,
            otlp_delivered_ratio=len(spans) / n, production_s=result["production_s"],
            flush_s=result["flush_s"], otlp_spooled_on_the_way=otlp["replayed"],
            blocked=otlp["blocked"] + rows["StoreSpanExporter"]["blocked"])
    assert result["flushed"] is True
    assert stored == n, "the store has every span"
    assert len(spans) == n and max(span_ids(spans).values()) == 1, "and so has the collector"
    for row in rows.values():
        assert row["dropped"] == row["failed"] == 0
        assert row["exported"] == row["produced"] == n
        assert_balanced(row)


# -- 7. every way out ---------------------------------------------------------------------------

_EXIT = _APP_HEAD + code("""
    url, db, ending = sys.argv[1], sys.argv[2], sys.argv[3]
    assay.configure(store=f"sqlite:///{db}", flush_interval_ms=100,
                    exporters=[OTLPExporter(url)])

    def main():
        run("early", 20)
        if ending == "os._exit":
            time.sleep(1.0)                    # several flush intervals
            run("late", 5)
            os._exit(0)
        run("late", 5)
        if ending == "sys.exit":
            sys.exit(3)
        if ending == "raise":
            raise RuntimeError("the app crashed after tracing")

    main()
""")


@pytest.mark.parametrize(("ending", "exit_code"), [
    ("return", 0), ("sys.exit", 3), ("raise", 1), ("os._exit", 0)])
def test_every_way_out_flushes_and_os_exit_loses_at_most_the_last_interval(
        ending, exit_code, spool_root, tmp_path):
    db = tmp_path / "exit.db"
    with OTLPReceiver() as receiver:
        proc = subprocess.run([sys.executable, "-c", _EXIT, receiver.url, str(db), ending],
                              env=child_env(spool_root), capture_output=True, text=True,
                              timeout=60)
        spans = receiver.spans()
    assert proc.returncode == exit_code, proc.stderr
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = Counter(r[0] for r in con.execute("SELECT name FROM spans"))
    sent = names(spans)
    early = {f"early-{i}" for i in range(20)}
    late = {f"late-{i}" for i in range(5)}
    for where in (stored, sent):
        roots = {name for name in where if name != "step"}
        assert early <= roots, "everything ended long before the exit"
        assert roots <= early | late
        assert all(where[name] == 1 for name in roots)
        assert where["step"] == len(roots), "each stored root with its child"
        if ending != "os._exit":
            assert late <= roots
    figures(f"exit by {ending}", stored=sum(stored.values()), sent=len(spans))


_FLUSH_DOWN = _APP_HEAD + code("""
    url = sys.argv[1]
    assay.configure(store="memory://", flush_interval_ms=50, exporters=[OTLPExporter(url)])
    run("op", 200)
    t = time.perf_counter()
    flushed = assay.flush(timeout_s=1.0)
    elapsed = time.perf_counter() - t
    print(json.dumps({"flushed": flushed, "elapsed": elapsed, "row": otlp_row()}), flush=True)
""")


def test_flush_and_exit_keep_their_deadline_with_the_collector_down(spool_root):
    url = f"http://127.0.0.1:{free_port()}/v1/traces"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _FLUSH_DOWN, url], env=child_env(spool_root),
                          capture_output=True, text=True, timeout=60)
    total = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["flushed"] is False
    assert result["elapsed"] < 1.0 + 2.0
    assert "returned before every span was delivered" in proc.stderr
    assert "safe on disk" in proc.stderr
    # At exit the export being retried is cut short and the spans go to the spool.
    (spool_dir,) = spool_root.iterdir()
    assert list(spool_dir.glob("*.seg"))
    assert "400 span(s)" in proc.stderr and "kept in the spool" in proc.stderr
    figures("flush(1.0) with the collector down", flush_s=result["elapsed"],
            child_total_s=total)
    assert total < 10.0 + 20.0, "exit does not wait out the exporter's 30 s retry window"


# -- interop with the application's own OpenTelemetry SDK ---------------------------------------

_INTEROP = code("""
    import json, sys
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import assay
    from assay.exporters import OTLPExporter

    url, mode = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": "the-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("the-app")
    if mode == "own-provider":
        assay.configure(store="memory://", exporters=[OTLPExporter(url)])
    else:                                      # assay's processing on the app's provider
        assay.configure(store="memory://", use_global_tracer_provider=True)

    @assay.trace(span_type="TOOL")
    def lookup(q):
        with tracer.start_as_current_span("app-db-query"):
            return q.upper()

    @assay.trace(span_type="AGENT")
    def agent(q):
        return lookup(q)

    with tracer.start_as_current_span("app-http-request") as request:
        agent("hi")
        ids = {"trace_id": request.get_span_context().trace_id}
    assert assay.flush(timeout_s=30)
    provider.force_flush()
    provider.shutdown()
    print(json.dumps(ids))
""")


@pytest.mark.parametrize("mode", ["own-provider", "global-provider"])
def test_a_trace_started_by_the_apps_sdk_continues_through_assay_spans(mode, spool_root):
    with OTLPReceiver() as receiver:
        out = run_python(_INTEROP.replace("sys.argv[1], sys.argv[2]",
                                          f"{receiver.url!r}, {mode!r}"),
                         env={"ASSAY_SPOOL_DIR": str(spool_root)}, timeout=60)
        spans = receiver.spans()
    trace_id = json.loads(out.strip().splitlines()[-1])["trace_id"]
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"app-http-request", "agent", "lookup", "app-db-query"}
    assert {int.from_bytes(s.span.trace_id, "big") for s in spans} == {trace_id}
    parent = {name: s.span.parent_span_id for name, s in by_name.items()}
    span_id = {name: s.span.span_id for name, s in by_name.items()}
    assert parent["app-http-request"] == b""
    assert parent["agent"] == span_id["app-http-request"]
    assert parent["lookup"] == span_id["agent"]
    assert parent["app-db-query"] == span_id["lookup"]
    assert by_name["app-http-request"].resource["service.name"] == "the-app"
    assert max(span_ids(spans).values()) == 1
    if mode == "own-provider":  # assay's spans went out through assay's exporter
        assert by_name["agent"].attributes["openinference.span.kind"] == "AGENT"
        assert by_name["agent"].resource["service.name"] == "assay"
    else:  # through the application's provider and its exporter
        assert by_name["agent"].resource["service.name"] == "the-app"
        assert by_name["agent"].attributes["assay.span.type"] == "AGENT"
