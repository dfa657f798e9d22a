"""A small synchronous client for the onnxsmith REST API (needs only httpx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class OnnxsmithError(Exception):
    """A problem+json answer from the service."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = problem.get("type", "")
        self.detail = problem.get("detail", "")
        super().__init__(f"{status} {problem.get('title', '')}: {self.detail}")


class Client:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 600.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            raise OnnxsmithError(response.status_code, problem)
        return response

    def upload_model(self, path: str | Path, *, name: str | None = None) -> dict[str, Any]:
        """Upload an ONNX file; returns the model (the existing one if these bytes were uploaded before)."""
        path = Path(path)
        with open(path, "rb") as f:
            data = {"name": name} if name else None
            return self._check(self._http.post("/v1/models", files={"file": (path.name, f)}, data=data)).json()

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self._check(self._http.get(f"/v1/models/{model_id}")).json()

    def list_models(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Every model of the tenant, newest first (follows pagination)."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit}
        while True:
            page = self._check(self._http.get("/v1/models", params=params)).json()
            items.extend(page["items"])
            if not page["next_cursor"]:
                return items
            params["cursor"] = page["next_cursor"]

    def download_model(self, model_id: str, dest: str | Path) -> Path:
        dest = Path(dest)
        with self._http.stream("GET", f"/v1/models/{model_id}/content") as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            with open(dest, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        return dest

    def delete_model(self, model_id: str) -> None:
        self._check(self._http.delete(f"/v1/models/{model_id}"))
