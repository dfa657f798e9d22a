"""Checking an uploaded file in the sandbox and turning its verdict into a 422 problem."""

from __future__ import annotations

import logging
import os
from typing import Any

from engine.core.errors import EngineError, ErrorCode
from engine.sandbox import Limits, run_isolated
from service.errors import problem_for
from service.settings import Settings

log = logging.getLogger("onnxsmith.uploads")

# The checking child's own limits: their problem types are prefixed by what was checked ("model-check-timeout").
_LIMITS = {ErrorCode.TIMEOUT, ErrorCode.MEMORY_LIMIT, ErrorCode.CRASHED}


def _scrub(detail: str, kwargs: dict[str, Any]) -> str:
    """Server paths out of a message for the client (a library's error may name the spooled temp file)."""
    for value in kwargs.values():
        if isinstance(value, str) and os.sep in value:
            detail = detail.replace(value, "the uploaded file").replace(os.path.basename(value), "the uploaded file")
    return detail


def check_in_sandbox(*, settings: Settings, target: str, kwargs: dict[str, Any], what: str) -> Any:
    """Run `target` in a limited child. A user-facing engine error (a 4xx code) becomes its problem."""
    limits = Limits(memory_mb=settings.sandbox_memory_mb, timeout_s=settings.sandbox_timeout_s)
    try:
        result = run_isolated(target, kwargs, limits)
    except EngineError as exc:
        if not exc.code.is_user_error:
            raise RuntimeError(f"{what} check failed unexpectedly: {exc.code.value}: {exc.detail}") from exc
        exc.detail = _scrub(exc.detail, kwargs)
        raise problem_for(exc, prefix=f"{what}-" if exc.code in _LIMITS else "") from None
    log.info("checked %s in %.2f s, child peak RSS %d MB", what, result.seconds, result.peak_rss_kb // 1024)
    return result.value
