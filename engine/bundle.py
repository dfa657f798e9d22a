"""A model with its external data, uploaded as one archive (.zip or .tar): checked member by member while it is
unpacked, never trusted.

ONNX keeps weights outside the .onnx file when the model passes protobuf's 2 GB limit; each such tensor names its
file (`location`, relative to the .onnx file's folder), an offset and a length. The onnx package's own loader
followed `../` and absolute locations (CVE-2022-25882, CVE-2024-27318), so nothing here calls it on a location
before `check_locations` has resolved every one inside the bundle.

Archive rules (each refusal names the member): regular files and folders only (no symbolic or hard links, devices,
FIFOs); relative names without `..`, backslashes, drive letters or NUL; no two members with the same name; at most
`max_members` members; no member over `max_member_bytes`, the total under `max_total_bytes`; a member's bytes as
many as its header declares (a zip member that inflates past its declared size is cut off and refused). Exactly
one `.onnx` file; its data files are the other members.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import onnx
from onnx import TensorProto

from engine.core.errors import EngineError, ErrorCode
from engine.inspect import ModelInfo, all_tensors, check_model, check_runtime, describe, load_untrusted

CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleLimits:
    max_members: int = 1000
    max_member_bytes: int = 64 << 30
    max_total_bytes: int = 64 << 30


@dataclass(frozen=True)
class Part:
    name: str  # relative POSIX path inside the bundle
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    root: Path
    graph: str  # the .onnx file's name inside the bundle
    parts: list[Part]  # every file, the .onnx first, then the data files by name

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def sha256(self) -> str:
        """The bundle's one digest: of its manifest (names, digests, sizes), so the same files make the same
        bundle whatever archive format or member order carried them."""
        return manifest_digest(self.graph, self.parts)


def manifest_digest(graph: str, parts: list[Part]) -> str:
    manifest = {"graph": graph, "parts": sorted([p.name, p.sha256, p.size] for p in parts)}
    return hashlib.sha256(json.dumps(manifest, separators=(",", ":")).encode()).hexdigest()


class NoSpace(Exception):  # noqa: N818
    """The disk the bundle is unpacked to has no room for the next member (the server's problem, not the user's)."""


SPARE_BYTES = 256 << 20  # left free on the disk after every write that checks for room


def require_room(folder: Path, needed: int, what: str) -> None:
    """Raise NoSpace unless `folder`'s disk keeps SPARE_BYTES free after `needed` more bytes."""
    free = shutil.disk_usage(folder).free
    if free < needed + SPARE_BYTES:
        raise NoSpace(f"no room for {what} ({needed:,} bytes; {free:,} bytes free, {SPARE_BYTES >> 20} MiB kept spare)")


def _refuse(detail: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_ARCHIVE, detail)


def archive_format(path: Path) -> str | None:
    """'zip', 'tar' or None (a plain file), from the bytes, not the name."""
    with open(path, "rb") as f:
        return archive_kind(f.read(512))


def archive_kind(head: bytes) -> str | None:
    """'zip', 'tar' or None from a file's first 512 bytes."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def zip_entries(path: Path) -> int:
    """The member count a zip's end-of-central-directory record declares (zip64 too); 0 when it has none (then
    zipfile refuses the file as damaged)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 12:
        return 0
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    if count == 0xFFFF:
        at64 = tail.rfind(b"PK\x06\x06", 0, at)
        if at64 >= 0 and len(tail) >= at64 + 40:
            count = int.from_bytes(tail[at64 + 32 : at64 + 40], "little")
    return count


def safe_name(raw: str) -> str:
    """A member name as a relative POSIX path inside the bundle, or a refusal saying what is wrong with it."""
    if "\x00" in raw or "\\" in raw:
        raise _refuse(f"archive member {raw!r}: NUL or backslash in its name")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise _refuse(f"archive member {raw!r} has an absolute path")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _refuse(f"archive member {raw!r} leaves the archive ('..')")
    if not parts:
        raise _refuse(f"archive member {raw!r} has no name")
    return "/".join(parts)


