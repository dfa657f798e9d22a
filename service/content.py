"""Streaming a stored blob back to a client."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from fastapi.responses import StreamingResponse


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII `filename` for old clients and the real name as UTF-8 in `filename*` (RFC 5987), so a
    model called 模型 or a file модель.onnx downloads under its name (headers are Latin-1: it used to be a 500)."""
    name = "".join(c for c in filename if c.isprintable() and c not in '"\\/;')[:200] or "download"
    ascii_name = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "-_."))
    if not ascii_name.strip(".") or ascii_name.startswith("."):
        ascii_name = "download" + (ascii_name if ascii_name.startswith(".") else "")
    if ascii_name == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def blob_response(
    chunks: Iterator[bytes], *, size: int, sha256: str, filename: str, media_type: str
) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type=media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": content_disposition(filename),
            "ETag": f'"{sha256}"',
        },
    )
