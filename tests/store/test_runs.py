"""The public run API: start_run as a context manager (statuses, resume, nesting), the
log functions and their validation, tables, and traces carrying the active run's id
(across threads and tasks when the context is carried)."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

import assay
from assay.store import runs as run_api
from assay.store.runs import (
    active_run,
    end_run,
    get_metric_history,
    get_run,
    load_table,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    log_table,
    search_runs,
    set_tag,
    set_tags,
    start_run,
)
from assay.tracing import wrap


def stored(run_id: str) -> run_api.Run:
    run = get_run(run_id)
    assert run is not None
    return run


def traced_trace_id(name: str = "work") -> str:
    """Start and end one root span; its trace id."""
    with assay.start_span(name) as span, assay.start_span("child"):
        pass
    return span.trace_id


# -- start_run / end_run -------------------------------------------------------------------


def test_a_run_block_finishes_the_run_and_logs_into_it(tracing_any):
    with start_run("first", tags={"team": "qa"}) as run:
        assert active_run() is run
        log_param("model", "gpt-4o-mini")
        log_params({"k": 5, "none": None})
        log_metric("accuracy", 0.9)
        set_tag("dataset", "qa-v3")
        set_tags({"a": 1})
        inside = stored(run.run_id)
        assert (inside.status, inside.end_time_ms) == ("RUNNING", None)
    assert active_run() is None
    done = stored(run.run_id)
    assert (done.name, done.experiment, done.status) == ("first", "test", "FINISHED")
    assert done.end_time_ms is not None and done.end_time_ms >= done.start_time_ms
    assert done.params == {"k": "5", "model": "gpt-4o-mini", "none": "None"}
    assert done.metrics == {"accuracy": 0.9}
    assert done.tags == {"a": "1", "dataset": "qa-v3", "team": "qa"}
    assert len(run.run_id) == 32
    assert run.run == done


def test_an_exception_fails_the_run_and_propagates_unchanged(tracing):
    error = RuntimeError("boom")
    with pytest.raises(RuntimeError) as info, start_run() as run:
        raise error
    assert info.value is error
    assert stored(run.run_id).status == "FAILED"
    assert active_run() is None


def test_a_keyboard_interrupt_kills_the_run(tracing):
    with pytest.raises(KeyboardInterrupt), start_run() as run:
        raise KeyboardInterrupt
    assert stored(run.run_id).status == "KILLED"


def test_a_store_failure_on_exit_does_not_hide_the_blocks_exception(tracing, monkeypatch):
    with pytest.raises(ValueError, match="original"), start_run() as run:
        def broken(*args, **kwargs):
            raise assay.StoreError("store down")
        monkeypatch.setattr(run_api._store(), "update_run", broken)
        raise ValueError("original")
    monkeypatch.undo()
    assert active_run() is None
    assert stored(run.run_id).status == "RUNNING"  # the end could not be written


def test_end_run_inside_the_block_keeps_its_status(tracing):
    with start_run() as run:
        end_run("KILLED")
        assert active_run() is None
    assert stored(run.run_id).status == "KILLED"
    end_run()  # no active run: nothing happens


def test_start_run_without_a_block_and_end_run(tracing):
    run = start_run("manual", experiment="elsewhere")
    assert active_run() is run and run.experiment == "elsewhere"
    log_metric("m", 1)
    end_run("FAILED")
    assert active_run() is None
    assert (stored(run.run_id).status, stored(run.run_id).experiment) == ("FAILED", "elsewhere")
    assert search_runs(return_type="list") == []
    assert [r.run_id for r in search_runs(experiment="elsewhere", return_type="list")] == [
        run.run_id]


def test_a_second_run_is_refused_unless_nested(tracing):
    with start_run("outer") as outer:
        with pytest.raises(assay.AssayError, match=r"already active.*nested=True"):
            start_run("inner")
        with start_run("inner", nested=True) as inner:
            assert active_run() is inner and inner.parent is outer
            log_metric("depth", 2)
        assert active_run() is outer
        log_metric("depth", 1)
    assert stored(inner.run_id).tags == {run_api.PARENT_RUN_TAG: outer.run_id}
    assert stored(inner.run_id).metrics == {"depth": 2.0}
    assert stored(outer.run_id).metrics == {"depth": 1.0}
    assert {r.name for r in search_runs(f"tags.`mlflow.parentRunId` = '{outer.run_id}'",
                                        return_type="list")} == {"inner"}


def test_ending_the_outer_run_ends_the_nested_ones_still_active(tracing):
    with start_run("outer") as outer:
        inner = start_run("inner", nested=True)
    assert active_run() is None
    assert stored(inner.run_id).status == "FINISHED"
    assert stored(outer.run_id).status == "FINISHED"


def test_resuming_a_run_keeps_what_it_logged(tracing_any):
    with start_run("resumable") as first:
        log_param("model", "a")
        log_metric("loss", 1.0, step=0)
    with start_run(run_id=first.run_id, tags={"resumed": "yes"}) as again:
        assert again.run_id == first.run_id and again.name == "resumable"
        resumed = stored(first.run_id)
        assert (resumed.status, resumed.end_time_ms) == ("RUNNING", None)
        log_metric("loss", 0.5, step=1)
    final = stored(first.run_id)
    assert final.status == "FINISHED"
    assert final.params == {"model": "a"} and final.metrics == {"loss": 0.5}
    assert final.tags == {"resumed": "yes"}
    with start_run("renamed", run_id=first.run_id):
        pass
    assert stored(first.run_id).name == "renamed"


def test_resuming_an_unknown_run_or_in_another_experiment_is_an_error(tracing):
    with pytest.raises(assay.AssayError, match="no such run"):
        start_run(run_id=uuid.uuid4().hex)
    with start_run() as run:
        pass
    with pytest.raises(assay.AssayError, match="experiment 'test', not 'other'"):
        start_run(run_id=run.run_id, experiment="other")
    assert active_run() is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": 3}, "name=3"),
    ({"experiment": ""}, "experiment=''"),
    ({"experiment": "*"}, "experiment='\\*'"),
    ({"tags": ["a"]}, "tags="),
    ({"tags": {"": "v"}}, "tag key '' must be a non-empty string"),
    ({"run_id": ""}, "run_id=''"),
])
def test_bad_start_run_arguments(tracing, kwargs, message):
    with pytest.raises(ValueError, match=message):
        start_run(**kwargs)
    assert active_run() is None


def test_bad_statuses_are_refused(tracing):
    with pytest.raises(ValueError, match=r"'DONE'.*RUNNING"):
        end_run("DONE")
    with start_run() as run, pytest.raises(ValueError, match="finished"):
        run.end("finished")


# -- logging -------------------------------------------------------------------------------


def test_logging_without_a_run_is_a_clear_error(tracing):
    for call in (lambda: log_param("k", 1), lambda: log_metric("m", 1.0),
                 lambda: set_tag("t", "v"), lambda: log_table([], "t"),
                 lambda: log_metrics({"m": 1.0}), lambda: run_api.delete_tag("t")):
        with pytest.raises(assay.AssayError, match=r"no run is active.*run_id="):
            call()


def test_logging_into_another_run_by_id(tracing):
    with start_run("target") as target:
        pass
    with start_run("active") as active:
        log_metric("m", 1.0, run_id=target.run_id)
        log_param("p", "x", run_id=target.run_id)
        set_tag("t", "v", run_id=target.run_id)
        log_table([{"a": 1}], "rows", run_id=target.run_id)
    assert stored(target.run_id).metrics == {"m": 1.0}
    assert stored(target.run_id).params == {"p": "x"}
    assert stored(target.run_id).tags == {"t": "v"}
    assert stored(active.run_id).metrics == {}
    with pytest.raises(assay.StoreError, match="no run with id"):
        log_metric("m", 1.0, run_id=uuid.uuid4().hex)
    run_api.delete_tag("t", run_id=target.run_id)
    assert stored(target.run_id).tags == {}


def test_metrics_history_by_step_and_the_latest_value(tracing_any):
    with start_run() as run:
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            log_metric("loss", loss, step=step)
        log_metric("loss", 0.4, step=1)  # a step logged again is replaced
        log_metric("plain", 1.0)
        log_metric("plain", 2.0)  # no step: step 0, replaced
        log_metrics({"correctness/mean": 0.8, "passed": True, "failed": False,
                     "np": np.float32(0.25), "count": np.int64(3), "nan": math.nan,
                     "big": math.inf}, step=5)
    history = get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.4), (2, 0.3)]
    assert all(m.timestamp_ms > 0 and m.key == "loss" for m in history)
    metrics = stored(run.run_id).metrics
    assert metrics["loss"] == 0.3 and metrics["plain"] == 2.0
    assert (metrics["passed"], metrics["failed"], metrics["np"], metrics["count"]) == (
        1.0, 0.0, 0.25, 3.0)
    assert math.isnan(metrics["nan"]) and metrics["big"] == math.inf
    assert [m.step for m in get_metric_history(run.run_id, "plain")] == [0]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: log_metric("acc", "high"), "metric 'acc' must be a real number, got str"),
    (lambda: log_metric("acc", None), "metric 'acc' must be a real number"),
    (lambda: log_metric("acc", 1 + 2j), "metric 'acc' must be a real number"),
    (lambda: log_metrics({"ok": 1.0, "bad": [1]}), "metric 'bad'"),
    (lambda: log_metric("acc", 1.0, step=1.5), "step=1.5"),
    (lambda: log_metric("acc", 1.0, step=True), "step=True"),
    (lambda: log_metric("acc", 1.0, step=2 ** 63), "64-bit"),
    (lambda: log_metric("", 1.0), "metric key '' must be a non-empty string"),
    (lambda: log_metric(" ", 1.0), "metric key ' '"),
    (lambda: log_metric(7, 1.0), "metric key 7"),  # type: ignore[arg-type]
    (lambda: log_metric("m" * 251, 1.0), "251 characters long; keys hold at most 250"),
    (lambda: log_param("p" * 251, 1), "param key"),
    (lambda: log_param("prompt", "x" * 6_001), "param 'prompt' is 6001 characters long; a "
                                               "param holds at most 6000"),
    (lambda: set_tag("note", "x" * 8_001), "tag 'note' is 8001 characters long"),
    (lambda: log_params(["a"]), "expected a mapping"),  # type: ignore[arg-type]
    (lambda: log_metrics([1.0]), "expected a mapping"),  # type: ignore[arg-type]
    (lambda: log_table([{"a": 1}], ""), "table key ''"),
    (lambda: log_table("rows", "t"), "expected a pandas DataFrame, a list of dicts"),
    (lambda: log_table([{"a": 1}, 2], "t"), "row 1 is a int"),
    (lambda: log_table({"a": [1, 2], "b": [1]}, "t"), "equal lengths"),
])
def test_bad_values_name_the_key(tracing, call, message):
    with start_run() as run, pytest.raises(ValueError, match=_escape(message)):
        call()
    assert stored(run.run_id).metrics == {}  # nothing of a refused batch is written


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_param_of_exactly_the_limit_is_kept(tracing):
    with start_run() as run:
        log_param("prompt", "x" * run_api.MAX_PARAM_CHARS)
        log_metric("m" * run_api.MAX_KEY_CHARS, 1.0)
    assert len(stored(run.run_id).params["prompt"]) == 6_000


# -- tables --------------------------------------------------------------------------------


def test_tables_round_trip(tracing_any):
    rows = [{"question": "2+2?", "score": 1.0, "ok": True, "when": dt.date(2026, 1, 2),
             "tokens": np.int64(7), "extra": {"a": [1, 2]}},
            {"question": "ü?", "score": math.nan, "ok": False, "when": None,
             "tokens": np.int64(9), "extra": None}]
    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", None, "c"],
                          "z": [0.5, np.nan, 1.5]})
    with start_run() as run:
        log_table(rows, "rows")
        log_table(frame, "frame")
        log_table({"col": ["a", "b"], "n": [1, 2]}, "columns")
        log_table([], "empty")
    back = load_table(run.run_id, "rows")
    assert list(back.columns) == ["question", "score", "ok", "when", "tokens", "extra"]
    assert back.iloc[0].to_dict() == {"question": "2+2?", "score": 1.0, "ok": True,
                                      "when": "2026-01-02", "tokens": 7, "extra": {"a": [1, 2]}}
    assert back.iloc[1]["question"] == "ü?" and math.isnan(back.iloc[1]["score"])
    again = load_table(run.run_id, "frame")
    assert list(again["x"]) == [1, 2, 3] and list(again["y"])[::2] == ["a", "c"]
    assert pd.isna(again["y"][1])
    assert again["z"][0] == 0.5 and math.isnan(again["z"][1])
    assert load_table(run.run_id, "columns").to_dict("records") == [{"col": "a", "n": 1},
                                                                    {"col": "b", "n": 2}]
    assert load_table(run.run_id, "empty").empty


def test_a_table_logged_again_is_replaced_and_a_missing_one_is_an_error(tracing):
    with start_run() as run:
        log_table([{"v": 1}], "t")
        log_table([{"v": 2}], "t")
    assert load_table(run.run_id, "t").to_dict("records") == [{"v": 2}]
    with pytest.raises(assay.AssayError, match="no table 'other'"):
        load_table(run.run_id, "other")


# -- reading -------------------------------------------------------------------------------


def test_get_run_and_the_run_model(tracing):
    assert get_run(uuid.uuid4().hex) is None
    with pytest.raises(ValueError, match="run_id"):
        get_run("")
    with start_run("model") as run:
        log_metric("nan", math.nan)
        log_param("p", "v")
    model = stored(run.run_id)
    data = model.to_dict()
    assert set(data) == {"run_id", "experiment", "name", "status", "start_time_ms",
                         "end_time_ms", "params", "metrics", "tags"}
    again = run_api.Run.from_dict(data)
    assert again.params == model.params and math.isnan(again.metrics["nan"])
    assert run_api.delete_run(run.run_id) and get_run(run.run_id) is None


def test_the_experiment_defaults_to_the_configured_one(db_uri):
    assay.configure(store=db_uri, experiment="configured")
    with start_run() as run:
        pass
    assert stored(run.run_id).experiment == "configured"
    assert [r.run_id for r in search_runs(return_type="list")] == [run.run_id]


# -- traces carry the run id ---------------------------------------------------------------


def test_traces_inside_a_run_carry_its_id_and_traces_outside_do_not(tracing_any, fetch):
    before = traced_trace_id("before")
    with start_run("traced") as run:
        inside = traced_trace_id("inside")

        @assay.trace
        def decorated(x: int) -> int:
            return x + 1

        decorated(1)
        from_decorator = assay.get_last_trace_id()
    after = traced_trace_id("after")
    assert fetch(inside).info.run_id == run.run_id
    assert fetch(from_decorator).info.run_id == run.run_id
    assert fetch(before).info.run_id is None and fetch(after).info.run_id is None
    found = assay.search_traces(f"run_id = '{run.run_id}'", return_type="list")
    assert {t.trace_id for t in found} == {inside, from_decorator}
    assert {t.info.name for t in assay.search_traces("run_id IS NULL", return_type="list")} == {
        "before", "after"}
    frame = assay.search_traces(f"run_id = '{run.run_id}'")
    assert set(frame["run_id"]) == {run.run_id}


def test_a_span_already_open_when_the_run_starts_keeps_its_trace_outside(tracing, fetch):
    with assay.start_span("open") as span, start_run() as run, assay.start_span("child"):
        pass
    assert fetch(span.trace_id).info.run_id is None
    assert assay.search_traces(f"run_id = '{run.run_id}'", return_type="list") == []


def test_nested_runs_tag_their_traces_with_the_innermost_run(tracing, fetch):
    with start_run("outer") as outer:
        in_outer = traced_trace_id()
        with start_run("inner", nested=True) as inner:
            in_inner = traced_trace_id()
    assert fetch(in_outer).info.run_id == outer.run_id
    assert fetch(in_inner).info.run_id == inner.run_id


def test_threads_see_the_run_when_the_context_is_carried(tracing, fetch):
    with start_run("threads") as run:
        with ThreadPoolExecutor(4) as pool:
            copied = [pool.submit(contextvars.copy_context().run, traced_trace_id)
                      for _ in range(4)]
            wrapped = pool.submit(wrap(traced_trace_id))
            bare = pool.submit(traced_trace_id)
            carried = [f.result() for f in copied] + [wrapped.result()]
            plain = bare.result()

        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(active_run()))
        thread.start()
        thread.join()
    assert seen == [None]  # a new thread starts without the run
    for trace_id in carried:
        assert fetch(trace_id).info.run_id == run.run_id
    assert fetch(plain).info.run_id is None


def test_a_run_in_one_thread_is_not_active_in_another(tracing):
    ready, done = threading.Event(), threading.Event()
    other: list[object] = []

    def elsewhere() -> None:
        ready.wait(5)
        other.append(active_run())
        with start_run("own") as own:  # no refusal: the other thread's run is not here
            other.append(own)
        done.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with start_run("main") as main:
        ready.set()
        assert done.wait(10)
        assert active_run() is main
    thread.join()
    assert other[0] is None and stored(other[1].run_id).status == "FINISHED"  # type: ignore[attr-defined]


def test_asyncio_tasks_inherit_the_run(tracing, fetch):
    async def work() -> str:
        await asyncio.sleep(0)
        return traced_trace_id("task")

    async def main() -> tuple[str, list[str]]:
        with start_run("async") as run:
            ids = await asyncio.gather(*(work() for _ in range(3)))
        return run.run_id, list(ids)

    run_id, ids = asyncio.run(main())
    for trace_id in ids:
        assert fetch(trace_id).info.run_id == run_id


def test_the_run_id_travels_with_a_redacted_span(db_uri, fetch):
    def redact(span):
        span.inputs = "<hidden>"
        return span

    assay.configure(store=db_uri, experiment="test", redact=redact, flush_interval_ms=50)
    with start_run() as run:
        trace_id = traced_trace_id()
    trace = fetch(trace_id)
    assert trace.info.run_id == run.run_id
