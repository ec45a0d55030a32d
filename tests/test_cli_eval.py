"""`assay eval` and `assay runs` on the CI-gate example (examples/ci-gate), as a subprocess.

Exit codes: 0 passed, 1 a gate failed, 2 usage or data error, 3 infrastructure error.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import assay
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "ci-gate"
ROWS = 12
#: The example's thresholds (3) plus an error-rate check per scorer (3) and for predict_fn.
CHECKS = 7
_RUN_ID = re.compile(r"Evaluation run ([0-9a-f]{32})")
_JUDGE_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")
#: What a change that loses half the knowledge base looks like: six questions go unanswered.
WORSE_APP = """

# a refactor that lost half of the knowledge base
for _topic in ("returns", "warranty", "payment"):
    del TOPICS[_topic]
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ASSAY_") and k not in _JUDGE_ENV
           and k != "GITHUB_STEP_SUMMARY"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _assay(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env.setdefault("ASSAY_CACHE_DIR", str(cwd / ".judge-cache"))
    return subprocess.run([sys.executable, "-m", "assay", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=180)


def _run_id(proc: subprocess.CompletedProcess[str]) -> str:
    match = _RUN_ID.search(proc.stdout)
    assert match, proc.stdout + proc.stderr
    return match.group(1)


def _copy(tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.copytree(EXAMPLE, target)
    return target


def _suite(path: Path) -> ET.Element:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """The example evaluated as on a push to main: (project dir, store URI, run id, proc)."""
    tmp = tmp_path_factory.mktemp("ci")
    project = _copy(tmp, "main")
    store = f"sqlite:///{tmp / 'assay.db'}"
    summary = tmp / "step_summary.md"
    summary.write_text("# Tests\nall green\n", encoding="utf-8")
    proc = _assay("eval", "evals/quality.py", "--store", store, "--tag", "branch=main",
                  "--markdown", "report.md", "--junit", "report.xml", cwd=project,
                  GITHUB_STEP_SUMMARY=str(summary))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return project, store, _run_id(proc), proc


@pytest.fixture(scope="module")
def pr_run(main_run, tmp_path_factory):
    """A pull request whose app got worse, compared with main: (project, run id, proc)."""
    _, store, _, _ = main_run
    project = _copy(tmp_path_factory.mktemp("pr"), "pr")
    with (project / "app.py").open("a", encoding="utf-8") as app:
        app.write(WORSE_APP)
    proc = _assay("eval", "evals/quality.py", "--store", store, "--baseline",
                  "tags.branch = 'main'", "--fail-on-regression", "--tag", "branch=feature",
                  "--markdown", "report.md", "--junit", "report.xml", cwd=project)
    return project, _run_id(proc), proc


# -- exit 0 ------------------------------------------------------------------------------------


def test_a_passing_evaluation_exits_0_and_prints_the_result_and_gate(main_run):
    _, _, run_id, proc = main_run
    out = proc.stdout
    assert f"Evaluation run {run_id} (experiment 'help-desk'): {ROWS} rows" in out
    assert re.search(r"fact_coverage +mean 0\.958 \[0\.\d+, 1\.000\]", out), out
    assert "gate passed" in out and "fact_coverage/mean >= 0.8 @lower" in out
    assert out.rstrip().endswith(f"assay eval: gate passed ({CHECKS} checks, run {run_id})")
    assert proc.stderr == ""


def test_the_markdown_report_and_the_job_summary(main_run):
    project, _, run_id, _ = main_run
    markdown = (project / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith(f"## assay evaluation: ✅ passed ({CHECKS} checks)")
    assert (f"**Run** `{run_id}` · experiment `help-desk` · name `help-desk-quality` · "
            f"{ROWS} rows") in markdown
    assert re.search(r"^\| fact_coverage \| 0\.958 \| 0\.\d+ \.\. 1 \| 91\.7% \|", markdown,
                     re.MULTILINE), markdown
    assert "| ✅ | fact_coverage/mean >= 0.8 @lower | threshold |" in markdown
    # the one partly answered question is the worst row, with the call that finds it
    worst = markdown.split("### Worst rows", 1)[1]
    assert re.search(r"^\| 11 \| `[0-9a-f]{32}` \| failed fact_coverage \|$", worst,
                     re.MULTILINE), worst
    assert f"assay.search_traces(\"run_id = '{run_id}' AND trace.id IN ('" in worst
    summary = (project.parent / "step_summary.md").read_text(encoding="utf-8")
    assert summary == "# Tests\nall green\n\n" + markdown


def test_the_junit_report(main_run):
    project, _, run_id, _ = main_run
    suite = _suite(project / "report.xml")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
        str(CHECKS), "0", "0")
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["run_id"] == run_id
    cases = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    assert ("assay.threshold", "fact_coverage/mean >= 0.8 @lower") in cases
    assert ("assay.error_rate", "predict/error_rate <= 0") in cases
    assert not list(suite.iter("failure"))


def test_nothing_to_gate_exits_0_even_with_errors(tmp_path):
    project = _copy(tmp_path, "p")
    (project / "evals" / "plain.py").write_text(
        "from evals.quality import evaluation as full\n\n\n"
        "def evaluation():\n"
        "    spec = full()\n"
        "    del spec['thresholds']\n"
        "    return spec\n\n\n"
        "def broken():\n"
        "    def app(question):\n"
        "        raise RuntimeError('down')\n"
        "    return {**evaluation(), 'predict_fn': app}\n", encoding="utf-8")
    store = f"sqlite:///{tmp_path / 's.db'}"
    plain = _assay("eval", "evals/plain.py", "--store", store, cwd=project)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "no thresholds and no baseline, nothing to gate" in plain.stdout
    broken = _assay("eval", "evals/plain.py", "--function", "broken", "--store", store, "-q",
                    cwd=project)
    assert broken.returncode == 0, broken.stdout + broken.stderr
    assert broken.stdout.count("\n") == 1  # --quiet: the verdict only
    # an error policy on its own gates: every prediction failed
    policy = _assay("eval", "evals/plain.py", "--function", "broken", "--store", store,
                    "--max-error-rate", "0.5", cwd=project)
    assert policy.returncode == 1, policy.stdout + policy.stderr
    assert "FAILED predict_fn error rate 100.00% (12 of 12) > max_error_rate 50.00%" in (
        policy.stdout)


def test_options_reach_the_run(tmp_path):
    project = _copy(tmp_path, "p")
    store = f"sqlite:///{tmp_path / 's.db'}"
    proc = _assay("eval", "evals/quality.py", "--store", store, "--repeats", "2",
                  "--max-workers", "3", "--experiment", "ci", "--run-name", "pr-42",
                  "--tag", "branch=feature/x", "--tag", "sha=abc123", "--max-error-rate", "0.1",
                  cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assay.configure(store=store)
    run = assay.get_run(_run_id(proc))
    assert run is not None
    assert (run.experiment, run.name) == ("ci", "pr-42")
    assert run.tags["branch"] == "feature/x" and run.tags["sha"] == "abc123"
    assert run.params["max_workers"] == "3" and run.metrics["repeats"] == 2
    assert "error rate" in proc.stdout and "max_error_rate 10.00%" in proc.stdout


def test_a_judge_is_asked_once_and_no_cache_asks_again(tmp_path):
    from tests.evaluate.judge_server import JudgeServer

    project = _copy(tmp_path, "p")
    store = f"sqlite:///{tmp_path / 's.db'}"
    args = ("eval", "evals/quality.py", "--store", store, "-q")
    with JudgeServer() as server:
        env = {"OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "test"}
        first = _assay(*args, cwd=project, **env)
        calls = server.count()
        again = _assay(*args, cwd=project, **env)
        cached = server.count() - calls
        fresh = _assay(*args, "--no-cache", cwd=project, **env)
        uncached = server.count() - calls - cached
    for proc in (first, again, fresh):
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (calls, cached, uncached) == (ROWS, 0, ROWS)
    assert f"gate passed ({CHECKS + 1} checks" in first.stdout  # the judge's error rate too


# -- exit 1 ------------------------------------------------------------------------------------


def test_a_failed_threshold_exits_1(main_run, tmp_path):
    project, store, _, _ = main_run
    proc = _assay("eval", "evals/quality.py", "--store", store,
                  "--threshold", "fact_coverage/pass_rate=>= 0.95",
                  "--junit", str(tmp_path / "r.xml"), cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"gate FAILED (1 of {CHECKS + 1} checks" in proc.stdout
    assert "  FAILED fact_coverage/pass_rate >= 0.95: observed 0.9167" in proc.stdout
    suite = _suite(tmp_path / "r.xml")
    assert suite.get("failures") == "1"
    failure = suite.find("testcase[@name='fact_coverage/pass_rate >= 0.95']/failure")
    assert failure is not None and "observed 0.9167" in failure.get("message", "")


def test_a_worse_app_regresses_against_main_and_exits_1(main_run, pr_run):
    _, _, main_id, _ = main_run
    project, pr_id, proc = pr_run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"run {pr_id} vs baseline {main_id}" in out
    assert re.search(r"fact_coverage pass rate 0\.9167 -> 0\.4167 .*: REGRESSION; 6 rows newly "
                     r"fail", out), out
    assert "  FAILED fact_coverage pass rate 0.9167 -> 0.4167" in out.split("gate FAILED")[1]
    markdown = (project / "report.md").read_text(encoding="utf-8")
    section = markdown.split(f"### Compared with baseline `{main_id}`", 1)[1]
    assert re.search(r"^\| ❌ \| fact_coverage \| pass rate \| 91\.7% \| 41\.7% \|", section,
                     re.MULTILINE), section
    failing = section.split("**Newly failing rows**", 1)[1]
    assert "Can I return my kettle?" in failing
    assert len(re.findall(r"^\| fact_coverage \| \d+ \| `[0-9a-f]{32}` \| `[0-9a-f]{32}` \|",
                          failing, re.MULTILINE)) == 6
    suite = _suite(project / "report.xml")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert (props["run_id"], props["baseline_run_id"]) == (pr_id, main_id)
    regression = suite.find(f"testcase[@name='fact_coverage vs baseline {main_id}']/failure")
    assert regression is not None and "REGRESSION" in regression.get("message", "")


def test_an_unchanged_app_does_not_regress(main_run):
    project, store, main_id, _ = main_run
    proc = _assay("eval", "evals/quality.py", "--store", store, "--baseline",
                  "tags.branch = 'main'", "--fail-on-regression", "--tag", "branch=same",
                  cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"vs baseline {main_id}: no regression" in proc.stdout


# -- exit 2 ------------------------------------------------------------------------------------

_BAD_FILES = {
    "raises.py": ("import nonexistent_module_xyz\n", "importing it failed"),
    "empty.py": ("def evaluation():\n    return {'data': []}\n", "empty"),
    "not_scorer.py": ("def evaluation():\n    return {'data': [{'inputs': {'q': 1}, "
                      "'outputs': 'x'}], 'scorers': [len]}\n", "not an assay Scorer"),
    "unknown_key.py": ("def evaluation():\n    return {'data': [], 'scorer': []}\n",
                       "'scorer', which assay.evaluate does not take"),
    "not_dict.py": ("def evaluation():\n    return [1, 2]\n", "must return a dict"),
}


@pytest.mark.parametrize(("args", "message"), [
    (["evals/missing.py"], "evals/missing.py: no such file"),
    (["evals/quality.py", "--function", "nope"], "defines no function 'nope'"),
    (["evals/quality.py", "--threshold", "fact_coverage/mean=about 0.8"], "cannot read"),
    (["evals/quality.py", "--threshold", "nosuch/mean=>= 0.8"], "no such metric"),
    (["evals/quality.py", "--threshold", "fact_coverage/mean"], "expected METRIC=RULE"),
    (["evals/quality.py", "--tag", "novalue"], "expected KEY=VALUE"),
    (["evals/quality.py", "--baseline", "tags.branch = 'nowhere'"], "no run matches"),
    (["evals/quality.py", "--alpha", "2"], "between 0 and 1"),
    (["evals/quality.py", "--repeats", "0"], "positive integer"),
    (["evals/quality.py", "--markdown", "no/such/dir/r.md"], "does not exist"),
    (["evals/quality.py", "--store", "nope://x"], "unknown trace store URI"),
    *[([f"evals/{name}"], message) for name, (_, message) in _BAD_FILES.items()],
])
def test_usage_and_data_errors_exit_2(tmp_path, args, message):
    project = _copy(tmp_path, "p")
    for name, (text, _) in _BAD_FILES.items():
        (project / "evals" / name).write_text(text, encoding="utf-8")
    store = ["--store", f"sqlite:///{tmp_path / 's.db'}"] if "--store" not in args else []
    proc = _assay("eval", *args, *store, cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr or "importing it failed" in proc.stderr


# -- exit 3 ------------------------------------------------------------------------------------


def test_a_store_that_cannot_be_opened_exits_3(tmp_path):
    project = _copy(tmp_path, "p")
    proc = _assay("eval", "evals/quality.py", "--store", f"sqlite:///{tmp_path}", cwd=project)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "the trace store failed" in proc.stderr


def test_an_unreachable_judge_endpoint_exits_3(tmp_path):
    project = _copy(tmp_path, "p")
    proc = _assay("eval", "evals/quality.py", "--store", f"sqlite:///{tmp_path / 's.db'}",
                  "--junit", "r.xml", "--max-workers", "12", cwd=project,
                  OPENAI_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1", OPENAI_API_KEY="t")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (f"infrastructure error: {ROWS} judge call(s) failed at the model endpoint"
            in proc.stderr)
    assert (project / "r.xml").exists()  # the reports are written all the same


# -- assay runs --------------------------------------------------------------------------------


def test_runs_list(main_run, pr_run):
    project, store, main_id, _ = main_run
    _, pr_id, _ = pr_run
    listing = _assay("runs", "list", "--store", store, cwd=project)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["run_id", "experiment", "name", "status", "started", "(UTC)",
                                "rows", "gate", "tags"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert {main_id, pr_id} <= set(rows)
    assert rows[main_id].split()[-2:] == ["passed", "branch=main"]
    assert rows[pr_id].split()[-2:] == ["failed", "branch=feature"]
    only = _assay("runs", "list", "--store", store, "--filter", "tags.branch = 'main'",
                  "--max", "5", cwd=project)
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == [main_id]
    none = _assay("runs", "list", "--store", store, "--experiment", "nothing-here", cwd=project)
    assert none.returncode == 0 and none.stdout.strip() == "no runs"
    bad = _assay("runs", "list", "--store", store, "--filter", "tags.branch === 'x'",
                 cwd=project)
    assert bad.returncode == 2 and "position" in bad.stderr


def test_runs_show(main_run, pr_run):
    project, store, _, _ = main_run
    _, pr_id, _ = pr_run
    shown = _assay("runs", "show", "tags.branch = 'feature'", "--store", store, cwd=project)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"run {pr_id}  help-desk-quality  FINISHED  experiment 'help-desk'")
    for section in ("\nParams:\n", "\nMetrics: (with 95% confidence intervals)\n", "\nTags:\n",
                    f"\nWorst rows ({ROWS} rows in the table):\n"):
        assert section in out
    assert re.search(r"^  fact_coverage/pass_rate +0\.4167  \[0\.19\d*, 0\.68\d*\]$", out,
                     re.MULTILINE), out
    assert re.search(r"^  branch +feature$", out, re.MULTILINE)
    worst = re.findall(r"^  row +(\d+)  trace ([0-9a-f]{32})  failed fact_coverage, mentions$",
                       out, re.MULTILINE)
    assert len(worst) == 5
    assert f"find them: assay.search_traces(\"run_id = '{pr_id}' AND trace.id IN ('" in out
    by_id = _assay("runs", "show", pr_id, "--store", store, "--worst", "0", cwd=project)
    assert by_id.returncode == 0 and by_id.stdout.startswith(f"run {pr_id}")
    missing = _assay("runs", "show", "no-such-run", "--store", store, cwd=project)
    assert missing.returncode == 1 and "no run matches 'no-such-run'" in missing.stderr


def test_runs_compare(main_run, pr_run):
    project, store, main_id, _ = main_run
    _, pr_id, _ = pr_run
    worse = _assay("runs", "compare", pr_id, "tags.branch = 'main'", "--store", store,
                   cwd=project)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert worse.stdout.startswith(f"run {pr_id} vs baseline {main_id}: ")
    assert "REGRESSION" in worse.stdout
    assert len(re.findall(r"^  newly failing on fact_coverage: row \d+", worse.stdout,
                          re.MULTILINE)) == 6
    same = _assay("runs", "compare", main_id, main_id, "--store", store, cwd=project)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no regression" in same.stdout
    lenient = _assay("runs", "compare", pr_id, main_id, "--tolerance", "0.9", "--store", store,
                     cwd=project)
    assert lenient.returncode == 0, lenient.stdout
    missing = _assay("runs", "compare", pr_id, "no-such-baseline", "--store", store,
                     cwd=project)
    assert missing.returncode == 2 and "BASELINE 'no-such-baseline'" in missing.stderr


def test_traces_show_finds_a_worst_row(main_run):
    project, store, _, _ = main_run
    markdown = (project / "report.md").read_text(encoding="utf-8")
    trace_id = re.findall(r"assay traces show ([0-9a-f]{32})", markdown)[0]
    shown = _assay("traces", "show", trace_id, "--store", store, cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "retrieve [RETRIEVER]" in shown.stdout


def test_eval_help_documents_the_exit_codes(tmp_path):
    proc = _assay("eval", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    for line in ("0  the gate passed", "1  a gate check failed", "2  usage or data error",
                 "3  infrastructure error"):
        assert line in proc.stdout
