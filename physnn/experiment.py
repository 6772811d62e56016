"""One training run from a :class:`RunConfig`: data, systems, model, MF-FF, run file.

This is what ``physnn train`` runs. It owns the run's resources: systems are
closed (instruments put in their safe state) and the run file is closed with
an honest status whatever happens — completed, interrupted by Ctrl-C, or
failed with an exception.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import RunConfig
from .data import Dataset, load_dataset
from .model import PNN
from .registry import build_system
from .system import PhysicalSystem
from .train.mfff import MFFF, count_samples

__all__ = ["RunResult", "run_experiment", "build_model", "run_path"]


@dataclass
class RunResult:
    config: RunConfig
    path: Path | None
    train_accuracy: float
    test_accuracy: float
    train_queries: int
    total_queries: int
    wall_seconds: float
    history: list[dict]
    status: str = "completed"


def run_path(config: RunConfig) -> Path:
    """``output`` is a file (``*.h5``) or a folder that gets a time-stamped file name."""
    out = Path(config.output)
    if out.suffix in (".h5", ".hdf5"):
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return out / f"{config.dataset}-{config.system}-s{config.seed}-{stamp}.h5"


def block_seed(seed: int, block: int) -> int:
    """Distinct, reproducible seeds per block (so two blocks are two different devices)."""
    return seed * 1000 + block + 1


def build_systems(config: RunConfig, data: Dataset) -> list[PhysicalSystem]:
    systems = []
    width = input_width(config, data)
    for i in range(config.blocks):
        systems.append(
            build_system(config.system, n_inputs=width, seed=block_seed(config.seed, i), device=config.device,
                         **config.system_options)
        )
        width = config.hidden
    return systems


def input_width(config: RunConfig, data: Dataset) -> int:
    """Width of the first block's input: MF-FF embeds the label in front of the features."""
    return data.n_features + (data.n_classes if config.method == "mfff" else 0)


def build_model(config: RunConfig, data: Dataset, systems: list[PhysicalSystem]) -> torch.nn.Module:
    """A :class:`PNN` for MF-FF; the end-to-end network (last block -> logits) for the baselines."""
    if config.method == "mfff":
        return PNN(systems, data.n_features, data.n_classes, hidden=config.hidden, skip=config.skip,
                   encoder=config.encoder, goodness=config.goodness, label_scale=config.label_scale,
                   seed=config.seed)
    from .train.e2e_model import E2ENet

    return E2ENet(systems, data.n_features, data.n_classes, hidden=config.hidden, skip=config.skip,
                  encoder=config.encoder, seed=config.seed)


def build_trainer(config: RunConfig, progress: bool):
    from .train import trainer_class

    common = dict(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                  weight_decay=config.weight_decay, seed=config.seed, eval_every=config.eval_every)
    if config.method == "mfff":
        return trainer_class("mfff")(inner_steps=config.inner_steps, theta=config.theta, progress=progress, **common)
    return trainer_class(config.method)(**common)


def _chain_hooks(first: Callable[[str, dict], None], second: Callable[[str, dict], None] | None):
    """An event hook that records to the run file and still informs a hook the caller had set."""
    if second is None:
        return first

    def hook(kind: str, fields: dict) -> None:
        first(kind, fields)
        second(kind, fields)

    return hook


def _unlogged_query(system: PhysicalSystem, x: torch.Tensor) -> torch.Tensor:
    """Query without the sample-logging hook: probe measurements are not training samples."""
    hook, system.query_hook = system.query_hook, None
    try:
        return system(x)
    finally:
        system.query_hook = hook


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    m = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    m.index_put_((y.long(), pred.long()), torch.ones_like(y, dtype=torch.int64), accumulate=True)
    return m


