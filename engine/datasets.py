"""Datasets: read and summarize uploaded samples (.npz, .csv, .parquet) and training histories (.json, .csv).

`inspect_dataset` runs inside the sandbox (a child process with limits) on untrusted files; `load_samples`
is what job kinds use to get arrays. NPZ members are checked from their headers before any array is read:
object dtypes are refused (no pickle, ever) and a declared shape must match the bytes actually stored.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode

Format = Literal["npz", "csv", "parquet", "json"]
LABEL_NAMES = ("y", "label")
MAX_CLASSES_LISTED = 100
HISTORY_INDEX_COLUMNS = ("epoch", "step")
# Bounds on what a dataset may hold, so its summary (stored, returned on every GET, read at every submit) stays
# small: an npz of 100k arrays made a 10.5 MB summary, a history of 10^6 keys held up the API.
MAX_ARRAYS = 4096  # npz members or table columns
MAX_HISTORY_METRICS = 1000
MAX_NAME_CHARS = 200


class ArraySummary(BaseModel):
    name: str
    dtype: str
    shape: list[int]
    nan_count: int = 0
    inf_count: int = 0
    min: float | None = Field(default=None, description="Smallest finite value (numeric arrays)")
    max: float | None = Field(default=None, description="Largest finite value (numeric arrays)")


class LabelSummary(BaseModel):
    name: str
    kind: Literal["classification", "regression"]
    class_count: int | None = None
    classes: list[int | float | str] | None = Field(
        default=None, description=f"Sorted class values (up to {MAX_CLASSES_LISTED})"
    )


class HistorySummary(BaseModel):
    source: Literal["keras", "lightning-csv", "columns"]
    epochs: int
    metrics: list[str]


class DatasetSummary(BaseModel):
    kind: Literal["samples", "history"]
    format: Format
    sample_count: int
    arrays: list[ArraySummary] = Field(description="NPZ arrays, or CSV/Parquet columns (shape [N])")
    features: list[str] = Field(description="Arrays/columns that are not the label")
    label: LabelSummary | None = None
    history: HistorySummary | None = None


def _bad(detail: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_DATASET, detail)


# ---------------------------------------------------------------- reading


def _npz_headers(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Dtype and shape of every member, from the .npy headers only; refuses object arrays and lies."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(f"not a valid .npz file ({exc})") from None
    out: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    with zf:
        if len(zf.infolist()) > MAX_ARRAYS:
            raise _bad(
                f"the .npz file holds {len(zf.infolist()):,} members; at most {MAX_ARRAYS:,} arrays are accepted"
            )
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise _bad(f"unexpected member {info.filename!r} in the .npz (only .npy arrays)")
            name = info.filename[: -len(".npy")]
            if len(name) > MAX_NAME_CHARS:
                raise _bad(f"an array name is longer than {MAX_NAME_CHARS} characters: {name[:60]!r}...")
            with zf.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10000)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10000)
                    else:
                        raise ValueError(f".npy format version {version} is not supported")
                except (ValueError, OSError) as exc:
                    raise _bad(f"array {name!r} has an invalid .npy header ({exc})") from None
                header_len = f.tell()
            if dtype.hasobject:
                raise _bad(
                    f"array {name!r} has an object dtype; only numeric and fixed-width string arrays are accepted"
                )
            declared = math.prod(shape) * dtype.itemsize
            if declared != info.file_size - header_len:
                raise _bad(
                    f"array {name!r} declares shape {list(shape)} ({declared} bytes of {dtype}) but stores "
                    f"{info.file_size - header_len} bytes"
                )
            out[name] = (dtype, tuple(int(d) for d in shape))
    if not out:
        raise _bad("the .npz file holds no arrays")
    return out


def _read_npz(path: Path, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Every array, or its first `max_rows` rows read from the member's stream (the rest is never decompressed)."""
    headers = _npz_headers(path)
    if max_rows is not None:
        with zipfile.ZipFile(path) as zf:
            cut = {name: _npy_prefix(zf, name, dtype, shape, max_rows) for name, (dtype, shape) in headers.items()}
        if all(v is not None for v in cut.values()):
            return {k: v for k, v in cut.items() if v is not None}
    with np.load(path, allow_pickle=False) as data:  # whole (or a Fortran-ordered member: read whole, then cut)
        return {name: data[name][:max_rows] if max_rows and data[name].ndim else data[name] for name in data.files}


def _npy_prefix(
    zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], rows: int
) -> np.ndarray | None:
    """The first `rows` rows of a C-ordered member; None for a Fortran-ordered or 0-d one."""
    with zf.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, fortran, _ = read(f, max_header_size=10000)
        if fortran or not shape:
            return None
        rows = min(shape[0], rows)
        count = rows * math.prod(shape[1:])
        return np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count).reshape(rows, *shape[1:]).copy()


