"""Functions the sandbox tests run in the child process (importable there via the project root)."""

import os
import time


def echo(value):
    return {"echo": value}


def abort():
    os.abort()


def sleep(seconds):
    time.sleep(seconds)
    return {}


def allocate(megabytes):
    block = bytearray(megabytes << 20)
    return {"len": len(block)}


def exit_hard(code):
    os._exit(code)


def progress(steps):
    from engine.sandbox import report_progress

    for i in range(1, steps + 1):
        report_progress(i / steps, f"step {i}")
    return {"done": steps}


def session(threads):
    import tempfile
    from pathlib import Path

    import numpy as np

    from engine.runtime import make_session
    from tests.onnx_models import mlp

    path = mlp(Path(tempfile.mkdtemp()) / "m.onnx")
    out = make_session(str(path), threads).run(None, {"x": np.ones((64, 64), np.float32)})[0]
    return {"shape": list(out.shape)}


def buggy():
    return {"a": 1}["b"]  # a KeyError: a bug of ours, not the user's
