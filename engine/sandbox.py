"""Run one engine function in a child process with memory, CPU and wall-time limits.

Untrusted model files are parsed and first run here, never in the API or worker process: a file that
crashes onnx or ONNX Runtime, or needs more memory than allowed, fails only its own call.

The child is `python -m engine.sandbox`: it reads {"target", "kwargs", "result_path"} as JSON on stdin,
calls `module:function(**kwargs)` and writes {"ok": ..., "value" | "error", "peak_rss_kb"} as JSON to
result_path (stdout and stderr are left to the libraries' own logging).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096
    timeout_s: float = 120.0
    threads: int = 1


@dataclass(frozen=True)
class SandboxResult:
    value: Any
    peak_rss_kb: int
    seconds: float


def run_isolated(target: str, kwargs: dict[str, Any], limits: Limits) -> SandboxResult:
    """Call `target` ("package.module:function") in a limited child; return its JSON-able value.

    Raises EngineError: the function's own EngineError, or `timeout`, `memory_limit`, `crashed`.
    """
    fd, result_path = tempfile.mkstemp(prefix="onnxsmith-sandbox-", suffix=".json")
    os.close(fd)
    request = json.dumps({"target": target, "kwargs": kwargs, "result_path": result_path})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(limits.threads)
    env["ONNXSMITH_SANDBOX_THREADS"] = str(limits.threads)

    def _limit() -> None:  # runs in the child between fork and exec
        mem = limits.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(limits.timeout_s * max(1, limits.threads)) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.sandbox"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_limit,  # noqa: PLW1509 - needed for setrlimit; no threads touch locks here
    )
    try:
        try:
            _, stderr = proc.communicate(request.encode(), timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise EngineError(
                "timeout", f"the model was still being processed after {limits.timeout_s:g} s (time limit)"
            ) from None
        seconds = time.perf_counter() - started
        result = _read_result(result_path)
    finally:
        Path(result_path).unlink(missing_ok=True)

    if result is None:
        raise _crash_error(proc.returncode, stderr.decode(errors="replace"), limits)
    if not result["ok"]:
        raise EngineError(result["error"]["code"], result["error"]["detail"])
    return SandboxResult(result["value"], int(result.get("peak_rss_kb", 0)), seconds)


def _read_result(path: str) -> dict[str, Any] | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _crash_error(returncode: int, stderr: str, limits: Limits) -> EngineError:
    if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
        return EngineError("timeout", "processing the model exceeded its CPU time limit")
    if "MemoryError" in stderr or "bad_alloc" in stderr or "Cannot allocate memory" in stderr:
        return _memory_error(limits)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else ""
        return EngineError("crashed", f"processing the model crashed the checking process ({name or returncode})")
    return EngineError("crashed", f"processing the model ended the checking process (exit {returncode})")


def _memory_error(limits: Limits) -> EngineError:
    return EngineError("memory_limit", f"processing the model needed more than the {limits.memory_mb} MB memory limit")


def _child_main() -> None:
    request = json.loads(sys.stdin.read())
    result_path = request["result_path"]
    try:
        module_name, func_name = request["target"].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(**request["kwargs"])
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        out: dict[str, Any] = {"ok": True, "value": value}
    except EngineError as exc:
        out = {"ok": False, "error": {"code": exc.code, "detail": exc.detail}}
    except MemoryError:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0] >> 20
        out = {
            "ok": False,
            "error": {
                "code": "memory_limit",
                "detail": f"processing the model needed more than the {limit} MB memory limit",
            },
        }
    except Exception as exc:  # a bug of ours, not the user's: reported as internal, logged by the caller
        import traceback

        traceback.print_exc()
        out = {"ok": False, "error": {"code": "internal", "detail": f"{type(exc).__name__}: {exc}"}}
    out["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(result_path).write_text(json.dumps(out))


if __name__ == "__main__":
    _child_main()
