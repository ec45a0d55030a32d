"""The store exporter: a store on a database server (PostgreSQL) gets a disk spool,
so the spans traced while the server cannot be reached are written when it answers
again (the server reached through a loopback TCP relay that is cut and restored);
a batch the database refuses is not kept; a SQLite store has no spool."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

import assay
from assay.errors import StoreError
from assay.exporters import stats
from assay.exporters.store import StoreSpanExporter
from assay.store import open_store
from tests.conftest import PG_URL, wait_until


class Relay:
    """A TCP relay from a port on 127.0.0.1 to the test PostgreSQL server, that can
    be cut (the listener closed and every connection through it dropped) and
    restored on the same port."""

    def __init__(self) -> None:
        target = urllib.parse.urlsplit(PG_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = 0
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            # Closing alone would leave the accepting thread's listener open.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay() -> Any:
    r = Relay()
    yield r
    r.cut()


def _schema(pg_uri: str) -> str:
    return urllib.parse.unquote(pg_uri.split("search_path", 1)[1]).lstrip("=")


def _stored_traces(schema: str) -> set[str]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        return {r[0] for r in conn.execute(f'SELECT trace_id FROM "{schema}".traces')}


@assay.trace
def step(i: int) -> int:
    return i


def _store_row() -> dict[str, Any]:
    (row,) = [r for r in stats() if r["exporter"] == "StoreSpanExporter"]
    return row


def test_spans_traced_while_the_server_is_unreachable_are_written_when_it_answers(
        pg_uri: str, relay: Relay, spool_root: Path):
    schema = _schema(pg_uri)
    uri = f"postgresql://postgres@127.0.0.1:{relay.port}/test?options=-csearch_path%3D{schema}"
    assay.configure(store=uri, experiment="relay", flush_interval_ms=20)
    ids = []
    step(0)
    ids.append(assay.get_last_trace_id())
    assert assay.flush(timeout_s=30)

    relay.cut()
    for i in range(1, 41):
        assert step(i) == i  # tracing changes nothing for the traced code
        ids.append(assay.get_last_trace_id())
    assert wait_until(lambda: _store_row()["spooled"] == 40), _store_row()
    down = _store_row()
    assert down["down"] is True and down["exported"] == 1 and down["failed"] == 0
    assert Path(down["spool_dir"]).parent == spool_root
    assert _stored_traces(schema) == {ids[0]}

    relay.restore()
    assert assay.flush(timeout_s=60)
    row = _store_row()
    assert (row["exported"], row["spooled"], row["failed"], row["down"]) == (41, 0, 0, False)
    assert _stored_traces(schema) == set(ids)
    trace = assay.get_trace(ids[-1])
    assert trace is not None and trace.spans[0].inputs == {"i": 40}
    assert (trace.info.experiment, trace.info.name, trace.info.state) == ("relay", "step", "OK")


def test_configure_names_a_server_it_cannot_reach(pg_uri: str, relay: Relay):
    uri = f"postgresql://postgres@127.0.0.1:{relay.port}/test?options=-csearch_path%3Dx"
    relay.cut()
    with pytest.raises(StoreError, match=f"cannot open the trace store {re.escape(uri)}: "
                                         ".*Connection refused"):
        assay.configure(store=uri)


def test_spans_traced_before_the_server_was_ever_reached_are_kept(
        pg_uri: str, relay: Relay, monkeypatch: pytest.MonkeyPatch):
    """Configured by the environment, tracing opens the store on its first write: a
    server not reachable then is a batch to keep, like any other outage."""
    schema = _schema(pg_uri)
    uri = f"postgresql://postgres@127.0.0.1:{relay.port}/test?options=-csearch_path%3D{schema}"
    relay.cut()
    monkeypatch.setenv("ASSAY_STORE", uri)
    monkeypatch.setenv("ASSAY_FLUSH_INTERVAL_MS", "20")
    ids = []
    for i in range(5):
        step(i)
        ids.append(assay.get_last_trace_id())
    assert wait_until(lambda: _store_row()["spooled"] == 5), _store_row()
    relay.restore()
    assert assay.flush(timeout_s=60)
    assert _stored_traces(schema) == set(ids)


def _nameless_span() -> ReadableSpan:
    ctx = SpanContext(0x1F, 0x2F, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(name=None, context=ctx, start_time=1, end_time=2)  # type: ignore[arg-type]


def test_a_batch_the_database_refuses_is_not_kept(pg_uri: str):
    store = open_store(pg_uri)
    try:
        exporter = StoreSpanExporter(store)
        assert exporter.spool_by_default is True
        assert exporter.export([_nameless_span()]) is SpanExportResult.FAILURE
        assert exporter.last_failure_transient is False
    finally:
        store.close()


def test_a_sqlite_store_has_no_spool(db_uri: str):
    assert StoreSpanExporter(open_store(db_uri)).spool_by_default is False
    assay.configure(store=db_uri, flush_interval_ms=20)
    assert _store_row()["spool_dir"] is None


def test_tracing_into_a_sqlite_store_keeps_no_spool(tracing: str):
    step(1)
    assert assay.flush(timeout_s=30)
    assert _store_row()["spool_dir"] is None


def test_spans_traced_before_the_store_is_upgraded_are_written_after(
        pg_uri: str, monkeypatch: pytest.MonkeyPatch):
    """A process on a newer assay, configured by the environment, traces into a
    store not upgraded yet: its spans are kept until ``assay db upgrade`` runs."""
    from assay.cli import main

    schema = _schema(pg_uri)
    created = open_store(pg_uri)
    created.open()
    created.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:  # as an older assay left it
        conn.execute(f'UPDATE "{schema}".assay_schema SET version = version - 1')
    monkeypatch.setenv("ASSAY_STORE", pg_uri)
    monkeypatch.setenv("ASSAY_FLUSH_INTERVAL_MS", "20")
    ids = []
    for i in range(5):
        assert step(i) == i
        ids.append(assay.get_last_trace_id())
    assert wait_until(lambda: _store_row()["spooled"] == 5), _store_row()
    row = _store_row()
    assert (row["down"], row["failed"], row["exported"]) == (True, 0, 0)
    assert _stored_traces(schema) == set()

    assert main(["db", "upgrade", "--store", pg_uri]) == 0
    assert assay.flush(timeout_s=60)
    assert _stored_traces(schema) == set(ids)
    assert _store_row()["failed"] == 0


def test_a_schema_this_assay_may_not_write_may_pass_a_network_error_may_not():
    from assay.exporters.store import _may_pass

    assert _may_pass(StoreError("older", may_pass=True))
    assert not _may_pass(StoreError("cannot write"))
    try:
        try:
            raise StoreError("newer", may_pass=True)
        except StoreError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert _may_pass(wrapped)