def _members(path: Path, fmt: str) -> Iterator[tuple[str, str, int, IO[bytes] | None]]:
    """(raw name, kind 'file' | 'dir' | what else it is, declared size, stream) per member, in archive order."""
    if fmt == "zip":
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    yield info.filename, "symbolic link", info.file_size, None
                elif info.is_dir():
                    yield info.filename, "dir", 0, None
                else:
                    with z.open(info) as stream:
                        yield info.filename, "file", info.file_size, stream
        return
    with tarfile.open(path, mode="r:*") as t:
        for member in t:
            kind = (
                "file" if member.isreg() else "dir" if member.isdir() else "symbolic link" if member.issym()
                else "hard link" if member.islnk() else "device or FIFO"
            )  # fmt: skip
            yield member.name, kind, member.size, t.extractfile(member) if kind == "file" else None


def unpack(path: Path, dest: Path, limits: BundleLimits) -> Bundle:
    """Unpack the archive at `path` into the empty folder `dest`, checking every member before and while it is
    written; returns the bundle (its files hashed). Raises EngineError(INVALID_ARCHIVE) naming the member."""
    fmt = archive_format(path)
    if fmt is None:
        raise _refuse("not a .zip or .tar archive")
    if fmt == "zip" and zip_entries(path) > limits.max_members:  # before zipfile reads the whole directory
        raise _refuse(f"the archive has more than {limits.max_members} members")
    seen: set[str] = set()
    parts: list[Part] = []
    total = count = 0
    try:
        for raw, kind, declared, stream in _members(path, fmt):
            count += 1
            if count > limits.max_members:
                raise _refuse(f"the archive has more than {limits.max_members} members")
            if kind not in ("file", "dir"):
                raise _refuse(f"archive member {raw!r} is a {kind}; only regular files and folders are accepted")
            name = safe_name(raw)
            if name in seen:
                raise _refuse(f"archive member {name!r} appears twice")
            seen.add(name)
            if kind == "dir":
                continue
            if declared > limits.max_member_bytes:
                raise _refuse(f"archive member {name!r} ({declared} bytes) is over {limits.max_member_bytes} bytes")
            total += declared
            if total > limits.max_total_bytes:
                raise _refuse(f"the archive unpacks to more than {limits.max_total_bytes} bytes")
            assert stream is not None
            require_room(dest, declared, f"unpacking {name!r}")
            parts.append(_write(stream, dest, name, declared))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc):
            raise _refuse(f"a member's bytes do not match its declared size or checksum ({exc})") from None
        raise _refuse(f"the archive is damaged or truncated ({type(exc).__name__}: {exc})") from None
    graphs = [p for p in parts if p.name.endswith(".onnx")]
    if len(graphs) != 1:
        found = ", ".join(repr(g.name) for g in graphs) or "none"
        hint = " (a PyTorch .pt/.pth checkpoint is a zip too: export it to ONNX first)" if not graphs else ""
        raise _refuse(f"the archive must hold exactly one .onnx file (found {found}){hint}")
    ordered = graphs + sorted((p for p in parts if p is not graphs[0]), key=lambda p: p.name)
    return Bundle(dest, graphs[0].name, ordered)


def _write(stream: IO[bytes], dest: Path, name: str, declared: int) -> Part:
    target = dest / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")  # noqa: SIM115  (closed below; never overwrites)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise _refuse(f"archive member {name!r} collides with another member's file or folder") from None
    digest, size = hashlib.sha256(), 0
    with out:
        while chunk := stream.read(min(CHUNK, declared - size + 1)):
            size += len(chunk)
            if size > declared:
                raise _refuse(f"archive member {name!r} holds more bytes than the {declared} it declares")
            digest.update(chunk)
            out.write(chunk)
    if size != declared:
        raise _refuse(f"archive member {name!r} holds {size} bytes, not the {declared} it declares")
    return Part(name, digest.hexdigest(), size)


def external_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, dict[str, str]]]:
    """(tensor name, its external_data entries) for every tensor stored outside the file, subgraphs included."""
    for name, tensor in all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            yield name, entries(tensor)


def entries(tensor: TensorProto) -> dict[str, str]:
    """A tensor's external_data entries (location, offset, length, ...) as a dict."""
    return {e.key: e.value for e in tensor.external_data}


