"""The assay command: the demo and looking at traces."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

import assay
from assay import demo
from tests.conftest import ROOT, run_python

#: The demo's data set: 20 questions; the bot gets 14 right, 5 wrong and fails on 1.
QUESTIONS, RIGHT, FAILED = 20, 14, 1
_RUN_ID = re.compile(r"Metrics of run ([0-9a-f]{32})")
_JUDGE_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")


def _env(**extra: str) -> dict[str, str]:
    """The environment of a fresh ``assay``: no ASSAY_* settings, no judge endpoint."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ASSAY_") and k not in _JUDGE_ENV}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _assay(*args: str, cwd, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=120)


def _demo(cwd) -> tuple[str, str]:
    """Run ``assay demo`` in ``cwd``; its output and the id of the run it logged."""
    proc = _assay("demo", cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    match = _RUN_ID.search(proc.stdout)
    assert match, proc.stdout
    return proc.stdout, match.group(1)


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory) -> tuple[str, list[str], list[str]]:
    """``assay demo`` run twice in one directory: the store URI, both outputs, both run ids."""
    cwd = tmp_path_factory.mktemp("demo")
    first, second = _demo(cwd), _demo(cwd)
    assert (cwd / "assay.db").exists()
    return f"sqlite:///{cwd / 'assay.db'}", [first[0], second[0]], [first[1], second[1]]


def _section(out: str, title: str) -> str:
    return out.split(f"\n{title}", 1)[1].split("\n\n", 1)[0]


def test_demo_evaluates_offline_and_prints_what_it_traced(demo_twice):
    out = demo_twice[1][0]
    assert f"Traced {QUESTIONS} questions into sqlite:///assay.db (experiment 'demo'" in out
    assert "1 trace(s) in ERROR" in out  # the unknown order fails its trace
    # one trace as a tree, the same as `assay traces show`
    assert "support_bot [CHAIN]" in out
    for step in ("retrieve [RETRIEVER]", "embed [EMBEDDING]", "chat_model [CHAT_MODEL]"):
        assert step in out
    assert "assay.search_traces(\"run_id = '" in out
    assert "no LLM judge" in out


def test_demo_prints_an_aligned_metrics_table(demo_twice):
    out = demo_twice[1][0]
    table = _section(out, "Metrics of run").splitlines()[1:]
    assert table[0].split() == ["scorer", "mean", "pass", "rate", "errors"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:8]}
    assert list(rows) == ["exact_match", "mentions", "fact_coverage", "right_document",
                          "tool_call_sequence", "latency", "token_usage"]
    assert rows["exact_match"] == [f"{RIGHT / (QUESTIONS - FAILED):.3f}", "74%", "1"]
    assert rows["token_usage"][1] == "-"
    assert len({len(line) for line in table[:8]}) == 1  # aligned
    assert f"predict_fn: {FAILED} of {QUESTIONS} rows failed" in out


def test_demo_names_the_worst_rows_and_how_to_find_them(demo_twice):
    store, outs, run_ids = demo_twice
    out = outs[0]
    worst = _section(out, "Worst rows:").splitlines()[1:]
    listed = re.findall(r"row +(\d+) +trace ([0-9a-f]{32}) ", "\n".join(worst))
    assert len(listed) == 5
    assert "predict_fn: KeyError" in worst[1]  # the failed prediction comes first
    assert "Where is my order Z-999?" in worst[0]
    assert "failed exact_match" in out
    find = _section(out, "Find them:")
    assert (f"assay.search_traces(\"run_id = '{run_ids[0]}' AND feedback.exact_match = false\")"
            in find)
    assert re.search(r"feedback.fact_coverage < 1\"\) +# 5 traces$", find, re.MULTILINE)
    assert re.search(r"trace.status = 'ERROR'\"\) +# 1 trace$", find, re.MULTILINE)
    assert f"assay traces show {listed[0][1]} --store sqlite:///assay.db" in find

    assay.configure(store=store, experiment="demo")
    failed = assay.search_traces(
        f"run_id = '{run_ids[0]}' AND feedback.exact_match = false", return_type="list")
    assert assay.get_trace(listed[0][1]).info.state == "ERROR"
    assert {trace_id for _, trace_id in listed[1:]} <= {t.trace_id for t in failed}
    assert len(failed) == QUESTIONS - RIGHT - FAILED


