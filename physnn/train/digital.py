"""Backprop on a digital network of the raw features: the tuned digital control.

Every accuracy a physical network reaches is reported beside what a purely
digital model gets on the same split with the same budget (the brief's
"honest measurement"): a logistic regression (``hidden_layers = []``) and an
MLP (``hidden_layers = [256]``), trained with the same trainer contract --
the same epochs, batch size, learning rate, validation schedule and seeds as
the physical methods -- so that a control is never tuned worse than the
method it is compared with. Cross-entropy, Adam, optional cosine decay of the
learning rate over the run.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from physnn.core import checks
from physnn.core.digital import DigitalNet
from physnn.train.base import LR_SCHEDULES, Trainer, scheduled_lr

__all__ = ["DigitalBackprop"]


class DigitalBackprop(Trainer):
    """Cross-entropy backprop of a :class:`~physnn.core.digital.DigitalNet` (no physical system).

    Args:
        hidden_layers: hidden widths of the MLP; ``[]`` is logistic regression.
        lr_schedule: ``"constant"`` or ``"cosine"`` (learning rate decayed to 0 over ``epochs``).
        Others as :class:`~physnn.train.base.Trainer`.
    """

    name = "digital"
    model_kind = "digital"
    uses_systems = False

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
        hidden_layers: Sequence[int] = (256,),
        lr_schedule: str = "constant",
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
        checks.int_sequence("hidden_layers", hidden_layers, low=1)
        self.hidden_layers = hidden_layers  # stored as given (scikit-learn's clone compares identity)
        self.lr_schedule = checks.choice("lr_schedule", lr_schedule, LR_SCHEDULES)

    def build_model(self, systems: Sequence[Any], n_features: int, n_classes: int, **options: Any) -> nn.Module:
        """A :class:`DigitalNet` with this trainer's ``hidden_layers`` (the config's model keys but the seed unused)."""
        return DigitalNet(n_features, n_classes, hidden=list(self.hidden_layers), seed=options.get("seed", 0))

    def _check_model(self, model: nn.Module) -> None:
        if not isinstance(model, DigitalNet):
            raise TypeError(f"{type(self).__name__} trains a DigitalNet, got {type(model).__name__}")

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        return ["train_accuracy", "lr"]

    def _train_epoch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bar: Any) -> dict[str, float]:
        lr = self._set_lr(scheduled_lr(self.lr, self.lr_schedule, self.epochs_done, self.epochs))
        out = super()._train_epoch(model, x, y, bar)
        out["lr"] = lr
        return out

    def _train_batch(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        assert self.accountant is not None
        opt = self.optimizers[0]
        with self.accountant.flops(("digital.step", tuple(xb.shape))):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {
            "loss": float(loss.detach()) * xb.shape[0],
            "train_accuracy": float((logits.detach().argmax(1) == yb).sum()),
        }