def external_span(entries: dict[str, str], base: Path) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor whose .onnx file is in `base`; no length means to the end of
    the file. ValueError for a non-integer offset or length. Only for locations check_locations has accepted."""
    target = base / entries.get("location", "")
    offset, length = int(entries.get("offset", "0")), int(entries.get("length", "-1"))
    return target, offset, os.path.getsize(target) - offset if length < 0 else length


def check_locations(model: onnx.ModelProto, graph_path: Path, root: Path) -> int:
    """Every external tensor's file resolves inside `root` (relative, no '..', no link out), exists, and holds its
    offset + length. Returns the external bytes referenced. EngineError(INVALID_EXTERNAL_DATA) names the tensor
    and the location."""
    base, inside = graph_path.parent.resolve(), root.resolve()
    total = 0
    for name, entries in external_tensors(model):
        location = entries.get("location", "")

        def bad(why: str, name: str = name, location: str = location) -> EngineError:
            detail = f"tensor {name!r}: external data location {location!r} {why}"
            return EngineError(ErrorCode.INVALID_EXTERNAL_DATA, detail)

        if not location or "\x00" in location or location.startswith(("/", "\\")) or ".." in Path(location).parts:
            raise bad("must be a relative path inside the bundle, without '..'")
        target = (base / location).resolve()
        if not target.is_relative_to(inside):
            raise bad("resolves outside the bundle")
        if not target.is_file():
            raise bad("is not a file of the bundle")
        try:
            _, offset, length = external_span(entries, base)
        except ValueError:
            raise bad("has a non-integer offset or length") from None
        size = os.path.getsize(target)
        if offset < 0 or length < 0 or offset + length > size:
            raise bad(f"asks for bytes {offset}..{offset + length} of a {size}-byte file")
        total += length
    return total


def check_and_inspect_bundle(path: str, root: str, runtime_max_bytes: int, threads: int = 1) -> ModelInfo:
    """The upload check of a bundle (run in the sandbox): the graph parsed without its weights, every external
    location checked, the description (parameters and MACs from the tensors' shapes), the ONNX checker; ONNX
    Runtime creates a session only up to `runtime_max_bytes` of external data, since it reads every weight."""
    p = Path(path)
    model = load_untrusted(p)
    external = check_locations(model, p, Path(root))
    info = describe(model)
    del model
    check_model(p)
    info.external_data_bytes = external
    info.runtime_checked = external <= runtime_max_bytes
    if info.runtime_checked:
        check_runtime(p, threads=threads)
    return info


def model_bytes(path: str | Path) -> int:
    """A model's size on disk: the .onnx file and the external data files it names (each counted once)."""
    p = Path(path)
    size = p.stat().st_size
    model = onnx.load_model(str(p), load_external_data=False)
    files = {entries.get("location", "") for _, entries in external_tensors(model)}
    for location in files - {""}:
        target = p.parent / location
        size += target.stat().st_size if target.is_file() else 0
    return size


def has_external_data(path: str | Path) -> bool:
    """The model at `path` keeps some tensor in an external file (read from the graph alone)."""
    return any(True for _ in external_tensors(onnx.load_model(str(path), load_external_data=False)))


WHOLE_MAX_BYTES = (2 << 30) - (64 << 20)  # protobuf's 2 GiB limit on one serialized model, less room for the graph


def fits_whole(info: ModelInfo) -> bool:
    """The model's weights fit in one .onnx file (under protobuf's 2 GiB limit), so work that needs the whole
    model in memory can run on a bundle after `load_whole`."""
    return info.initializer_bytes <= WHOLE_MAX_BYTES


def whole_limit_text() -> str:
    return f"{WHOLE_MAX_BYTES:,} bytes of weights (protobuf's 2 GiB limit on one model file, less 64 MiB for the graph)"


def load_whole(src: Path, dst: Path) -> Path:
    """A bundle as one .onnx file at `dst`, its external data read in (the locations were checked at upload and the
    files verified by digest when the worker fetched them): for work that holds the whole model in memory."""
    model = onnx.load_model(str(src), load_external_data=False)
    onnx.external_data_helper.load_external_data_for_model(model, str(src.parent))
    try:
        onnx.save_model(model, str(dst))
    except ValueError as exc:  # protobuf refuses a message over 2 GiB
        raise EngineError(
            ErrorCode.UNSUPPORTED, f"the model does not fit in one file: {exc}; the limit is {whole_limit_text()}"
        ) from None
    return dst


def pack(folder: Path, archive: Path) -> Path:
    """A bundle folder as an uncompressed tar (members by relative name, the .onnx file first)."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (p.suffix != ".onnx", str(p)))
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as t:
        for path in files:
            t.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return archive
