"""Run one engine function in a child process with memory, CPU and wall-time limits.

Untrusted model files are parsed and first run here, never in the API or worker process: a file that
crashes onnx or ONNX Runtime, or needs more memory than allowed, fails only its own call.

Two ways to start the child, same protocol:
- cold (default): `python -m engine.sandbox`, a fresh interpreter (about 0.5-0.9 s to import the stack);
- warm (`warm=True`, for workers): forked from a multiprocessing forkserver that has numpy, onnx, ONNX
  Runtime and the engine imported already (a few ms). Nothing has run a model in the forkserver, so every
  child still starts clean.
The child calls `module:function(**kwargs)`, writes {"ok", "value" | "error", "peak_rss_kb"} as JSON to
`result_path` and sends progress lines {"progress", "stage"} on a pipe whose fd is in $ONNXSMITH_PROGRESS_FD.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.core.errors import EngineError, ErrorCode

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
PROGRESS_FD_ENV = "ONNXSMITH_PROGRESS_FD"
THREADS_ENV = "ONNXSMITH_SANDBOX_THREADS"
_PRELOAD = [
    "__main__",
    "numpy",
    "numpy.ma",
    "onnx",
    "onnxruntime",
    "onnxruntime.quantization",  # before anything imports onnxruntime.transformers (it edits sys.path)
    "engine.registry",  # every kind, and the libraries they share
    "engine.inspect",
    "engine.datasets",
    "engine.warmup",
    # what every child needs before it runs anything: without these each child imported them anew (where no .pyc
    # can be written, compiling engine/sandbox.py from source: ~15 ms a job; bench/job_overhead.py)
    "engine.sandbox",
    "ctypes",
    "resource",
    "multiprocessing.popen_fork",
    "multiprocessing.popen_forkserver",
    "encodings.cp437",  # zip member names (npz datasets)
]

Monitor = Callable[[dict[str, Any] | None], bool]


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


class _Child(Protocol):
    def poll(self) -> int | None: ...
    def wait(self, timeout: float) -> None: ...
    def kill(self) -> None: ...


def run_isolated(
    target: str,
    kwargs: dict[str, Any],
    limits: Limits,
    *,
    monitor: Monitor | None = None,
    poll_s: float = 1.0,
    warm: bool = False,
) -> SandboxResult:
    """Call `target` ("package.module:function") in a limited child; return its JSON-able value.

    `monitor`, if given, is called with each progress message the child sends ({"progress", "stage"}) and
    with None every `poll_s` seconds; when it returns False the child is killed and EngineError
    `cancelled` is raised. Raises EngineError: the function's own, or `timeout`, `memory_limit`, `crashed`.
    """
    fd, result_path = tempfile.mkstemp(prefix="onnxsmith-sandbox-", suffix=".json")
    os.close(fd)
    fd, stderr_path = tempfile.mkstemp(prefix="onnxsmith-sandbox-", suffix=".err")
    os.close(fd)
    request = {"target": target, "kwargs": kwargs, "result_path": result_path, "owner": process_identity()}
    started = time.perf_counter()
    progress_r, progress_w = os.pipe()
    try:
        child = (_start_warm if warm else _start_cold)(request, limits, progress_w, stderr_path)
        os.close(progress_w)
        progress_w = -1
        _watch(child, progress_r, limits, monitor, poll_s, started)
        seconds = time.perf_counter() - started
        result = _read_result(result_path)
        stderr = Path(stderr_path).read_bytes()[-20000:].decode(errors="replace")
    finally:
        os.close(progress_r)
        if progress_w >= 0:
            os.close(progress_w)
        Path(result_path).unlink(missing_ok=True)
        Path(stderr_path).unlink(missing_ok=True)

    if result is None:
        raise _crash_error(child.poll() or 0, stderr, limits)
    if not result["ok"]:
        error = EngineError(result["error"]["code"], result["error"]["detail"])
        if error.code == ErrorCode.INTERNAL:  # a bug: the caller logs the child's traceback with its job id
            error.traceback = stderr[-8000:]
        raise error
    return SandboxResult(result["value"], int(result.get("peak_rss_kb", 0)), seconds)


# ---------------------------------------------------------------- starting children


def _apply_limits(limits: Limits) -> None:
    """In the child: address space, CPU time, no core dumps, its own session (a watchdog ends it with its owner)."""
    mem = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(limits.timeout_s * max(1, limits.threads)) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _thread_env(threads: int) -> dict[str, str]:
    env = {var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env[THREADS_ENV] = str(threads)
    return env


class _ColdChild:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _start_cold(request: dict[str, Any], limits: Limits, progress_w: int, stderr_path: str) -> _Child:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
    env.update(_thread_env(limits.threads))
    env[PROGRESS_FD_ENV] = str(progress_w)
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            pass_fds=(progress_w,),
            preexec_fn=lambda: _apply_limits(limits),  # noqa: PLW1509 - setrlimit must run in the child
        )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
    return _ColdChild(proc)


_forkserver: Any = None
_forkserver_lock = threading.Lock()


def _forkserver_context() -> Any:
    global _forkserver
    with _forkserver_lock:
        if _forkserver is None:
            ctx = multiprocessing.get_context("forkserver")
            # Each child re-runs the main module (multiprocessing's spawn preparation). Run as `python -m x`,
            # that is x: import it once in the forkserver too, so the child's re-run finds its imports loaded.
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            main_name = [spec.name] if spec is not None and spec.name != "__main__" else []
            ctx.set_forkserver_preload(main_name + _PRELOAD)
            # the forkserver inherits this environment: single-threaded BLAS, no thread pools before fork
            os.environ.update({k: v for k, v in _thread_env(1).items() if k != THREADS_ENV})
            _forkserver = ctx
        return _forkserver


class _WarmChild:
    def __init__(self, process: Any) -> None:
        self.process = process

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.process.kill()
        self.process.join()


def _warm_entry(request: dict[str, Any], limits: Limits, progress_w: Any, stderr_path: str) -> None:
    _apply_limits(limits)
    os.environ.update(_thread_env(limits.threads))
    os.environ[PROGRESS_FD_ENV] = str(progress_w.fileno())
    err = os.open(stderr_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(err, 2)
    os.close(err)
    _run_request(request)


def _start_warm(request: dict[str, Any], limits: Limits, progress_w: int, stderr_path: str) -> _Child:
    from multiprocessing.connection import Connection

    ctx = _forkserver_context()
    writer = Connection(os.dup(progress_w), readable=False)  # handed to the child through the forkserver
    process = ctx.Process(target=_warm_entry, args=(request, limits, writer, stderr_path), daemon=False)
    process.start()
    writer.close()
    return _WarmChild(process)


# ---------------------------------------------------------------- watching


def _watch(
    child: _Child, progress_r: int, limits: Limits, monitor: Monitor | None, poll_s: float, started: float
) -> None:
    """Relay progress messages until the child exits; enforce the wall-time limit and cancellation."""
    buffer = b""
    deadline = started + limits.timeout_s
    open_pipe = True
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            child.kill()
            raise EngineError(
                ErrorCode.TIMEOUT, f"the work was still running after {limits.timeout_s:g} s (time limit)"
            )
        if open_pipe:
            ready, _, _ = select.select([progress_r], [], [], min(poll_s, remaining))
            if ready:
                chunk = os.read(progress_r, 65536)
                open_pipe = bool(chunk)
                buffer += chunk
        else:
            child.wait(min(poll_s, remaining))
        exited = child.poll() is not None
        while exited and open_pipe and select.select([progress_r], [], [], 0)[0]:
            chunk = os.read(progress_r, 65536)  # what the child sent just before it exited
            open_pipe = bool(chunk)
            buffer += chunk
        messages = []
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                messages.append(json.loads(line))
        if monitor is not None:
            for message in messages or [None]:
                if not monitor(message):
                    child.kill()
                    raise EngineError(ErrorCode.CANCELLED, "the job was cancelled")
        if exited:
            return


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
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return EngineError(ErrorCode.TIMEOUT, "processing exceeded its CPU time limit")
    if "MemoryError" in stderr or "bad_alloc" in stderr or "Cannot allocate memory" in stderr:
        return _memory_error(limits.memory_mb)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else ""
        return EngineError(ErrorCode.CRASHED, f"processing crashed its child process ({name or returncode})")
    return EngineError(ErrorCode.CRASHED, f"processing ended its child process without a result (exit {returncode})")


def out_of_memory(exc: Exception) -> bool:
    """An allocation that failed under the child's address-space limit, raised as another exception type than
    MemoryError: protobuf's serializer (upb) says only that it failed (messages over 2 GB are refused earlier by the
    onnx package with a ValueError) and its parser that its arena could not grow; ONNX Runtime raises std::bad_alloc
    as its own exception."""
    text = str(exc)
    return (
        (type(exc).__name__ == "EncodeError" and "Failed to serialize" in text)
        or "Arena alloc failed" in text
        or "bad_alloc" in text
    )


def _memory_error(limit_mb: int) -> EngineError:
    return EngineError(ErrorCode.MEMORY_LIMIT, f"processing needed more than the {limit_mb} MB memory limit")


# ---------------------------------------------------------------- in the child


def report_progress(progress: float, stage: str) -> None:
    """Called by engine code in the child: sends {"progress", "stage"} to the parent (no-op elsewhere)."""
    fd = os.environ.get(PROGRESS_FD_ENV)
    if fd is None:
        return
    line = json.dumps({"progress": max(0.0, min(1.0, float(progress))), "stage": stage[:200]}) + "\n"
    with contextlib.suppress(OSError):
        os.write(int(fd), line.encode())


def process_identity(pid: int | None = None) -> list[int]:
    """[pid, start time in clock ticks since boot] (Linux /proc), so a reused pid is not taken for the process."""
    pid = pid or os.getpid()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return [pid, int(fields[19])]  # field 22 of stat: starttime (the first two fields are before the ")")
    except (OSError, IndexError, ValueError):
        return [pid, 0]


def is_alive(identity: list[int]) -> bool:
    """Whether the process [pid, start time] still runs (a zombie counts as gone)."""
    pid, start = identity
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z" and (start == 0 or int(stat[19]) == start)


WATCHDOG_S = 0.5


def _die_with_owner(owner: list[int] | None) -> None:
    """In the child: exit when the process that asked for the work is gone (a worker killed with SIGKILL must not
    leave its job computing: the child has its own session, so no signal to the worker's group reaches it)."""
    if not owner:
        return

    def watch() -> None:
        while is_alive(owner):
            time.sleep(WATCHDOG_S)
        os._exit(137)

    default = threading.stack_size(1 << 16)  # a small stack: the child's address-space limit is the job's
    try:
        threading.Thread(target=watch, name="onnxsmith-owner-watchdog", daemon=True).start()
    finally:
        threading.stack_size(default)


def _run_request(request: dict[str, Any]) -> None:
    _die_with_owner(request.get("owner"))
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
        err = _memory_error(limit)
        out = {"ok": False, "error": {"code": err.code, "detail": err.detail}}
    except Exception as exc:
        if out_of_memory(exc):
            err = _memory_error(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)
            out = {"ok": False, "error": {"code": err.code, "detail": err.detail}}
        else:  # a bug of ours, not the user's: reported as internal, logged by the caller
            import traceback

            traceback.print_exc()
            out = {"ok": False, "error": {"code": "internal", "detail": f"{type(exc).__name__}: {exc}"}}
    out["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(request["result_path"]).write_text(json.dumps(out))


if __name__ == "__main__":
    _run_request(json.loads(sys.stdin.read()))
