"""Models with external data and the archives that carry them (good and hostile), for the bundle tests."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import onnx
from onnx import TensorProto

from tests import onnx_models


def with_external_data(folder: Path, model: onnx.ModelProto | None = None, data: str = "model.onnx.data") -> Path:
    """`folder` holding model.onnx and its weights in `data` (every initializer external); returns the folder."""
    (folder / data).parent.mkdir(parents=True, exist_ok=True)
    model = model or onnx_models.mlp_model()
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location=data, size_threshold=0)
    return folder


def files_of(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def tar_of(out: Path, members: list[tuple[str, bytes]], extra: list[tarfile.TarInfo] | None = None) -> Path:
    """A tar of (name, bytes) regular files, then `extra` header-only members (links, devices)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for info in extra or []:
            t.addfile(info)
    return out


def zip_of(out: Path, members: list[tuple[str, bytes]], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            z.writestr(info, target)
    return out


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def zip_declaring_less(out: Path, name: str, data: bytes, declared: int) -> Path:
    """A zip whose member inflates to more bytes than its headers declare (`declared`)."""
    zip_of(out, [(name, data)])
    raw = bytearray(out.read_bytes())
    for signature, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.index(signature)
        raw[i + at : i + at + 4] = declared.to_bytes(4, "little")
    out.write_bytes(bytes(raw))
    return out


def model_with_location(location: str) -> onnx.ModelProto:
    """The MLP with its first weight's external location set to `location` (the data not written)."""
    model = onnx_models.mlp_model()
    w = model.graph.initializer[0]
    raw = w.raw_data or onnx.numpy_helper.to_array(w).tobytes()
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return model
