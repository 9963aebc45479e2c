"""Reading ZIP-based uploads (.docx, and any archive format added later) under limits.

A decompression bomb is a small file that inflates to gigabytes, or a central directory of
millions of entries. Before :mod:`zipfile` builds its list of entries, the end-of-central-
directory record is read to bound the entry count and the directory's size; then each entry
that is read at all is inflated as a stream, counting what comes out, and refused as soon as
the total inflated size or an entry's compression ratio passes its limit. Entries that are
never read (images, embedded packages, nested archives) are never inflated, so their
declared sizes cost nothing. A refusal is an :class:`ArchiveRejected` with the HTTP status
to answer (413 too large, 422 malformed or a bomb).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 65_535
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits on what reading one archive may cost."""

    max_entries: int = 10_000
    """Entries in the central directory (a .docx has tens; one with many images hundreds)."""
    max_inflated_bytes: int = 32 * 1024 * 1024
    """Bytes inflated from all the entries read, together."""
    max_ratio: float = 100.0
    """Inflated to compressed size of one entry (ordinary XML compresses 5-30 times)."""
    ratio_floor_bytes: int = 256 * 1024
    """The ratio is checked once an entry has inflated this much (tiny parts compress well)."""


class ArchiveRejected(Exception):
    """An archive refused by its limits or unreadable: ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _directory_record(stream: IO[bytes]) -> tuple[int, int]:
    """(entries, central directory bytes) from the end-of-central-directory record."""
    stream.seek(0, 2)
    size = stream.tell()
    tail_start = max(0, size - _EOCD_SIZE - _MAX_COMMENT)
    stream.seek(tail_start)
    tail = stream.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        raise ArchiveRejected(422, "is not a readable ZIP archive (no end of central directory)")
    _, _, _, _, entries, directory_bytes, _, _ = struct.unpack("<4s4H2LH", tail[at : at + 22])
    return entries, directory_bytes


class LimitedArchive:
    """An open archive whose reads count against one set of limits."""

    def __init__(self, archive: zipfile.ZipFile, limits: ArchiveLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.inflated = 0

    def names(self) -> set[str]:
        return set(self.archive.namelist())

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A binary stream of one entry that raises :class:`ArchiveRejected` mid-read."""
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise ArchiveRejected(422, f"has no part '{name}'") from None
        if self.inflated + info.file_size > self.limits.max_inflated_bytes:
            raise ArchiveRejected(413, self._too_large())
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveRejected(422, f"has part '{name}' in an unsupported compression")
        if info.flag_bits & 0x1:
            raise ArchiveRejected(422, f"has an encrypted part '{name}'")
        yield _EntryReader(self, info)  # type: ignore[misc]

    def read(self, name: str) -> bytes:
        """One entry whole (for small parts: relationships, properties)."""
        with self.open(name) as stream:
            return stream.read()

    def _too_large(self) -> str:
        return f"inflates to more than {self.limits.max_inflated_bytes} bytes"


class _EntryReader:
    """A file-like reader that inflates one entry itself, chunk by chunk, counting the
    compressed bytes it consumed and the bytes it produced: the ratio is exact at every
    step (zipfile's reader reads compressed data ahead), and the CRC-32 and the declared
    size are checked at the end."""

    def __init__(self, owner: LimitedArchive, info: zipfile.ZipInfo) -> None:
        self.owner = owner
        self.info = info
        fp = owner.archive.fp
        if fp is None:
            raise ArchiveRejected(422, "is closed")
        self.fp = fp
        fp.seek(info.header_offset)
        header = fp.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise ArchiveRejected(422, f"has a broken local header for '{info.filename}'")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        self.position = info.header_offset + 30 + name_length + extra_length
        self.compressed_left = info.compress_size
        self.inflater = (
            zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        )
        self.pending = b""
        self.consumed = 0
        self.produced = 0
        self.crc = 0
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK_BYTES):
                parts.append(chunk)
            return b"".join(parts)
        size = min(max(size, 1), CHUNK_BYTES)
        while not self.finished:
            chunk = self._next(size)
            if chunk:
                return chunk
        return b""

    def _next(self, size: int) -> bytes:
        if not self.pending and self.compressed_left > 0:
            self.fp.seek(self.position)
            self.pending = self.fp.read(min(CHUNK_BYTES // 4, self.compressed_left))
            if not self.pending:
                raise ArchiveRejected(422, f"is truncated in part '{self.info.filename}'")
            self.position += len(self.pending)
            self.compressed_left -= len(self.pending)
        if self.inflater is None:
            chunk, self.pending = self.pending[:size], self.pending[size:]
            self.consumed += len(chunk)
        else:
            before = len(self.pending)
            try:
                chunk = self.inflater.decompress(self.pending, size)
            except zlib.error as error:
                raise ArchiveRejected(
                    422, f"has an unreadable part '{self.info.filename}' ({error})"
                ) from None
            self.pending = self.inflater.unconsumed_tail
            self.consumed += before - len(self.pending)
        self._count(chunk)
        if not self.pending and self.compressed_left == 0 and not chunk:
            self._finish()
        return chunk

    def _count(self, chunk: bytes) -> None:
        limits = self.owner.limits
        self.produced += len(chunk)
        self.owner.inflated += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)
        if self.owner.inflated > limits.max_inflated_bytes:
            raise ArchiveRejected(413, self.owner._too_large())
        if self.produced > self.info.file_size:
            raise ArchiveRejected(
                422, f"has an unreadable part '{self.info.filename}' (longer than declared)"
            )
        ratio = self.produced / max(self.consumed, 1)
        if self.produced >= limits.ratio_floor_bytes and ratio > limits.max_ratio:
            raise ArchiveRejected(
                422,
                f"is a decompression bomb: part '{self.info.filename}' inflates more than "
                f"{limits.max_ratio:g} times its compressed size",
            )

    def _finish(self) -> None:
        self.finished = True
        if self.produced != self.info.file_size or self.crc != self.info.CRC:
            raise ArchiveRejected(
                422, f"has an unreadable part '{self.info.filename}' (bad size or CRC-32)"
            )


@contextmanager
def open_archive(stream: IO[bytes], limits: ArchiveLimits) -> Iterator[LimitedArchive]:
    """The archive in ``stream`` (seekable), its entry count and directory checked first."""
    try:
        entries, directory_bytes = _directory_record(stream)
    except OSError as error:
        raise ArchiveRejected(422, f"is not a readable ZIP archive ({error})") from None
    # 0xFFFF marks a ZIP64 directory: more entries than any document package needs.
    if entries > limits.max_entries or entries == 0xFFFF:
        raise ArchiveRejected(413, f"has more than {limits.max_entries} entries")
    # A central directory entry is 46 bytes plus its name, extra field and comment.
    if directory_bytes > limits.max_entries * 1024:
        raise ArchiveRejected(413, f"has a central directory of {directory_bytes} bytes")
    stream.seek(0)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise ArchiveRejected(422, f"is not a readable ZIP archive ({error})") from None
    with archive:
        if len(archive.infolist()) > limits.max_entries:
            raise ArchiveRejected(413, f"has more than {limits.max_entries} entries")
        yield LimitedArchive(archive, limits)
