"""The training loop shared by the end-to-end baselines (backprop, PAT, zeroth-order).

The network they train, :class:`physnn.core.e2e_model.E2ENet`, lives in the core beside the PNN: it is a
model, and the Trainer contract (:mod:`physnn.train.base`) needs to know it without importing a trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from physnn.core.e2e_model import E2ENet
from physnn.train.base import Trainer

__all__ = ["E2ETrainer"]


class E2ETrainer(Trainer):
    """The base of the end-to-end baselines: cross-entropy on the logits, one Adam, a per-batch step.

    Subclasses implement :meth:`_step` (one optimiser step on a batch,
    returning the loss and the number of correct training predictions); the
    epoch loop, accounting, evaluation and state are :class:`~physnn.train.base.Trainer`'s.
    Each epoch's metrics add ``train_accuracy`` (of the training predictions
    made during the epoch) to the common ones.
    """

    name = "e2e"
    model_kind = "e2e"

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The one optimiser over every digital weight (None before the first fit)."""
        return self.optimizers[0] if self.optimizers else None

    def _check_model(self, model: nn.Module) -> None:
        if not isinstance(model, E2ENet):
            raise TypeError(f"{type(self).__name__} trains an E2ENet, got {type(model).__name__}")

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        return ["train_accuracy"]

    def _step(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        """One optimiser step on a batch; returns (loss, number of correct training predictions)."""
        raise NotImplementedError

    def _train_batch(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        loss, correct = self._step(model, xb, yb)
        return {"loss": loss * xb.shape[0], "train_accuracy": float(correct)}

    def _evaluate(self, model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, metrics: dict[str, float]) -> None:
        assert self.accountant is not None
        with self.accountant.flops(("eval", tuple(x_val.shape))):
            metrics[self.eval_name] = model.score(x_val, y_val)
