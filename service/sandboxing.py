"""Checking an uploaded file in the sandbox and turning its verdict into a 422 problem."""

from __future__ import annotations

import logging
from typing import Any

from engine.errors import EngineError
from engine.sandbox import Limits, run_isolated
from service.errors import AppError
from service.settings import Settings

log = logging.getLogger("onnxsmith.uploads")

# Engine error code -> (problem type, title) for failures of the checking child itself.
_LIMIT_PROBLEMS = {
    "timeout": ("check-timeout", "File check took too long"),
    "memory_limit": ("check-memory-limit", "File check needed too much memory"),
    "crashed": ("check-crashed", "File check crashed"),
}


def check_in_sandbox(
    *, settings: Settings, target: str, kwargs: dict[str, Any], problems: dict[str, tuple[str, str]], what: str
) -> Any:
    """Run `target` in a limited child. Engine codes in `problems` (and the child's limits) become 422s."""
    limits = Limits(memory_mb=settings.sandbox_memory_mb, timeout_s=settings.sandbox_timeout_s)
    try:
        result = run_isolated(target, kwargs, limits)
    except EngineError as exc:
        if exc.code in problems:
            type_, title = problems[exc.code]
        elif exc.code in _LIMIT_PROBLEMS:
            type_, title = _LIMIT_PROBLEMS[exc.code]
            type_ = f"{what}-{type_}"
        else:
            raise RuntimeError(f"{what} check failed unexpectedly: {exc.code}: {exc.detail}") from exc
        raise AppError(422, type_, exc.detail, title=title, extra={"code": exc.code}) from None
    log.info("checked %s in %.2f s, child peak RSS %d MB", what, result.seconds, result.peak_rss_kb // 1024)
    return result.value
