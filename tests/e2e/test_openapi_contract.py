"""The OpenAPI document is the contract: schemathesis with all its checks (server errors, undocumented status codes
and content types, response schemas, Allow headers, schema-valid requests refused, requests without the key, use
after delete, stateful links) finds nothing against a live API with a worker. Bounded (examples per operation, a
fixed seed) to stay well under three minutes; real ids (a model, a dataset, a finished job and its artifact) are
supplied so the tests reach past 404s. The same command by hand: `st run <url>/openapi.json --checks all -H
'Authorization: Bearer <key>'` from the checkout (schemathesis.toml is read from there)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from engine.examples import write_examples

ROOT = Path(__file__).resolve().parents[2]


def test_schemathesis_all_checks_find_nothing(server, tmp_path) -> None:
    url, key = server
    files = write_examples(tmp_path, epochs=1).files
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        model = http.post("/v1/models", files={"file": files["classifier.onnx"].open("rb")}).json()["id"]
        dataset = http.post("/v1/datasets", files={"file": files["classifier-test.npz"].open("rb")}).json()["id"]
        job = http.post("/v1/jobs", json={"kind": "evaluate", "model_id": model, "datasets": {"eval": dataset}}).json()
        for _ in range(600):
            state = http.get(f"/v1/jobs/{job['id']}").json()
            if state["status"] in ("succeeded", "failed"):
                break
            http.get("/healthz")  # a short pause that also proves the API answers
        assert state["status"] == "succeeded", state
        artifact = http.get(f"/v1/jobs/{job['id']}/artifacts").json()[0]["id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        (ROOT / "schemathesis.toml").read_text()
        + f'\n[parameters]\nmodel_id = "{model}"\ndataset_id = "{dataset}"\njob_id = "{job["id"]}"\n'
        f'artifact_id = "{artifact}"\n'
    )
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    done = subprocess.run(
        [st, "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all",
         "-H", f"Authorization: Bearer {key}", "--max-examples", "15", "--workers", "1", "--seed", "20261203",
         "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    summary = done.stdout[-6000:]
    assert done.returncode == 0, summary
    assert "passed" in summary and "failures" not in summary.split("SUMMARY")[-1], summary
