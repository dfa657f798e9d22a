"""The `onnxsmith` CLI in local mode (no server) and against a live server, on the digits fixtures."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from onnxsmith.cli import app
from tests import digits
from tests.conftest import free_port

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return digits.files(tmp_path_factory.mktemp("digits"), hidden=64)


def _run(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_optimize_locally_writes_the_model_and_the_report(files, tmp_path) -> None:
    out = tmp_path / "out"
    r = _run(
        "optimize", str(files["model"]), "--train", str(files["train"]), "--val", str(files["validation"]),
        "--test", str(files["test"]), "--max-drop", "1%", "--objective", "size", "--methods", "simplify,quantize",
        "--local", "--out", str(out), "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["goal_met"] and report["fit"]["verdict"] and report["recommended"] == 2
    assert (out / "optimized.onnx").stat().st_size == report["recommended_model"]["size_bytes"]
    assert json.loads((out / "report.json").read_text())["trials"] == report["trials"]
    page = (out / "report.html").read_text()
    assert "The front" in page and "run locally" in page and "report.json</code> beside it" in page
    assert "/v1/jobs/local" not in page and re.search(r"finished 20\d\d-\d\d-\d\dT", page)
    assert not (out / "scratch").exists()

    # a size target nothing can meet: the closest is reported, exit code 6
    r = _run(
        "optimize", str(files["model"]), "--val", str(files["validation"]), "--methods", "quantize",
        "--max-size", "100", "--objective", "size", "--local", "--out", str(tmp_path / "o2"), env={"COLUMNS": "200"},
    )  # fmt: skip
    assert r.exit_code == 6, r.output
    assert "goal NOT met" in r.stdout and "no trial meets every constraint" in r.stderr
    assert "closest (goal not met)" in r.stdout  # handed back for inspection, never as a win
    assert (tmp_path / "o2" / "closest.onnx").exists() and not (tmp_path / "o2" / "optimized.onnx").exists()
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["recommended"] == 0

    r = _run("optimize", str(files["model"]), "--val", str(files["validation"]), "--methods", "shrink", "--local")
    assert r.exit_code == 4 and "methods" in r.stderr
    r = _run("optimize", str(files["model"]), "--val", str(files["validation"]), "--max-drop", "lots", "--local")
    assert r.exit_code == 2 and "--max-drop" in r.output
    r = _run("optimize", str(files["model"]), "--val", str(files["validation"]), "--ratios", "a,b", "--local")
    assert r.exit_code == 2 and "--ratios" in r.output


def test_commands_against_a_server(server, files, tmp_path) -> None:
    url, key = server
    env = {"ONNXSMITH_URL": url, "ONNXSMITH_API_KEY": key}
    r = _run("models", "upload", str(files["model"]), "--json", env=env)
    assert r.exit_code == 0, r.output
    model_id = json.loads(r.stdout)["id"]
    from tests import bundles

    folder = bundles.with_external_data(tmp_path / "with-data")  # a model with external data: its folder
    r = _run("models", "upload", str(folder), "--json", env=env)
    assert r.exit_code == 0 and json.loads(r.stdout)["bundle_format"] == "tar", r.output
    r = _run("datasets", "upload", str(files["test"]), "--name", "test", "--json", env=env)
    test_id = json.loads(r.stdout)["id"]
    assert model_id in _run("models", "list", env=env).stdout
    kinds = {k["name"]: k for k in json.loads(_run("jobs", "kinds", "--json", env=env).stdout)}
    assert kinds["optimize"]["runnable"] == "all" and kinds["distill"]["needs"] == ["torch"]
    assert json.loads(_run("datasets", "show", test_id, "--json", env=env).stdout)["summary"]["sample_count"] == 347

    r = _run(
        "jobs", "submit", "benchmark", "--model", model_id, "--dataset", f"eval={test_id}",
        "--param", "runs=5", "--param", "batch_sizes=[1, 4]", "--wait", "--json", env=env,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["params"]["batch_sizes"] == [1, 4]
    assert job["id"] in _run("jobs", "list", "--kind", "benchmark", env=env).stdout
    report = json.loads(_run("jobs", "report", job["id"], "--json", env=env).stdout)
    assert report["kind"] == "benchmark" and len(report["results"]) == 2

    r = _run(
        "optimize", model_id, "--val", str(files["validation"]), "--test", test_id, "--methods", "simplify,quantize",
        "--objective", "size", "--json", env=env,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["kind"] == "optimize" and report["goal_met"] and report["output_model_id"]

    # the service's refusals and failures, as exit codes a script can use
    r = _run("jobs", "submit", "quantize", "--model", model_id, "--param", "mode=sideways", env=env)
    assert r.exit_code == 4 and "validation-error" in r.stderr and "params.mode" in r.stderr
    r = _run("jobs", "submit", "benchmark", "--model", model_id, "--params", "{runs: 5}", env=env)
    assert r.exit_code == 2 and "--params" in r.output
    r = _run("models", "show", "mdl_nope", env=env)
    assert r.exit_code == 4 and "not-found" in r.stderr
    r = _run("models", "list", env={**env, "ONNXSMITH_API_KEY": "osk_wrong"})
    assert r.exit_code == 4 and "unauthorized" in r.stderr
    r = _run("models", "list", env={**env, "ONNXSMITH_API_KEY": ""})  # none set: say so and how (was exit 3)
    assert r.exit_code == 4 and "no API key set" in r.stderr and "ONNXSMITH_API_KEY" in r.stderr, r.stderr
    r = _run("models", "list", env={**env, "ONNXSMITH_API_KEY": "osk_pasted\nwith a line break"})
    assert r.exit_code == 4 and "cannot carry" in r.stderr, r.stderr
    r = _run("models", "list", env={**env, "ONNXSMITH_URL": f"http://127.0.0.1:{free_port()}"})
    assert r.exit_code == 3 and "cannot reach onnxsmith" in r.stderr
