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
from physnn.core.system import SystemSpec

__all__ = [
    "Characterization",
    "characterize",
    "characterize_named",
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

#: Data set whose encoded drives are characterised by default.
DEFAULT_DATASET = "digits"


def characterize_named(
    system_name: str,
    *,
    system_options: dict[str, Any] | None = None,
    dataset: str | None = DEFAULT_DATASET,
    data_path: str | None = None,
    encoder: str = "minmax",
    encoder_bits: int | None = None,
    label_repeat: int = 1,
    n_fit: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
) -> tuple[Characterization, list[Path]]:
    """Build ``system_name`` as wide as ``encoder`` needs for ``dataset`` (label embedded, as MF-FF's block 0),
    characterize it at random drives and at the encoded data, and write ``characterize.h5`` and
    ``characterize.png`` into ``out``. ``dataset=None``: random drives only (system at its default width).
    ``system_options`` may set ``n_inputs`` itself (wider than needed: the encoder pads)."""
    from physnn.core.encoding import Encoder, drive_width, label_width
    from physnn.core.registry import build_system
    from physnn.data.datasets import load_dataset

    options = dict(system_options or {})
    options.setdefault("seed", seed)
    data = None
    if dataset is not None:
        data = load_dataset(dataset, path=data_path, seed=seed)
        bits = Encoder(SystemSpec(1, 1), encoder, bits=encoder_bits).bits
        width = drive_width(encoder, label_width(data.n_classes, label_repeat) + data.n_features, bits=bits)
        options.setdefault("n_inputs", width)
    system = build_system(system_name, **options)
    try:
        drives = None
        enc_fit, enc_test = n_fit, n_test
        if data is not None:
            pairs = data.x_train.shape[0] * data.n_classes
            if pairs < n_fit + n_test:  # a small data set (vowels): all its pairs, split 2:1
                enc_fit = (2 * pairs) // 3
                enc_test = pairs - enc_fit
                log.warning(
                    "%s has %d (sample, label) pairs: encoder drives fit on %d, test on %d",
                    dataset,
                    pairs,
                    enc_fit,
                    enc_test,
                )
            gen = torch.Generator().manual_seed(seed + 1)
            drives = encoder_drives(
                system.spec,
                data.x_train,
                data.y_train,
                data.n_classes,
                enc_fit + enc_test,
                gen,
                encoder=encoder,
                encoder_options={"bits": encoder_bits},
                label_repeat=label_repeat,
            )
        result = characterize(
            system, drives=drives, n_fit=n_fit, n_test=n_test, seed=seed, drives_split=(enc_fit, enc_test)
        )
        result.settings.update(
            system=system_name,
            system_options={k: str(v) for k, v in options.items()},
            dataset=dataset,
            encoder=encoder,
            encoder_bits=encoder_bits,
            label_repeat=label_repeat,
        )
        described = system.describe()
    finally:
        system.close()
    paths: list[Path] = []
    if out is not None:
        out = Path(out)
        paths.append(save_hdf5(result, out / "characterize.h5", described))
        paths.append(save_figure(result, out / "characterize.png"))
    return result, paths
