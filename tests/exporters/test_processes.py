"""The pipeline across processes: flush at exit, multiprocessing and os.fork children,
many processes writing one SQLite file, traceparent between processes, and a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import assay
from assay.tracing import inject_traceparent
from tests.conftest import ROOT, run_python

# -- helpers ---------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child interpreter: no ambient ASSAY_*, assay importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env["ASSAY_INTERNAL_ERRORS"] = "raise"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def sql(path: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as con:
        return con.execute(query, params).fetchall()


def span_names(path: Path) -> list[str]:
    return sorted(r[0] for r in sql(path, "SELECT name FROM spans"))


def code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


# -- flush at exit ---------------------------------------------------------------------

_EXIT_CHILD = code("""
    import sys
    import assay

    @assay.trace
    def step(i):
        return i

    @assay.trace
    def job(k):
        return [step(i) for i in range(4)]

    for k in range(3):
        job(k)
    ENDING
""")


@pytest.mark.parametrize(("ending", "exit_code"), [
    ("", 0),
    ("sys.exit(3)", 3),
    ("raise RuntimeError('the app crashed after tracing')", 1),
], ids=["normal", "sys_exit", "uncaught_exception"])
def test_child_configured_only_by_env_stores_everything_at_exit_without_flush(
        ending, exit_code, db_path):
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_CHILD.replace("ENDING", ending)],
        env=child_env(ASSAY_STORE=f"sqlite:///{db_path}", ASSAY_EXPERIMENT="exit"),
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == exit_code, proc.stderr

    assert span_names(db_path) == ["job"] * 3 + ["step"] * 12
    assert sql(db_path, "SELECT experiment, state, count(*) FROM traces GROUP BY 1, 2") == [
        ("exit", "OK", 3)]


# -- multiprocessing -------------------------------------------------------------------

_MP_SCRIPT = code("""
    import multiprocessing
    import sys

    import assay

    @assay.trace
    def child_work(i):
        return i * 2

    def target(tag):
        for i in range(3):
            with assay.start_span(f"{tag}-{i}"):
                child_work(i)

    if __name__ == "__main__":
        method, parent_mode = sys.argv[1], sys.argv[2]
        if parent_mode == "traced":
            with assay.start_span("parent-before"):
                pass
        ctx = multiprocessing.get_context(method)
        proc = ctx.Process(target=target, args=("child",))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0, proc.exitcode
        assert assay.flush(timeout_s=30)
        print("parent done")
""")



@pytest.mark.parametrize(("method", "parent_mode"), [
    ("fork", "traced"),
    ("fork", "untouched"),
    ("forkserver", "traced"),
    ("spawn", "traced"),
])
def test_multiprocessing_child_that_returns_without_flush_has_its_spans_stored(
        method, parent_mode, tmp_path, db_path):
    script = tmp_path / "mp_app.py"
    script.write_text(_MP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), method, parent_mode],
        env=child_env(ASSAY_STORE=f"sqlite:///{db_path}", ASSAY_FLUSH_INTERVAL_MS="60000"),
        capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "parent done" in proc.stdout

    expected = sorted([f"child-{i}" for i in range(3)] + ["child_work"] * 3
                      + (["parent-before"] if parent_mode == "traced" else []))
    names = span_names(db_path) if db_path.exists() else []
    assert names == expected


# -- os.fork ---------------------------------------------------------------------------

_FORK_SCRIPT = code("""
    import json
    import os
    import sys
    import traceback

    import assay
    from assay.exporters import stats

    STATS_FILE = sys.argv[1]
    assay.configure(experiment="fork", flush_interval_ms=60000)

    @assay.trace
    def work(i):
        return i

    for i in range(5):
        with assay.start_span(f"parent-before-{i}"):
            work(i)
    before = stats()[0]
    assert before["exported"] == 0 and before["queued"] == 10, before

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            for i in range(3):
                with assay.start_span(f"child-{i}"):
                    work(i)
            ok = assay.flush(timeout_s=30)
            with open(STATS_FILE, "w") as f:
                json.dump({"flushed": ok, "stats": stats()}, f)
            status = 0
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(status)

    for i in range(3):
        with assay.start_span(f"parent-after-{i}"):
            work(i)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, wait_status
    assert assay.flush(timeout_s=30)
    print(json.dumps(stats()))
