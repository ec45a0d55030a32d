"""The assay command: the demo and looking at traces."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, run_python


def _assay(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "assay", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_demo_traces_into_assay_db_and_prints_a_tree_and_a_search(tmp_path):
    proc = _assay("demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "assay.db").exists()
    out = proc.stdout
    assert "Traced 4 questions" in out
    assert "answer [AGENT]" in out and "retrieve [RETRIEVER]" in out
    assert "assay.search_traces" in out
    assert "ERROR" in out  # the unknown order fails its trace
    assert proc.stderr == ""


def test_traces_list_and_show(tmp_path):
    assert _assay("demo", cwd=tmp_path).returncode == 0
    store = f"sqlite:///{tmp_path / 'assay.db'}"
    listing = _assay("traces", "list", "--store", store, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert len(lines) == 5  # header + 4 traces
    trace_id = lines[1].split()[0]
    shown = _assay("traces", "show", trace_id, "--store", store, cwd=tmp_path)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"trace {trace_id}")
    missing = _assay("traces", "show", "0" * 32, "--store", store, cwd=tmp_path)
    assert missing.returncode == 1
    bad = _assay("traces", "list", "--store", "nope://x", cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown trace store URI" in bad.stderr


def test_demo_runs_the_same_through_the_console_entry_point(tmp_path):
    out = run_python("from assay.cli import main; raise SystemExit(main(['demo']))",
                     cwd=tmp_path)
    assert "Traced 4 questions" in out