def test_a_second_demo_is_a_new_run_in_the_same_store(demo_twice):
    store, outs, run_ids = demo_twice
    assert run_ids[0] != run_ids[1]
    assay.configure(store=store, experiment="demo")
    assert assay.count_traces() == 2 * QUESTIONS
    for run_id in run_ids:
        run = assay.get_run(run_id)
        assert run is not None and run.status == "FINISHED" and run.experiment == "demo"
        assert run.name == "support-bot"
        assert run.metrics["exact_match/mean"] == pytest.approx(RIGHT / (QUESTIONS - FAILED))
        assert run.metrics["predict/error_count"] == FAILED
        traces = assay.search_traces(f"run_id = '{run_id}'", return_type="list",
                                     max_results=50)
        assert len(traces) == QUESTIONS
        assert all(t.info.tags.get("app") == "support-bot" for t in traces)
        assert sum(t.info.state == "ERROR" for t in traces) == FAILED
    runs = assay.search_runs("run_name = 'support-bot' AND metrics.`exact_match/mean` > 0.7",
                             return_type="list")
    assert sorted(r.run_id for r in runs) == sorted(run_ids)
    # deterministic: the same scores both times (timings aside)
    first, second = (_section(out, "Metrics of run") for out in outs)
    assert ([line for line in first.splitlines() if "latency" not in line][1:]
            == [line for line in second.splitlines() if "latency" not in line][1:])


def test_traces_list_and_show(demo_twice):
    store = demo_twice[0]
    cwd = ROOT
    listing = _assay("traces", "list", "--store", store, cwd=cwd)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert len(lines) == 21  # header + the newest 20 traces
    trace_id = lines[1].split()[0]
    shown = _assay("traces", "show", trace_id, "--store", store, cwd=cwd)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"trace {trace_id}")
    missing = _assay("traces", "show", "0" * 32, "--store", store, cwd=cwd)
    assert missing.returncode == 1
    bad = _assay("traces", "list", "--store", "nope://x", cwd=cwd)
    assert bad.returncode == 2
    assert "unknown trace store URI" in bad.stderr


def test_demo_runs_the_same_through_the_console_entry_point(tmp_path):
    out = run_python("from assay.cli import main; raise SystemExit(main(['demo']))",
                     cwd=tmp_path, env={k: "" for k in _JUDGE_ENV})
    assert f"Traced {QUESTIONS} questions" in out and "Worst rows:" in out


def test_demo_takes_another_store(tmp_path):
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    proc = _assay("demo", "--store", store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "assay.db").exists()
    assert f"--store {store}" in proc.stdout


def test_demo_adds_a_judge_when_an_endpoint_is_configured(tmp_path):
    from tests.evaluate.judge_server import JudgeServer

    endpoint = {"OPENAI_API_KEY": "test", "ASSAY_CACHE_DIR": str(tmp_path / "cache")}
    with JudgeServer() as server:
        endpoint["OPENAI_BASE_URL"] = server.openai_base_url
        first = _assay("demo", cwd=tmp_path, **endpoint)
        calls = len(server.requests)
        again = _assay("demo", cwd=tmp_path, **endpoint)
        calls_again = len(server.requests) - calls
    assert first.returncode == 0, first.stdout + first.stderr
    assert calls == QUESTIONS - FAILED  # the row whose prediction failed is not judged
    table = _section(first.stdout, "Metrics of run")
    assert re.search(r"^  correctness +\d\.\d{3} +\d+% +1$", table, re.MULTILINE), table
    assert f"judge: {calls} model calls, 0 verdicts from the cache" in table
    # an unchanged rerun asks the model nothing
    assert again.returncode == 0 and calls_again == 0
    assert f"judge: 0 model calls, {calls} verdicts from the cache" in again.stdout


