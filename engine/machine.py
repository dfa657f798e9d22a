"""What machine a measurement ran on: every report that measures speed records it."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from pydantic import BaseModel, Field

_INTERESTING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "asimddp", "i8mm", "sve",  # aarch64 (/proc/cpuinfo 'Features')
)  # fmt: skip
_FP16_NATIVE = ("avx512_fp16", "amx_fp16", "asimdhp")


def int8_isa(flags: list[str] | tuple[str, ...]) -> str:
    """The instruction set that decides int8 speed in ONNX Runtime's kernels, most capable first (measured: static
    U8S8 on a ResNet-18-like CNN 2.6-2.8x over fp32 with AVX2 only, 3.5-5x with AVX-512 VNNI)."""
    have = set(flags)
    for flag, name in (
        ("amx_int8", "AMX"),
        ("avx512_vnni", "AVX-512 VNNI"),
        ("avx_vnni", "AVX-VNNI"),
        ("avx512bw", "AVX-512"),
        ("avx2", "AVX2"),
        ("i8mm", "Arm I8MM"),
        ("asimddp", "Arm dot product"),
        ("asimd", "Arm NEON"),
    ):
        if flag in have:
            return name
    return "no SIMD int8 instructions found"


class MachineInfo(BaseModel):
    cpu_model: str
    cpu_flags: list[str] = Field(description="SIMD features that matter to ONNX Runtime kernels (VNNI for int8)")
    int8_isa: str = Field(
        default="",
        description="The instruction set that decides int8 speed: AMX, AVX-512 VNNI, "
        "AVX-VNNI, AVX-512, AVX2 (int8 speed-ups differ about 2x between AVX2 and VNNI)",
    )
    fp16_native: bool = Field(default=False, description="The CPU computes in fp16 (AVX512-FP16, AMX-FP16, Arm FP16)")
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
            elif key.strip() in ("flags", "Features") and not flags:
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


def fp16_native() -> bool:
    """The CPU has fp16 arithmetic: only there can an fp16 model be faster than fp32 (elsewhere it is a size win)."""
    return any(f in _cpuinfo()[1] for f in _FP16_NATIVE)


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
        int8_isa=int8_isa(flags),
        fp16_native=fp16_native(),
        logical_cpus=os.cpu_count() or 1,
        onnxruntime_version=onnxruntime.__version__,
        python_version=platform.python_version(),
        load_average_1m=load_average(),
    )
