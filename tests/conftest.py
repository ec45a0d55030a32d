"""Shared fixtures: every test gets a fresh SQLite trace store in its tmp dir."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# assay's own failures re-raise under its test suite; ambient ASSAY_* settings
# must not leak in from the machine running the tests.
for _key in [k for k in os.environ if k.startswith("ASSAY_")]:
    del os.environ[_key]
os.environ["ASSAY_INTERNAL_ERRORS"] = "raise"

import assay  # noqa: E402
from assay.tracing.models import Trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The PostgreSQL server the store tests use (.ci/run starts it when it is down).
PG_URL = os.environ.get("PG_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")


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
def pg_uri() -> Iterator[str]:
    """A store URI on the test PostgreSQL server, in a schema of this test's own."""
    schema = _pg_schema()
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        _drop_pg_schema(schema)


def _pg_schema(url: str = PG_URL) -> str:
    import psycopg

    schema = f"assay_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema


def _drop_pg_schema(schema: str, url: str = PG_URL) -> None:
    import psycopg

    assay.shutdown()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def pg_language_db() -> Iterator[str]:
    """A database on the test server whose collation is a language's (ICU en-US,
    where 'a' < 'B' < 'b'), as on many servers, where the test server's own
    sorts by code point."""
    import psycopg

    name = f"assay_test_en_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu "
                     "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        assay.shutdown()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "postgresql-en-US"])
def module_store_uri(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store shared by one test module, on each backend in turn (PostgreSQL
    twice: on a database that sorts by code point and on one that sorts as
    English does)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'traces.db'}"
        return
    url = PG_URL if request.param == "postgresql" \
        else request.getfixturevalue("pg_language_db")
    schema = _pg_schema(url)
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        _drop_pg_schema(schema, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request: pytest.FixtureRequest, db_uri: str) -> str:
    """The same test on a fresh SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return db_uri
    uri: str = request.getfixturevalue("pg_uri")
    return uri


@pytest.fixture
def store(store_uri: str) -> Iterator[Any]:
    """An open trace store on each backend in turn (closed after the test)."""
    from assay.store import open_store

    opened = open_store(store_uri)
    yield opened
    opened.close()


@pytest.fixture
def tracing_any(store_uri: str) -> str:
    """assay configured on each store backend in turn, experiment 'test'."""
    assay.configure(store=store_uri, experiment="test", flush_interval_ms=50)
    return store_uri


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


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll ``condition`` every 10 ms until it holds or ``timeout_s`` passes; the last
    answer is returned (bounded waits instead of fixed sleeps)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()