def test_demo_scorers_judge_the_bundled_rows(monkeypatch):
    for key in (*_JUDGE_ENV, "ASSAY_JUDGE_MODEL"):
        monkeypatch.delenv(key, raising=False)
    rows = demo.load_data()
    assert len(rows) == QUESTIONS
    for row in rows:
        assert set(row) == {"inputs", "expectations"}
        assert {"expected_response", "expected_facts", "must_mention",
                "expected_tool_calls"} <= set(row["expectations"])
    assert demo.fact_coverage(outputs="Visa and PayPal",
                              expectations={"expected_facts": ["Visa", "PayPal", "Amex"]}
                              ).value == pytest.approx(2 / 3)
    assert demo.fact_coverage.passed(1.0) and not demo.fact_coverage.passed(0.5)
    assert [s.name for s in demo.scorers()][-1] == "token_usage"  # no judge configured


# -- assay traces list / delete with the filter language -------------------------------


def _listed(out: str) -> list[list[str]]:
    """The rows of a ``traces list`` table (without its header), split on spaces."""
    return [line.split() for line in out.strip().splitlines()[1:]]


def test_traces_list_takes_a_filter_an_order_and_pages(demo_twice, capsys):
    from assay.cli import main

    store = demo_twice[0]
    assert main(["traces", "list", "--store", store, "--filter", "trace.status = 'ERROR'"]) == 0
    failed = _listed(capsys.readouterr().out)
    assert len(failed) == 2 * FAILED and all(row[5] == "ERROR" for row in failed)

    assert main(["traces", "list", "--store", store, "--count",
                 "--filter", "feedback.exact_match = false"]) == 0
    assert capsys.readouterr().out == f"{2 * (QUESTIONS - RIGHT - FAILED)}\n"

    assert main(["traces", "list", "--store", store, "-n", "5",
                 "--order-by", "execution_time_ms DESC"]) == 0
    durations = [float(row[6]) for row in _listed(capsys.readouterr().out)]
    assert len(durations) == 5 and durations == sorted(durations, reverse=True)

    seen: list[str] = []
    token: list[str] = []
    while True:
        assert main(["traces", "list", "--store", store, "-n", "15", *token]) == 0
        out, err = capsys.readouterr()
        seen += [row[0] for row in _listed(out)]
        if "--page-token" not in err:
            break
        token = ["--page-token", err.split("--page-token ")[1].split()[0]]
    assert len(seen) == len(set(seen)) == 2 * QUESTIONS

    assert main(["traces", "list", "--store", store, "--json", "-n", "50",
                 "--filter", "tags.app = 'support-bot' AND trace.status = 'OK'"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["next_page_token"] is None
    assert len(listed["traces"]) == 2 * (QUESTIONS - FAILED)
    assert {t["state"] for t in listed["traces"]} == {"OK"}


@pytest.mark.parametrize(("args", "message"), [
    (["--filter", "staus = 'OK'"], "did you mean 'trace.status'"),
    (["--order-by", "executon_time_ms DESC"],
     "cannot order by 'executon_time_ms': unknown field 'executon_time_ms' — did you mean "
     "'trace.execution_time_ms'"),
    (["--page-token", "not-a-token"], "page_token 'not-a-token' is not a token returned"),
])
def test_traces_list_names_what_is_wrong_with_its_arguments(demo_twice, capsys, args, message):
    from assay.cli import main

    assert main(["traces", "list", "--store", demo_twice[0], *args]) == 2
    assert message in capsys.readouterr().err


def test_traces_delete_by_filter_and_age(demo_twice, tmp_path, capsys):
    from assay.cli import main

    db = tmp_path / "copy.db"
    shutil.copy(demo_twice[0][len("sqlite:///"):], db)
    store = f"sqlite:///{db}"
    failed = "trace.status = 'ERROR'"
    assert main(["traces", "delete", "--store", store, "--filter", failed,
                 "--older-than", "0s", "--dry-run"]) == 0
    assert capsys.readouterr().out == \
        f"would delete {2 * FAILED} trace(s) of every experiment in {store}\n"
    assert main(["traces", "delete", "--store", store, "--older-than", "30d"]) == 0
    assert capsys.readouterr().out.startswith("deleted 0 trace(s)")  # all traced just now
    assert main(["traces", "delete", "--store", store, "--filter", failed,
                 "--experiment", "demo"]) == 0
    assert capsys.readouterr().out == \
        f"deleted {2 * FAILED} trace(s) of experiment demo from {store}\n"
    assert main(["traces", "list", "--store", store, "--count"]) == 0
    assert capsys.readouterr().out == f"{2 * (QUESTIONS - FAILED)}\n"

    assert main(["traces", "delete", "--store", store, "--filter", "trace.status = 'OK'",
                 "--experiment", "nope", "--experiment", "demo", "--dry-run"]) == 0
    assert capsys.readouterr().out == (f"would delete {2 * (QUESTIONS - FAILED)} trace(s) "
                                       f"of experiment demo, nope in {store}\n")
    assert main(["traces", "list", "--store", store, "--count", "--experiment", "nope"]) == 0
    assert capsys.readouterr().out == "0\n"
    assert main(["traces", "delete", "--store", store]) == 2
    assert "--filter F, --older-than AGE, or both" in capsys.readouterr().err
    assert main(["traces", "delete", "--store", store, "--older-than", "5x"]) == 2
    assert "expected an age such as 30d" in capsys.readouterr().err
    assert main(["traces", "delete", "--store", store, "--filter", "tags.x = "]) == 2
    assert main(["traces", "list", "--store", store, "--count"]) == 0
    assert capsys.readouterr().out == f"{2 * (QUESTIONS - FAILED)}\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("1.5H", timedelta(minutes=90)),
    ("2w", timedelta(weeks=2)), ("45s", timedelta(seconds=45)), ("90m", timedelta(minutes=90)),
    ("2026-01-31", "2026-01-31"), ("d", "d"),
])
def test_older_than_reads_an_age_or_passes_a_date_on(text, expected):
    from assay.cli import _older_than

    assert _older_than(text) == expected


