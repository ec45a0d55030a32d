"""The disk spool on its own: the record format, torn and corrupt records, the bound,
acknowledgements that survive the process, claiming between processes, and where
spools live."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter as OTelMemoryExporter,
)

from assay.exporters.spool import (
    MAGIC,
    Spool,
    SpoolError,
    SpoolFull,
    decode_spans,
    default_spool_root,
    encode_spans,
    spool_directory,
    user_cache_dir,
)
from tests.conftest import ROOT

# -- helpers ---------------------------------------------------------------------------


def payload(i: int, size: int = 100) -> bytes:
    return (b"%08d" % i) * (size // 8)


def drain(spool: Spool) -> list[bytes]:
    """Replay everything, acknowledging each record; their payloads in order."""
    out = []
    while (record := spool.next_record()) is not None:
        out.append(record.payload)
        assert spool.ack(record)
    return out


def balanced(spool: Spool) -> bool:
    c = spool.counters()
    return c["written_spans"] + c["inherited_spans"] == (
        c["replayed_spans"] + c["discarded_spans"] + c["evicted_spans"]
        + c["unreadable_spans"] + c["pending_spans"])


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


# -- appending and replaying -------------------------------------------------------------


def test_records_come_back_in_order_and_delivered_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1000)
    for i in range(20):
        spool.append(payload(i), count=i + 1)
    assert spool.pending_spans == sum(range(1, 21))
    assert len(segments(tmp_path / "s")) > 1, "small segments: several files"
    assert spool.bytes == sum(p.stat().st_size for p in segments(tmp_path / "s"))

    assert drain(spool) == [payload(i) for i in range(20)]
    assert spool.pending_spans == 0 and spool.replayed_spans == sum(range(1, 21))
    assert spool.bytes == 0
    assert segments(tmp_path / "s") == []
    assert list((tmp_path / "s").glob("*.ack")) == []
    assert balanced(spool)
    spool.close()


def test_a_released_record_comes_back_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"one", 1)
    spool.append(b"two", 1)
    first = spool.next_record()
    assert first is not None and first.payload == b"one"
    assert spool.next_record() is None, "one record out at a time"
    spool.release(first)
    assert drain(spool) == [b"one", b"two"]


def test_a_given_up_record_is_counted_as_discarded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"poison", 3)
    record = spool.next_record()
    assert record is not None
    assert spool.ack(record, delivered=False)
    assert (spool.discarded_spans, spool.replayed_spans, spool.pending_spans) == (3, 0, 0)
    assert balanced(spool)


def test_the_file_format(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"abc", 7)
    spool.close()
    (seg,) = segments(tmp_path)
    data = seg.read_bytes()
    assert data[:8] == MAGIC == b"ASSAYSP\x01"
    import struct
    import zlib

    length, count, crc = struct.unpack_from("<III", data, 8)
    assert (length, count, data[20:]) == (3, 7, b"abc")
    assert crc == zlib.crc32(b"abc", zlib.crc32(struct.pack("<I", 7)))
    assert oct(seg.stat().st_mode & 0o777) == oct(0o600)


def test_closed_spool_refuses_records_and_oversized_records_are_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    with pytest.raises(SpoolFull):
        spool.append(b"x" * 20_000, 1)
    spool.close()
    with pytest.raises(SpoolError):
        spool.append(b"x", 1)
    assert spool.next_record() is None


# -- what survives the process ------------------------------------------------------------


def test_a_new_spool_claims_what_the_last_one_left_and_skips_what_was_delivered(
        tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        first.append(payload(i), 2)
    for _ in range(2):
        record = first.next_record()
        assert record is not None
        first.ack(record)
    first.close()
    assert len(segments(tmp_path)) == 1
    assert (tmp_path / (segments(tmp_path)[0].name + ".ack")).exists()

    second = Spool(tmp_path, max_bytes=1 << 20)
    assert second.claim() == 6
    assert second.inherited_spans == 6 and second.pending_spans == 6
    assert drain(second) == [payload(i) for i in range(2, 5)]
    assert balanced(second)
    second.close()
    assert list(tmp_path.iterdir()) == []


def test_a_torn_last_record_is_skipped_and_counted(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        first.append(payload(i, 400), 1)
    first.close()
    (seg,) = segments(tmp_path)
    size = seg.stat().st_size
    with open(seg, "r+b") as fh:  # a crash in the middle of the last write
        fh.truncate(size - 150)

    second = Spool(tmp_path, max_bytes=1 << 20)
    assert second.claim() == 2
    assert second.torn_records == 1
    assert drain(second) == [payload(0, 400), payload(1, 400)]
    assert balanced(second)


@pytest.mark.parametrize("damage", ["payload", "header", "magic", "tail-garbage"])
def test_corrupt_bytes_are_detected_by_the_crc(tmp_path: Path, damage: str) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        first.append(payload(i, 400), 1)
    first.close()
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    record = 12 + 400
    if damage == "payload":  # a flipped byte in the second record's payload
        data[8 + record + 12 + 5] ^= 0xFF
        expected = [payload(0, 400)]
    elif damage == "header":  # an absurd length in the second record's header
        data[8 + record:8 + record + 4] = b"\xff\xff\xff\x7f"
        expected = [payload(0, 400)]
    elif damage == "magic":
        data[:8] = b"NOTASPOL"
        expected = []
    else:  # a few bytes of a header that never completed
        data += b"\x05\x00"
        expected = [payload(i, 400) for i in range(3)]
    seg.write_bytes(bytes(data))

    second = Spool(tmp_path, max_bytes=1 << 20)
    second.claim()
    assert second.torn_records == 1
    assert drain(second) == expected
    assert balanced(second)


def test_damage_after_the_claim_skips_the_rest_of_the_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        spool.append(payload(i, 400), 4)
    (seg,) = segments(tmp_path)
    with open(seg, "r+b") as fh:
        fh.seek(8 + 412 + 12 + 10)
        fh.write(b"!")
    assert drain(spool) == [payload(0, 400)]
    assert spool.torn_records == 1 and spool.unreadable_spans == 8
    assert balanced(spool)


# -- the bound ------------------------------------------------------------------------------


def test_over_the_bound_the_oldest_segments_are_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=20_000, segment_bytes=4_000)
    for i in range(100):
        spool.append(payload(i, 1000), 10)
        assert spool.bytes <= 20_000
    assert spool.evicted_spans > 0
    assert spool.written_spans == 1000
    remaining = drain(spool)
    assert remaining == [payload(i, 1000) for i in range(100 - len(remaining), 100)], \
        "the newest records are kept, in order"
    assert spool.evicted_spans == 10 * (100 - len(remaining))
    assert balanced(spool)


def test_claimed_segments_count_towards_the_bound(tmp_path: Path) -> None:
    big = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4_000)
    for i in range(40):
        big.append(payload(i, 1000), 1)
    big.close()
    small = Spool(tmp_path, max_bytes=12_000)
    small.claim()
    assert small.bytes <= 12_000
    assert small.inherited_spans == 40
    assert small.evicted_spans > 0
    assert balanced(small)


# -- claiming between processes ----------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys, time
    from assay.exporters.spool import Spool
    spool = Spool(sys.argv[1], max_bytes=1 << 20)
    for i in range(3):
        spool.append(b"held-%d" % i, 1)
    print("ready", flush=True)
    sys.stdin.readline()
    KILL_OR_CLOSE
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock")
@pytest.mark.parametrize("ending", ["close", "sigkill"])
def test_segments_of_a_live_process_are_not_claimed_until_it_is_gone(
        tmp_path: Path, ending: str) -> None:
    code = _HOLDER.replace("KILL_OR_CLOSE", "spool.close()" if ending == "close"
                           else "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        other = Spool(tmp_path, max_bytes=1 << 20)
        assert other.claim() == 0, "the holder is alive"
        assert other.next_record() is None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    assert other.claim() == 3
    assert drain(other) == [b"held-0", b"held-1", b"held-2"]


def test_two_spools_of_one_process_never_share_a_segment(tmp_path: Path) -> None:
    writer = Spool(tmp_path, max_bytes=1 << 20)
    writer.append(b"a", 1)
    writer.close()
    first, second = Spool(tmp_path, max_bytes=1 << 20), Spool(tmp_path, max_bytes=1 << 20)
    assert first.claim() == 1
    assert second.claim() == 0
    assert drain(first) == [b"a"]
    assert second.claim() == 0, "delivered and deleted"


def test_leftovers_of_a_crash_are_tidied(tmp_path: Path) -> None:
    orphan_ack = tmp_path / "00000000000000000001-1-aaaa.seg.ack"
    orphan_ack.write_text("8\n")
    stale = tmp_path / "00000000000000000002-1-bbbb.seg.new"
    stale.write_bytes(MAGIC)
    os.utime(stale, (0, 0))
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.claim()
    assert not orphan_ack.exists() and not stale.exists()


def test_forked_copy_starts_fresh_and_leaves_the_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"parent", 1)
    child = spool.forked()
    assert child.pending_spans == 0 and not child.closed
    assert len(segments(tmp_path)) == 1


# -- the span codec and where spools live ---------------------------------------------------


def test_spans_round_trip_exactly() -> None:
    memory = OTelMemoryExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "unit", "k": 1}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("outer") as outer:
        outer.set_attribute("input.value", "kept as it is")
        with provider.get_tracer("t").start_as_current_span("inner") as inner:
            inner.add_event("e", {"n": 2})
    spans = list(memory.get_finished_spans())
    back = decode_spans(encode_spans(spans))
    assert [s.name for s in back] == ["inner", "outer"]
    assert [s.context.span_id for s in back] == [s.context.span_id for s in spans]
    assert back[0].parent is not None and back[0].parent.span_id == spans[1].context.span_id
    assert dict(back[1].attributes or {}) == {"input.value": "kept as it is"}
    assert back[0].events[0].name == "e"
    assert back[0].resource.attributes["service.name"] == "unit"


def test_where_spools_live(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert user_cache_dir() == tmp_path / "xdg" / "assay"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
        assert user_cache_dir() == Path.home() / ".cache" / "assay"
    assert default_spool_root() == user_cache_dir() / "spool"
    a = spool_directory(tmp_path, "http://a:4318/v1/traces")
    assert a == spool_directory(tmp_path, "http://a:4318/v1/traces")
    assert a != spool_directory(tmp_path, "http://b:4318/v1/traces")
    assert a.parent == tmp_path and len(a.name) == 16


def test_the_directory_says_what_it_is_for_and_is_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=1 << 20, target="https://h:4318/v1/traces")
    spool.open()
    assert (tmp_path / "s" / "target").read_text() == "https://h:4318/v1/traces\n"
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == oct(0o700)


def test_a_directory_removed_under_a_live_spool_is_made_again(tmp_path: Path) -> None:
    import shutil

    spool = Spool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=64)
    spool.append(b"x" * 100, 1)  # seals its segment at once
    shutil.rmtree(tmp_path / "s")
    spool.append(b"after", 1)
    assert segments(tmp_path / "s")


def test_a_record_out_for_replay_when_the_spool_closes_stays_for_the_next_owner(
        tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    first.append(b"only", 2)
    record = first.next_record()
    assert record is not None
    first.close()
    assert first.ack(record) is False, "too late: not counted as delivered"
    second = Spool(tmp_path, max_bytes=1 << 20)
    assert second.claim() == 2
    assert drain(second) == [b"only"]