def _first_rows(batches: Any, schema: Any, max_rows: int) -> Any:
    """A table of the first `max_rows` rows of a stream of record batches (read no further)."""
    import pyarrow as pa

    taken, n = [], 0
    for batch in batches:
        taken.append(batch)
        n += batch.num_rows
        if n >= max_rows:
            break
    return pa.Table.from_batches(taken, schema=schema).slice(0, max_rows)


def _read_table(path: Path, fmt: Format, max_rows: int | None = None) -> dict[str, np.ndarray]:
    import pyarrow as pa

    try:
        if fmt == "csv":
            from pyarrow import csv

            if max_rows is None:
                table = csv.read_csv(path)
            else:
                reader = csv.open_csv(path)
                table = _first_rows(reader, reader.schema, max_rows)
        else:
            import pyarrow.parquet as pq

            if max_rows is None:
                table = pq.read_table(path)
            else:
                pf = pq.ParquetFile(path)
                table = _first_rows(pf.iter_batches(batch_size=min(max_rows, 65536)), pf.schema_arrow, max_rows)
        names = list(table.column_names)  # decoded here: a header that is not UTF-8 fails now, as a 422
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise _bad(f"cannot read the {fmt} file: {str(exc).splitlines()[0][:300]}") from None
    except UnicodeDecodeError:
        raise _bad(f"cannot read the {fmt} file: it is not UTF-8 text") from None
    if table.num_columns == 0:
        raise _bad(f"the {fmt} file has no columns")
    if table.num_columns > MAX_ARRAYS:
        raise _bad(f"the {fmt} file has {table.num_columns:,} columns; at most {MAX_ARRAYS:,} are accepted")
    out: dict[str, np.ndarray] = {}
    for name, column in zip(names, table.columns, strict=True):
        if len(str(name)) > MAX_NAME_CHARS:
            raise _bad(f"a column name is longer than {MAX_NAME_CHARS} characters: {str(name)[:60]!r}...")
        t = column.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            if column.null_count and not pa.types.is_floating(t):
                column = column.cast(pa.float64())
            arr = column.to_numpy()
            if arr.dtype.kind == "f" and column.null_count:
                arr = np.asarray(arr, dtype=arr.dtype)  # nulls became NaN
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            arr = np.asarray(column.to_pylist(), dtype=str)
        else:
            raise _bad(f"column {name!r} has type {t}; only numbers, booleans and strings are accepted")
        out[str(name)] = arr
    return out


