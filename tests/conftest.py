"""Shared fixtures: every test gets a fresh SQLite trace store in its tmp dir."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# assay's own failures re-raise under its test suite; ambient ASSAY_* settings
# must not leak in from the machine running the tests.
for _key in [k for k in os.environ if k.startswith("ASSAY_")]:
    del os.environ[_key]
os.environ["ASSAY_INTERNAL_ERRORS"] = "raise"

import assay  # noqa: E402
from assay.tracing.models import Trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    assay.shutdown()
    yield
    assay.shutdown()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "traces.db"


@pytest.fixture
def db_uri(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def tracing(db_uri: str) -> str:
    """assay configured on a fresh SQLite file, experiment 'test'."""
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=50)
    return db_uri


@pytest.fixture
def fetch() -> Callable[[str | None], Trace]:
    """Flush, then read a trace back (the last finished one by default)."""

    def _fetch(trace_id: str | None = None) -> Trace:
        assert assay.flush(timeout_s=30)
        tid = trace_id or assay.get_last_trace_id()
        assert tid is not None, "no trace finished"
        trace = assay.get_trace(tid)
        assert trace is not None, f"trace {tid} not stored"
        return trace

    return _fetch


def run_python(code: str, *, env: dict[str, str] | None = None, timeout: float = 120,
               cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter; returns stdout, fails the test on error."""
    import subprocess

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    full_env["ASSAY_INTERNAL_ERRORS"] = "raise"
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
