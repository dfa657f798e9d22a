"""The README's "Adding a job kind" walk-through, kept true: a tiny kind (initializer statistics of a model) written
against the contract, registered with one line, run the way a worker runs it."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pydantic import Field

from engine import registry
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import JobInputs
from engine.core.kind import Kind, Outcome, ReportBase, RunContext, StrictParams
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from tests import onnx_models
from tests.job_inputs import job_inputs


# --- README: engine/kinds/weightstats/kind.py -------------------------------------------------------------
class WeightStatsParams(StrictParams):
    top: int = Field(default=5, ge=1, le=100, description="How many of the largest initializers to list")


class WeightStatsReport(ReportBase):
    kind: Literal["weightstats"] = "weightstats"
    largest: list[dict[str, float | int | str]]
    zero_fraction: float = Field(description="Share of initializer elements that are exactly 0")


class WeightStats(Kind[WeightStatsParams, WeightStatsReport]):
    """The `weightstats` job: the largest initializers of a model and how sparse its weights are."""

    name = "weightstats"
    Params = WeightStatsParams
    Report = WeightStatsReport

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: WeightStatsParams) -> None:
        if info.parameter_count == 0:
            raise EngineError(ErrorCode.NOTHING_TO_QUANTIZE, "the model has no initializers to describe")

    def run(self, ctx: RunContext, params: WeightStatsParams) -> Outcome[WeightStatsReport]:
        inits = onnx.load(ctx.inputs.model_path).graph.initializer
        arrays, names = [numpy_helper.to_array(t) for t in inits], [t.name for t in inits]
        if any(a.dtype.kind != "f" for a in arrays):
            ctx.warnings.append("non-float initializers are counted as they are")
        ranked = sorted(zip(names, arrays, strict=True), key=lambda na: -na[1].size)[: params.top]
        total = sum(a.size for a in arrays)
        zeros = sum(int((a == 0).sum()) for a in arrays)
        report = WeightStatsReport(
            largest=[{"name": n, "elements": int(a.size), "l2": float(np.linalg.norm(a))} for n, a in ranked],
            zero_fraction=zeros / total if total else 0.0,
        )
        return Outcome(report)


KIND = WeightStats()
# --- end of the README's example ----------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(registry.KINDS, KIND.name, KIND)  # README: the one line in engine/registry.py
    return KIND


def test_a_new_kind_is_one_class_and_one_registry_line(registered, tmp_path) -> None:
    inputs = job_inputs(tmp_path, onnx_models.mlp(tmp_path / "mlp.onnx"))
    out = registry.run_in_child("weightstats", inputs, {"top": 2})  # exactly what the sandboxed child runs
    report = out["report"]
    assert report["kind"] == "weightstats" and report["schema_version"] == 1
    assert len(report["largest"]) == 2 and report["largest"][0]["elements"] >= report["largest"][1]["elements"]
    # what the base does for every kind: the machine with the load before and after, the effective params
    assert report["machine"]["onnxruntime_version"] and "load_average_1m_after" in report["machine"]
    assert report["params"] == {"top": 2}
    assert not list((tmp_path / "out").glob(".weightstats-scratch-*"))  # the private scratch folder is gone
    assert "weightstats" in registry.kind_names()
    assert registered.description.startswith("The `weightstats` job")
    # its page: the generic one until the kind has a report.html beside its module
    page = registry.render_report(report, {"id": "job_1", "kind": "weightstats", "status": "succeeded"})
    assert "weightstats" in page and "zero_fraction" in page


def test_a_new_kinds_checks_run_at_submit(registered, tmp_path) -> None:
    inputs = JobInputs.model_validate(job_inputs(tmp_path, onnx_models.mlp(tmp_path / "mlp.onnx")))
    registered.validate(inputs.model_info, {}, WeightStatsParams())
    with pytest.raises(Exception, match="top"):
        WeightStatsParams.model_validate({"top": 0})
    empty = inputs.model_info.model_copy(update={"parameter_count": 0})
    with pytest.raises(EngineError) as caught:
        registered.validate(empty, {}, WeightStatsParams())
    assert caught.value.code.status == 422
