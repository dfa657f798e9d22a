"""Small datasets written by the tests: NPZ, CSV, Parquet and training histories, good and bad."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def classification(n: int = 200, features: int = 64, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))  # float64: binds to float32 inputs by same_kind cast
    y = rng.integers(0, classes, n)
    return x, y


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def csv(path: Path, x: np.ndarray, y: np.ndarray | None = None, label: str = "label") -> Path:
    cols = [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join(cols + ([label] if y is not None else []))]
    for i, row in enumerate(x):
        vals = [repr(float(v)) for v in row] + ([str(y[i])] if y is not None else [])
        lines.append(",".join(vals))
    path.write_text("\n".join(lines) + "\n")
    return path


def parquet(path: Path, x: np.ndarray, y: np.ndarray | None = None, label: str = "label") -> Path:
    table = {f"f{i}": x[:, i] for i in range(x.shape[1])}
    if y is not None:
        table[label] = y
    pq.write_table(pa.table(table), path)
    return path


def keras_history(path: Path, epochs: int = 5) -> Path:
    loss = [1.0 / (e + 1) for e in range(epochs)]
    path.write_text(json.dumps({"loss": loss, "val_loss": [v + 0.1 for v in loss], "accuracy": [0.5] * epochs}))
    return path


def lightning_history(path: Path, epochs: int = 4) -> Path:
    """CSVLogger metrics.csv: train and validation rows logged separately, blanks elsewhere."""
    lines = ["epoch,step,train_loss,val_loss,val_acc"]
    for e in range(epochs):
        lines.append(f"{e},{e * 10 + 9},{1.0 / (e + 1)},,")
        lines.append(f"{e},{e * 10 + 9},,{1.2 / (e + 1)},{0.5 + e / 10}")
    path.write_text("\n".join(lines) + "\n")
    return path


def object_npz(path: Path) -> Path:
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    return path


def lying_npz(path: Path) -> Path:
    """An .npz whose header declares a huge shape over 16 bytes of data."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 64), }"
    header = header + " " * (118 - len(header)) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npy)
    path.write_bytes(buf.getvalue())
    return path


def ragged_csv(path: Path) -> Path:
    path.write_text("a,b,label\n1,2,0\n3,4,5,6\n")
    return path
