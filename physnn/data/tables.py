"""A user's own data: a CSV file, an ``.npz`` file of arrays, or arrays handed over in Python.

Why one module: the three routes share the checks that keep a data set from being silently wrong, and each
check stops before any query with one line naming the file, the line (or array index) and the value:

* a header that names a column twice (a reader keeping "the last copy" trains on half the columns);
* a label kind that changes between rows (``1O`` among integers makes every label a name);
* a class with a single row (one row labelled 99 in a 12-class set: a class nobody can test), or one class only;
* a test label that no training row has (an output the network never learnt, counted as an error);
* a feature that is not a finite number.

Labels may be integers or names. Either way the classes are the distinct labels, sorted (numerically for
integers), and class ``i`` is the ``i``-th of them: ``class_names`` and ``info["label_map"]`` (label -> class)
go into the run file, so a reader years later knows which output meant what. Features are standardised with
the mean and standard deviation of the *training* split only (``standardize=False`` keeps them as given).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from physnn.data.base import Dataset, check_fraction, make, split

__all__ = ["load_csv", "load_npz", "from_arrays", "as_dataset", "read_csv_rows", "index_labels"]

Where = Callable[[int], str]


# ------------------------------------------------------------------ CSV text
def _open_text(p: Path) -> io.TextIOBase:
    # utf-8-sig: a spreadsheet's byte-order mark must not become part of the first column's name
    if p.suffix == ".gz":
        return gzip.open(p, "rt", newline="", encoding="utf-8-sig")
    return open(p, newline="", encoding="utf-8-sig")


def read_csv_rows(path: str | os.PathLike, what: str = "CSV file") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line, fields), ...])`` of a CSV file with a header line (``.csv.gz`` too).

    Blank lines are skipped. A missing file, a header naming a column twice or without a name, a row with
    another number of fields than the header, and text that is not UTF-8 are errors naming file and line.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a folder; give the CSV file itself")
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    rows: list[tuple[int, list[str]]] = []
    try:
        with _open_text(p) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise ValueError(f"{p}: no header line (the first line must name the columns)")
            header = [h.strip() for h in header]
            for i, name in enumerate(header):
                if not name:
                    raise ValueError(f"{p}: line 1: column {i + 1} has no name; every column needs one")
            dup = [name for name, n in Counter(header).items() if n > 1]
            if dup:
                cols = [i + 1 for i, h in enumerate(header) if h == dup[0]]
                raise ValueError(
                    f"{p}: line 1: column {dup[0]!r} appears {len(cols)} times (columns "
                    f"{', '.join(map(str, cols))}); rename or drop the copies"
                )
            for fields in reader:
                if not fields or not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise ValueError(
                        f"{p}: line {reader.line_num} has {len(fields)} field(s), the header has {len(header)}"
                    )
                rows.append((reader.line_num, fields))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{p}: not a text CSV file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not UTF-8)"
        ) from None
    except csv.Error as exc:
        raise ValueError(f"{p}: not a readable CSV file ({exc})") from None
    except (OSError, EOFError) as exc:  # a damaged .gz
        raise ValueError(f"{p}: cannot read it ({exc})") from None
    if not rows:
        raise ValueError(f"{p}: no data rows after the header")
    return header, rows


def parse_numbers(
    rows: Sequence[tuple[int, list[str]]], columns: Sequence[int], header: Sequence[str], p: Path
) -> np.ndarray:
    """The given columns of ``rows`` as float64 ``[N, len(columns)]``; a cell that is not a finite number is an
    error naming its line, column and value."""
    cells = [[r[j] for j in columns] for _, r in rows]
    try:
        x = np.array(cells, dtype=np.float64).reshape(len(rows), len(columns))
    except ValueError:  # find the cell (the fast path above says only that one exists)
        for line, r in rows:
            for j in columns:
                try:
                    float(r[j])
                except ValueError:
                    raise ValueError(f"{p}: line {line} column {header[j]} = {r[j]!r} is not a number") from None
        raise
    bad = ~np.isfinite(x)
    if bad.any():
        i, c = np.argwhere(bad)[0]
        line, r = rows[i]
        raise ValueError(f"{p}: line {line} column {header[columns[c]]} is not finite ({r[columns[c]].strip()!r})")
    return x


def _text_label_keys(texts: Sequence[str], where: Where) -> list[int | str]:
    """Labels read from text: all integers, or all names; one row of the other kind is an error."""
    keys: list[int | str] = []
    for i, t in enumerate(texts):
        t = t.strip()
        if not t:
            raise ValueError(f"{where(i)} (the label) is empty")
        try:
            keys.append(int(t))
        except ValueError:
            keys.append(t)
    n_int = sum(isinstance(k, int) for k in keys)
    if 0 < n_int < len(keys):
        minority_is_int = n_int <= len(keys) - n_int
        i = next(i for i, k in enumerate(keys) if isinstance(k, int) == minority_is_int)
        kind, others = ("an integer", "names") if minority_is_int else ("not an integer", "integers")
        raise ValueError(
            f"{where(i)} = {texts[i].strip()!r} is {kind}, but the other rows' labels are "
            f"{others}; use one kind of label"
        )
    return keys


# ------------------------------------------------------------------ labels -> classes
def index_labels(keys: Sequence[Any], where: Where, *, min_rows: int = 2) -> tuple[np.ndarray, list[Any]]:
    """``(y, classes)``: class indices ``0..K-1`` for ``keys`` (the distinct labels, sorted) and the labels.

    ``min_rows`` rows per class at least (2 where the data are still to be split: one to train, one to test);
    a rarer class is an error naming where its first row is and what the other classes have, the classic
    typo (one row labelled 99 among 0..11) included. One class only is an error too.
    """
    counts = Counter(keys)
    try:
        classes = sorted(counts)
    except TypeError:  # ints and strings together (arrays handed over in Python)
        i = next(i for i, k in enumerate(keys) if type(k) is not type(keys[0]))
        raise ValueError(f"{where(i)} = {keys[i]!r}: labels mix numbers and names; use one kind") from None
    if len(classes) < 2:
        raise ValueError(f"{where(0)} = {keys[0]!r} on every row; a classifier needs at least 2 classes")
    rare = [k for k in classes if counts[k] < min_rows]
    if rare:
        i = keys.index(rare[0])
        common = [counts[k] for k in classes if counts[k] >= min_rows]
        rest = f" (the other classes have {min(common)}..{max(common)} rows)" if common else ""
        raise ValueError(
            f"{where(i)} = {keys[i]!r} occurs on {counts[rare[0]]} row(s) only{rest}; each class needs at "
            f"least {min_rows} ({'one to train on, one to test' if min_rows == 2 else 'one to train on'}): "
            "fix the label or drop the row"
        )
    index = {k: c for c, k in enumerate(classes)}
    return np.array([index[k] for k in keys], dtype=np.int64), classes


def map_test_labels(keys: Sequence[Any], classes: Sequence[Any], where: Where) -> np.ndarray:
    """Class indices of test labels; a label no training row has is an error naming where it is."""
    index = {k: c for c, k in enumerate(classes)}
    out = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        if k not in index:
            shown = ", ".join(map(repr, classes[:12])) + (", ..." if len(classes) > 12 else "")
            raise ValueError(
                f"{where(i)} = {k!r} is a label no training row has (training labels: {shown}); the network "
                "would have no output for it"
            )
        out[i] = index[k]
    return out


def _standardised(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1.0
    return (xtr - mu) / sd, (xte - mu) / sd


def _label_map(classes: Sequence[Any]) -> dict[str, int]:
    return {str(k): c for c, k in enumerate(classes)}


# ------------------------------------------------------------------ loaders
def load_csv(
    path: str | os.PathLike | None = None,
    *,
    label_column: str = "label",
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
) -> Dataset:
    """A CSV file with a header line: the ``label_column`` holds the labels, every other column is a feature.

    Labels may be integers or names (classes: the distinct labels, sorted); the split is stratified and
    seeded; features are standardised on the training split. Every bad row is named with its line.
    """
    if path is None or str(path) == "":
        raise ValueError(
            "dataset 'csv' needs data_path: a CSV file with a header line, a label column (label_column, "
            "default 'label') and numeric feature columns"
        )
    check_fraction(test_fraction)
    p = Path(path)
    header, rows = read_csv_rows(p)
    if label_column not in header:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise ValueError(f"{p}: no column {label_column!r} (label_column) in the header; its columns: {shown}")
    lab = header.index(label_column)
    feats = [j for j in range(len(header)) if j != lab]
    if not feats:
        raise ValueError(f"{p}: only the label column {label_column!r}; there are no feature columns")
    x = parse_numbers(rows, feats, header, p)

    def where(i: int) -> str:
        return f"{p}: line {rows[i][0]} column {label_column}"

    keys = _text_label_keys([r[lab] for _, r in rows], where)
    y, classes = index_labels(keys, where)
    xtr, ytr, xte, yte = split(x, y, test_fraction, seed, what=str(p))
    if standardize:
        xtr, xte = _standardised(xtr, xte)
    info = {
        "path": str(p),
        "label_column": label_column,
        "features": [header[j] for j in feats],
        "label_map": _label_map(classes),
        "scaling": "standardised on train" if standardize else "none",
    }
    return make("csv", xtr, ytr, xte, yte, len(classes), [str(k) for k in classes], info, source=(x, keys))


_NPZ_KEYS = ("x", "y", "x_test", "y_test")


def load_npz(
    path: str | os.PathLike | None = None, *, test_fraction: float = 0.2, seed: int = 0, standardize: bool = True
) -> Dataset:
    """An ``.npz`` file (``numpy.savez``) with arrays ``x`` ``[N, ...]`` and ``y`` ``[N]``, optionally
    ``x_test`` and ``y_test`` (then that is the test split; otherwise a stratified split of ``x``).

    Loaded without pickle: labels are numbers or strings (``np.array(labels, dtype=str)``), never objects.
    """
    if path is None or str(path) == "":
        raise ValueError("dataset 'npz' needs data_path: an .npz file with arrays x and y (optional x_test, y_test)")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"npz file {str(p)!r} is a folder; give the .npz file itself")
    if not p.is_file():
        raise FileNotFoundError(f"npz file not found: {p}")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            unknown = sorted(set(z.files) - set(_NPZ_KEYS))
            if unknown:
                raise ValueError(
                    f"{p}: unknown array(s) {', '.join(map(repr, unknown))}; an npz data set holds x, y and "
                    "optionally x_test, y_test"
                )
            for key in z.files:
                try:
                    arrays[key] = z[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise ValueError(
                            f"{p}: array {key!r} holds Python objects; save numbers, or labels as strings "
                            "(np.array(labels, dtype=str))"
                        ) from None
                    raise ValueError(f"{p}: array {key!r} cannot be read ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{p}: not an .npz file numpy can read ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(str(p)):
            raise
        raise ValueError(f"{p}: not an .npz file numpy can read ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"{p}: no array {' or '.join(map(repr, missing))}; found: {', '.join(arrays) or 'none'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(
            f"{p}: x_test and y_test come together; found only {'x_test' if 'x_test' in arrays else 'y_test'}"
        )
    return from_arrays(
        arrays["x"],
        arrays["y"],
        arrays.get("x_test"),
        arrays.get("y_test"),
        test_fraction=test_fraction,
        seed=seed,
        standardize=standardize,
        name="npz",
        source=str(p),
    )


# ------------------------------------------------------------------ arrays in Python
def _columns_of(x: Any) -> list[str] | None:
    cols = getattr(x, "columns", None)
    return [str(c) for c in cols] if cols is not None and hasattr(x, "to_numpy") else None


def _as_matrix(x: Any, name: str, prefix: str) -> np.ndarray:
    """Features as float64 ``[N, F]`` (more dimensions are flattened per row); a DataFrame's columns must be
    distinct and numeric."""
    cols = _columns_of(x)
    if cols is not None:
        dup = [c for c, n in Counter(cols).items() if n > 1]
        if dup:
            raise ValueError(
                f"{prefix}{name}: column {dup[0]!r} appears {cols.count(dup[0])} times; rename or drop the copies"
            )
        for c, dt in zip(cols, getattr(x, "dtypes", [])):
            if getattr(dt, "kind", "f") not in "biuf":
                raise ValueError(f"{prefix}{name}: column {c!r} holds {dt}, not numbers; encode or drop it")
        x = x.to_numpy(dtype=np.float64)
    elif isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.array(x, dtype=np.float64)  # a copy: never a read-only view of the caller's data
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{prefix}{name} must hold numbers ({type(x).__name__}: {exc})") from None
    if a.ndim < 2:
        raise ValueError(
            f"{prefix}{name} must be [samples, features], got shape {a.shape}"
            + ("; for one feature use x.reshape(-1, 1)" if a.ndim == 1 else "")
        )
    a = a.reshape(a.shape[0], -1)
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{prefix}{name}[{r}, {c}] = {a[r, c]} is not a finite number")
    return a


def _label_keys(y: Any, n: int, name: str, prefix: str) -> list[Any]:
    """Labels as a list of ints or strings (a Series, tensor, array or list)."""
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    elif isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{prefix}{name} must be [{n}] (one label per sample), got shape {a.shape}")
    if a.dtype.kind in "iu":
        return [int(v) for v in a]
    if a.dtype.kind == "b":
        return [int(v) for v in a]
    if a.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{prefix}{name}[{i}] = {a[i].item()!r} is not a class label (whole numbers or names)")
        return [int(v) for v in a]
    if a.dtype.kind in "US":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in a.tolist()]
    keys = []
    for i, v in enumerate(a.tolist()):  # object: each an int or a string
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, str, np.integer)):
            if not (isinstance(v, float) and math.isfinite(v) and v == int(v)):
                raise ValueError(f"{prefix}{name}[{i}] = {v!r} is not a class label (whole numbers or names)")
            v = int(v)
        keys.append(int(v) if isinstance(v, np.integer) else v)
    return keys


def from_arrays(
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    name: str = "arrays",
    source: str = "",
) -> Dataset:
    """A :class:`Dataset` from arrays: numpy, torch, lists, or a pandas DataFrame / Series.

    Without ``x_test``/``y_test`` the data are split (stratified, seeded, ``test_fraction``); with them, they
    are the test split and each of their labels must be a training label. Labels may be integers or names.
    """
    prefix = f"{source}: " if source else ""
    check_fraction(test_fraction)
    if (x_test is None) != (y_test is None):
        raise ValueError(
            f"{prefix}x_test and y_test come together; got only {'x_test' if y_test is None else 'y_test'}"
        )
    features = _columns_of(x)
    xa = _as_matrix(x, "x", prefix)
    keys = _label_keys(y, xa.shape[0], "y", prefix)
    if x_test is None:
        yi, classes = index_labels(keys, lambda i: f"{prefix}y[{i}]")
        xtr, ytr, xte, yte = split(xa, yi, test_fraction, seed, what=source or name)
        how = "stratified"
    else:
        xte = _as_matrix(x_test, "x_test", prefix)
        if xte.shape[1] != xa.shape[1]:
            raise ValueError(f"{prefix}x_test has {xte.shape[1]} features per sample, x has {xa.shape[1]}")
        ytr, classes = index_labels(keys, lambda i: f"{prefix}y[{i}]", min_rows=1)
        test_keys = _label_keys(y_test, xte.shape[0], "y_test", prefix)
        yte = map_test_labels(test_keys, classes, lambda i: f"{prefix}y_test[{i}]")
        xtr, xte_raw, how = xa, xte, "given"
    if standardize:
        xtr, xte = _standardised(xtr, xte)
    info: dict[str, Any] = {"label_map": _label_map(classes), "split": how}
    info["scaling"] = "standardised on train" if standardize else "none"
    if source:
        info["path"] = source
    if features is not None:
        info["features"] = features
    source = (xa, keys) if x_test is None else (xa, keys, xte_raw, test_keys)
    return make(name, xtr, ytr, xte, yte, len(classes), [str(k) for k in classes], info, source=source)


def as_dataset(data: Any, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """What ``run_experiment(config, data=...)`` accepts: a :class:`Dataset`, ``(x, y)``, ``(x, y, x_test,
    y_test)``, or a mapping with keys ``x``, ``y`` (optional ``x_test``, ``y_test``)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(_NPZ_KEYS))
        if unknown or "x" not in data or "y" not in data:
            raise ValueError(
                f"data as a mapping needs keys x and y (optional x_test, y_test); got {', '.join(map(repr, data))}"
            )
        return from_arrays(**data, test_fraction=test_fraction, seed=seed)
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return from_arrays(*data, test_fraction=test_fraction, seed=seed)
    raise ValueError(
        f"data must be a Dataset, (x, y), (x, y, x_test, y_test) or a mapping of those arrays; got "
        f"{type(data).__name__}" + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
    )


def given_in_python(**_: Any) -> Dataset:
    """The ``arrays`` data set: a name in run files for data handed to the runner in Python, never loaded by name."""
    raise ValueError(
        "dataset 'arrays' is data handed over in Python: run_experiment(config, data=(x, y)) (to resume such a "
        "run, pass the same data with resume=RUN.h5); from the command line use --dataset csv or npz"
    )
