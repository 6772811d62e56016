"""What a physical system computes, measured through ``system(x)`` alone: ``physnn characterize``.

Why: a PNN gains over a linear classifier only where its physics is nonlinear
*at the drives the encoder actually sends*, sees the inputs in more than a few
directions, and rises above its own noise. A user runs this on a new bench (or
a simulator) before training; it asks the system only through its public call
and ``system.spec``, so it works for simulators, twins and real instruments.

This module builds a system by name and runs the measurements; the figures are
defined in :mod:`~physnn.analysis.system_measures`, the bench checks live in
:mod:`~physnn.analysis.bench_checks`, the files are written by
:mod:`~physnn.analysis.characterize_output` (all re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from physnn.analysis.bench_checks import bench_sweeps
from physnn.analysis.characterize_output import format_table, save_bench_plots, save_figure, save_hdf5
from physnn.analysis.system_measures import (
    Characterization,
    characterize,
    effective_rank,
    encoder_drives,
    nonlinear_fraction,
    random_drives,
    single_input_share,
    snap,
)
from physnn.core import checks
from physnn.core.registry import build_system
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.data.datasets import Dataset
from physnn.run.config import ConfigError, RunConfig
from physnn.run.experiment import block_seed, build_model, build_systems, load_data, split_validation
from physnn.run.recipes import with_recipe
from physnn.train import trainer_class

__all__ = [
    "Characterization",
    "characterize",
    "characterize_named",
    "characterize_config",
    "network_drives",
    "check_output",
    "OUTPUT_FILES",
    "nonlinear_fraction",
    "effective_rank",
    "single_input_share",
    "random_drives",
    "snap",
    "encoder_drives",
    "bench_sweeps",
    "save_bench_plots",
    "save_hdf5",
    "save_figure",
    "format_table",
    "DEFAULT_DATASET",
]

log = logging.getLogger(__name__)

#: Data set whose network drives are characterised when neither the call nor the recipe names one: ``physnn train``'s.
DEFAULT_DATASET = RunConfig().dataset
#: The files :func:`characterize_config` writes into its output folder.
OUTPUT_FILES = ("characterize.h5", "characterize.png")


class _DriveRecorder(PhysicalSystem):
    """Stands in for block 0's system while the network encodes training samples: keeps every drive it is sent
    and answers zeros. Why: the drives are then the network's own (its label embedding, label scale and
    encoder, whatever the method), obtained without a single query of the system being characterised."""

    def __init__(self, spec: SystemSpec):
        super().__init__(spec)
        self.drives: list[torch.Tensor] = []

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        self.drives.append(x.clone())
        return torch.zeros(x.shape[0], self.spec.n_outputs)


def check_output(out: str | Path, *, force: bool = False) -> Path:
    """``out`` as a folder that may receive :data:`OUTPUT_FILES`: refused, before anything is measured, when it
    is a file or (without ``force``) already holds one of them -- a characterisation is never overwritten by
    accident."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file; give a folder")
    if not force:
        for name in OUTPUT_FILES:
            if (out / name).exists():
                raise FileExistsError(f"{out / name} exists; give another --out, or --force to overwrite it")
    return out


def network_drives(
    config: RunConfig, data: Dataset, spec: SystemSpec, n: int, seed: int, *, chunk: int = 256
) -> torch.Tensor:
    """``n`` drives (fewer if the data set has fewer) that block 0 of the network ``physnn train`` builds for
    ``config`` sends when it classifies training samples, drawn at random from every drive of ``min(n,
    n_train)`` random training samples (the training split as the runner splits it, validation held out).

    The network is built by the runner's own :func:`~physnn.run.experiment.build_model` on a recorder with
    ``spec``: MF-FF sends each sample with every candidate label (its label embedding, label scale and
    encoder), an end-to-end or local method the encoded sample alone. Drawing from ``n`` samples rather than
    taking every label of ``n / n_classes`` samples keeps fit and held-out drives from sharing samples (which
    made a map look more affine than it is: 0.19 instead of 0.33 for optics on digits).
    """
    x_train, _, _, _ = split_validation(config, data)
    recorder = _DriveRecorder(spec)
    model = build_model(config.updated(blocks=1), data, [recorder])
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(x_train.shape[0], generator=gen)[: min(n, x_train.shape[0])]
    model.predict(x_train[order[:1]])  # how many drives one sample makes (MF-FF: one per label)
    per_sample = max(1, sum(d.shape[0] for d in recorder.drives))
    total = order.numel() * per_sample
    chosen = torch.randperm(total, generator=gen)[:n].sort().values
    kept, first = [], 0
    for start in range(0, order.numel(), chunk):  # a chunk at a time: MNIST x 10 labels would not fit at once
        recorder.drives.clear()
        model.predict(x_train[order[start : start + chunk]])
        d = torch.cat(recorder.drives)
        mine = chosen[(chosen >= first) & (chosen < first + d.shape[0])] - first
        kept.append(d[mine])
        first += d.shape[0]
    drives = torch.cat(kept)
    return drives[torch.randperm(drives.shape[0], generator=gen)]


