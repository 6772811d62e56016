"""A physical system as a layer of a plain PyTorch model, honest about gradients.

``nn.Sequential(nn.Linear(784, 128), PhysicalLayer(system), nn.Linear(256, 10))``
runs the system as one step of a model, but a physical system has no
gradient: backpropagation cannot cross it. Silently detaching its output
would leave every layer *before* it untrained without a word -- the bug a
user of a plain ``nn.Module`` wrapper meets first. So the forward pass is a
query, and a backward pass that reaches the system raises a clear error
naming the ways that do train such a stack (forward-only local methods, a
digital twin, an explicit differentiable model).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from physnn.core.system import PhysicalSystem

__all__ = ["PhysicalLayer", "NoGradientThroughSystem"]


class NoGradientThroughSystem(RuntimeError):
    """Backpropagation reached a physical system, which has no gradient."""


class _Query(torch.autograd.Function):
    """Forward: the system's measurement. Backward: a clear error, never a silent zero."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, system: PhysicalSystem) -> torch.Tensor:  # type: ignore[override]
        ctx.name = system.spec.name
        return system(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        raise NoGradientThroughSystem(
            f"no gradient crosses the physical system {ctx.name!r} (it is only queried); train the layers before "
            "it with a forward-only method (physnn's mfff or local_ce), a digital twin (pat), or the simulator's "
            "explicit differentiable model (backprop), or detach its input if they should stay fixed"
        )


class PhysicalLayer(nn.Module):
    """A :class:`PhysicalSystem` as an ``nn.Module``: ``[batch, n_inputs]`` in, ``[batch, n_outputs]`` out.

    The input must already be valid drive values (the system refuses anything
    else, as it always does; put an :class:`physnn.core.encoding.Encoder` before it).
    The system is held as a plain attribute: it has no parameters for an
    optimiser, and ``state_dict`` holds none of its internals.
    """

    def __init__(self, system: PhysicalSystem):
        super().__init__()
        if not isinstance(system, PhysicalSystem):
            raise TypeError(f"system must be a PhysicalSystem, got {type(system).__name__}")
        self.__dict__["system"] = system  # not a sub-module: nothing of it is trainable or saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _Query.apply(x, self.system)
        return self.system(x)

    def extra_repr(self) -> str:
        s = self.system.spec
        return f"{s.name}: {s.n_inputs} -> {s.n_outputs}"
