"""Every exporter test gets a disk spool directory of its own, never the user's cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def spool_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ``ASSAY_SPOOL_DIR`` of this test (spools go in subdirectories of it)."""
    root = tmp_path / "spool"
    monkeypatch.setenv("ASSAY_SPOOL_DIR", str(root))
    return root
