"""Zeroth-order training: SPSA through the black box, end to end.

Simultaneous-perturbation stochastic approximation (Spall, 1992): to estimate
the gradient of the loss with respect to weights that act *through* a
physical system, perturb all of them at once along a random direction
``delta`` (Rademacher, +-1 per weight) and measure the loss on both sides::

    g_hat = (loss(w + c delta) - loss(w - c delta)) / (2 c) * delta

averaged over ``directions`` directions per batch. Only ``system(x)`` is ever
called; no model of the system exists.

Loss: cross-entropy of the network's logits (the last block's linear layer,
:class:`~physnn.core.e2e_model.E2ENet`).

Which weights are perturbed: those of every block but the last -- they feed
a later system. The last block's linear layer (the classifier) sees the
measurements directly, with no physics between it and the loss, so it gets its
exact gradient by autograd, averaged over the perturbed evaluations (the
perturbation biases it by O(c^2)). Upstream weights are excluded from autograd
during the step, so no backward pass runs through them.

Queries: the first block's drive depends only on the data (no weight before
it), so it is measured once per batch and reused for every perturbed
evaluation; the other blocks are queried twice per direction. A batch of B
samples with L blocks costs ``B + 2 * directions * B * (L - 1)`` queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from physnn.core import checks
from physnn.core.e2e_model import E2EBlock, E2ENet
from physnn.train.e2e import E2ETrainer

__all__ = ["ZerothOrder"]


class ZerothOrder(E2ETrainer):
    """SPSA on the upstream weights, exact gradients for the classifier (see the module docstring).

    Args:
        perturbation: SPSA step ``c`` (in weight units).
        directions: random directions averaged per batch.
        Others as :class:`~physnn.train.e2e.E2ETrainer`.
    """

    name = "zeroth_order"

    def __init__(
        self,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        seed: int = 0,
        eval_every: int = 1,
        progress: bool = False,
        count_flops: bool = True,
        *,
        perturbation: float = 0.01,
        directions: int = 1,
    ):
        super().__init__(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            eval_every=eval_every,
            progress=progress,
            count_flops=count_flops,
        )
        self.perturbation = checks.positive("perturbation", perturbation)
        self.directions = checks.integer("directions", directions, low=1)
        self._first: tuple[torch.Tensor, torch.Tensor] | None = None

    def _physics(self, i: int, block: E2EBlock, drive: torch.Tensor) -> torch.Tensor:
        if i == 0:
            if self._first is not None and torch.equal(self._first[0], drive):
                return self._first[1]
            meas = block.system(drive)
            self._first = (drive.detach().clone(), meas)
            return meas
        return block.system(drive)

    def _step(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        assert self.accountant is not None and self.optimizer is not None
        with self.accountant.flops(("zo.step", tuple(xb.shape))):
            self.optimizer.zero_grad(set_to_none=True)
            loss, correct = self.estimate_gradient(model, xb, yb)
            self.optimizer.step()
        return loss, correct

    def estimate_gradient(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        """Set ``.grad`` of every weight: SPSA upstream, exact for the classifier.

        Returns the mean loss and (rounded) mean number of correct predictions
        over the perturbed evaluations. The weights are restored exactly.
        """
        blocks = list(model.blocks)
        upstream = [p for b in blocks[:-1] for p in b.parameters()]
        c = self.perturbation
        self._first = None
        estimate = [torch.zeros_like(p) for p in upstream]
        saved = [p.detach().clone() for p in upstream]
        for p in upstream:
            p.requires_grad_(False)
        loss_sum, correct = 0.0, 0
        try:
            for _ in range(self.directions):
                deltas = [torch.randint(0, 2, p.shape, generator=self.generator).to(p) * 2 - 1 for p in upstream]
                losses = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        for p, w, d in zip(upstream, saved, deltas):
                            torch.add(w, d, alpha=sign * c, out=p)
                    logits = model(xb, self._physics)
                    loss = F.cross_entropy(logits, yb)
                    (loss / (2 * self.directions)).backward()  # exact gradient of the classifier
                    losses.append(float(loss.detach()))
                    loss_sum += losses[-1]
                    correct += int((logits.detach().argmax(1) == yb).sum())
                scale = (losses[0] - losses[1]) / (2 * c * self.directions)
                for e, d in zip(estimate, deltas):
                    e.add_(d, alpha=scale)
        finally:
            with torch.no_grad():  # restore the weights exactly
                for p, w in zip(upstream, saved):
                    p.copy_(w)
            for p in upstream:
                p.requires_grad_(True)
        for p, e in zip(upstream, estimate):
            p.grad = e
        n_eval = 2 * self.directions
        return loss_sum / n_eval, round(correct / n_eval)
