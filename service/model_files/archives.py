"""A bundle downloaded as it was uploaded: its parts streamed as one tar or zip archive, each part read from the
store (and verified) only while it is sent, the archive's exact length known before its first byte.

The zip is written as a streaming writer must: members stored (not deflated: weights barely compress), each
member's CRC-32 in a data descriptor after its bytes (flag bit 3), the central directory at the end with the CRCs;
ZIP64 records wherever a size or an offset reaches 4 GiB (PKWARE APPNOTE 6.3, sections 4.3.9 and 4.5.3).
"""

from __future__ import annotations

import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

ZIP64_FROM = 0xFFFFFFFF  # a 4-byte size or offset field holding this value means "see the ZIP64 record"


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    chunks: Callable[[], Iterator[bytes]]  # the member's bytes, read when it is sent


def tar_stream(members: list[Member], mtime: datetime) -> tuple[Iterator[bytes], int]:
    """An uncompressed POSIX (pax) tar and its length."""
    headers = []
    for m in members:
        info = tarfile.TarInfo(m.name)
        info.size, info.mode, info.mtime = m.size, 0o644, int(mtime.timestamp())
        headers.append(info.tobuf(format=tarfile.PAX_FORMAT))
    pads = [b"\0" * (-m.size % 512) for m in members]
    length = sum(len(h) + m.size + len(pad) for h, m, pad in zip(headers, members, pads, strict=True)) + 1024

    def chunks() -> Iterator[bytes]:
        for header, m, pad in zip(headers, members, pads, strict=True):
            yield header
            yield from _exactly(m)
            yield pad
        yield b"\0" * 1024

    return chunks(), length


def _dos_time(when: datetime) -> tuple[int, int]:
    year = min(max(when.year, 1980), 2107)
    return (when.hour << 11) | (when.minute << 5) | (when.second // 2), ((year - 1980) << 9) | (
        when.month << 5
    ) | when.day


def _local_header(name: bytes, size: int, stamp: tuple[int, int], zip64_from: int) -> bytes:
    big = size >= zip64_from
    extra = struct.pack("<HHQQ", 1, 16, 0, 0) if big else b""  # ZIP64 sizes follow in the descriptor
    marker = 0xFFFFFFFF if big else 0
    return (
        struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45 if big else 20, 0x0808, 0, *stamp, 0, marker, marker, len(name), len(extra)
        )
        + name
        + extra
    )


def _descriptor(crc: int, size: int, zip64_from: int) -> bytes:
    if size >= zip64_from:
        return struct.pack("<IIQQ", 0x08074B50, crc, size, size)
    return struct.pack("<IIII", 0x08074B50, crc, size, size)


def _central(name: bytes, size: int, crc: int, offset: int, stamp: tuple[int, int], zip64_from: int) -> bytes:
    wide = [v for v in (size, size, offset) if v >= zip64_from]  # uncompressed, compressed, offset: in this order
    extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
    small = [v if v < zip64_from else 0xFFFFFFFF for v in (size, size, offset)]
    version = 45 if wide else 20
    head = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50, (3 << 8) | version, version, 0x0808, 0, *stamp, crc, small[0], small[1],
        len(name), len(extra), 0, 0, 0, 0o100644 << 16, small[2],
    )  # fmt: skip
    return head + name + extra


def _end(count: int, directory_size: int, directory_offset: int, zip64_from: int) -> bytes:
    """The end of central directory record, after a ZIP64 end record and its locator when a field overflows."""
    wide = count >= 0xFFFF or directory_size >= zip64_from or directory_offset >= zip64_from
    out = b""
    if wide:
        at = directory_offset + directory_size
        out += struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, count, count, directory_size, directory_offset
        )
        out += struct.pack("<IIQI", 0x07064B50, 0, at, 1)
    return out + struct.pack(
        "<IHHHHIIH",
        0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
        0xFFFFFFFF if wide else directory_size, 0xFFFFFFFF if wide else directory_offset, 0,
    )  # fmt: skip


def zip_stream(members: list[Member], mtime: datetime, zip64_from: int = ZIP64_FROM) -> tuple[Iterator[bytes], int]:
    """A stored (uncompressed) zip and its length; `zip64_from` lower only to test the ZIP64 records."""
    stamp = _dos_time(mtime)
    names = [m.name.encode() for m in members]
    offsets, at = [], 0
    for name, m in zip(names, members, strict=True):
        offsets.append(at)
        at += len(_local_header(name, m.size, stamp, zip64_from)) + m.size + len(_descriptor(0, m.size, zip64_from))
    directory = sum(
        len(_central(name, m.size, 0, off, stamp, zip64_from))
        for name, m, off in zip(names, members, offsets, strict=True)
    )
    length = at + directory + len(_end(len(members), directory, at, zip64_from))

    def chunks() -> Iterator[bytes]:
        crcs = []
        for name, m in zip(names, members, strict=True):
            yield _local_header(name, m.size, stamp, zip64_from)
            crc = 0
            for chunk in _exactly(m):
                crc = zlib.crc32(chunk, crc)
                yield chunk
            crcs.append(crc)
            yield _descriptor(crc, m.size, zip64_from)
        central = b"".join(
            _central(name, m.size, crc, off, stamp, zip64_from)
            for name, m, crc, off in zip(names, members, crcs, offsets, strict=True)
        )
        yield central + _end(len(members), len(central), at, zip64_from)

    return chunks(), length


def _exactly(m: Member) -> Iterator[bytes]:
    """The member's chunks, refusing to send more or fewer bytes than the length already announced."""
    sent = 0
    for chunk in m.chunks():
        sent += len(chunk)
        if sent > m.size:
            raise OSError(f"{m.name}: more bytes than its recorded size {m.size}")
        yield chunk
    if sent != m.size:
        raise OSError(f"{m.name}: {sent} bytes, its recorded size is {m.size}")