def _judged_copy(demo_twice, tmp_path) -> tuple[str, Any, Any]:
    """A copy of the demo's store, configured: (its URI, a trace the judge found
    not to match exactly, that feedback)."""
    db = tmp_path / "copy.db"
    shutil.copy(demo_twice[0][len("sqlite:///"):], db)
    store = f"sqlite:///{db}"
    assay.configure(store=store, experiment="demo")
    trace = assay.search_traces("feedback.exact_match = false", return_type="list",
                                max_results=1)[0]
    return store, trace, trace.search_assessments("exact_match")[0]


def test_traces_show_lists_the_valid_assessments(demo_twice, tmp_path, capsys):
    from assay.cli import main

    store, trace, judged = _judged_copy(demo_twice, tmp_path)
    assay.override_feedback(trace.trace_id, judged.assessment_id, True,
                            rationale="a paraphrase of the reference", source_id="reviewer-1")
    assay.log_expectation(trace.trace_id, "expected_facts", ["3 to 5 days"])
    assert main(["traces", "show", trace.trace_id, "--store", store]) == 0
    out = capsys.readouterr().out
    head = out.split("✓", 1)[0].split("✗", 1)[0]  # before the spans
    feedback = head.split("  feedback:\n", 1)[1].split("  expectations:\n")[0].splitlines()
    names = [line.split(" = ")[0].strip() for line in feedback]
    assert names == sorted(names) and len(names) == len(set(names)) >= 5
    assert "    exact_match = true  [HUMAN reviewer-1]  a paraphrase of the reference" in feedback
    assert "    expected_facts = [\"3 to 5 days\"]  [HUMAN]" in head