""")


def test_fork_with_spans_queued_stores_each_span_once_and_reseeds_ids(tmp_path, db_path):
    child_stats = tmp_path / "child_stats.json"
    out = run_python(
        _FORK_SCRIPT.replace("STATS_FILE = sys.argv[1]", f"STATS_FILE = {str(child_stats)!r}"),
        env={"ASSAY_STORE": f"sqlite:///{db_path}"}, timeout=90)
    (parent_row,) = json.loads(out.strip().splitlines()[-1])
    child = json.loads(child_stats.read_text())

    assert child["flushed"] is True
    (child_row,) = child["stats"]
    # the child exported only its own spans, the parent its own (queued before and after)
    assert child_row["exported"] == 6
    assert parent_row["exported"] == 16
    assert child_row["dropped"] == parent_row["dropped"] == 0

    roots = [f"parent-before-{i}" for i in range(5)] + [f"child-{i}" for i in range(3)] \
        + [f"parent-after-{i}" for i in range(3)]
    assert span_names(db_path) == sorted(roots + ["work"] * 11)
    assert sql(db_path, "SELECT count(DISTINCT span_id) FROM spans") == [(22,)]
    assert sql(db_path, "SELECT trace_id FROM spans GROUP BY trace_id HAVING count(*) != 2"
               ) == []

    def trace_ids(pattern: str) -> set[str]:
        rows = sql(db_path, "SELECT trace_id FROM spans WHERE name LIKE ?", pattern)
        return {r[0] for r in rows}

    child_ids, parent_ids = trace_ids("child-%"), trace_ids("parent-%")
    assert len(child_ids) == 3 and len(parent_ids) == 8
    assert child_ids.isdisjoint(parent_ids)
    assert sql(db_path, "SELECT count(*) FROM traces WHERE experiment = 'fork' AND state = 'OK'"
               ) == [(11,)]


_FORK_BUSY_SCRIPT = code("""
    import json
    import os
    import signal
    import sys
    import time

    import assay
    from assay.exporters import stats

    scenario, children = sys.argv[1], int(sys.argv[2])
    if scenario == "first_write":
        # the writer's first batch opens the store (imports and connects): fork meanwhile
        assay.configure(experiment="busy", flush_interval_ms=5)
        with assay.start_span("parent"):
            pass
        while stats()[0]["batches"] < 1:
            time.sleep(0.0005)
    else:
        # the store is open; the writer is in the middle of a long run of write transactions
        assay.configure(experiment="busy", flush_interval_ms=60000)
        with assay.start_span("parent"):
            pass
        assert assay.flush(timeout_s=30)

        @assay.trace
        def big(i):
            return "x" * 2000

        for i in range(30000):
            big(i)
        while stats()[0]["batches"] < 3:
            time.sleep(0.001)

    pids = []
    for k in range(children):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                with assay.start_span(f"child-{k}"):
                    pass
                status = 0 if assay.flush(timeout_s=3) else 3
            finally:
                os._exit(status)
        pids.append(pid)
        time.sleep(0.02)

    codes = []
    deadline = time.monotonic() + 30
    for pid in pids:
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(os.waitstatus_to_exitcode(wait_status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                codes.append("hung")
                break
            time.sleep(0.01)
    assert assay.flush(timeout_s=60)
    print(json.dumps(codes))
""")



@pytest.mark.parametrize(("scenario", "children"), [("first_write", 3), ("heavy_write", 10)])
def test_children_forked_while_the_writer_is_busy_still_store_their_spans(
        scenario, children, tmp_path, db_path):
    script = tmp_path / "fork_busy.py"
    script.write_text(_FORK_BUSY_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), scenario, str(children)],
        env=child_env(ASSAY_STORE=f"sqlite:///{db_path}"), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    stored = set(span_names(db_path))
    assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert "parent" in stored
    assert codes == [0] * children, "children whose flush timed out (3) or hung"
    assert {f"child-{k}" for k in range(children)} <= stored


# -- many writers ------------------------------------------------------------------------

_WRITER_SCRIPT = code("""
    import json
    import os
    import sys
    import threading
    import time

    import assay
    from assay.exporters import stats

    proc_no, threads_n, traces_n, workdir = (int(sys.argv[1]), int(sys.argv[2]),
                                             int(sys.argv[3]), sys.argv[4])

    @assay.trace
    def child(p, t, i, which):
        return f"{p}-{t}-{i}-{which}"

    barrier = threading.Barrier(threads_n)
    errors = []

    def worker(t):
        try:
            barrier.wait(30)
            for i in range(traces_n):
                with assay.start_span(f"root-{proc_no}-{t}-{i}"):
                    child(proc_no, t, i, "a")
                    child(proc_no, t, i, "b")
        except BaseException as exc:
            errors.append(exc)

    open(os.path.join(workdir, f"ready-{proc_no}"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(workdir, "go")):
        assert time.monotonic() < deadline, "never told to go"
        time.sleep(0.005)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert assay.flush(timeout_s=60)
    print(json.dumps(stats()))
""")


def test_many_processes_and_threads_writing_one_file_store_every_span_once(tmp_path, db_path):
    procs_n, threads_n, traces_n = 8, 4, 50
    script = tmp_path / "writer.py"
    script.write_text(_WRITER_SCRIPT)
    env = child_env(ASSAY_STORE=f"sqlite:///{db_path}", ASSAY_FLUSH_INTERVAL_MS="10",
                    ASSAY_EXPERIMENT="many")
    procs = []
    try:
        for p in range(procs_n):
            out = open(tmp_path / f"out-{p}.txt", "w")  # noqa: SIM115
            err = open(tmp_path / f"err-{p}.txt", "w")  # noqa: SIM115
            procs.append((subprocess.Popen(
                [sys.executable, str(script), str(p), str(threads_n), str(traces_n),
                 str(tmp_path)], env=env, stdout=out, stderr=err), out, err))
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{p}").exists() for p in range(procs_n)):
            assert all(pr.poll() is None for pr, _, _ in procs), "a writer died early"
            assert time.monotonic() < deadline, "writers never got ready"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        codes = [pr.wait(timeout=120) for pr, _, _ in procs]
    finally:
        for pr, out, err in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
            out.close()
            err.close()

    stderrs = [(tmp_path / f"err-{p}.txt").read_text() for p in range(procs_n)]
    assert codes == [0] * procs_n, stderrs
    for text in stderrs:
        assert "locked" not in text.lower(), text
    for p in range(procs_n):
        (row,) = json.loads((tmp_path / f"out-{p}.txt").read_text().strip().splitlines()[-1])
        assert row["exported"] == 3 * threads_n * traces_n
        assert row["failed"] == row["dropped"] == 0

    total = procs_n * threads_n * traces_n
    assert sql(db_path, "SELECT count(*), count(DISTINCT trace_id) FROM spans") == [
        (3 * total, total)]
    roots = {r[0] for r in sql(db_path, "SELECT name FROM spans WHERE parent_id IS NULL")}
    assert roots == {f"root-{p}-{t}-{i}" for p in range(procs_n) for t in range(threads_n)
                     for i in range(traces_n)}
    assert sql(db_path, "SELECT trace_id FROM spans GROUP BY trace_id HAVING count(*) != 3"
               ) == []
    assert sql(db_path, "SELECT experiment, state, count(*) FROM traces GROUP BY 1, 2") == [
        ("many", "OK", total)]
    assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]


# -- traceparent across processes ------------------------------------------------------------

_REMOTE_CHILD = code("""
    import json
    import os

    import assay
    from assay.tracing import continue_trace

    @assay.trace
    def lookup(x):
        return x + 1

    @assay.trace(span_type="TOOL")
    def remote_tool(x):
        assay.update_current_trace(tags={"child": "yes"})
        lookup(x)
        raise ValueError("tool failed")

    with continue_trace(json.loads(os.environ["TP_HEADERS"])):
        try:
            remote_tool(7)
        except ValueError:
            pass
    print(assay.get_last_trace_id())
""")


@pytest.mark.parametrize("first", ["child_first", "parent_first"])
def test_traceparent_joins_a_child_process_to_the_callers_trace(first, db_uri, db_path):
    assay.configure(store=db_uri, experiment="tp", flush_interval_ms=50)
    env = {"ASSAY_STORE": db_uri, "ASSAY_EXPERIMENT": "tp"}

    def run_child(headers: dict[str, str]) -> str:
        return run_python(_REMOTE_CHILD, env={**env, "TP_HEADERS": json.dumps(headers)},
                          timeout=60).strip()

    with assay.start_span("frontend", span_type="AGENT", inputs={"q": "hi"}) as root:
        assay.update_current_trace(tags={"parent": "yes"})
        headers = dict(inject_traceparent({}))
        assert headers["traceparent"].split("-")[1:3] == [root.trace_id, root.span_id]
        if first == "child_first":
            child_trace_id = run_child(headers)
            partial = assay.get_trace(root.trace_id)
            assert partial is not None, "the child wrote its spans at exit"
            assert {s.name for s in partial.spans} == {"remote_tool", "lookup"}
        root.set_outputs("done")
    assert assay.flush(timeout_s=30)
    if first == "parent_first":
        child_trace_id = run_child(headers)

    assert child_trace_id == root.trace_id
    trace = assay.get_trace(root.trace_id)
    assert trace is not None
    by_name = {s.name: s for s in trace.spans}
    assert set(by_name) == {"frontend", "remote_tool", "lookup"}
    assert by_name["frontend"].parent_id is None
    assert by_name["remote_tool"].parent_id == root.span_id
    assert by_name["lookup"].parent_id == by_name["remote_tool"].span_id
    assert by_name["remote_tool"].status == "ERROR"
    info = trace.info
    assert info.name == "frontend"
    assert info.state == "OK"
    assert info.experiment == "tp"
    assert info.request_preview is not None and '"hi"' in info.request_preview
    assert info.response_preview == '"done"'
    assert info.timestamp_ms == by_name["frontend"].start_time_ns // 1_000_000
    assert info.tags == {"parent": "yes", "child": "yes"}
    assert trace.root_span is not None and trace.root_span.name == "frontend"
    assert sql(db_path, "SELECT count(*) FROM traces") == [(1,)]


# -- SIGKILL ------------------------------------------------------------------------------

_TICKER = code("""
    import os
    import time

    import assay

    if os.environ.get("TICK_OTLP_URL"):  # and to a collector that is down: the disk spool
        from assay.exporters import OTLPExporter

        assay.configure(exporters=[OTLPExporter(os.environ["TICK_OTLP_URL"], max_retry_s=0.2,
                                                initial_backoff_s=0.02)])

    @assay.trace
    def payload(i):
        return "x" * 2000

    i = 0
    while True:
        with assay.start_span(f"tick-{i}"):
            payload(i)
        print(i, flush=True)
        i += 1
        time.sleep(0.005)
""")


_REPLAY = code("""
    import json, os

    import assay
    from assay.exporters import OTLPExporter, stats

    assay.configure(store="memory://", exporters=[OTLPExporter(os.environ["TICK_OTLP_URL"])])
    flushed = assay.flush(timeout_s=60)
    print(json.dumps({"flushed": flushed, "row": stats()[1]}))
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("outage", [False, True], ids=["store", "store-and-spool"])
def test_sigkilled_child_leaves_an_intact_store_holding_all_but_the_last_interval(
        outage, tmp_path, db_path):
    from tests.exporters.otlp_receiver import OTLPReceiver, free_port

    env = child_env(ASSAY_STORE=f"sqlite:///{db_path}", ASSAY_FLUSH_INTERVAL_MS="100",
                    ASSAY_SPOOL_DIR=str(tmp_path / "spool"))
    port = free_port()
    if outage:
        env["TICK_OTLP_URL"] = f"http://127.0.0.1:{port}/v1/traces"
    received: list[tuple[float, int]] = []
    with open(tmp_path / "stderr.txt", "w") as err, subprocess.Popen(
            [sys.executable, "-c", _TICKER], env=env, stdout=subprocess.PIPE, stderr=err,
            text=True) as proc:
        assert proc.stdout is not None
        stdout = proc.stdout

        def read() -> None:
            for line in stdout:
                received.append((time.monotonic(), int(line)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while not received or time.monotonic() - received[0][0] < 2.5:
                assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
                assert time.monotonic() < deadline, "the child never started ticking"
                time.sleep(0.02)
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)

    assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]
    # every span the child reported more than a second before the kill ended even earlier
    settled = {i for t, i in received if t < killed_at - 1.0}
    assert len(settled) > 10
    stored = {int(r[0][len("tick-"):])
              for r in sql(db_path, "SELECT name FROM spans WHERE name LIKE 'tick-%'")}
    assert settled <= stored, sorted(settled - stored)[:10]
    reported = {i for _, i in received}
    assert stored <= reported | {max(reported) + 1}
    # spans are written in the order they ended: each stored tick's child is stored too
    (payloads,) = sql(db_path, "SELECT count(*) FROM spans WHERE name = 'payload'")
    assert len(stored) <= payloads[0] <= len(stored) + 1
    if not outage:
        return
    # The spool the child was appending to when it died: the next process delivers it,
    # a record torn by the kill (if any) skipped and counted.
    with OTLPReceiver(port=port) as receiver:
        out = run_python(_REPLAY, env={"TICK_OTLP_URL": env["TICK_OTLP_URL"],
                                       "ASSAY_SPOOL_DIR": str(tmp_path / "spool")})
        result = json.loads(out.strip().splitlines()[-1])
        names = [s.name for s in receiver.spans()]
    assert result["flushed"] is True
    row = result["row"]
    assert row["inherited"] == row["replayed"] == len(names) > 0
    assert row["spool_torn"] <= 1
    ticks = [int(n[len("tick-"):]) for n in names if n.startswith("tick-")]
    delivered = set(ticks)
    assert len(ticks) == len(delivered), "each tick once"
    assert settled <= delivered, sorted(settled - delivered)[:10]
