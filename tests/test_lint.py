"""ruff and mypy stay clean (both are in the test extra)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=280)


def test_ruff_is_clean():
    proc = _run("ruff", "check", "assay", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = _run("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
