"""The streamed archives a bundle downloads as: their announced length exact, readable by zipfile/tarfile and by
Info-ZIP's unzip, CRCs right, ZIP64 records right (forced on small members: a real 4 GiB member takes minutes)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.model_files.archives import Member, tar_stream, zip_stream

WHEN = datetime(2026, 12, 4, 21, 30, 12, tzinfo=UTC)
FILES = [
    ("model.onnx", b"graph bytes" * 100),
    ("weights/model.onnx.data", bytes(range(256)) * 5000),
    ("empty.bin", b""),
]


def _members(files: list[tuple[str, bytes]], chunk: int = 1000) -> list[Member]:
    return [
        Member(name, len(data), lambda data=data: (data[i : i + chunk] for i in range(0, len(data), chunk)))
        for name, data in files
    ]


@pytest.mark.parametrize("zip64_from", [0xFFFFFFFF, 1, 3000], ids=["plain", "all-zip64", "some-zip64"])
def test_a_streamed_zip_is_a_valid_zip_of_exactly_the_announced_length(tmp_path: Path, zip64_from: int) -> None:
    chunks, length = zip_stream(_members(FILES), WHEN, zip64_from=zip64_from)
    raw = b"".join(chunks)
    assert len(raw) == length
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        assert z.testzip() is None  # every CRC checked
        assert [(i.filename, z.read(i)) for i in z.infolist()] == FILES
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert z.infolist()[0].date_time == (2026, 12, 4, 21, 30, 12)
    if shutil.which("unzip"):  # another implementation than the one the writer was checked against
        (tmp_path / "b.zip").write_bytes(raw)
        run = subprocess.run(["unzip", "-t", str(tmp_path / "b.zip")], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "No errors detected" in run.stdout, run.stdout + run.stderr


def test_a_streamed_tar_is_a_valid_tar_of_exactly_the_announced_length() -> None:
    chunks, length = tar_stream(_members(FILES), WHEN)
    raw = b"".join(chunks)
    assert len(raw) == length
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        assert [(m.name, t.extractfile(m).read()) for m in t] == FILES  # type: ignore[union-attr]


def test_a_member_that_is_not_its_recorded_size_stops_the_stream() -> None:
    short = [Member("model.onnx", 10, lambda: iter([b"12345"]))]
    long = [Member("model.onnx", 3, lambda: iter([b"12345"]))]
    for members in (short, long):
        for stream in (zip_stream, tar_stream):
            chunks, _ = stream(members, WHEN)
            with pytest.raises(OSError, match="recorded size"):
                b"".join(chunks)


@pytest.mark.parametrize("name", ["model.onnx.data", "weights/" + "w" * 150 + ".bin"], ids=["short", "long-name"])
def test_data_parts_tar_rewrites_each_header_in_place(tmp_path: Path, name: str) -> None:
    """A data part's header is written before its size is known and rewritten after: its length must not depend on
    the size (GNU: base-256 past 8 GiB), also for a name over 100 characters (a long-name entry before it)."""
    from service.upload_files import DataTar

    for size in (0, 1, 8 << 30, 1 << 40):
        info = tarfile.TarInfo(name)
        info.size = size
        assert len(info.tobuf(format=tarfile.GNU_FORMAT)) == len(tarfile.TarInfo(name).tobuf(format=tarfile.GNU_FORMAT))
    tar = DataTar(tmp_path / "parts.tar")
    tar.begin(name)
    for chunk in (b"a" * 700, b"b" * 5):
        tar.write(chunk)
    tar.end()
    (tmp_path / "g.onnx").write_bytes(b"graph")
    with tarfile.open(tar.finish(tmp_path / "g.onnx", "model.onnx")) as t:
        assert [(m.name, t.extractfile(m).read()) for m in t] == [
            (name, b"a" * 700 + b"b" * 5),
            ("model.onnx", b"graph"),
        ]  # type: ignore[union-attr]
