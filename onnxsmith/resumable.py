"""Large model uploads in parts (POST /v1/uploads): sent in parallel, each part re-sent on its own after a dropped
connection, and the whole upload resumable later by its id (the parts already received are skipped)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxsmith.client import Client

RESUMABLE_BYTES = 64 << 20  # files larger than this go in parts unless the caller says otherwise


def upload_in_parts(
    client: Client, path: Path, name: str | None, progress: bool | None, resume: str | None, threads: int = 4
) -> dict[str, Any]:
    from onnxsmith.client import ConnectionFailed, _bar, _show_progress

    size = path.stat().st_size
    if resume:
        session = client._json("GET", f"/v1/uploads/{resume}")
        if session["size"] != size:
            raise ValueError(f"upload {resume} is for {session['size']} bytes; {path.name} has {size}")
    else:
        session = client._json("POST", "/v1/uploads", json={"size": size, "filename": path.name, "name": name})
    upload_id, part_size = session["id"], session["part_size"]
    todo = sorted(set(range(session["parts"])) - set(session["received"]))
    lock = threading.Lock()
    done = [size - sum(min(part_size, size - n * part_size) for n in todo)]
    with _bar(f"uploading {path.name} in parts", size, _show_progress(progress)) as update:
        update(completed=done[0])

        def send(n: int) -> None:
            with open(path, "rb") as f:
                f.seek(n * part_size)
                data = f.read(min(part_size, size - n * part_size))
            headers = {"Content-Type": "application/octet-stream"}
            client._request("PUT", f"/v1/uploads/{upload_id}/parts/{n}", content=data, headers=headers)
            with lock:
                done[0] += len(data)
                update(completed=done[0])

        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(send, todo))
        except ConnectionFailed as exc:
            raise ConnectionFailed(f"{exc}; the parts sent so far are kept: resume with resume={upload_id!r}") from exc
    return client._json("POST", f"/v1/uploads/{upload_id}/complete")
