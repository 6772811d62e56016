"""Start-up (issue 22 item 3): what a run imports before its first query, and that it reads the same data.

Times are measured in benchmarks/startup.py; these tests check the mechanisms: the digits are read without
importing scikit-learn and are identical to scikit-learn's loader, and torch's one-off optimiser imports
are warmed in the background instead of delaying the first query.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from physnn.data import datasets
from physnn.train import base


def test_digits_are_sklearns_arrays_bit_for_bit():
    sk = pytest.importorskip("sklearn.datasets").load_digits()
    raw = datasets._digits_csv()
    assert raw.shape == (1797, 65)
    assert np.array_equal(raw[:, :-1], sk.data) and raw.dtype == sk.data.dtype
    assert np.array_equal(raw[:, -1].astype(np.int64), sk.target)
    d = datasets.load_digits(seed=3)
    x = sk.data.astype(np.float32) / 16.0
    xtr, ytr, xte, yte = datasets.split(x, sk.target.astype(np.int64), 0.2, 3)
    assert torch.equal(d.x_train, torch.as_tensor(xtr)) and torch.equal(d.y_test, torch.as_tensor(yte))


def test_digits_fall_back_to_sklearns_loader_without_the_file(monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    spec = type("Spec", (), {"submodule_search_locations": [str(tmp_path)]})()  # a sklearn without the file
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: spec)
    raw = datasets._digits_csv()
    monkeypatch.undo()
    assert np.array_equal(raw, datasets._digits_csv())


def test_loading_digits_does_not_import_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # any import of it now raises ImportError
    d = datasets.load_dataset("digits")
    assert d.x_train.shape[1] == 64 and d.n_classes == 10


class _FirstQuery(Exception):
    pass


def test_runner_builds_no_optimiser_before_its_first_query(monkeypatch, tmp_path):
    """The first query (the probes) comes before any optimiser exists: building one imports torch._dynamo,
    which the runner warms on a helper thread while the device answers."""
    from physnn.core.system import PhysicalSystem
    from physnn.run.config import RunConfig
    from physnn.run.experiment import run_experiment

    seen: list[tuple[int, bool]] = []
    orig = base.Trainer.prepare

    def prepare(self, model, optimizers=True):
        orig(self, model, optimizers)
        seen.append((len(self.optimizers), optimizers))

    def first_query(self, *a, **k):
        raise _FirstQuery

    monkeypatch.setattr(base.Trainer, "prepare", prepare)
    monkeypatch.setattr(PhysicalSystem, "__call__", first_query)
    with pytest.raises(_FirstQuery):
        run_experiment(RunConfig(output=str(tmp_path), epochs=1), progress=False, echo=lambda m: None)
    assert seen == [(0, False)]


def test_warm_imports_thread_imports_and_fit_still_builds_optimisers():
    t = base.warm_optimizer_imports()
    if t is not None:
        t.join(timeout=120)
    assert "torch._dynamo" in sys.modules
    assert base.warm_optimizer_imports() is None  # nothing left to warm
