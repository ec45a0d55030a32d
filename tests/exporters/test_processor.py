"""The processor between ended spans and exporters: flush, counters, the queue-full
policies, failing exporters, and one exporter's slowness not reaching another."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import assay
from assay.exporters import InMemorySpanExporter, stats
from tests.conftest import wait_until

# -- exporters with controlled behaviour ------------------------------------------------


class GatedExporter(SpanExporter):
    """Each export waits until the gate opens (at most 20 s), then succeeds."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.received = 0
        self.shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait(timeout=20)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut_down = True


class SlowExporter(SpanExporter):
    """Each export sleeps a little, then succeeds."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s = delay_s
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(self.delay_s)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        return None


class FailingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None


@pytest.fixture
def gated() -> Iterator[GatedExporter]:
    exporter = GatedExporter()
    yield exporter
    exporter.gate.set()  # before the runtime is shut down


# -- helpers ---------------------------------------------------------------------------


def stored_spans(db_path: Path) -> int:
    """Spans in the SQLite file, read with the standard library (0 before it exists)."""
    if not db_path.exists():
        return 0
    with closing(sqlite3.connect(db_path)) as con:
        try:
            return con.execute("SELECT count(*) FROM spans").fetchone()[0]
        except sqlite3.OperationalError:  # schema not created yet
            return 0


def stats_of(name: str) -> dict[str, Any]:
    rows = [row for row in stats() if row["exporter"] == name]
    assert len(rows) == 1, stats()
    return rows[0]


@assay.trace
def leaf(i: int) -> int:
    return i * 2


@assay.trace
def pair(i: int) -> int:
    """Two spans: this one and a ``leaf`` child."""
    return leaf(i) + 1


def produce(n_traces: int) -> int:
    """Run ``pair`` ``n_traces`` times, checking every return value; spans produced."""
    for i in range(n_traces):
        assert pair(i) == 2 * i + 1
    return 2 * n_traces


# -- flush ------------------------------------------------------------------------------


def test_flush_makes_everything_ended_before_it_readable(db_uri, db_path):
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=60_000)
    ids = []
    for i in range(30):
        pair(i)
        ids.append(assay.get_last_trace_id())
    assert stored_spans(db_path) == 0, "nothing is exported before the interval or a flush"

    assert assay.flush(timeout_s=30) is True

    assert stored_spans(db_path) == 60
    for trace_id in ids:
        trace = assay.get_trace(trace_id)
        assert trace is not None
        assert sorted(s.name for s in trace.spans) == ["leaf", "pair"]
        assert trace.info.state == "OK"


def test_flush_with_nothing_traced_returns_true(db_uri):
    assert assay.flush() is True  # no configuration at all
    assay.configure(store=db_uri, experiment="test")
    assert assay.flush(timeout_s=5) is True
    produce(1)
    assert assay.flush(timeout_s=30) is True
    assert assay.flush(timeout_s=5) is True  # nothing new since


def test_shutdown_and_reconfigure_persist_what_the_old_configuration_held(tmp_path, gated):
    gated.gate.set()
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    assay.configure(store=f"sqlite:///{first}", experiment="test", flush_interval_ms=60_000,
                    exporters=[gated])
    produce(5)
    assay.configure(store=f"sqlite:///{second}", experiment="test", flush_interval_ms=60_000)
    assert stored_spans(first) == 10
    assert gated.received == 10 and gated.shut_down

    produce(3)
    assay.shutdown()
    assert stored_spans(second) == 6


# -- counters --------------------------------------------------------------------------


def test_exported_counter_equals_spans_produced(db_uri, db_path):
    memory = InMemorySpanExporter()
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=50, exporters=[memory])
    produced = produce(40)
    with assay.start_span("manual"):
        pass
    produced += 1

    @assay.trace
    def numbers():
        yield from range(3)

    assert list(numbers()) == [0, 1, 2]
    produced += 1
    assert assay.flush(timeout_s=30)

    rows = stats()
    assert [r["exporter"] for r in rows] == ["StoreSpanExporter", "InMemorySpanExporter"]
    for row in rows:
        assert row["exported"] == produced
        assert row["queued"] == row["failed"] == row["dropped"] == 0
        assert row["batches"] >= 1
    assert len(memory.spans) == produced
    assert stored_spans(db_path) == produced


def test_stats_is_empty_without_a_configuration():
    assert stats() == []


# -- queue-full policies ----------------------------------------------------------------


def test_drop_policy_drops_counts_and_warns_once_without_touching_the_traced_code(
        db_uri, db_path, gated, caplog):
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, max_queue_size=10,
                    queue_full_policy="drop", exporters=[gated])
    with caplog.at_level(logging.WARNING, logger="assay"):
        produced = produce(100)  # 200 spans into queues of 10, the gated one stuck
        during = stats_of("GatedExporter")
        gated.gate.set()
        assert assay.flush(timeout_s=30)

    assert during["dropped"] > 0
    assert during["queued"] <= 10
    row = stats_of("GatedExporter")
    assert row["dropped"] > 0
    assert row["exported"] + row["dropped"] == produced
    assert row["failed"] == 0
    assert row["exported"] == gated.received
    store_row = stats_of("StoreSpanExporter")
    assert store_row["exported"] + store_row["dropped"] == produced
    assert stored_spans(db_path) == store_row["exported"]

    warnings = [r for r in caplog.records
                if r.name == "assay" and "dropped by the GatedExporter queue" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_block_policy_is_the_default_and_loses_nothing_to_a_slow_exporter(db_uri, db_path,
                                                                        caplog):
    slow = SlowExporter(delay_s=0.01)
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, max_queue_size=10,
                    exporters=[slow])
    with caplog.at_level(logging.WARNING, logger="assay"):
        produced = produce(100)
        assert assay.flush(timeout_s=30)

    row = stats_of("SlowExporter")
    assert row["dropped"] == 0
    assert row["exported"] == produced == slow.received
    assert row["blocked"] > 0, "the producer had to wait for the slow exporter"
    store_row = stats_of("StoreSpanExporter")
    assert store_row["dropped"] == 0 and store_row["exported"] == produced
    assert stored_spans(db_path) == produced
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


# -- failing exporters -------------------------------------------------------------------


@pytest.mark.parametrize("bad_exporter", [RaisingExporter, FailingExporter])
def test_a_failing_exporter_is_counted_and_does_not_affect_the_code_or_the_store(
        bad_exporter, db_uri, db_path, caplog):
    bad = bad_exporter()
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, exporters=[bad])

    @assay.trace
    def boom() -> None:
        raise KeyError("mine")

    with caplog.at_level(logging.WARNING, logger="assay"):
        produced = produce(20)
        original = KeyError("mine")
        with pytest.raises(KeyError) as err:
            boom()
        assert err.value.args == original.args
        produced += 1
        assert assay.flush(timeout_s=30)

    row = stats_of(bad_exporter.__name__)
    assert row["failed"] == produced
    assert row["exported"] == 0 and row["dropped"] == 0
    assert bad.calls == row["batches"] >= 1
    store_row = stats_of("StoreSpanExporter")
    assert store_row["exported"] == produced and store_row["failed"] == 0
    assert stored_spans(db_path) == produced
    assert any(bad_exporter.__name__ in r.getMessage() for r in caplog.records
               if r.name == "assay" and r.levelno >= logging.WARNING)


def test_a_raising_exporter_does_not_stop_later_batches(db_uri):
    bad = RaisingExporter()
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, exporters=[bad])
    produce(3)
    assert assay.flush(timeout_s=30)
    produce(3)
    assert assay.flush(timeout_s=30)
    assert stats_of("RaisingExporter")["failed"] == 12
    assert bad.calls >= 2


# -- one exporter's slowness does not reach the store ------------------------------------


def test_a_stuck_extra_exporter_does_not_delay_the_store(db_uri, db_path, gated):
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, exporters=[gated])
    produced = produce(15)

    assert wait_until(lambda: stored_spans(db_path) == produced, 15.0), stats()
    assert gated.received == 0
    assert not gated.gate.is_set()
    assert stats_of("GatedExporter")["exported"] == 0

    assert assay.flush(timeout_s=0.2) is False, "flush reports the exporter it waited for"
    gated.gate.set()
    assert assay.flush(timeout_s=30) is True
    assert gated.received == produced
    assert stats_of("GatedExporter")["exported"] == produced


# -- redaction counters ----------------------------------------------------------------------


def test_redactor_dropping_or_raising_is_counted_and_the_span_not_exported(db_uri, db_path,
                                                                          caplog):
    def redact(span: assay.Span) -> assay.Span | None:
        if span.name == "leaf":
            return None
        if span.name == "manual":
            raise RuntimeError("redactor bug")
        return span

    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, redact=redact)
    with caplog.at_level(logging.ERROR, logger="assay"):
        produce(4)
        with assay.start_span("manual"):
            pass
        assert assay.flush(timeout_s=30)

    (row,) = stats()
    assert row["redacted"] == 4
    assert row["redact_errors"] == 1
    assert row["exported"] == 4
    with closing(sqlite3.connect(db_path)) as con:
        names = {r[0] for r in con.execute("SELECT name FROM spans")}
    assert names == {"pair"}
    assert any("redactor bug" in r.getMessage() for r in caplog.records)


# -- stats rows: targets and the exporters' own counters --------------------------------------


class CountingExporter(SpanExporter):
    """Has counters of its own, one of which collides with the queue's."""

    target = "counting://here"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"exported": -1, "custom": 7}


