from pathlib import Path

import numpy as np
import pytest

from engine import binding
from engine.core.errors import EngineError
from engine.datasets import inspect_dataset, load_samples
from engine.inspect import TensorSpec
from tests import data_files


def test_npz_summary_finds_label_and_counts_nan(tmp_path: Path) -> None:
    x, y = data_files.classification(n=50)
    x[0, 0], x[1, 1] = np.nan, np.inf
    s = inspect_dataset(str(data_files.npz(tmp_path / "d.npz", x=x, y=y)), "npz", "samples", None)
    assert s.sample_count == 50 and s.features == ["x"]
    assert s.label.name == "y" and s.label.kind == "classification"
    assert s.label.class_count == len(np.unique(y))
    xs = next(a for a in s.arrays if a.name == "x")
    assert (xs.dtype, xs.shape, xs.nan_count, xs.inf_count) == ("float64", [50, 64], 1, 1)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_summary(tmp_path: Path, fmt: str) -> None:
    x, y = data_files.classification(n=30, features=4)
    path = getattr(data_files, fmt)(tmp_path / f"d.{fmt}", x, y.astype(np.float64), label="target")
    s = inspect_dataset(str(path), fmt, "samples", "target")
    assert s.sample_count == 30 and s.features == ["f0", "f1", "f2", "f3"]
    assert s.label.kind == "regression"
    arrays, labels = load_samples(path, fmt, "target")
    assert set(arrays) == {"f0", "f1", "f2", "f3"} and labels.shape == (30,)


def test_unlabeled_dataset(tmp_path: Path) -> None:
    x, _ = data_files.classification(n=10)
    s = inspect_dataset(str(data_files.npz(tmp_path / "d.npz", x=x)), "npz", "samples", None)
    assert s.label is None and s.features == ["x"]


@pytest.mark.parametrize("maker", ["keras_history", "lightning_history"])
def test_histories(tmp_path: Path, maker: str) -> None:
    fmt = "json" if maker == "keras_history" else "csv"
    s = inspect_dataset(str(getattr(data_files, maker)(tmp_path / f"h.{fmt}")), fmt, "history", None)
    assert s.kind == "history"
    if maker == "keras_history":
        assert (s.history.epochs, s.history.metrics) == (5, ["accuracy", "loss", "val_loss"])
    else:
        assert (s.history.epochs, s.history.metrics) == (4, ["train_loss", "val_acc", "val_loss"])
        val = next(a for a in s.arrays if a.name == "val_loss")
        assert val.nan_count == 0  # per epoch, the value from the row that logged it


@pytest.mark.parametrize(
    ("make", "fmt", "code", "words"),
    [
        (data_files.object_npz, "npz", "invalid_dataset", "object dtype"),
        (data_files.lying_npz, "npz", "invalid_dataset", "declares shape"),
        (data_files.ragged_csv, "csv", "invalid_dataset", "columns"),
        (lambda p: data_files.npz(p, x=np.zeros((3, 2)), y=np.zeros(4)), "npz", "invalid_dataset", "sample counts"),
    ],
    ids=["object", "huge-declared-shape", "ragged-csv", "mismatched-counts"],
)
def test_bad_datasets(tmp_path: Path, make, fmt, code, words) -> None:
    with pytest.raises(EngineError) as info:
        inspect_dataset(str(make(tmp_path / f"bad.{fmt}")), fmt, "samples", None)
    assert info.value.code == code and words in info.value.detail


def test_unknown_label(tmp_path: Path) -> None:
    x, y = data_files.classification(n=10)
    with pytest.raises(EngineError) as info:
        inspect_dataset(str(data_files.npz(tmp_path / "d.npz", x=x, y=y)), "npz", "samples", "target")
    assert info.value.code == "unknown_label" and "'target'" in info.value.detail


def _summary(tmp_path, **arrays):
    return inspect_dataset(str(data_files.npz(tmp_path / "d.npz", **arrays)), "npz", "samples", None)


def test_binding_rules(tmp_path: Path) -> None:
    x = TensorSpec(name="x", elem_type="float32", shape=["batch", 4])
    plan = binding.plan([x], _summary(tmp_path, features=np.ones((5, 4)), y=np.arange(5)))
    assert plan[0].arrays == ["features"] and plan[0].dtype == "float32"
    feeds = binding.bind(plan, {"features": np.ones((5, 4))})
    assert feeds["x"].dtype == np.float32

    def refused(spec, **arrays):
        with pytest.raises(EngineError) as info:
            binding.plan([spec], _summary(tmp_path, **arrays))
        assert info.value.code == "incompatible_data"
        return info.value.detail

    assert "dim 1" in refused(x, x=np.ones((5, 3)))
    assert "rank" in refused(x, x=np.ones((5, 4, 1)))
    assert "float to int" in refused(TensorSpec(name="x", elem_type="int64", shape=["n", 4]), x=np.ones((5, 4)))
    assert "overflow" in refused(TensorSpec(name="x", elem_type="int8", shape=["n", 1]), x=np.full((5, 1), 1000))
    assert "overflow" in refused(x, x=np.full((5, 4), 1e300))
    two = [x, TensorSpec(name="mask", elem_type="float32", shape=["n", 4])]
    with pytest.raises(EngineError, match="mask"):
        binding.plan(two, _summary(tmp_path, x=np.ones((5, 4))))
    assert binding.plan(two, _summary(tmp_path, x=np.ones((5, 4)), mask=np.ones((5, 4))))[1].arrays == ["mask"]


def test_the_first_rows_are_read_without_the_rest(tmp_path) -> None:
    """Calibration and eval read only the samples they use (calibration_max_samples, eval_max_samples): a damaged
    tail of the file proves the rest was never read."""
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.datasets import read_arrays

    x = np.arange(20000 * 8, dtype=np.float32).reshape(20000, 8)
    y = np.arange(20000) % 10
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        member = zf.getinfo("x.npy")
    end = member.header_offset + 30 + len(member.filename) + member.file_size  # local header is 30 bytes + name
    raw[end - 100 : end] = b"\xff" * 100  # the last rows of x: its CRC no longer matches
    path.write_bytes(bytes(raw))
    head = read_arrays(path, "npz", max_rows=50)
    np.testing.assert_array_equal(head["x"], x[:50])
    np.testing.assert_array_equal(head["y"], y[:50])
    with pytest.raises(zipfile.BadZipFile):
        read_arrays(path, "npz")
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, x=x, f=np.asfortranarray(x))  # a Fortran-ordered member: read whole, then cut
    head = read_arrays(compressed, "npz", max_rows=7)
    np.testing.assert_array_equal(head["x"], x[:7])
    np.testing.assert_array_equal(head["f"], x[:7])
    table = pa.table({"a": x[:, 0], "b": y})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=1000)
    head = read_arrays(tmp_path / "d.parquet", "parquet", max_rows=1500)
    np.testing.assert_array_equal(head["b"], y[:1500])
    (tmp_path / "d.csv").write_text("a,b\n" + "".join(f"{i},{i % 10}\n" for i in range(20000)))
    head = read_arrays(tmp_path / "d.csv", "csv", max_rows=3)
    np.testing.assert_array_equal(head["a"], [0, 1, 2])
