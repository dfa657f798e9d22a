"""Every error code the engine, the service and the workers use: one enum, each code with its HTTP status, problem
type and title. A code whose status is 4xx is the user's problem (a request or an input that cannot work); a 5xx
code is ours. Job errors store the code's value (`error.code` in the API), uploads and submits answer its problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class CodeInfo:
    status: int
    problem: str  # the problem+json `type` slug
    title: str


class ErrorCode(StrEnum):
    # the data or the model does not fit the request (at submit, or found only when the job ran)
    INCOMPATIBLE_DATA = "incompatible_data"
    INCOMPATIBLE_MODEL = "incompatible_model"
    UNKNOWN_OUTPUT = "unknown_output"
    MISSING_PARAM = "missing_param"
    MISSING_DATASET = "missing_dataset"
    UNSUPPORTED = "unsupported"
    ALREADY_QUANTIZED = "already_quantized"
    NOTHING_TO_QUANTIZE = "nothing_to_quantize"
    TOO_LONG = "too_long"
    BUDGET_TOO_SMALL = "budget_too_small"
    UNKNOWN_LAYER = "unknown_layer"
    INPUT_TOO_LARGE = "input_too_large"
    NOTHING_TO_PRUNE = "nothing_to_prune"
    # uploads
    INVALID_MODEL = "invalid_model"
    EXTERNAL_DATA = "external_data"
    INVALID_EXTERNAL_DATA = "invalid_external_data"
    INVALID_ARCHIVE = "invalid_archive"
    INVALID_DATASET = "invalid_dataset"
    UNKNOWN_LABEL = "unknown_label"
    # a job's run on the user's model and data
    RUNTIME_ERROR = "runtime_error"
    INVALID_OUTPUT = "invalid_output"
    QUANTIZATION_FAILED = "quantization_failed"
    PRUNE_FAILED = "prune_failed"
    DISTILL_FAILED = "distill_failed"
    UNSUPPORTED_OP = "unsupported_op"
    NO_MODEL = "no_model"
    OVER_BUDGET = "over_budget"
    # the worker and its inputs
    MISSING_DEPENDENCY = "missing_dependency"
    MODEL_MISSING = "model_missing"
    DATASET_MISSING = "dataset_missing"
    INPUT_UNAVAILABLE = "input_unavailable"
    WORKER_LOST = "worker_lost"
    # the sandboxed child's limits
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    # a bug of ours: logged with its traceback, never shown as the user's fault
    INTERNAL = "internal"

    @property
    def info(self) -> CodeInfo:
        return _INFO[self]

    @property
    def status(self) -> int:
        return _INFO[self].status

    @property
    def is_user_error(self) -> bool:
        return 400 <= _INFO[self].status < 500


def _422(problem: str, title: str) -> CodeInfo:
    return CodeInfo(422, problem, title)


_INFO: dict[ErrorCode, CodeInfo] = {
    ErrorCode.INCOMPATIBLE_DATA: _422("incompatible-data", "Incompatible data"),
    ErrorCode.INCOMPATIBLE_MODEL: _422("incompatible-model", "Incompatible model"),
    ErrorCode.UNKNOWN_OUTPUT: _422("unknown-output", "Unknown output"),
    ErrorCode.MISSING_PARAM: _422("missing-param", "Missing param"),
    ErrorCode.MISSING_DATASET: _422("missing-dataset", "Missing dataset"),
    ErrorCode.UNSUPPORTED: _422("unsupported", "Unsupported"),
    ErrorCode.ALREADY_QUANTIZED: _422("already-quantized", "Already quantized"),
    ErrorCode.NOTHING_TO_QUANTIZE: _422("nothing-to-quantize", "Nothing to quantize"),
    ErrorCode.TOO_LONG: _422("too-long", "Too long"),
    ErrorCode.BUDGET_TOO_SMALL: _422("budget-too-small", "Budget too small"),
    ErrorCode.UNKNOWN_LAYER: _422("unknown-layer", "Unknown layer"),
    ErrorCode.INPUT_TOO_LARGE: _422("input-too-large", "Input too large"),
    ErrorCode.NOTHING_TO_PRUNE: _422("nothing-to-prune", "Nothing to prune"),
    ErrorCode.INVALID_MODEL: _422("invalid-model", "Invalid ONNX model"),
    ErrorCode.EXTERNAL_DATA: _422("external-data-not-supported", "External data not supported"),
    ErrorCode.INVALID_EXTERNAL_DATA: _422("invalid-external-data", "Invalid external data"),
    ErrorCode.INVALID_ARCHIVE: _422("invalid-archive", "Invalid archive"),
    ErrorCode.INVALID_DATASET: _422("invalid-dataset", "Invalid dataset"),
    ErrorCode.UNKNOWN_LABEL: _422("unknown-label", "Unknown label"),
    ErrorCode.RUNTIME_ERROR: _422("runtime-error", "The model failed to run"),
    ErrorCode.INVALID_OUTPUT: _422("invalid-output", "The model produced NaN or inf"),
    ErrorCode.QUANTIZATION_FAILED: _422("quantization-failed", "Quantization failed"),
    ErrorCode.PRUNE_FAILED: _422("prune-failed", "Pruning failed"),
    ErrorCode.DISTILL_FAILED: _422("distill-failed", "Distillation failed"),
    ErrorCode.UNSUPPORTED_OP: _422("unsupported-op", "Unsupported op"),
    ErrorCode.NO_MODEL: _422("no-model", "No model produced"),
    ErrorCode.OVER_BUDGET: _422("over-budget", "Over budget"),
    ErrorCode.MISSING_DEPENDENCY: _422("missing-dependency", "Missing dependency"),
    ErrorCode.MODEL_MISSING: CodeInfo(409, "model-missing", "Model deleted"),
    ErrorCode.DATASET_MISSING: CodeInfo(409, "dataset-missing", "Dataset deleted"),
    ErrorCode.INPUT_UNAVAILABLE: CodeInfo(500, "input-unavailable", "Stored input unavailable"),
    ErrorCode.WORKER_LOST: CodeInfo(500, "worker-lost", "Worker lost"),
    ErrorCode.TIMEOUT: _422("check-timeout", "Took too long"),
    ErrorCode.MEMORY_LIMIT: _422("check-memory-limit", "Needed too much memory"),
    ErrorCode.CRASHED: _422("check-crashed", "Crashed"),
    ErrorCode.CANCELLED: CodeInfo(409, "cancelled", "Cancelled"),
    ErrorCode.INTERNAL: CodeInfo(500, "internal-error", "Internal error"),
}
assert set(_INFO) == set(ErrorCode), "every code has its status and title"


class EngineError(Exception):
    """A known condition that no retry will fix: a problem with the user's input (model, data, params) or a limit.

    `code` is an ErrorCode (documented in the README); `detail` is for people and never contains a server path.
    A string is accepted where it names a code (the sandbox hands codes back as JSON); an unknown one is a bug.
    """

    def __init__(self, code: ErrorCode | str, detail: str) -> None:
        self.code = ErrorCode(code)
        self.detail = detail
        self.traceback: str | None = None  # `internal` from a sandboxed child: its traceback, for the log only
        super().__init__(f"{self.code.value}: {detail}")
