"""The one trainer contract, checked for every method: black box, declared metrics, exact resume, clone."""

import copy
import sys

import pytest
import torch
from sklearn.base import clone

from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.train import METHODS, trainer_class

#: What a trainer may touch on a system: its public query/lifecycle API.
PUBLIC = {
    "__class__",
    "spec",
    "stats",
    "describe",
    "close",
    "open",
    "closed",
    "event_hook",
    "query_hook",
    "validate_input",
    "report_event",
    "hooks",
    "digital_flops_per_sample",
}
#: Small, fast options per method (PAT's twin is tiny).
OPTIONS = {"pat": dict(twin_samples=64, twin_epochs=2, twin_hidden=(8,), refit_steps=2)}


class Spy(PhysicalSystem):
    """A smooth system with an internal parameter; records what callers outside physnn.core.system touch."""

    def __init__(self, n_in, n_out, seed=0):
        super().__init__(SystemSpec(n_in, n_out, name="spy"))
        g = torch.Generator().manual_seed(seed)
        self.internal = torch.nn.Parameter(torch.randn(n_in, n_out, generator=g) / n_in**0.5)
        self.touched = set()
        self.inputs_required_grad = []

    def _measure(self, x):
        self.inputs_required_grad.append(x.requires_grad)
        return torch.cos(x @ self.internal) ** 2

    def differentiable(self, x):  # the declared exception: only in-silico backprop may call it
        return torch.cos(x @ self.internal) ** 2


def _spy_getattr(self, name):
    mod = sys._getframe(1).f_globals.get("__name__", "")
    if not mod.startswith("physnn.core.system") and mod != __name__:
        object.__getattribute__(self, "touched").add(name)
    return object.__getattribute__(self, name)


Spy.__getattribute__ = _spy_getattr


def data(n=48, f=6, c=3):
    centres = torch.randn(c, f, generator=torch.Generator().manual_seed(9)) * 1.5
    y = torch.arange(n) % c
    x = centres[y] + 0.7 * torch.randn(n, f, generator=torch.Generator().manual_seed(1))
    return x, y


def setup(method, epochs=3):
    cls = trainer_class(method)
    trainer = cls(epochs=epochs, batch_size=16, seed=0, **OPTIONS.get(method, {}))
    x, y = data()
    width = cls.first_block_width(x.shape[1], 3)
    systems = [Spy(width, 8, 1), Spy(5, 8, 2)] if cls.uses_systems else []
    model = trainer.build_model(systems, x.shape[1], 3, blocks=2, hidden=5, seed=0)
    return trainer, model, systems, x, y


@pytest.mark.parametrize("method", list(METHODS))
def test_black_box_and_declared_metrics(method):
    trainer, model, systems, x, y = setup(method, epochs=2)
    hist = trainer.fit(model, x, y, x, y)
    declared = set(trainer.metric_names(model))
    for e in hist.epochs:
        assert set(e) - {"epoch"} <= declared, set(e) - declared - {"epoch"}
    for s in systems:
        # in-silico backprop is the one declared exception: it differentiates the simulator's explicit model
        assert method == "backprop" or s.internal.grad is None, "a gradient reached a system's internals"
        assert not any(s.inputs_required_grad), "a system was queried with an autograd graph attached"
        allowed = PUBLIC | ({"differentiable"} if method == "backprop" else set())
        assert s.touched <= allowed, f"{method} touched internals: {s.touched - allowed}"
    if systems and method != "backprop":
        assert hist.epochs[-1]["queries/train"] > 0


@pytest.mark.parametrize("method", list(METHODS))
def test_state_dict_resumes_exactly(method):
    trainer, model, systems, x, y = setup(method)
    trainer.fit(model, x, y, x, y)
    ref = model.state_dict()
    a, model_a, systems_a, _, _ = setup(method)
    a.fit(model_a, x, y, x, y, on_epoch_end=lambda epoch, m: epoch + 1 == 1)  # stop after one epoch
    assert a.epochs_done == 1
    saved = copy.deepcopy((model_a.state_dict(), a.state_dict(), [s.get_rng_state() for s in systems_a]))
    b, model_b, systems_b, _, _ = setup(method)
    model_b.load_state_dict(saved[0])
    b.load_state_dict(model_b, saved[1])
    for s, st in zip(systems_b, saved[2]):
        s.set_rng_state(st)
    b.fit(model_b, x, y, x, y)
    got = model_b.state_dict()
    for k in ref:
        assert torch.equal(ref[k], got[k]), (method, k)
    assert b.accountant.metrics()["queries/total"] == trainer.accountant.metrics()["queries/total"]


@pytest.mark.parametrize("method", list(METHODS))
def test_sklearn_clone_and_set_params(method):
    trainer = trainer_class(method)(epochs=4, lr=0.02, **OPTIONS.get(method, {}))
    twin = clone(trainer)
    assert twin is not trainer and twin.get_params() == trainer.get_params()
    twin.set_params(epochs=7)
    assert twin.epochs == 7 and trainer.epochs == 4
    with pytest.raises(ValueError, match="has no parameter"):
        twin.set_params(bogus=1)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0, got -1"):
        twin.set_params(epochs=-1)
