"""A model uploaded as its .onnx file plus named data files (multipart `file` + one `data` part per data file),
instead of one archive: the data parts stream into one tar as they arrive, the .onnx file is added to it at the
end, and from there the upload is an archive like any other (engine.bundle.unpack checks every member, the
locations, the sizes and the counts; nothing here decides what a valid bundle is).

Each part's tar header is written before its bytes with size 0 and rewritten with the size once the part ended:
GNU headers, whose length depends on the name only (a size past 8 GiB is written base-256 in the same field).
"""

from __future__ import annotations

import shutil
import tarfile
import time
from pathlib import Path
from typing import IO

from engine.bundle import archive_kind, safe_name
from engine.core.errors import EngineError


def data_name(raw: str) -> str:
    """A data part's file name as the model's `location` names it (a relative path: 'weights/all.bin' is fine);
    ValueError saying what is wrong with it."""
    try:
        name = safe_name(raw)
    except EngineError as exc:
        raise ValueError(exc.detail.replace("archive member", "data file")) from None
    if name.endswith(".onnx"):
        raise ValueError(
            f"data file {name!r} is an .onnx file: send the model as the 'file' part, data files as 'data'"
        )
    return name


class DataTar:
    """The data parts, one tar member each, written while they stream."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: list[str] = []
        self.bytes = 0
        self._out: IO[bytes] = open(path, "xb")  # noqa: SIM115  (closed by finish/close)
        self._info: tarfile.TarInfo | None = None
        self._at = self._header_len = 0
        self.finished = False

    def _header(self, info: tarfile.TarInfo) -> bytes:
        return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")

    def begin(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.mode, info.mtime, info.size = 0o644, int(time.time()), 0
        header = self._header(info)
        self._info, self._at, self._header_len = info, self._out.tell(), len(header)
        self._out.write(header)
        self.names.append(name)

    def write(self, chunk: bytes) -> None:
        assert self._info is not None
        self._info.size += len(chunk)
        self.bytes += len(chunk)
        self._out.write(chunk)

    def end(self) -> None:
        info, self._info = self._info, None
        assert info is not None
        header = self._header(info)
        assert len(header) == self._header_len, "a GNU header's length depends on the name only"
        end = self._out.tell()
        self._out.seek(self._at)
        self._out.write(header)
        self._out.seek(end)
        self._out.write(b"\0" * (-info.size % 512))

    def finish(self, graph: Path, graph_name: str) -> Path:
        """The .onnx file added as the archive's last member; the archive closed. Returns its path."""
        self.begin(graph_name)
        with open(graph, "rb") as f:
            shutil.copyfileobj(f, _Counter(self), 1 << 20)
        self.end()
        self._out.write(b"\0" * 1024)
        self._out.close()
        self.finished = True
        return self.path

    def close(self) -> None:
        self._out.close()


class _Counter:
    def __init__(self, tar: DataTar) -> None:
        self.tar = tar

    def write(self, chunk: bytes) -> int:
        self.tar.write(chunk)
        return len(chunk)


def gather(data: DataTar, graph: Path, filename: str | None) -> Path:
    """The `file` part (the .onnx file, removed here) added to the data parts' tar, closed; its path. ValueError
    when the file part is an archive itself (it would carry its own data files)."""
    try:
        with open(graph, "rb") as f:
            if archive_kind(f.read(512)) is not None:
                raise ValueError("'data' parts go with an .onnx file, not with an archive (which holds its data files)")
        name = filename if filename and filename.endswith(".onnx") else "model.onnx"
        return data.finish(graph, name)
    finally:
        graph.unlink(missing_ok=True)
