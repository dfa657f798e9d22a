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