def read_arrays(path: Path, fmt: Format, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Every array of the dataset, or only its first `max_rows` samples (read without loading the rest)."""
    if fmt == "npz":
        return _read_npz(path, max_rows)
    if fmt in ("csv", "parquet"):
        return _read_table(path, fmt, max_rows)
    raise _bad(f"format {fmt} holds no samples")


# ---------------------------------------------------------------- summaries


def _array_summary(name: str, arr: np.ndarray) -> ArraySummary:
    s = ArraySummary(name=name, dtype=str(arr.dtype), shape=[int(d) for d in arr.shape])
    if arr.dtype.kind in "fc":
        s.nan_count = int(np.isnan(arr).sum())
        s.inf_count = int(np.isinf(arr).sum())
    if arr.dtype.kind in "iufb" and arr.size:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size:
            s.min, s.max = float(finite.min()), float(finite.max())
    return s


def _label_summary(name: str, y: np.ndarray) -> LabelSummary:
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "fiub":
        return LabelSummary(name=name, kind="classification", class_count=int(y.shape[1]))  # one-hot
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        raise _bad(f"label {name!r} has shape {list(y.shape)}; expected [N], [N, 1] or one-hot [N, C]")
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        return LabelSummary(name=name, kind="regression")
    classes = np.unique(y)
    listed = [c.item() for c in classes[:MAX_CLASSES_LISTED]]
    return LabelSummary(name=name, kind="classification", class_count=int(classes.size), classes=listed)


def _pick_label(names: list[str], label: str | None) -> str | None:
    if label is not None:
        if label not in names:
            raise EngineError(
                ErrorCode.UNKNOWN_LABEL,
                f"label {label!r} is not an array/column of the dataset (it has: {', '.join(names)})",
            )
        return label
    return next((n for n in LABEL_NAMES if n in names), None)


def summarize_samples(arrays: dict[str, np.ndarray], fmt: Format, label: str | None) -> DatasetSummary:
    names = list(arrays)
    counts = {n: (a.shape[0] if a.ndim else 0) for n, a in arrays.items()}
    if any(a.ndim == 0 for a in arrays.values()):
        raise _bad("scalar arrays are not samples: every array needs a first (sample) dimension")
    if len(set(counts.values())) > 1:
        raise _bad(f"arrays have different sample counts: {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise _bad("the dataset has no samples")
    label_name = _pick_label(names, label)
    return DatasetSummary(
        kind="samples",
        format=fmt,
        sample_count=n,
        arrays=[_array_summary(k, v) for k, v in arrays.items()],
        features=[k for k in names if k != label_name],
        label=_label_summary(label_name, arrays[label_name]) if label_name else None,
    )


def read_history(path: Path, fmt: Format) -> tuple[dict[str, list[float]], HistorySummary]:
    """Per-epoch metric curves from a Keras `History.history` JSON or a Lightning CSVLogger metrics.csv."""
    if fmt == "json":
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _bad(f"the history is not valid JSON ({exc})") from None
        except RecursionError:
            raise _bad("the history's JSON is nested too deeply (a history is an object of metric lists)") from None
        if isinstance(data, dict) and isinstance(data.get("history"), dict):
            data = data["history"]
        if not isinstance(data, dict) or not data:
            raise _bad('a JSON history is an object of metric lists: {"loss": [...], "val_loss": [...]}')
        if len(data) > MAX_HISTORY_METRICS:
            raise _bad(f"the history has {len(data):,} keys; at most {MAX_HISTORY_METRICS:,} metrics are accepted")
        curves: dict[str, list[float]] = {}
        for key, values in data.items():
            if key in HISTORY_INDEX_COLUMNS:
                continue
            if not isinstance(values, list) or not all(isinstance(v, int | float) or v is None for v in values):
                raise _bad(f"history metric {key!r} must be a list of numbers")
            curves[key] = [math.nan if v is None else float(v) for v in values]
        source = "keras"
    elif fmt == "csv":
        columns = _read_table(path, "csv")
        if "epoch" not in columns:
            raise _bad("a CSV history needs an 'epoch' column (Lightning CSVLogger metrics.csv)")
        epochs = columns["epoch"].astype(np.int64)
        curves = {}
        for key, values in columns.items():
            if key in HISTORY_INDEX_COLUMNS:
                continue
            if values.dtype.kind not in "fiub":
                raise _bad(f"history column {key!r} is not numeric")
            per_epoch = []
            for e in np.unique(epochs):  # Lightning logs train and val on separate rows: last value per epoch
                vals = values[(epochs == e)].astype(np.float64)
                vals = vals[~np.isnan(vals)]
                per_epoch.append(float(vals[-1]) if vals.size else math.nan)
            curves[key] = per_epoch
        source = "lightning-csv"
    else:
        raise _bad(f"a history must be .json or .csv, not .{fmt}")
    if not curves:
        raise _bad("the history has no metric columns")
    if len(curves) > MAX_HISTORY_METRICS:
        raise _bad(f"the history has {len(curves):,} metrics; at most {MAX_HISTORY_METRICS:,} are accepted")
    long_names = [k for k in curves if len(k) > MAX_NAME_CHARS]
    if long_names:
        raise _bad(f"a metric name is longer than {MAX_NAME_CHARS} characters: {long_names[0][:60]!r}...")
    lengths = {len(v) for v in curves.values()}
    if len(lengths) > 1:
        raise _bad(f"history metrics have different numbers of epochs: { {k: len(v) for k, v in curves.items()} }")
    epochs_n = lengths.pop()
    if epochs_n == 0:
        raise _bad("the history has no epochs")
    return curves, HistorySummary(source=source, epochs=epochs_n, metrics=sorted(curves))


def inspect_dataset(path: str, fmt: Format, kind: str, label: str | None) -> DatasetSummary:
    """Entry point for the upload check (run in the sandbox)."""
    p = Path(path)
    if p.stat().st_size == 0:
        raise _bad("the file is empty")
    if kind == "history":
        curves, history = read_history(p, fmt)
        return DatasetSummary(
            kind="history",
            format=fmt,
            sample_count=history.epochs,
            history=history,
            features=[],
            arrays=[_array_summary(k, np.asarray(v, np.float64)) for k, v in curves.items()],
        )
    return summarize_samples(read_arrays(p, fmt), fmt, label)


def format_from_filename(filename: str | None) -> Format | None:
    if not filename or "." not in filename:
        return None
    ext = filename.rsplit(".", 1)[1].lower()
    return {"npz": "npz", "csv": "csv", "parquet": "parquet", "pq": "parquet", "json": "json"}.get(ext)  # type: ignore[return-value]


def load_samples(
    path: Path, fmt: Format, label: str | None, max_rows: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Arrays for a job: (features by name, label or None), the first `max_rows` samples when given. `label` is the
    dataset's resolved label name."""
    arrays = read_arrays(path, fmt, max_rows)
    y = arrays.pop(label) if label else None
    return arrays, y
