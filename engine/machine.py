"""What machine a measurement ran on: every report that measures speed records it."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from pydantic import BaseModel, Field

_INTERESTING_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


class MachineInfo(BaseModel):
    cpu_model: str
    cpu_flags: list[str] = Field(description="SIMD features that matter to ONNX Runtime kernels (VNNI for int8)")
    logical_cpus: int
    onnxruntime_version: str
    python_version: str
    load_average_1m: float | None = Field(description="1-minute load average when the measurement started")
    load_average_1m_after: float | None = Field(default=None, description="...and when it ended")


@functools.cache
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and its flags that matter, from /proc/cpuinfo; once per process (the sandbox's forkserver
    reads it before forking, so job children inherit it). Not platform.processor(): on Linux that runs `uname -p` in
    a subprocess, about 20 ms in every job child."""
    model, flags = "", tuple[str, ...]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                have = set(value.split())
                flags = tuple(f for f in _INTERESTING_FLAGS if f in have)
    except OSError:
        pass
    return model or platform.machine(), flags


# Optional libraries a job kind may need, by capability name.
_OPTIONAL = {"torch": "torch"}


def capabilities() -> list[str]:
    """Optional capabilities this Python environment has (workers publish them; the API checks jobs against them)."""
    import importlib.util

    return sorted(name for name, module in _OPTIONAL.items() if importlib.util.find_spec(module) is not None)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info() -> MachineInfo:
    import onnxruntime

    model, flags = _cpuinfo()
    return MachineInfo(
        cpu_model=model,
        cpu_flags=list(flags),
        logical_cpus=os.cpu_count() or 1,
        onnxruntime_version=onnxruntime.__version__,
        python_version=platform.python_version(),
        load_average_1m=load_average(),
    )