def characterize_config(
    config: RunConfig,
    *,
    n_fit: int = 2000,
    n_test: int = 1000,
    out: str | Path | None = None,
    force: bool = False,
    with_data: bool = True,
) -> tuple[Characterization, list[Path]]:
    """Characterize block 0 of the network ``physnn train`` builds for ``config``, and write
    :data:`OUTPUT_FILES` into ``out``.

    The system is the runner's (:func:`~physnn.run.experiment.build_systems`: the recipe's options, the
    width the method needs for the data set, block 0's seed, the device); it is measured at random valid
    drives and at the drives the network sends for the data set (:func:`network_drives`). The configuration
    is checked as ``physnn train`` checks it (:func:`physnn.run.preflight.check_config`) and ``out`` before
    anything is built or queried.

    ``with_data=False``: random drives only, no data set; the system is built at its factory's default width
    (``system_options`` may then set ``n_inputs``) with block 0's seed -- not what a run trains on.
    """
    from physnn.run.preflight import check_config

    if not with_data and config.data_path:
        raise ConfigError(
            f"data_path {config.data_path!r} is not used without a data set (random drives only); "
            "name the data set it belongs to (--dataset vowels, mnist-idx)"
        )
    n_fit = checks.integer("n_fit", n_fit, low=2)
    n_test = checks.integer("n_test", n_test, low=2)
    target = check_output(out, force=force) if out is not None else None
    options = dict(config.system_options)
    width = options.pop("n_inputs", None) if not with_data else None
    check_config(config.updated(system_options=options))
    if not trainer_class(config.method).uses_systems:
        raise ConfigError(
            f"method {config.method!r} queries no physical system: nothing to characterize; give a method that "
            "trains through the system (e.g. mfff, local_ce)"
        )
    if config.threads:  # as the runner: one intra-op thread by default (reproducible, and fast on a busy machine)
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    data = load_data(config) if with_data else None
    if data is not None:
        system = build_systems(config.updated(blocks=1), data)[0]
    else:
        sized = {} if width is None else {"n_inputs": width}
        system = build_system(config.system, seed=block_seed(config.seed, 0), device=config.device, **sized, **options)
    try:
        drives, split = None, (n_fit, n_test)
        if data is not None:
            drives = network_drives(config, data, system.spec, n_fit + n_test, config.seed + 1)
            if drives.shape[0] < n_fit + n_test:  # a small data set (vowels): all its drives, split 2:1
                split = ((2 * drives.shape[0]) // 3, drives.shape[0] - (2 * drives.shape[0]) // 3)
                log.warning(
                    "%s gives only %d network drives (training samples x drives per sample): fit on %d, test on %d",
                    config.dataset,
                    drives.shape[0],
                    *split,
                )
        result = characterize(system, drives=drives, n_fit=n_fit, n_test=n_test, seed=config.seed, drives_split=split)
        result.settings.update(
            system=config.system,
            system_options=dict(config.system_options),
            block_seed=block_seed(config.seed, 0),
            dataset=config.dataset if data is not None else None,
            method=config.method,
            encoder=config.encoder,
            encoder_bits=config.encoder_bits,
            label_repeat=config.label_repeat,
            config=config.to_dict(),
        )
        described = system.describe()
    finally:
        system.close()
    paths: list[Path] = []
    if target is not None:
        paths.append(save_hdf5(result, target / OUTPUT_FILES[0], described))
        paths.append(save_figure(result, target / OUTPUT_FILES[1]))
    return result, paths


def characterize_named(
    system_name: str,
    *,
    system_options: dict[str, Any] | None = None,
    dataset: str | None = None,
    random_only: bool = False,
    data_path: str | None = None,
    method: str | None = None,
    encoder: str | None = None,
    encoder_bits: int | None = None,
    label_repeat: int | None = None,
    n_fit: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    force: bool = False,
) -> tuple[Characterization, list[Path]]:
    """:func:`characterize_config` for the configuration ``physnn train --system system_name ...`` runs: the
    keys given (``None``: not given) on top of the system's recipe. ``random_only``: no data set, random drives
    only (``with_data=False``)."""
    keys = dict(
        system=system_name,
        dataset=dataset,
        data_path=data_path,
        method=method,
        encoder=encoder,
        encoder_bits=encoder_bits,
        label_repeat=label_repeat,
        seed=seed,
    )
    data = {k: v for k, v in keys.items() if v is not None}
    if system_options:
        data["system_options"] = dict(system_options)
    config = RunConfig.from_dict(with_recipe(data), source="characterize_named")
    return characterize_config(config, n_fit=n_fit, n_test=n_test, out=out, force=force, with_data=not random_only)
