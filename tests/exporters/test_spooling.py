"""The processor with a disk spool, in one process: spans the destination cannot take
go to disk and come back when it answers, the destination is probed while down, the
bound and poison batches are counted, flush and shutdown keep their deadlines, and the
counters always balance."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import assay
from assay.exporters import OTLPExporter, stats
from tests.conftest import wait_until
from tests.exporters.otlp_receiver import OTLPReceiver, free_port

# -- a destination that can be switched off ---------------------------------------------------


class SwitchExporter(SpanExporter):
    """Delivers while ``up`` is set; otherwise fails, transiently unless told otherwise."""

    spool_by_default = True

    def __init__(self, target: str = "switch://one", *, up: bool = True) -> None:
        self.target = target
        self.up = threading.Event()
        if up:
            self.up.set()
        self.transient = True
        self.received: list[int] = []  # span ids, in the order they arrived
        self.calls = 0
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.calls += 1
            if not self.up.is_set():
                self.last_failure_transient = self.transient
                return SpanExportResult.FAILURE
            self.received.extend(s.context.span_id for s in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def row_of(name: str = "SwitchExporter") -> dict[str, Any]:
    (row,) = [r for r in stats() if r["exporter"] == name]
    return row


def assert_balanced(row: dict[str, Any]) -> None:
    assert row["produced"] + row["inherited"] == (
        row["exported"] + row["failed"] + row["dropped"] + row["queued"] + row["in_flight"]
        + row["spooled"]), row


@assay.trace
def leaf(i: int) -> int:
    return i


def produce(n: int) -> int:
    for i in range(n):
        assert leaf(i) == i
    return n


# -- down, then up ------------------------------------------------------------------------------


def test_spans_produced_while_down_go_to_disk_and_arrive_when_it_answers(spool_root: Path):
    switch = SwitchExporter(up=False)
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch],
                    max_queue_size=500)
    produced = produce(3000)
    assert wait_until(lambda: row_of()["spooled"] == produced), row_of()
    down = row_of()
    assert down["down"] is True
    assert down["queued"] == down["in_flight"] == 0
    assert down["exported"] == down["dropped"] == 0
    assert down["spool_bytes"] > 0
    assert Path(down["spool_dir"]).parent == spool_root
    assert down["batches"] < 30, "a down destination is probed, not sent every batch"
    assert_balanced(down)

    switch.up.set()
    assert assay.flush(timeout_s=30)
    row = row_of()
    assert (row["exported"], row["replayed"], row["spooled"], row["spool_bytes"]) == (
        produced, produced, 0, 0)
    assert row["down"] is False
    assert_balanced(row)
    assert len(switch.received) == len(set(switch.received)) == produced
    assert list(Path(row["spool_dir"]).glob("*.seg")) == []


def test_a_full_queue_overflows_to_the_spool_while_the_exporter_is_stuck(spool_root: Path):
    switch = SwitchExporter()
    gate = threading.Event()
    original = switch.export

    def slow_export(spans: Sequence[ReadableSpan]) -> SpanExportResult:
        gate.wait(20)
        return original(spans)

    switch.export = slow_export  # type: ignore[method-assign]
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch],
                    max_queue_size=200)
    peak = 0
    for _ in range(10):
        produce(200)
        row = row_of()
        peak = max(peak, row["queued"] + row["in_flight"])
    row = row_of()
    assert row["dropped"] == 0, "nothing lost to the full queue: it went to disk"
    assert row["spooled"] > 0
    assert peak <= 200 + 2 * 200, "memory stays bounded: the queue, a batch being exported " \
        "and one being written to the spool"
    gate.set()
    assert assay.flush(timeout_s=30)
    row = row_of()
    assert row["exported"] == 2000 and row["dropped"] == 0
    assert len(set(switch.received)) == 2000
    assert_balanced(row)


def test_a_batch_refused_for_good_is_failed_not_spooled(caplog: pytest.LogCaptureFixture):
    with OTLPReceiver(statuses=[400]) as receiver:
        assay.configure(store="memory://", flush_interval_ms=20,
                        exporters=[OTLPExporter(receiver.url)])
        with caplog.at_level(logging.WARNING, logger="assay"):
            produce(5)
            assert assay.flush(timeout_s=30)
            produce(3)
            assert assay.flush(timeout_s=30)
        row = row_of("OTLPExporter")
        assert (row["failed"], row["spooled"], row["exported"]) == (5, 0, 3)
        assert_balanced(row)
        assert len(receiver.spans()) == 3
    assert "could not export 5 span(s)" in caplog.text


def test_a_replayed_record_refused_for_good_is_given_up_and_the_rest_delivered():
    switch = SwitchExporter(up=False)
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch])
    produce(10)
    assert wait_until(lambda: row_of()["spooled"] == 10)
    switch.transient = False  # the next probe is refused for good
    assert wait_until(lambda: row_of()["failed"] > 0)
    switch.up.set()
    produce(5)
    assert assay.flush(timeout_s=30)
    row = row_of()
    assert row["spooled"] == 0 and row["exported"] + row["failed"] == 15
    assert_balanced(row)


def test_over_the_bound_the_oldest_spans_are_dropped_and_counted(
        caplog: pytest.LogCaptureFixture):
    switch = SwitchExporter(up=False)
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch],
                    max_queue_size=200, spool_max_bytes=120_000)
    with caplog.at_level(logging.WARNING, logger="assay"):
        produced = produce(5000)
        assert wait_until(lambda: row_of()["queued"] + row_of()["in_flight"] == 0)
        row = row_of()
        assert row["dropped"] > 0 and row["spooled"] > 0
        assert row["spool_bytes"] <= 120_000
        assert_balanced(row)
        switch.up.set()
        assert assay.flush(timeout_s=30)
    row = row_of()
    assert row["exported"] + row["dropped"] == produced
    assert_balanced(row)
    assert "deleted from the spool" in caplog.text
    # the newest spans survived: what arrived is a run at the end
    assert len(switch.received) == row["exported"]


def test_spool_false_turns_it_off():
    switch = SwitchExporter(up=False)
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch], spool=False)
    produce(4)
    assay.flush(timeout_s=30)
    row = row_of()
    assert (row["failed"], row["spooled"], row["spool_dir"]) == (4, 0, None)


def test_the_environment_sets_the_spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ASSAY_SPOOL_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ASSAY_SPOOL_MAX_BYTES", "1MiB")
    assay.configure(store="memory://", exporters=[SwitchExporter()])
    (queue,) = [q for q in assay.tracing._runtime._STATE.rt.processor.queues  # type: ignore
                if q.spool is not None]
    assert queue.spool is not None and queue.spool.max_bytes == 1024 * 1024
    assert queue.spool.directory.parent == tmp_path / "elsewhere"
    monkeypatch.setenv("ASSAY_SPOOL", "off")
    assay.configure(store="memory://", exporters=[SwitchExporter()])
    assert all(r["spool_dir"] is None for r in stats())


# -- the next process (here: the next configuration) ----------------------------------------


def test_the_next_configuration_delivers_what_the_last_one_spooled(spool_root: Path):
    url = f"http://127.0.0.1:{free_port()}/v1/traces"
    assay.configure(store="memory://", flush_interval_ms=20,
                    exporters=[OTLPExporter(url, max_retry_s=0.2, initial_backoff_s=0.01)])
    produced = produce(300)
    assay.shutdown()  # the collector is down: the spans stay on disk
    (spool_dir,) = spool_root.iterdir()
    assert list(spool_dir.glob("*.seg"))

    receiver = OTLPReceiver(port=int(url.split(":")[2].split("/")[0]))
    with receiver:
        assay.configure(store="memory://", flush_interval_ms=20, exporters=[OTLPExporter(url)])
        # without a single span of its own, and without a flush
        assert wait_until(lambda: row_of("OTLPExporter")["replayed"] == produced)
        assert len(receiver.spans()) == produced
        row = row_of("OTLPExporter")
        assert (row["inherited"], row["replayed"], row["produced"]) == (produced, produced, 0)
        assert_balanced(row)
    assert list(spool_dir.glob("*.seg")) == []


# -- flush and shutdown with the destination down --------------------------------------------


def test_flush_returns_in_time_and_lists_what_is_safe_on_disk(caplog: pytest.LogCaptureFixture):
    url = f"http://127.0.0.1:{free_port()}/v1/traces"
    assay.configure(store="memory://", flush_interval_ms=20,
                    exporters=[OTLPExporter(url, max_retry_s=0.3, initial_backoff_s=0.05)])
    produce(50)
    with caplog.at_level(logging.WARNING, logger="assay"):
        start = time.monotonic()
        assert assay.flush(timeout_s=1.5) is False
        elapsed = time.monotonic() - start
    assert elapsed < 1.5 + 2.0
    (record,) = [r for r in caplog.records if "flush(timeout_s=1.5)" in r.getMessage()]
    message = record.getMessage()
    assert f"OTLPExporter ({url})" in message
    assert "50 in the spool at" in message and "safe on disk" in message


def test_shutdown_with_the_destination_down_does_not_wait_for_it():
    switch = SwitchExporter(up=False)
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch])
    produce(100)
    assert wait_until(lambda: row_of()["down"])
    start = time.monotonic()
    assay.shutdown(timeout_s=10)
    assert time.monotonic() - start < 5, "down: the spans go to disk, no waiting"


def test_the_spool_is_after_redaction(spool_root: Path):
    def redact(span: assay.Span) -> assay.Span:
        return span.model_copy(update={"inputs": {"secret": "***"}})

    switch = SwitchExporter(up=False)
    assay.configure(store="memory://", flush_interval_ms=20, exporters=[switch], redact=redact)

    @assay.trace
    def login(secret: str) -> str:
        return "ok"

    login("hunter2")
    assert wait_until(lambda: row_of()["spooled"] == 1)
    data = b"".join(p.read_bytes() for p in spool_root.rglob("*.seg"))
    assert b"hunter2" not in data and b"***" in data


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("268435456", 268_435_456), ("256MiB", 256 * 1024**2), ("512 MB", 512_000_000),
    ("1gib", 1024**3), ("64KiB", 65_536), ("1_000_000", 1_000_000)])
def test_spool_sizes_from_the_environment(text: str, expected: int):
    from assay.config import settings_from_env

    assert settings_from_env({"ASSAY_SPOOL_MAX_BYTES": text}).spool_max_bytes == expected


def test_spool_defaults():
    from assay.config import settings_from_env

    settings = settings_from_env({})
    assert (settings.spool, settings.spool_dir, settings.spool_max_bytes) == (
        True, None, 256 * 1024 * 1024)


@pytest.mark.parametrize(("name", "value"), [
    ("ASSAY_SPOOL_MAX_BYTES", "lots"), ("ASSAY_SPOOL_MAX_BYTES", "0"),
    ("ASSAY_SPOOL_MAX_BYTES", "1.5GB"), ("ASSAY_SPOOL_MAX_BYTES", "12 parsecs"),
    ("ASSAY_SPOOL", "maybe")])
def test_a_bad_spool_variable_is_named(name: str, value: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(assay.ConfigurationError, match=name):
        assay.configure(store="memory://")


@pytest.mark.parametrize("kwargs", [
    {"spool": "yes"}, {"spool_max_bytes": 0}, {"spool_max_bytes": 1.5}, {"spool_dir": ""},
    {"spool_dir": 3}])
def test_a_bad_spool_argument_is_named(kwargs: dict[str, Any]):
    (key,) = kwargs
    with pytest.raises(assay.ConfigurationError, match=key):
        assay.configure(store="memory://", **kwargs)


def test_spool_dir_takes_a_path(tmp_path: Path):
    assay.configure(store="memory://", exporters=[SwitchExporter()], spool_dir=tmp_path / "p")
    assert Path(row_of()["spool_dir"]).parent == tmp_path / "p"
