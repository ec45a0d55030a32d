"""Helpers shared by the benchmark scripts (printing, machine description, verdicts)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def say(text: str = "") -> None:
    print(text, flush=True)


def dist_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def assay_commit() -> str | None:
    """The repository's short commit, marked when assay/ has uncommitted changes."""
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "assay"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" (assay/ modified)" if dirty else "")
    return None


def base_environment() -> dict[str, Any]:
    """What every benchmark report says about the machine and the code measured."""
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "assay": dist_version("assay"),
        "assay_commit": assay_commit(),
        "sqlalchemy": dist_version("SQLAlchemy"),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")
