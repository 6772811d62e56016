"""The :class:`Dataset` every loader returns, the seeded stratified split, and the data set's fingerprint.

Kept apart from the loaders so that the loaders (:mod:`physnn.data.datasets`, :mod:`physnn.data.tables`) and the
name registry (:mod:`physnn.data.registry`) share it without importing one another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Dataset", "split", "make", "check_fraction", "digest"]


def digest(*arrays: Any) -> str:
    """SHA-256 of arrays (or lists of labels) with their shapes and types: a loader's raw data, before scaling."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        a = np.asarray(a) if not isinstance(a, list) else np.asarray([str(v) for v in a])
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Dataset:
    """A train/test split ready for training.

    ``x_*`` are float32 ``[N, F]`` tensors, ``y_*`` int64 ``[N]`` labels in
    ``0..n_classes-1``; ``class_names`` label the confusion matrix (and, for
    data whose labels were names or codes, say which class index is which).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    #: :func:`digest` of the data as read, before scaling (set by the loaders; part of the fingerprint)
    source_digest: str = field(default="", repr=False)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def fingerprint(self) -> str:
        """SHA-256 of the arrays as trained on (both splits, after scaling), the class names and the data as
        read (:attr:`source_digest`: standardising would hide an offset added to every value).

        Why: a run file records it, and ``--resume`` refuses data whose fingerprint differs -- a data file
        edited between a crash and its resume would otherwise continue training on other data unnoticed.
        It changes with the data, the split (seed, test_fraction) and the scaling, never with the path.
        """
        h = hashlib.sha256(b"physnn-dataset-v1")
        h.update(self.source_digest.encode())
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = np.ascontiguousarray(t.detach().cpu().numpy())
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        h.update(json.dumps([int(self.n_classes), [str(c) for c in self.class_names]]).encode())
        return h.hexdigest()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "fingerprint": self.fingerprint(),
            **self.info,
        }


def check_fraction(test_fraction: float) -> None:
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")


def split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, what: str = "data set"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split: each class keeps its share in train and test.

    A class with one sample goes to the training split; a split that ends up
    empty (every class a single sample) is an error naming ``what``, since a
    run with nothing to test on would report an accuracy of nothing.
    """
    check_fraction(test_fraction)
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


def make(name, xtr, ytr, xte, yte, n_classes, class_names, info, source=()) -> Dataset:
    """A :class:`Dataset` of numpy splits; ``source``: the arrays as read, for the fingerprint."""
    return Dataset(
        name=name,
        x_train=torch.as_tensor(xtr, dtype=torch.float32),
        y_train=torch.as_tensor(ytr, dtype=torch.int64),
        x_test=torch.as_tensor(xte, dtype=torch.float32),
        y_test=torch.as_tensor(yte, dtype=torch.int64),
        n_classes=n_classes,
        class_names=class_names,
        info=info,
        source_digest=digest(*source) if source else "",
    )