def run_experiment(
    config: RunConfig,
    *,
    write_file: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    resume: str | Path | None = None,
    systems: Sequence[PhysicalSystem] | None = None,
) -> RunResult:
    """Train and evaluate one configuration, logging everything to an HDF5 run file.

    ``systems`` (one per block; the same object may serve several blocks)
    replaces building ``config.system`` by name: lab scripts build their
    instruments themselves and hand them over. Either way the systems are
    closed (instruments put in their safe state) when the run ends, however
    it ends. ``config.system`` then only names the system in the run file.
    """
    if resume is not None or write_file:
        from . import runlog
    if config.threads:
        # One intra-op thread by default: the tensors of a PNN are small, so threads buy little, and a
        # fixed thread count keeps CPU reductions (and so the run) bit-reproducible whatever the load.
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # anything that still uses the global RNG is seeded too
    data = load_dataset(config.dataset, path=config.data_path or None, test_fraction=config.test_fraction,
                        seed=config.seed)
    with contextlib.ExitStack() as stack:
        if systems is None:
            systems = build_systems(config, data)
        else:
            systems = list(systems)
            if len(systems) != config.blocks:
                raise ValueError(f"got {len(systems)} systems for blocks={config.blocks}; give one per block")
        for s in dict.fromkeys(systems):
            stack.callback(s.close)
        pnn = build_model(config, data, systems)
        trainer = build_trainer(config, progress)
        writer = None
        path: Path | None = None
        if resume is not None:
            if not isinstance(trainer, MFFF):
                raise ValueError(f"--resume continues MF-FF runs; this run's method is {config.method!r}")
            path = Path(resume)
            ckpt = runlog.last_checkpoint(path)
            pnn.load_state_dict(ckpt.model_state)
            trainer.load_state_dict(pnn, ckpt.optim_state)
            runlog.restore_rng(ckpt.rng_state)
            trainer.history.epochs = [dict(e) for e in ckpt.extra["history"]]
            for i, st in enumerate(ckpt.extra.get("system_rng", [])):
                systems[i].set_rng_state(st)
            writer = runlog.RunWriter.resume(path)
            echo(f"resuming {path} after epoch {trainer.epochs_done}")
        elif write_file:
            path = run_path(config)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = runlog.RunWriter(
                path,
                config=config.to_dict(),
                seed=config.seed,
                systems={f"block{i}": s.describe() for i, s in enumerate(systems)},
                dataset=data.describe(),
            )
        probes: list[torch.Tensor] = []
        if writer is not None:
            gen = torch.Generator().manual_seed(config.seed + 7919)
            for s in dict.fromkeys(systems):
                s.event_hook = _chain_hooks(writer.event, s.event_hook)
            for i, (s, block) in enumerate(zip(systems, pnn.blocks)):
                if config.log_samples:
                    s.query_hook = lambda x, y, name=f"block{i}": writer.log_samples(name, x, y)
                if config.probes:
                    # fixed drive patterns, re-measured after every epoch to follow drift
                    probe = block.encoder(torch.rand(config.probes, s.spec.n_inputs, generator=gen))
                    writer.set_probes(f"block{i}", probe)
                    probes.append(probe)
                    if resume is None:  # measured twice before training: the repeatability floor
                        for _ in range(2):
                            writer.log_probe(f"block{i}", 0, _unlogged_query(s, probe))

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
            if writer is not None:
                for i, (s, probe) in enumerate(zip(systems, probes)):
                    writer.log_probe(f"block{i}", epoch + 1, _unlogged_query(s, probe))
                writer.log_epoch(epoch + 1, metrics)
                if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
                    trainer_state = trainer.state_dict() if isinstance(trainer, MFFF) else None
                    writer.checkpoint(epoch + 1, pnn.state_dict(), trainer_state, runlog.capture_rng(),
                                      extra={"history": trainer.history.epochs,
                                             "system_rng": [s.get_rng_state() for s in systems]})
            # printed once the epoch is on disk, so "epoch N" on the console means it is saved
            acc = f", test accuracy {metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else ""
            per_block = [metrics[f"loss/block{i}"] for i in range(len(pnn.blocks)) if f"loss/block{i}" in metrics]
            blocks = f" (blocks {' '.join(f'{v:.4f}' for v in per_block)})" if per_block else ""
            echo(f"epoch {epoch + 1:3d}/{config.epochs}: loss {metrics['loss']:.4f}{blocks}{acc}, "
                 f"{int(metrics.get('train_queries', 0))} queries")

        t0 = time.perf_counter()
        status = "failed"
        try:
            trainer.fit(pnn, data.x_train, data.y_train, data.x_test, data.y_test, on_epoch_end=on_epoch_end)
            train_acc = pnn.score(data.x_train, data.y_train)
            pred = pnn.predict(data.x_test)
            test_acc = float((pred == data.y_test).float().mean())
            total, _ = count_samples(systems)
            train_q = int(sum(e["train_queries"] for e in trainer.history.epochs))
            if writer is not None:
                writer.log_summary({"train_accuracy": train_acc, "test_accuracy": test_acc,
                                    "train_queries": train_q, "total_queries": total})
                writer.log_confusion(confusion_matrix(pred, data.y_test, data.n_classes).numpy(), data.class_names)
                for i, (gp, gn) in trainer.history.last_goodness.items():
                    writer.log_goodness(i, gp.numpy(), gn.numpy())
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as exc:
            if writer is not None:
                writer.event("error", {"type": type(exc).__name__, "message": str(exc)})
            raise
        finally:
            # systems first (safe state), so a failure to reach it is still recorded in the run file
            for s in dict.fromkeys(systems):
                try:
                    s.close()
                except Exception as exc:  # noqa: BLE001 - recorded, then the run file is closed anyway
                    if writer is None:
                        raise
                    writer.event("close_failed", {"system": s.spec.name, "type": type(exc).__name__,
                                                  "message": str(exc)})
                    warnings.warn(f"{s.spec.name} could not be closed / put in its safe state: {exc}; "
                                  f"check the instrument by hand", RuntimeWarning, stacklevel=2)
            if writer is not None:
                writer.close(status=status)
        wall = time.perf_counter() - t0
        return RunResult(config, path, train_acc, test_acc, train_q, total, wall, trainer.history.epochs, status)
