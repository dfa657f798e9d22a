"""The SDK's typed params mirror the engine's schema (the SDK may not import the engine, so they are two classes)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.kinds.optimize import OptimizeParams as EngineParams
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


def _fields(model: type) -> dict:
    return model.model_fields  # type: ignore[attr-defined]


def _check(sdk: type, engine: type, where: str) -> None:
    """Every field the SDK declares is in the engine's model; one the engine may send as null has an SDK default."""
    for name, field in _fields(sdk).items():
        if name == "output_model_id":  # set by the service, not the engine
            continue
        assert name in _fields(engine), f"{where}.{name} is not in the engine's {engine.__name__}"
        annotation = _fields(engine)[name].annotation
        if annotation is None or type(None) in getattr(annotation, "__args__", ()):
            assert not field.is_required(), f"{where}.{name}: the engine may send null, the SDK requires a value"


def test_sdk_report_types_match_every_kinds_report() -> None:
    from engine.kinds.optimize.plan import OptimizeTrial
    from engine.measure.comparison import Comparison as EngineComparison
    from engine.registry import KINDS
    from onnxsmith.types import REPORT_TYPES, Comparison, Trial

    assert set(REPORT_TYPES) == set(KINDS), "every kind has a typed report in the SDK"
    for name, sdk in REPORT_TYPES.items():
        _check(sdk, KINDS[name].Report, f"{name} report")
    _check(Comparison, EngineComparison, "comparison")
    _check(Trial, OptimizeTrial, "optimize trial")