def assert_balanced(row: dict[str, Any]) -> None:
    assert row["produced"] + row["inherited"] == (
        row["exported"] + row["failed"] + row["dropped"] + row["queued"] + row["in_flight"]
        + row["spooled"]), row


def test_stats_rows_name_their_target_and_merge_the_exporters_own_counters(db_uri, tmp_path):
    from assay.exporters import OTLPExporter
    from tests.exporters.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as one, OTLPReceiver() as two:
        assay.configure(store=db_uri, experiment="test", flush_interval_ms=20,
                        exporters=[OTLPExporter(one.url), OTLPExporter(two.url),
                                   CountingExporter(), InMemorySpanExporter()])
        produced = produce(3)
        assert assay.flush(timeout_s=30)
        rows = stats()
    assert [(r["exporter"], r["target"]) for r in rows] == [
        ("StoreSpanExporter", db_uri), ("OTLPExporter", one.url), ("OTLPExporter", two.url),
        ("CountingExporter", "counting://here"), ("InMemorySpanExporter", None)]
    for row in rows:
        assert row["exported"] == row["produced"] == produced
        assert_balanced(row)
    for row in rows[1:3]:
        assert (row["retries"], row["rejected_spans"]) == (0, 0)
        assert row["spool_dir"] is not None and row["spooled"] == 0
    assert rows[3]["custom"] == 7, "the exporter's own counters are merged in"
    assert rows[0]["spool_dir"] is None, "the store has no spool"