def test_traces_tags_and_assessments_from_the_command_line(demo_twice, tmp_path, capsys):
    """A reviewer's session: tag a trace, correct the judge, add the expected answer,
    take a mistake back; every step shows in search and in ``traces show --json``."""
    from assay.cli import main

    store, trace, judged = _judged_copy(demo_twice, tmp_path)
    tid = trace.trace_id

    def run(*args: str) -> str:
        assert main(["traces", *args, "--store", store]) == 0
        return capsys.readouterr().out.strip()

    run("set-tag", tid, "reviewed", "yes")
    run("set-tag", tid, "queue", "refunds")
    run("delete-tag", tid, "queue")
    corrected = run("log-feedback", tid, "exact_match", "true", "--overrides",
                    judged.assessment_id, "--rationale", "a paraphrase", "--source-id", "rev-1")
    score = run("log-feedback", tid, "helpfulness", "4.5", "--source", "LLM_JUDGE")
    note = run("log-feedback", tid, "note", "reads well, cites the policy")
    expected = run("log-expectation", tid, "expected_facts", '["3 to 5 days"]')
    quoted = run("log-expectation", tid, "ticket", '"7"')
    assert "deleted" in run("delete-assessment", tid, note)

    shown = json.loads(run("show", tid, "--json"))
    by_id = {a["assessment_id"]: a for a in shown["info"]["assessments"]}
    assert shown["info"]["tags"]["reviewed"] == "yes" and "queue" not in shown["info"]["tags"]
    assert by_id[judged.assessment_id]["overridden_by"] == corrected
    assert (by_id[corrected]["value"], by_id[corrected]["source_id"],
            by_id[corrected]["rationale"]) == (True, "rev-1", "a paraphrase")
    assert (by_id[score]["value"], by_id[score]["source_type"]) == (4.5, "LLM_JUDGE")
    assert by_id[expected]["value"] == ["3 to 5 days"] and by_id[quoted]["value"] == "7"
    assert note not in by_id
    assay.configure(store=store, experiment="demo")
    found = assay.search_traces("tags.reviewed = 'yes' AND feedback.exact_match = true AND "
                                "feedback.helpfulness > 4", return_type="list")
    assert [t.trace_id for t in found] == [tid]
    assert main(["traces", "delete-assessment", tid, note, "--store", store]) == 1
    assert f"no assessment {note}" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["set-tag", "nope", "k", "v"], "traces set-tag(trace_id='nope'): expected 32 hex"),
    (["set-tag", "ab" * 16, "", "v"], "set_trace_tag(key=''): expected a non-empty string"),
    (["log-feedback", "ab" * 16, "exact_match", "true", "--overrides", "cd" * 16],
     "--overrides " + "cd" * 16 + ": trace " + "ab" * 16 + " has no such assessment"),
    (["log-feedback", "ab" * 16, "x", "1", "--overrides", "cd" * 16, "--span-id", "1" * 16],
     "--span-id: a correction takes the span of the feedback it overrides"),
    (["log-expectation", "ab" * 16, "", "1"], "name"),
    (["delete-assessment", "ab" * 16, ""], "assessment_id"),
])
def test_traces_tag_and_assessment_commands_name_what_is_wrong(tmp_path, capsys, args,
                                                               message):
    from assay.cli import main

    store = _store_with_trace(tmp_path, "ab" * 16)
    assert main(["traces", *args, "--store", store]) == 2
    assert message in capsys.readouterr().err


def _store_with_trace(tmp_path, trace_id: str) -> str:
    """A store holding one trace, of this id."""
    from assay.store import open_store
    from tests.store.test_search import T0_MS, root_record

    uri = f"sqlite:///{tmp_path / 'one.db'}"
    store = open_store(uri)
    store.write_spans([root_record(trace_id, T0_MS)])
    store.close()
    return uri


@pytest.mark.parametrize("args", [
    ["set-tag", "cd" * 16, "k", "v"], ["delete-tag", "cd" * 16, "k"],
    ["log-feedback", "cd" * 16, "correct", "true"], ["log-expectation", "cd" * 16, "a", "1"],
])
def test_a_trace_not_in_the_store_is_said_and_nothing_written(tmp_path, capsys, args):
    from assay.cli import main

    store = _store_with_trace(tmp_path, "ab" * 16)
    assert main(["traces", *args, "--store", store]) == 1
    assert f"no trace {'cd' * 16} in {store}; nothing written" in capsys.readouterr().err
    assay.configure(store=store)
    assert assay.search_traces("tags.k IS NOT NULL", experiment="*",
                               return_type="list") == []
    from sqlalchemy import create_engine, text

    engine = create_engine(store)
    with engine.connect() as conn:
        written = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                   for t in ("trace_tags", "assessments")]
    engine.dispose()
    assert written == [0, 0]


def test_log_feedback_overrides_only_a_feedback_of_its_name(tmp_path, capsys):
    from assay.cli import main

    tid = "ab" * 16
    store = _store_with_trace(tmp_path, tid)
    assay.configure(store=store)
    judged = assay.log_feedback(tid, "correct", False, source="LLM_JUDGE")
    assert main(["traces", "log-feedback", tid, "helpful", "true", "--overrides",
                 judged.assessment_id, "--store", store]) == 2
    assert "that feedback is named 'correct', not 'helpful'" in capsys.readouterr().err
    assert assay.get_assessment(tid, judged.assessment_id).overridden_by is None
