"""Physics-aware training (PAT; Wright et al., Nature 601, 549, 2022).

Forward through the real system, backward through a digital twin:

    y      = system(drive)                       # a query: the true (noisy) measurement
    y_twin = twin(drive)                         # a digital MLP of the system
    out    = y + (y_twin - y_twin.detach())      # value: exactly the measurement; gradient: the twin's Jacobian

so the loss is computed on what the device really did, and only the
*gradient* relies on a model. The twin is a digital MLP fitted to queries of
the system: the system is never opened up (only ``system(x)`` is called).

Costs charged to the method (:mod:`physnn.train.accounting`):

* ``twin_fit`` queries: ``twin_samples`` random drives per system, uniform in
  the drive limits (rounded to the allowed levels), before training;
* ``twin_fit`` FLOPs: the twin's fit and every refit;
* ``train`` queries and FLOPs: one query per block per sample per step, the
  twin's forward/backward, the network's forward/backward.

Twin refinement (our choice, documented): every forward query during training
yields a (drive, measurement) pair at no extra cost; the most recent
``buffer_size`` pairs per system are kept, and every ``refit_every`` epochs the
twin takes ``refit_steps`` Adam steps on minibatches drawn from them and the
initial data, so it follows the region of drive space the network actually
uses. ``refit_every=0`` keeps the first fit.

The first block's drive depends on the data only (no trainable weight lies
before it), so no gradient is needed there and no twin is fitted for a system
used only by the first block.

The twin: inputs mapped from the drive limits to [-1, 1], ``twin_hidden``
SiLU layers, outputs standardised per channel with the mean and standard
deviation of the initial fit data; mean-squared error; Adam.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from physnn.core import checks
from physnn.core.e2e_model import E2EBlock, E2ENet
from physnn.core.system import PhysicalSystem
from physnn.train.e2e import E2ETrainer

__all__ = ["PAT", "DigitalTwin"]


class DigitalTwin(nn.Module):
    """An MLP model of one system, fitted to its queries (see the module docstring)."""

    def __init__(
        self, system: PhysicalSystem, hidden: Sequence[int] = (256, 256), *, generator: torch.Generator | None = None
    ):
        super().__init__()
        spec = system.spec
        self.low, self.high = float(spec.low), float(spec.high)
        widths = [spec.n_inputs, *[int(h) for h in hidden], spec.n_outputs]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            lin = nn.Linear(widths[i], widths[i + 1])
            bound = 1.0 / math.sqrt(widths[i])
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.uniform_(-bound, bound, generator=generator)
            layers.append(lin)
            if i < len(widths) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)
        self.register_buffer("y_mean", torch.zeros(spec.n_outputs))
        self.register_buffer("y_std", torch.ones(spec.n_outputs))

    def set_normalisation(self, y: torch.Tensor) -> None:
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(y.std(0, unbiased=False).clamp_min(1e-6 * float(y.abs().max().clamp_min(1e-12))))

    def standardised(self, drive: torch.Tensor) -> torch.Tensor:
        u = (drive - self.low) * (2.0 / (self.high - self.low)) - 1.0
        return self.net(u)

    def forward(self, drive: torch.Tensor) -> torch.Tensor:
        return self.standardised(drive) * self.y_std + self.y_mean


class PAT(E2ETrainer):
    """Physics-aware training: system forward, twin backward (see the module docstring).

    Args:
        twin_hidden: hidden widths of each twin MLP.
        twin_samples: random drives queried per system for the initial twin fit.
        twin_epochs: passes over the initial data in the first fit.
        twin_lr: Adam learning rate of the twin.
        twin_batch: twin minibatch size.
        refit_every: refine the twins every this many epochs (0: never).
        refit_steps: twin Adam steps per refinement.
        buffer_size: recent training (drive, measurement) pairs kept per system.
        Others as :class:`~physnn.train.e2e.E2ETrainer`.
    """

    name = "pat"

    phases = ("train", "twin_fit", "eval")

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
        twin_hidden: Sequence[int] = (256, 256),
        twin_samples: int = 2000,
        twin_epochs: int = 30,
        twin_lr: float = 2e-3,
        twin_batch: int = 128,
        refit_every: int = 1,
        refit_steps: int = 50,
        buffer_size: int = 4096,
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
        checks.int_sequence("twin_hidden", twin_hidden, low=1)
        self.twin_hidden = twin_hidden  # stored as given (scikit-learn's clone compares identity)
        self.twin_samples = checks.integer("twin_samples", twin_samples, low=1)
        self.twin_epochs = checks.integer("twin_epochs", twin_epochs, low=0)
        self.twin_lr = checks.positive("twin_lr", twin_lr)
        self.twin_batch = checks.integer("twin_batch", twin_batch, low=1)
        self.refit_every = checks.integer("refit_every", refit_every, low=0)
        self.refit_steps = checks.integer("refit_steps", refit_steps, low=0)
        self.buffer_size = checks.integer("buffer_size", buffer_size, low=1)
        # keyed by the index of the first block that uses the system (stable across processes, for checkpoints)
        self.twins: dict[int, DigitalTwin] = {}
        self._twin_opt: dict[int, torch.optim.Optimizer] = {}
        self._initial: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._buffer: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._err: dict[int, list[float]] = {}
        self._key_of: dict[int, int] = {}  # id(system) -> twin key

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        return ["train_accuracy", *[f"twin_rel_error/block{j}" for j in range(1, len(model.blocks))]]

    def _twin_keys(self, model: E2ENet) -> dict[int, PhysicalSystem]:
        """Systems that need a twin (every system behind a trainable weight), by first-block index."""
        self._key_of = {}
        needed: dict[int, PhysicalSystem] = {}
        for j, b in enumerate(list(model.blocks)):
            if j == 0 or id(b.system) in self._key_of:
                continue
            self._key_of[id(b.system)] = j
            needed[j] = b.system
        return needed

    # ----------------------------------------------------------------- state
    def _extra_state(self) -> dict[str, Any]:
        return {
            str(k): {
                "twin": self.twins[k].state_dict(),
                "optimizer": self._twin_opt[k].state_dict(),
                "initial": list(self._initial[k]),
                "buffer": [list(b) for b in self._buffer[k]],
            }
            for k in self.twins
        }

    def _load_extra_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        needed = self._twin_keys(model)
        if sorted(int(k) for k in state) != sorted(needed):
            raise ValueError(f"checkpoint holds PAT twins for blocks {sorted(state)}, the model needs {sorted(needed)}")
        for k, system in needed.items():
            st = state[str(k)]
            twin = DigitalTwin(system, tuple(self.twin_hidden))
            twin.load_state_dict(st["twin"])
            self.twins[k] = twin
            self._twin_opt[k] = torch.optim.Adam(twin.parameters(), lr=self.twin_lr)
            self._twin_opt[k].load_state_dict(st["optimizer"])
            self._initial[k] = (st["initial"][0], st["initial"][1])
            self._buffer[k] = [(b[0], b[1]) for b in st["buffer"]]
            self._err[k] = []

    # ----------------------------------------------------------------- twins
    def _random_drives(self, system: PhysicalSystem, n: int) -> torch.Tensor:
        spec = system.spec
        u = torch.rand(n, spec.n_inputs, generator=self.generator)
        if spec.levels is not None:
            return spec.low + torch.floor(u * spec.levels).clamp_max(spec.levels - 1) * spec.step
        return spec.low + u * (spec.high - spec.low)

    def _setup(self, model: E2ENet, x: torch.Tensor, y: torch.Tensor) -> None:
        assert self.accountant is not None
        needed = self._twin_keys(model)
        with self.accountant.phase("twin_fit"):
            for k, system in needed.items():
                gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
                twin = DigitalTwin(system, tuple(self.twin_hidden), generator=gen)
                drives = self._random_drives(system, self.twin_samples)
                meas = torch.cat([system(drives[s : s + 256]) for s in range(0, drives.shape[0], 256)])
                twin.set_normalisation(meas)
                self.twins[k] = twin
                self._twin_opt[k] = torch.optim.Adam(twin.parameters(), lr=self.twin_lr)
                self._initial[k] = (drives, meas)
                self._buffer[k] = []
                self._err[k] = []
                n = drives.shape[0]
                for _ in range(self.twin_epochs):
                    perm = torch.randperm(n, generator=self.generator)
                    for s in range(0, n, self.twin_batch):
                        idx = perm[s : s + self.twin_batch]
                        self._twin_step(k, drives[idx], meas[idx])

    def _twin_step(self, k: int, drives: torch.Tensor, meas: torch.Tensor) -> None:
        assert self.accountant is not None
        twin, opt = self.twins[k], self._twin_opt[k]
        with self.accountant.flops(("pat.twin_step", k, tuple(drives.shape))):
            loss = F.mse_loss(twin.standardised(drives), (meas - twin.y_mean) / twin.y_std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def _refit(self) -> None:
        assert self.accountant is not None
        with self.accountant.phase("twin_fit"):
            for k in self.twins:
                d0, m0 = self._initial[k]
                if self._buffer[k]:
                    d = torch.cat([d0, *[b[0] for b in self._buffer[k]]])
                    m = torch.cat([m0, *[b[1] for b in self._buffer[k]]])
                else:
                    d, m = d0, m0
                for _ in range(self.refit_steps):
                    idx = torch.randint(0, d.shape[0], (min(self.twin_batch, d.shape[0]),), generator=self.generator)
                    self._twin_step(k, d[idx], m[idx])

    def _remember(self, k: int, drive: torch.Tensor, meas: torch.Tensor) -> None:
        buf = self._buffer[k]
        buf.append((drive.detach(), meas.detach()))
        total = sum(b[0].shape[0] for b in buf)
        while buf and total - buf[0][0].shape[0] >= self.buffer_size:
            total -= buf.pop(0)[0].shape[0]

    # ----------------------------------------------------------------- steps
    def _physics(self, i: int, block: E2EBlock, drive: torch.Tensor) -> torch.Tensor:
        meas = block.system(drive)  # the only contact with the system: a query
        if not drive.requires_grad:  # first block: no gradient needed upstream
            return meas
        k = self._key_of[id(block.system)]
        twin = self.twins[k]
        pred = twin(drive)
        self._remember(k, drive, meas)
        with torch.no_grad():
            self._err[k].append(float((pred - meas).norm() / meas.norm().clamp_min(1e-12)))
        return meas + (pred - pred.detach())  # value: exactly the measurement; gradient: the twin's

    def _step(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        assert self.accountant is not None and self.optimizer is not None
        with self.accountant.flops(("pat.step", tuple(xb.shape))):
            logits = model(xb, self._physics)
            loss = F.cross_entropy(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), int((logits.detach().argmax(1) == yb).sum())

    def _after_epoch(self, model: E2ENet, epoch: int, metrics: dict[str, float]) -> None:
        for j, b in enumerate(model.blocks):
            errs = self._err.get(self._key_of.get(id(b.system), -1))
            if j > 0 and errs:
                metrics[f"twin_rel_error/block{j}"] = sum(errs) / len(errs)
        for errs in self._err.values():
            errs.clear()
        if self.refit_every and (epoch + 1) % self.refit_every == 0 and epoch + 1 < self.epochs:
            self._refit()
