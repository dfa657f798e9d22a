"""The SDK against a live server (uvicorn on a free port) + a real worker, PostgreSQL, Redis and a store."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from onnxsmith import AsyncClient, Client, ConnectionFailed, Invalid, JobFailed, NotFound, Unauthorized
from onnxsmith.types import OptimizeReport
from service.jobs.tables import Job
from tests import digits, onnx_models
from tests.conftest import free_port


def test_upload_submit_wait_report_download(server, tmp_path) -> None:
    url, key = server
    f = digits.files(tmp_path, hidden=64)
    d = digits.split()
    with Client(url, key) as c:
        model = c.upload_model(f["model"])
        assert model.info["inputs"][0]["name"] == "x" and c.upload_model(f["model"]).id == model.id  # same bytes
        train = c.upload_dataset({"x": d["x_train"], "y": d["y_train"]}, name="train")  # numpy arrays
        assert train.summary["sample_count"] == 1100 and train.label == "y" and train.name == "train"
        val = c.upload_dataset((d["x_val"], d["y_val"]), name="val")  # an (x, y) pair
        test = c.upload_dataset(f["test"])  # a file
        import pandas as pd

        frame = pd.DataFrame(d["x_val"], columns=[f"p{i}" for i in range(64)]).assign(label=d["y_val"])
        as_frame = c.upload_dataset(frame, name="val-frame")  # a DataFrame, sent as parquet
        assert as_frame.format == "parquet" and as_frame.label == "label"
        assert as_frame.summary["sample_count"] == len(d["y_val"])
        job = c.optimize(
            model, train=train, validation=val, test=test, ratios=[0.5], distill_epochs=5, runs=5,
            quantize_modes=["dynamic"], objective="size",
        )  # fmt: skip
        assert job.status == "queued" and job.params["ratios"] == [0.5]
        job.wait(timeout=240, poll=0.3, progress=False)
        assert job.status == "succeeded" and job.progress == 1.0
        report = job.report()
        assert isinstance(report, OptimizeReport) and report.winner.index == report.recommended
        assert report.goal_met and report.comparison is not None
        (artifact,) = job.artifacts()
        path = c.download(artifact, tmp_path / "optimized.onnx")
        assert path.stat().st_size == artifact.size_bytes == report.recommended_model["size_bytes"]
        assert c.get_model(report.output_model_id).source_job_id == job.id
        assert job.id in [j.id for j in c.list_jobs(kind="optimize")]
        assert "Every trial" in c.report_html(job)


def test_a_model_folder_with_external_data_uploads_as_a_bundle(server, tmp_path) -> None:
    """The SDK packs a folder (the .onnx file and its data files) into a tar on the way; the archive itself, or the
    same files again, is the same model; the download is the tar of the same files."""
    import tarfile

    from tests import bundles

    url, key = server
    folder = bundles.with_external_data(tmp_path / "mlp-bundle")
    with Client(url, key) as c:
        model = c.upload_model(folder, progress=False)
        assert model.bundle_format == "tar" and model.name == "mlp-bundle"
        assert [p["name"] for p in model.parts] == ["model.onnx", "model.onnx.data"]
        archive = bundles.zip_of(tmp_path / "same.zip", bundles.files_of(folder))
        assert c.upload_model(archive, progress=False).id == model.id
        path = c.download_model(model, tmp_path / "back.tar", progress=False)
        with tarfile.open(path) as t:
            t.extractall(tmp_path / "back", filter="data")
        assert bundles.files_of(tmp_path / "back") == bundles.files_of(folder)


class _Dropping(httpx.HTTPTransport):
    """Drops the connection while sending the parts named in `drop` (once each): as a flaky network would."""

    def __init__(self, drop: set[int]) -> None:
        super().__init__()
        self.drop, self.sent = drop, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/parts/" in request.url.path:
            n = int(request.url.path.rsplit("/", 1)[1])
            self.sent.append(n)
            if n in self.drop:
                self.drop.discard(n)
                raise httpx.WriteError("connection dropped mid-part", request=request)
        return super().handle_request(request)


def test_a_large_upload_goes_in_parts_and_resumes_after_dropped_connections(server, e2e_settings, tmp_path) -> None:
    from onnxsmith import ConnectionFailed

    e2e_settings.upload_part_bytes = 1 << 16  # the live server reads its settings per request
    url, key = server
    path = onnx_models.big_mlp(tmp_path / "big.onnx", megabytes=1)  # 17 parts
    flaky = _Dropping({2, 5})
    with Client(url, key, transport=flaky, backoff=0.01) as c:  # each dropped part is re-sent on its own
        model = c.upload_model(path, resumable=True, progress=False)
    assert sorted(flaky.sent) == sorted([*range(17), 2, 5]) and model.size_bytes == path.stat().st_size
    # a connection down for good: the error names the upload, which resumes later, sending only what is missing
    other = onnx_models.big_mlp(tmp_path / "other.onnx", megabytes=1, fill=2.0)
    down = _Dropping(set(range(8, 17)))
    with Client(url, key, transport=down, retries=0) as c, pytest.raises(ConnectionFailed) as exc:
        c.upload_model(other, resumable=True, progress=False)
    upload_id = str(exc.value).split("resume=")[-1].strip("'")
    again = _Dropping(set())
    with Client(url, key, transport=again) as c:
        resumed = c.upload_model(other, resume=upload_id, progress=False)
    assert set(again.sent) == set(range(17)) - {n for n in down.sent if n < 8} and resumed.id != model.id
    assert resumed.sha256 == hashlib.sha256(other.read_bytes()).hexdigest()


def test_problems_are_typed_exceptions(server, tmp_path) -> None:
    url, key = server
    with Client(url, key) as c:
        model = c.upload_model(onnx_models.mlp(tmp_path / "m.onnx"))
        with pytest.raises(NotFound) as e:
            c.get_model("mod_nope")
        assert e.value.status == 404 and e.value.type == "not-found" and "mod_nope" in e.value.detail
        with pytest.raises(Invalid) as e:
            c.submit("optimize", model, params={"methods": ["shrink"]})
        assert e.value.type == "validation-error" and any("methods" in x["field"] for x in e.value.errors)
        with pytest.raises(Invalid, match="unknown job kind"):
            c.submit("explode", model)
        w, b = np.ones((8, 3)), np.zeros(3)
        linear = c.upload_model(onnx_models.linear(tmp_path / "lin.onnx", w, b))  # its one layer is the output
        bad = c.submit("prune", linear, params={"method": "structured", "ratio": 0.5, "runs": 5})
        with pytest.raises(JobFailed) as failed:
            bad.wait(timeout=60, poll=0.2, progress=False)
        assert failed.value.job.status == "failed" and failed.value.code == "nothing_to_prune"
    with Client(url, "osk_wrong") as c, pytest.raises(Unauthorized) as e:
        c.list_models()
    assert "API key" in e.value.detail or e.value.detail


def test_unreachable_server_fails_clearly_after_the_retries() -> None:
    started = time.monotonic()
    client = Client(f"http://127.0.0.1:{free_port()}", "k", retries=2, backoff=0.05)
    with client as c, pytest.raises(ConnectionFailed, match="cannot reach onnxsmith") as e:
        c.list_models()
    assert "3 attempt(s)" in str(e.value) and time.monotonic() - started < 10


def test_a_lost_response_is_retried_and_makes_one_job(server, tmp_path, db) -> None:
    """The first POST reaches the server but its answer is lost; the retry carries the same Idempotency-Key."""
    url, key = server
    real = httpx.HTTPTransport()
    seen: list[str] = []
    deleted: list[str] = []

    class LoseFirstAnswer(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "DELETE" and not deleted:
                deleted.append(request.url.path)
                real.handle_request(request).close()  # deleted...
                raise httpx.RemoteProtocolError("server disconnected")  # ...and the answer lost
            if request.method == "POST" and request.url.path == "/v1/jobs":
                seen.append(request.headers["Idempotency-Key"])
                if len(seen) == 1:
                    real.handle_request(request).close()  # the job is created...
                    raise httpx.ReadError("connection reset")  # ...and the answer never arrives
                if len(seen) == 2:
                    return httpx.Response(503, json={"type": "broker-unavailable", "detail": "try again"})
            return real.handle_request(request)

    with Client(url, key, transport=LoseFirstAnswer(), backoff=0.01) as c:
        model = c.upload_model(onnx_models.mlp(tmp_path / "m.onnx"))
        job = c.submit("benchmark", model, params={"runs": 5, "batch_sizes": [1]})
        other = c.upload_model(onnx_models.mlp(tmp_path / "other.onnx", seed=3))
        c.delete_model(other)  # the retry finds it gone (404): the delete is done, not an error
        assert deleted == [f"/v1/models/{other.id}"]
    assert len(seen) == 3 and len(set(seen)) == 1  # three attempts, one key
    count = db.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.idempotency_key == seen[0]))
    assert count == 1 and job.id


def test_async_client(server, tmp_path) -> None:
    url, key = server

    async def go() -> None:
        async with AsyncClient(url, key) as c:
            model = await c.upload_model(onnx_models.mlp(tmp_path / "m.onnx"))
            job = await c.submit("benchmark", model, params={"runs": 5, "batch_sizes": [1]})
            done = await c.wait(job, timeout=60, poll=0.2)
            report = await c.report(done)
            assert report.kind == "benchmark" and report.results  # an extra field, kept
            with pytest.raises(NotFound):
                await c.get_job("job_nope")

    asyncio.run(go())
