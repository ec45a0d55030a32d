"""The disk spool: span batches that an exporter could not deliver in time, kept in
append-only segment files until they are delivered, by this process or a later one.

One spool directory serves one destination (:func:`spool_directory` names it after
a hash of the exporter's endpoint). It holds::

    01764080000000000000-4242-1a2b3c4d.seg      a segment: a header, then records
    01764080000000000000-4242-1a2b3c4d.seg.ack  how far that segment is delivered
    target                                      the destination, for people only

Segment format (integers little-endian)::

    header   8 bytes     b"ASSAYSP" followed by the format version, 1
    record   12 bytes    payload length (u32), span count (u32),
                         CRC-32 of the span count's 4 bytes followed by the payload (u32)
             n bytes     payload: an OTLP ``ExportTraceServiceRequest`` in protobuf,
                         uncompressed (:func:`encode_spans`)

Records are only ever appended, each with one ``write`` call, so a crash can
leave at most a torn last record; it fails its length or CRC check when the
segment is read again, and it is skipped and counted (``torn_records``).
Segment names begin with the creation time in nanoseconds, so sorting names
sorts segments oldest first; records are replayed in that order.

Ownership: a process owns a segment while it holds an exclusive ``flock`` on
it: the segment it appends to, and segments left by processes that are gone,
which it claims in order to replay them. The operating system releases the
lock when its holder dies, even by ``SIGKILL``, so a segment is never replayed
by two processes at once and never stays owned by a dead one. A new segment is
created under a temporary name, locked, and only then renamed into view; a
claimer checks, once it holds the lock, that the name still refers to the file
it locked (the owner unlinks a delivered segment before it lets go of it).

Delivery is at least once: after each delivered record the owner writes the
segment's delivered offset to ``<segment>.ack`` (atomically, by rename). A
crash between a delivery and that write makes the next owner send that one
record again.

Durability: a record is written to the operating system with one ``write``;
a process killed at any point loses nothing that was written. Segments are
``fsync``-ed when they are sealed (full) and, with the directory, when the
spool is closed, so a power failure can lose the records appended since;
``fsync_appends=True`` syncs every record as well, at the cost of one disk
flush each.

Bound: the segments one process holds (its own and those it claimed) stay
within ``max_bytes``: before a record is appended, the oldest segments are
deleted until it fits, and their spans are counted in ``evicted_spans``. A
record larger than the bound is refused (:class:`SpoolFull`). The segment being
replayed is not deleted under the replayer's feet, so the bound can be exceeded
by at most that one segment.

The spool directory is created with mode 0700 and its files 0600: they hold
span data (after ``redact``) and nothing else; no header or credential of the
exporter is written.

Locking uses ``fcntl.flock`` (``msvcrt.locking`` on Windows); the directory
must be on a local file system.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import secrets
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolRecord",
    "decode_spans",
    "default_spool_root",
    "encode_spans",
    "spool_directory",
    "user_cache_dir",
]

#: The default bound of one process's spool, in bytes.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

MAGIC = b"ASSAYSP\x01"
_RECORD = struct.Struct("<III")
_COUNT = struct.Struct("<I")
#: Larger payload lengths are taken for garbage (a torn header), never allocated.
MAX_RECORD_BYTES = 1 << 30
_SEGMENT_SUFFIX = ".seg"
_ACK_SUFFIX = ".ack"
_NEW_SUFFIX = ".new"
_STALE_S = 60.0


class SpoolError(Exception):
    """The spool cannot take a record (closed, or an I/O error)."""


class SpoolFull(SpoolError):
    """A record larger than the spool's bound."""


class SpoolRecord(NamedTuple):
    """One record handed out for replay; give it back with ``ack`` or ``release``."""

    segment: str
    offset: int
    end: int
    span_count: int
    payload: bytes


# -- where spools live ------------------------------------------------------------------


