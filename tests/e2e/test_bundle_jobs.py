"""A model with external data (a bundle) through the API and a real worker: the worker fetches its parts to scratch,
ONNX Runtime reads the data files beside the graph, and evaluate, benchmark and compare run on it."""

from __future__ import annotations

import numpy as np
import pytest

from tests import bundles, data_files, onnx_models
from tests.e2e.conftest import wait_job
from tests.e2e.test_jobs import submit, upload_dataset, upload_model

REDIS_DB = 13


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker()


def test_evaluate_benchmark_and_compare_run_on_a_bundle(api, worker, tmp_path) -> None:
    folder = bundles.with_external_data(tmp_path / "m")
    bundle_id = upload_model(api, bundles.tar_of(tmp_path / "mlp.tar", bundles.files_of(folder)))
    single_id = upload_model(api, onnx_models.mlp(tmp_path / "mlp.onnx"))
    x, y = data_files.classification(n=120)
    ds = upload_dataset(api, data_files.npz(tmp_path / "eval.npz", x=x, y=y))
    jobs = {
        "evaluate": submit(api, kind="evaluate", model_id=bundle_id, datasets={"test": ds}, params={}),
        "benchmark": submit(
            api, kind="benchmark", model_id=bundle_id, datasets={}, params={"batch_sizes": [1], "runs": 5}
        ),
        "compare": submit(
            api,
            kind="compare",
            model_id=single_id,
            datasets={"eval": ds},
            params={"other_model_id": bundle_id, "runs": 5, "batch_sizes": [1]},
        ),  # fmt: skip
    }
    reports = {}
    for kind, job in jobs.items():
        done = wait_job(api, job["id"], timeout=120)
        assert done["status"] == "succeeded", (kind, done)
        reports[kind] = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert reports["evaluate"]["sample_count"] == 120
    comparison = reports["compare"]["comparison"]
    assert comparison["fidelity"][0]["max_abs_error"] == 0.0  # the same weights, from the data file
    total = sum(len(b) for _, b in bundles.files_of(folder))
    assert comparison["size_bytes"]["candidate"] == total  # the data file counted with the graph
    assert np.isfinite(reports["benchmark"]["results"][0]["latency_ms"]["p50"])


def test_weight_only_quantizes_a_bundle_into_a_bundle(api, worker, tmp_path) -> None:
    """quantize weight_only streams a bundle one tensor at a time; the produced model is a bundle too (registered
    part by part, its artifact a tar)."""
    folder = bundles.with_external_data(tmp_path / "m", onnx_models.mlp_model(n_in=64, hidden=1024))
    model_id = upload_model(api, bundles.tar_of(tmp_path / "mlp.tar", bundles.files_of(folder)))
    x, y = data_files.classification(n=120)
    ds = upload_dataset(api, data_files.npz(tmp_path / "eval.npz", x=x, y=y))
    job = submit(
        api, kind="quantize", model_id=model_id, datasets={"eval": ds},
        params={"mode": "weight_only", "block_size": 32, "runs": 5, "batch_sizes": [1]},
    )  # fmt: skip
    done = wait_job(api, job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["config"]["streamed"] is True and report["config"]["quantized_weights"] == 2
    assert report["comparison"]["size_bytes"]["ratio"] < 0.25  # the data file counted with the graph
    produced = api.get(f"/v1/models/{report['output_model_id']}").json()
    assert produced["bundle_format"] == "tar" and [p["name"] for p in produced["parts"]] == [
        "model.onnx", "model.onnx.data"
    ]  # fmt: skip
    assert produced["info"]["op_histogram"].get("com.microsoft:MatMulNBits") == 2
    (artifact,) = api.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert artifact["filename"] == "model.quant.tar" and artifact["media_type"] == "application/x-tar"


def test_kinds_that_load_the_model_whole_run_on_a_bundle_that_fits_in_one_file(api, worker, tmp_path) -> None:
    """dynamic quantization and pruning read the bundle's data into one model file in scratch: their output is a
    single .onnx file, its outputs those of the same model uploaded as one file."""
    folder = bundles.with_external_data(tmp_path / "m", onnx_models.mlp_model(n_in=64, hidden=256))
    model_id = upload_model(api, bundles.tar_of(tmp_path / "mlp.tar", bundles.files_of(folder)))
    x, y = data_files.classification(n=120)
    ds = upload_dataset(api, data_files.npz(tmp_path / "eval.npz", x=x, y=y))
    jobs = {
        "quantize": submit(
            api, kind="quantize", model_id=model_id, datasets={"eval": ds},
            params={"mode": "dynamic", "runs": 5, "batch_sizes": [1]},
        ),
        "prune": submit(
            api, kind="prune", model_id=model_id, datasets={"eval": ds},
            params={"method": "magnitude", "ratio": 0.5, "runs": 5, "batch_sizes": [1]},
        ),
    }  # fmt: skip
    for kind, job in jobs.items():
        done = wait_job(api, job["id"], timeout=120)
        assert done["status"] == "succeeded", (kind, done["error"])
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        produced = api.get(f"/v1/models/{report['output_model_id']}").json()
        assert produced["parts"] == [] and produced["info"]["external_data_bytes"] == 0, (kind, produced)
        assert report["comparison"]["size_bytes"]["ratio"] < (0.3 if kind == "quantize" else 1.0), (kind, report)
