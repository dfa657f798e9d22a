"""Streaming a stored blob back to a client."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.responses import StreamingResponse


def blob_response(
    chunks: Iterator[bytes], *, size: int, sha256: str, filename: str, media_type: str
) -> StreamingResponse:
    safe = "".join(c for c in filename if c.isalnum() or c in "-_.")[:120] or "download"
    return StreamingResponse(
        chunks,
        media_type=media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{safe}"',
            "ETag": f'"{sha256}"',
        },
    )