def user_cache_dir() -> Path:
    """assay's directory in the user's cache: ``$XDG_CACHE_HOME/assay`` (``~/.cache/assay``)
    on Linux and other Unix systems, ``~/Library/Caches/assay`` on macOS,
    ``%LOCALAPPDATA%\\assay\\Cache`` on Windows; under the temporary directory when
    there is no home directory."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return Path(tempfile.gettempdir()) / f"assay-cache-{_user_tag()}"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
        return base / "assay" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "assay"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache"
    return base / "assay"


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        return str(getuid())
    return os.environ.get("USERNAME", "user")


def default_spool_root() -> Path:
    """Where spool directories go unless configured: ``<user cache dir>/spool``."""
    return user_cache_dir() / "spool"


def spool_directory(root: str | os.PathLike[str], target: str) -> Path:
    """The spool directory of one destination under ``root``: a hash of ``target``
    (an endpoint URL), so that every process sending to it shares the spool."""
    digest = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(root) / digest


# -- the span codec ---------------------------------------------------------------------


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """A spool payload: the OTLP request of ``spans``, without the derived conventions
    (the exporter adds them again when the spans are replayed)."""
    from assay.exporters._otlp_wire import encode_request

    data: bytes = encode_request(spans, conventions=False).SerializeToString()
    return data


def decode_spans(payload: bytes) -> list[ReadableSpan]:
    """The spans of a spool payload, exactly as they were encoded.

    Raises:
        google.protobuf.message.DecodeError: the payload is not an OTLP request.
    """
    from assay.exporters._otlp_wire import decode_request

    return decode_request(payload, raw=True)


# -- file locks -------------------------------------------------------------------------

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _read_at(fd: int, size: int, offset: int) -> bytes:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)

    _UNLINK_OPEN_FILES = False
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _read_at(fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    _UNLINK_OPEN_FILES = True


def _read_exactly(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = _read_at(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _crc(count: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_COUNT.pack(count)))


# -- segments ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Segment:
    """A segment file this process holds the lock of."""

    name: str
    path: Path
    fd: int
    size: int  # bytes in the file
    delivered: int  # offset up to which the records are delivered (or given up)
    active: bool  # this process appends to it
    records: collections.deque[tuple[int, int, int]] = field(
        default_factory=collections.deque)  # (offset, end, span count), not yet handed out
    in_flight: SpoolRecord | None = None

    @property
    def ack_path(self) -> Path:
        return self.path.with_name(self.name + _ACK_SUFFIX)

    @property
    def pending_spans(self) -> int:
        spans = sum(count for _, _, count in self.records)
        return spans + (self.in_flight.span_count if self.in_flight is not None else 0)

    @property
    def exhausted(self) -> bool:
        return not self.records and self.in_flight is None


class Spool:
    """A bounded spool of span batches in one directory, safe to share between processes.

    Args:
        directory: the spool directory (created on first use).
        max_bytes: the bound of the segments this process holds, in bytes.
        segment_bytes: a segment is sealed and a new one started past this size
            (default: a sixteenth of ``max_bytes``, between 64 KiB and 8 MiB).
        fsync_appends: ``fsync`` after every record, not only when a segment is
            sealed or the spool closed.
        target: the destination as it may be shown (no password), written to the
            directory's ``target`` file for people who wonder what the directory is.

    Every method is thread-safe. Nothing touches the disk before the first
    :meth:`open`, :meth:`append` or :meth:`claim`.

    Counters (since this object was created): ``written_spans`` appended,
    ``replayed_spans`` delivered (acknowledged), ``discarded_spans`` given up
    (acknowledged as undeliverable), ``evicted_spans`` deleted to keep within the
    bound, ``inherited_spans`` found in segments claimed from other processes,
    ``torn_records`` skipped as torn or corrupt and ``unreadable_spans`` lost with
    them when they were found after the claim. Gauges: ``pending_spans`` and
    ``bytes`` held now. At any time::

        written + inherited == replayed + discarded + evicted + unreadable + pending
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
                 segment_bytes: int | None = None, fsync_appends: bool = False,
                 target: str | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"Spool(max_bytes={max_bytes!r}): expected a positive integer")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(max(max_bytes // 16, 64 * 1024),
                                                  8 * 1024 * 1024)
        self.fsync_appends = fsync_appends
        self.target = target
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._opened = False
        self._closed = False
        self.written_spans = 0
        self.replayed_spans = 0
        self.discarded_spans = 0
        self.unreadable_spans = 0
        self.evicted_spans = 0
        self.inherited_spans = 0
        self.torn_records = 0
        self.pending_spans = 0
        self.bytes = 0

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r})"

    # -- opening and claiming -----------------------------------------------------------
    def open(self) -> None:
        """Create the directory if need be and claim the segments no live process holds.

        Raises:
            OSError: the directory cannot be created or read.
        """
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self._closed:
            raise SpoolError(f"{self!r} is closed")
        if self._opened:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._opened = True
        if self.target is not None:
            note = self.directory / "target"
            if not note.exists():
                with contextlib.suppress(OSError):
                    note.write_text(self.target + "\n")
        self._claim()

    def has_segments(self) -> bool:
        """Whether the directory holds any segment (a quick look: nothing is locked)."""
        try:
            with os.scandir(self.directory) as entries:
                return any(e.name.endswith(_SEGMENT_SUFFIX) for e in entries)
        except OSError:
            return False

    def claim(self) -> int:
        """Claim the segments left by processes that are gone; returns their pending spans.

        Raises:
            OSError: the directory cannot be read.
        """
        with self._lock:
            if self._closed:
                return 0
            before = self.inherited_spans
            if not self._opened:
                self._open()
            else:
                self._claim()
            return self.inherited_spans - before

    def _claim(self) -> None:
        held = {seg.name for seg in self._segments}
        with os.scandir(self.directory) as it:
            names = sorted(e.name for e in it)
        segments = set()
        for name in names:
            if name.endswith(_SEGMENT_SUFFIX):
                segments.add(name)
                if name not in held:
                    self._claim_one(name)
        for name in names:
            self._tidy(name, segments)
        self._segments.sort(key=lambda s: s.name)
        self._make_room(0)

    def _claim_one(self, name: str) -> None:
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return
        try:
            if not _try_lock(fd):
                os.close(fd)
                return
            opened, current = os.fstat(fd), os.stat(path)
        except OSError:
            os.close(fd)
            return
        if (opened.st_ino, opened.st_dev) != (current.st_ino, current.st_dev) or (
                opened.st_nlink == 0):
            os.close(fd)  # delivered and unlinked by its owner before we held the lock
            return
        segment = _Segment(name, path, fd, opened.st_size, len(MAGIC), active=False)
        self._scan(segment)
        if segment.records:
            self._segments.append(segment)
            spans = segment.pending_spans
            self.inherited_spans += spans
            self.pending_spans += spans
            self.bytes += segment.size
        else:
            self._delete(segment)

    def _scan(self, segment: _Segment) -> None:
        """Read the records of a claimed segment from its delivered offset on."""
        fd = segment.fd
        if _read_exactly(fd, len(MAGIC), 0) != MAGIC:
            self.torn_records += 1
            return
        offset = len(MAGIC)
        with contextlib.suppress(OSError, ValueError):
            offset = max(offset, int(segment.ack_path.read_bytes().strip() or b"0"))
        segment.delivered = offset
        size = segment.size
        while offset < size:
            header = _read_exactly(fd, _RECORD.size, offset)
            if len(header) < _RECORD.size:
                self.torn_records += 1
                return
            length, count, crc = _RECORD.unpack(header)
            end = offset + _RECORD.size + length
            if length > MAX_RECORD_BYTES or end > size:
                self.torn_records += 1
                return
            payload = _read_exactly(fd, length, offset + _RECORD.size)
            if len(payload) < length or _crc(count, payload) != crc:
                self.torn_records += 1
                return
            segment.records.append((offset, end, count))
            offset = end

    def _tidy(self, name: str, segments: set[str]) -> None:
        """Remove what a crashed process can leave behind: an acknowledgement whose
        segment is gone, a temporary acknowledgement, a segment never renamed."""
        path = self.directory / name
        if name.endswith(_SEGMENT_SUFFIX + _ACK_SUFFIX):
            if name[:-len(_ACK_SUFFIX)] not in segments:
                with contextlib.suppress(OSError):
                    path.unlink()
        elif name.endswith(".tmp") or name.endswith(_NEW_SUFFIX):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > _STALE_S:
                    path.unlink()

    # -- appending ----------------------------------------------------------------------
    def append(self, payload: bytes, count: int) -> None:
        """Append one record of ``count`` spans, deleting the oldest segments if need be.

        Raises:
            SpoolFull: the record is larger than the bound.
            SpoolError: the spool is closed, or the record could not be written
                (the error is chained).
        """
        size = _RECORD.size + len(payload)
        if size + len(MAGIC) > self.max_bytes or len(payload) > MAX_RECORD_BYTES:
            raise SpoolFull(f"a record of {size} bytes does not fit in {self!r} "
                            f"(max_bytes={self.max_bytes})")
        record = _RECORD.pack(len(payload), count, _crc(count, payload)) + payload
        with self._lock:
            try:
                self._open()
                self._make_room(size + (0 if self._active is not None else len(MAGIC)))
                segment = self._active or self._new_segment()
                self._write(segment, record)
            except SpoolError:
                raise
            except OSError as exc:
                raise SpoolError(f"could not write to {self!r}: {exc}") from exc
            segment.records.append((segment.size, segment.size + len(record), count))
            segment.size += len(record)
            self.bytes += len(record)
            self.written_spans += count
            self.pending_spans += count
            if segment.size >= self.segment_bytes:
                self._seal(segment)

    def _write(self, segment: _Segment, data: bytes) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(segment.fd, view[written:])
            if self.fsync_appends:
                os.fsync(segment.fd)
        except OSError:
            with contextlib.suppress(OSError):  # keep the segment well formed
                os.ftruncate(segment.fd, segment.size)
            raise

    def _new_segment(self) -> _Segment:
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{_SEGMENT_SUFFIX}"
        path = self.directory / name
        staging = path.with_name(name + _NEW_SUFFIX)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND
        try:
            fd = os.open(staging, flags, 0o600)
        except FileNotFoundError:  # the directory was removed (a cache cleaner): again
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(staging, flags, 0o600)
        try:
            if not _try_lock(fd):  # nobody knows the file yet
                raise SpoolError(f"could not lock the new segment {staging}")
            os.write(fd, MAGIC)
            os.replace(staging, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                staging.unlink()
            raise
        segment = _Segment(name, path, fd, len(MAGIC), len(MAGIC), active=True)
        self._segments.append(segment)
        self._active = segment
        self.bytes += segment.size
        return segment

    def _seal(self, segment: _Segment) -> None:
        segment.active = False
        if self._active is segment:
            self._active = None
        with contextlib.suppress(OSError):
            os.fsync(segment.fd)

    def _make_room(self, size: int) -> None:
        while self.bytes + size > self.max_bytes:
            victim = next((s for s in self._segments if s.in_flight is None), None)
            if victim is None:
                return
            spans = victim.pending_spans
            self.evicted_spans += spans
            self.pending_spans -= spans
            self._delete(victim)

    # -- replaying ----------------------------------------------------------------------
    def next_record(self) -> SpoolRecord | None:
        """The oldest record not yet delivered, or ``None`` (also while one is out).

        A record whose bytes no longer pass their CRC is skipped with the rest of its
        segment, and counted in ``torn_records``.
        """
        with self._lock:
            if self._closed:
                return None
            for segment in self._segments:
                if segment.in_flight is not None:
                    return None
            for segment in list(self._segments):
                while segment.records:
                    offset, end, count = segment.records.popleft()
                    record = self._read_record(segment, offset, end, count)
                    if record is not None:
                        segment.in_flight = record
                        return record
                    self._give_up_rest(segment, count)
                if segment.exhausted and not segment.active:
                    self._delete(segment)
            return None

    def _read_record(self, segment: _Segment, offset: int, end: int,
                     count: int) -> SpoolRecord | None:
        try:
            data = _read_exactly(segment.fd, end - offset, offset)
        except OSError:
            return None
        if len(data) != end - offset:
            return None
        length, stored_count, crc = _RECORD.unpack_from(data)
        payload = data[_RECORD.size:]
        if stored_count != count or len(payload) != length or _crc(count, payload) != crc:
            return None
        return SpoolRecord(segment.name, offset, end, count, payload)

    def _give_up_rest(self, segment: _Segment, count: int) -> None:
        spans = count + sum(c for _, _, c in segment.records)
        segment.records.clear()
        self.torn_records += 1
        self.unreadable_spans += spans
        self.pending_spans -= spans
        segment.delivered = segment.size
        segment.active = False
        if self._active is segment:
            self._active = None

    def ack(self, record: SpoolRecord, *, delivered: bool = True) -> bool:
        """Done with ``record``: delivered, or (``delivered=False``) given up for good.

        Returns ``False`` when the record was no longer out (the spool was closed
        meanwhile): it stays in its segment for the next owner.
        """
        with self._lock:
            segment = self._find(record)
            if segment is None:
                return False
            segment.in_flight = None
            segment.delivered = record.end
            self.pending_spans -= record.span_count
            if delivered:
                self.replayed_spans += record.span_count
            else:
                self.discarded_spans += record.span_count
            if segment.records:
                self._write_ack(segment)
            else:
                self._delete(segment)
            return True

    def release(self, record: SpoolRecord) -> None:
        """Not delivered this time: ``record`` is handed out again by ``next_record``."""
        with self._lock:
            segment = self._find(record)
            if segment is None:
                return
            segment.in_flight = None
            segment.records.appendleft((record.offset, record.end, record.span_count))

    def _find(self, record: SpoolRecord) -> _Segment | None:
        for segment in self._segments:
            if segment.name == record.segment and segment.in_flight == record:
                return segment
        return None

    def _write_ack(self, segment: _Segment) -> None:
        staging = segment.path.with_name(f"{segment.name}{_ACK_SUFFIX}.{os.getpid()}.tmp")
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"%d\n" % segment.delivered)
            finally:
                os.close(fd)
            os.replace(staging, segment.ack_path)
        except OSError:
            # The segment's records will be delivered again by its next owner.
            with contextlib.suppress(OSError):
                staging.unlink()

    def _delete(self, segment: _Segment) -> None:
        """Forget a segment and remove its files (the segment first, while locked)."""
        if segment in self._segments:
            self._segments.remove(segment)
            self.bytes -= segment.size
        if self._active is segment:
            self._active = None
        if not _UNLINK_OPEN_FILES:  # pragma: no cover - Windows
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        with contextlib.suppress(OSError):
            segment.path.unlink()
        with contextlib.suppress(OSError):
            segment.ack_path.unlink()
        if _UNLINK_OPEN_FILES:
            with contextlib.suppress(OSError):
                os.close(segment.fd)

    # -- closing ------------------------------------------------------------------------
    def close(self) -> None:
        """Sync and let go of every segment (delivered ones are deleted); the files
        left are claimed by the next process that opens this directory. A record
        still out for replay stays undelivered."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for segment in list(self._segments):
                record = segment.in_flight
                if record is not None:  # not acknowledged: stays for the next owner
                    segment.in_flight = None
                    segment.records.appendleft((record.offset, record.end, record.span_count))
                if not segment.records:
                    self._delete(segment)
                    continue
                with contextlib.suppress(OSError):
                    os.fsync(segment.fd)
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
            self._segments.clear()
            self._active = None
            if self._opened and hasattr(os, "O_DIRECTORY"):
                with contextlib.suppress(OSError):
                    fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)

    @property
    def closed(self) -> bool:
        return self._closed

    def forked(self) -> Spool:
        """For a forked child: a fresh, unopened spool on the same directory.

        The child closes its copies of this spool's descriptors, which does not
        release the parent's locks (the parent's descriptors still hold them),
        and deletes nothing.
        """
        for segment in self._segments:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._segments = []
        self._active = None
        self._closed = True
        return Spool(self.directory, max_bytes=self.max_bytes, segment_bytes=self.segment_bytes,
                     fsync_appends=self.fsync_appends, target=self.target)

    def counters(self) -> dict[str, Any]:
        """The counters and gauges, read together."""
        with self._lock:
            return {
                "written_spans": self.written_spans,
                "replayed_spans": self.replayed_spans,
                "discarded_spans": self.discarded_spans,
                "unreadable_spans": self.unreadable_spans,
                "evicted_spans": self.evicted_spans,
                "inherited_spans": self.inherited_spans,
                "torn_records": self.torn_records,
                "pending_spans": self.pending_spans,
                "bytes": self.bytes,
            }
