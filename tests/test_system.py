"""The PhysicalSystem contract: validation messages, accounting, lifecycle."""

import math

import numpy as np
import pytest
import torch

from physnn.core.system import PhysicalSystem, SystemSpec


class Square(PhysicalSystem):
    """y = x**2 summed in pairs; records what reached _measure."""

    def __init__(self, levels=None, low=0.0, high=1.0):
        super().__init__(SystemSpec(4, 2, low, high, levels, name="square", units="V"))
        self.seen = []

    def _measure(self, x):
        self.seen.append(x.clone())
        return (x**2).view(-1, 2, 2).sum(-1)


class Broken(PhysicalSystem):
    def __init__(self, out):
        super().__init__(SystemSpec(2, 3, name="broken"))
        self.out = out

    def _measure(self, x):
        return self.out(x)


def test_valid_call_returns_detached_float_tensor_and_counts():
    s = Square()
    x = torch.full((3, 4), 0.5, requires_grad=True)
    y = s(x)
    assert y.shape == (3, 2) and y.dtype == torch.float32 and not y.requires_grad
    assert torch.allclose(y, torch.full((3, 2), 0.5))
    s(np.zeros((5, 4)))  # numpy accepted
    assert (s.stats.calls, s.stats.samples) == (2, 8)
    assert s.stats.seconds >= 0


@pytest.mark.parametrize(
    "x, pattern",
    [
        (torch.zeros(4), r"must be 2-D \[batch, 4\], got shape \(4,\)"),
        (torch.zeros(2, 2, 4), r"must be 2-D"),
        (torch.zeros(2, 5), r"input has 5 columns, the system has n_inputs=4"),
        (torch.zeros(0, 4), r"empty batch"),
        (torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, float("nan"), 0.0, 0.0]]), r"input\[1, 1\] = nan is not finite"),
        (torch.tensor([[0.0, 0.0, float("inf"), 0.0]]), r"input\[0, 2\] = inf is not finite"),
        (torch.tensor([[0.0, 0.0, 0.0, -0.25]]), r"input\[0, 3\] = -0.25 V is below the drive limit low=0 V"),
        (torch.tensor([[0.0, 1.5, 0.0, 0.0]]), r"input\[0, 1\] = 1.5 V is above the drive limit high=1 V"),
        ([["a", "b", "c", "d"]], r"must be a tensor or array of numbers|must hold numbers"),
        (torch.zeros(1, 4, dtype=torch.complex64), r"must be real-valued"),
    ],
)
def test_bad_inputs_name_row_column_value_and_limit(x, pattern):
    s = Square()
    with pytest.raises(ValueError, match=pattern):
        s(x)
    assert s.seen == [] and s.stats.calls == 0  # nothing reached the system


def test_values_off_the_allowed_levels_are_refused_not_rounded():
    s = Square(levels=5)  # 0, .25, .5, .75, 1
    assert s(torch.tensor([[0.0, 0.25, 0.75, 1.0]])).shape == (1, 2)
    with pytest.raises(ValueError, match=r"input\[0, 2\] = 0.3 is not one of the 5 allowed levels"):
        s(torch.tensor([[0.0, 0.25, 0.3, 1.0]]))
    assert len(s.seen) == 1


def test_nothing_is_silently_clipped():
    s = Square(low=-1.0, high=1.0)
    with pytest.raises(ValueError, match="above the drive limit high=1"):
        s(torch.tensor([[1.0000001e0 + 1e-6, 0, 0, 0]]))


@pytest.mark.parametrize(
    "out, pattern",
    [
        (lambda x: torch.zeros(x.shape[0], 2), r"returned shape \(\d+, 2\), expected \(\d+, 3\)"),
        (lambda x: torch.full((x.shape[0], 3), float("nan")), r"non-finite value at output\[0, 0\]"),
        (lambda x: np.zeros((x.shape[0], 3)), r"expected a torch.Tensor"),
    ],
)
def test_bad_outputs_are_caught(out, pattern):
    with pytest.raises((RuntimeError, TypeError), match=pattern):
        Broken(out)(torch.zeros(2, 2))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(n_inputs=0, n_outputs=1), "n_inputs must be a positive integer"),
        (dict(n_inputs=2, n_outputs=1.5), "n_outputs must be a positive integer"),
        (dict(n_inputs=2, n_outputs=1, low=1.0, high=1.0), "low < high"),
        (dict(n_inputs=2, n_outputs=1, high=math.inf), "high must be a finite number"),
        (dict(n_inputs=2, n_outputs=1, levels=1), "levels must be an integer >= 2"),
    ],
)
def test_spec_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SystemSpec(**kwargs)


def test_lifecycle_and_safe_state_on_close():
    calls = []

    class Bench(Square):
        def safe_state(self):
            calls.append("safe")

    with Bench() as b:
        b(torch.zeros(1, 4))
    assert calls == ["safe"] and b.closed
    with pytest.raises(RuntimeError, match="closed"):
        b(torch.zeros(1, 4))
    b.close()  # idempotent
    assert calls == ["safe"]
    b.open()
    assert b(torch.zeros(1, 4)).shape == (1, 2)


def test_describe_is_json_able_and_events_reach_the_hook():
    import json

    s = Square()
    s(torch.zeros(2, 4))
    got = []
    s.event_hook = lambda kind, fields: got.append((kind, fields))
    s.report_event("retry", attempt=1)
    d = json.loads(json.dumps(s.describe()))
    assert d["spec"]["n_inputs"] == 4 and d["stats"]["samples"] == 2 and d["stats"]["retry"] == 1
    assert got == [("retry", {"system": "square", "attempt": 1})]


class Scribbler(PhysicalSystem):
    """A careless system that quantises its drive in place (writes into the batch it was given)."""

    def __init__(self):
        super().__init__(SystemSpec(3, 3, name="scribbler"))

    def _measure(self, x):
        x.mul_(0.5)  # e.g. a driver that rescales to DAC codes in place
        return x * 2.0


def test_a_system_that_writes_into_its_input_cannot_corrupt_the_callers_batch_or_the_log():
    s = Scribbler()
    logged = []
    s.query_hook = lambda x, y: logged.append(x.clone())
    x = torch.tensor([[0.2, 0.4, 0.8]])  # float32 on the CPU: as_batch would hand this very tensor on
    before = x.clone()
    y = s(x)
    assert torch.equal(x, before)  # the caller's tensor is untouched
    assert torch.equal(logged[0], before)  # the run file logs the drive that was asked for
    assert torch.allclose(y, before)
    s(x)  # a second query with the same tensor sees the same drive
    assert torch.equal(logged[1], before)


def test_float64_outputs_that_overflow_float32_are_refused_not_turned_into_inf():
    with pytest.raises(RuntimeError, match=r"output\[0, 1\] = 1e\+300, outside the float32 range"):
        Broken(lambda x: torch.tensor([[0.0, 1e300, 0.0]] * x.shape[0], dtype=torch.float64))(torch.zeros(2, 2))
    # values that fit float32 are accepted and cast
    y = Broken(lambda x: torch.full((x.shape[0], 3), 1e30, dtype=torch.float64))(torch.zeros(2, 2))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
