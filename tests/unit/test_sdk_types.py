"""The SDK's typed params mirror the engine's schema (the SDK may not import the engine, so they are two classes)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.optimize_plan import OptimizeParams as EngineParams
from onnxsmith import OptimizeParams


def test_sdk_optimize_params_match_the_engine() -> None:
    sdk, engine = OptimizeParams.model_fields, EngineParams.model_fields
    assert set(sdk) == set(engine)
    for name, field in engine.items():
        assert sdk[name].get_default(call_default_factory=True) == field.get_default(call_default_factory=True), name
        assert sdk[name].annotation == field.annotation, name


def test_sdk_optimize_params_check_before_sending() -> None:
    assert OptimizeParams(objective="size").model_dump(exclude_unset=True) == {"objective": "size"}
    with pytest.raises(ValidationError, match="methods"):
        OptimizeParams(methods=["shrink"])
    with pytest.raises(ValidationError, match="extra"):
        OptimizeParams(max_drop=0.01)
