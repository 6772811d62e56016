"""Trainers. All share one verb shape: ``Trainer(**hyperparameters, seed=...).fit(model, x, y, x_val, y_val)``.

* :class:`~physnn.train.mfff.MFFF` — model-free forward-forward, the method (trains a :class:`physnn.core.model.PNN`);
* :class:`~physnn.train.local_ce.LocalCE` — local cross-entropy: a class head per block, forward only,
  no label embedding or negatives (trains a :class:`physnn.core.local_model.LocalNet`);
* :class:`~physnn.train.pat.PAT` — physics-aware training (black-box forward, digital-twin backward);
* :class:`~physnn.train.zeroth_order.ZerothOrder` — SPSA through the black box;
* :class:`~physnn.train.backprop.Backprop` — in-silico backprop through a simulator's explicit
  ``differentiable`` mode (the one declared exception to black-box use).

The last three train an end-to-end :class:`~physnn.core.e2e_model.E2ENet`. The digital controls:

* :class:`~physnn.train.ff_digital.FFDigital` -- Hinton's FF on a digital stack (:class:`physnn.core.digital.DigitalFF`);
* :class:`~physnn.train.digital.DigitalBackprop` -- logistic regression / MLP on the raw features.

Every trainer is a :class:`~physnn.train.base.Trainer` (the one contract: epoch loop, accounting,
state, declared metrics).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: method name -> "module:Class" (imported lazily: PAT and backprop pull in more code)
METHODS: dict[str, str] = {
    "mfff": "physnn.train.mfff:MFFF",
    "local_ce": "physnn.train.local_ce:LocalCE",
    "pat": "physnn.train.pat:PAT",
    "zeroth_order": "physnn.train.zeroth_order:ZerothOrder",
    "backprop": "physnn.train.backprop:Backprop",
    "ff_digital": "physnn.train.ff_digital:FFDigital",
    "digital": "physnn.train.digital:DigitalBackprop",
}


def trainer_class(method: str) -> Any:
    """The trainer class of a method name; a clear error lists the valid ones."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; available: {', '.join(METHODS)}")
    module, cls = METHODS[method].split(":")
    return getattr(import_module(module), cls)
