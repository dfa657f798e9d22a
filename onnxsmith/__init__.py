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
    Unauthorized,
)

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
    "OnnxsmithError",
    "ProblemError",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
]
