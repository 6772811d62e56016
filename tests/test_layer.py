"""PhysicalLayer: a system inside a plain PyTorch model, with an error (not silence) on backward."""

import pytest
import torch
from torch import nn

from physnn.core.layer import NoGradientThroughSystem, PhysicalLayer
from physnn.simulators.identity import IdentitySystem
from physnn.simulators.optics import OpticalCavity


def test_forward_is_a_query_inside_nn_sequential():
    system = OpticalCavity(n_inputs=8, n_outputs=16, seed=0, noise=False, slm_bits=None)
    model = nn.Sequential(nn.Sigmoid(), PhysicalLayer(system), nn.Linear(16, 3))
    x = torch.randn(5, 8)
    out = model(x)
    assert out.shape == (5, 3)
    assert system.stats.samples == 5 and system.stats.calls == 1
    assert not any("system" in k for k in model.state_dict())  # nothing of the system is saved or trained


def test_backward_through_the_system_raises_a_clear_error():
    system = IdentitySystem(4, seed=0)
    first = nn.Linear(4, 4)
    model = nn.Sequential(first, nn.Sigmoid(), PhysicalLayer(system), nn.Linear(4, 2))
    loss = model(torch.randn(6, 4)).sum()
    with pytest.raises(NoGradientThroughSystem, match="no gradient crosses the physical system"):
        loss.backward()


def test_layers_after_the_system_still_train_when_its_input_needs_no_gradient():
    system = IdentitySystem(4, seed=0)
    head = nn.Linear(4, 2)
    model = nn.Sequential(PhysicalLayer(system), head)
    model(torch.rand(6, 4)).sum().backward()
    assert head.weight.grad is not None


def test_bad_drive_is_refused_before_the_system_is_reached():
    layer = PhysicalLayer(IdentitySystem(4, seed=0))
    with pytest.raises(ValueError, match="above the drive limit"):
        layer(torch.full((2, 4), 5.0))
    with pytest.raises(TypeError, match="must be a PhysicalSystem"):
        PhysicalLayer(nn.Linear(2, 2))