def test_a_target_never_shows_a_password():
    from assay.exporters.processor import target_of

    class Store:
        uri = "postgresql://alice:s3cret@db.example:5432/traces"

    class Exporter(InMemorySpanExporter):
        store = Store()

    assert target_of(Exporter()) == "postgresql://alice:***@db.example:5432/traces"

    from assay.exporters import OTLPExporter

    otlp = OTLPExporter("https://bob:token@collector:4318/v1/traces")
    assert target_of(otlp) == "https://bob:***@collector:4318/v1/traces"


# -- exporters across configurations -----------------------------------------------------------


def test_an_exporter_passed_again_is_handed_over_not_shut_down(db_uri, gated):
    gated.gate.set()
    assay.configure(store=db_uri, experiment="a", flush_interval_ms=60_000, exporters=[gated])
    produce(2)
    assay.configure(store=db_uri, experiment="b", flush_interval_ms=60_000, exporters=[gated])
    assert gated.received == 4, "the old configuration flushed what it held"
    assert not gated.shut_down
    produce(3)
    assert assay.flush(timeout_s=30)
    assert gated.received == 10
    assert stats_of("GatedExporter")["exported"] == 6

    assay.configure(store=db_uri, experiment="c")  # replaced without it: shut down
    assert gated.shut_down
    with pytest.raises(assay.ConfigurationError, match="was shut down"):
        assay.configure(store=db_uri, exporters=[gated])
    assert [r["exporter"] for r in stats()] == ["StoreSpanExporter"], "nothing changed"


def test_an_exporter_shut_down_by_assay_shutdown_cannot_be_configured_again(db_uri):
    memory = InMemorySpanExporter()
    assay.configure(store=db_uri, exporters=[memory])
    assay.shutdown()
    with pytest.raises(assay.ConfigurationError, match="create a new one"):
        assay.configure(store=db_uri, exporters=[memory])
    assay.configure(store=db_uri, exporters=[InMemorySpanExporter()])


def test_an_otlp_exporter_keeps_delivering_across_configurations(db_uri):
    from assay.exporters import OTLPExporter
    from tests.exporters.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as receiver:
        exporter = OTLPExporter(receiver.url)
        for experiment in ("a", "b", "c"):
            assay.configure(store=db_uri, experiment=experiment, flush_interval_ms=60_000,
                            exporters=[exporter])
            produce(2)
        assert assay.flush(timeout_s=30)
        spans = receiver.spans()
    assert len(spans) == 12
    assert {s.resource["assay.experiment"] for s in spans} == {"a", "b", "c"}


# -- the failed-batch warning is rate-limited ----------------------------------------------------


def test_failed_batches_warn_once_per_interval_and_sum_up_at_shutdown(db_uri, caplog):
    bad = FailingExporter()
    assay.configure(store=db_uri, experiment="test", flush_interval_ms=20, exporters=[bad])
    with caplog.at_level(logging.WARNING, logger="assay"):
        for _ in range(10):
            produce(1)
            assert assay.flush(timeout_s=30)
        assert bad.calls >= 10
        during = [r for r in caplog.records if "could not export" in r.getMessage()]
        assay.shutdown()
    after = [r for r in caplog.records if "could not export" in r.getMessage()]
    assert len(during) == 1
    assert len(after) == 2, "the failures since the first warning, at shutdown"
    assert "(20 in all)" in after[-1].getMessage()
