"""onnxsmith: the Python SDK (`from onnxsmith import Client`) and the `onnxsmith` command."""

from onnxsmith.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    Invalid,
    Job,
    JobFailed,
    NotFound,
    OnnxsmithError,
    ProblemError,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from onnxsmith.types import OptimizeParams

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Invalid",
    "Job",
    "JobFailed",
    "NotFound",
    "OptimizeParams",
    "OnnxsmithError",
    "ProblemError",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
]
