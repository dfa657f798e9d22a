"""onnxsmith: the Python SDK (`from onnxsmith import Client`) and the `onnxsmith` command."""

from onnxsmith.client import (
    AsyncClient,
    BadApiKey,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    Invalid,
    Job,
    JobFailed,
    NoApiKey,
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
    "BadApiKey",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Invalid",
    "Job",
    "JobFailed",
    "NoApiKey",
    "NotFound",
    "OptimizeParams",
    "OnnxsmithError",
    "ProblemError",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
]
