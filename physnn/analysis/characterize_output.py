"""Writing characterisations: the plain-text table, ``characterize.h5``, ``characterize.png`` and the bench
check figures of ``lab_scripts/characterize.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from physnn.analysis.system_measures import Characterization

__all__ = ["format_table", "save_hdf5", "save_figure", "save_bench_plots", "FIGURE_UNITS"]


def format_table(result: Characterization) -> str:
    """A two-column plain-text table of the scalar figures."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    rows = [
        ("system", result.name),
        ("drive / output units", f"{result.units} / {result.output_units}"),
        ("inputs -> outputs", f"{result.n_inputs} -> {result.n_outputs}"),
        ("nonlinear fraction, random drives", fmt(result.nonlinear_fraction_random)),
        ("nonlinear fraction, encoder drives", fmt(result.nonlinear_fraction_encoded)),
        ("effective rank (participation ratio)", fmt(result.effective_rank)),
        ("rank for 99 % of the variance", fmt(result.rank99)),
        ("noise floor (relative rms)", fmt(result.noise_rel)),
        ("best single input R^2 (median)", fmt(result.single_input_share_median)),
        ("best single input R^2 (max)", fmt(result.single_input_share_max)),
        ("samples queried", fmt(result.samples_queried)),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


#: name -> (units, long_name) of every scalar figure (the arrays' units are in :func:`_array_units`).
FIGURE_UNITS: dict[str, tuple[str, str]] = {
    "n_inputs": ("1", "drive channels of the system"),
    "n_outputs": ("1", "output channels of the system"),
    "nonlinear_fraction_random": ("1", "1 - R^2 of the best affine map at random valid drives, noise removed"),
    "nonlinear_fraction_encoded": ("1", "1 - R^2 of the best affine map at the network's drives, noise removed"),
    "effective_rank": ("1", "participation ratio of the noise-corrected output covariance"),
    "rank99": ("1", "eigenvalues holding 99 % of the output variance"),
    "noise_rel": ("1", "rms noise / rms output spread at random drives"),
    "single_input_share_median": ("1", "median over outputs of the largest R^2 of one input"),
    "single_input_share_max": ("1", "largest R^2 of one input, over outputs"),
    "samples_queried": ("1", "samples sent to the system by the characterisation"),
}


def _array_units(result: Characterization) -> dict[str, tuple[str, str]]:
    out = result.output_units
    return {
        "per_output_nonlinear_random": ("1", "nonlinear fraction of each output at random drives"),
        "per_output_nonlinear_encoded": ("1", "nonlinear fraction of each output at the network's drives"),
        "eigenvalues": (f"({out})^2", "eigenvalues of the noise-corrected output covariance, largest first"),
        "single_input_share": ("1", "largest R^2 of one input, per output"),
        "noise_std": (out, "noise standard deviation of each output at random drives"),
    }


def save_hdf5(result: Characterization, path: str | Path, described: dict[str, Any] | None = None) -> Path:
    """``characterize.h5``: every figure with its units, the settings, the system's ``describe()``.

    Layout (format 2): each scalar figure is a 0-d dataset under ``/figures`` and each per-output array a
    dataset at the root, all with ``units`` and ``long_name`` attributes (``"1"``: dimensionless or a count);
    the root's attributes repeat the scalars for a quick ``h5dump -A`` (``units`` / ``output_units`` there are
    the system's drive and output units), and hold ``seed`` (the run's, an integer), ``settings``, ``config``
    (the run configuration that was characterised) and ``system`` as JSON. Written for HDF5 1.10 readers.
    """
    import json

    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(result.settings)
    config = settings.pop("config", None)
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        f.attrs["format"] = "physnn characterize"
        f.attrs["format_version"] = 2
        scalars = result.summary()
        for k, v in scalars.items():
            f.attrs[k] = np.nan if v is None else v
        seed = settings.get("seed")
        if isinstance(seed, int):
            f.attrs["seed"] = np.int64(seed)
        f.attrs["settings"] = json.dumps(settings, default=str)
        if config is not None:
            f.attrs["config"] = json.dumps(config, default=str)
        if described is not None:
            f.attrs["system"] = json.dumps(described, default=str)
        figures = f.create_group("figures")
        for k, (units, long_name) in FIGURE_UNITS.items():
            v = scalars.get(k)
            ds = figures.create_dataset(k, data=np.float64(np.nan) if v is None else v)
            ds.attrs["units"], ds.attrs["long_name"] = units, long_name
        arrays = {
            "per_output_nonlinear_random": result.per_output_nonlinear_random,
            "per_output_nonlinear_encoded": result.per_output_nonlinear_encoded,
            "eigenvalues": result.eigenvalues,
            "single_input_share": result.single_input_share,
            "noise_std": result.noise_std,
        }
        for k, (units, long_name) in _array_units(result).items():
            if arrays[k] is not None:
                ds = f.create_dataset(k, data=arrays[k])
                ds.attrs["units"], ds.attrs["long_name"] = units, long_name
    return path


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write (100 dpi) and close one figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_figure(result: Characterization, path: str | Path) -> Path:
    """Three panels: per-output nonlinear fraction, covariance spectrum, best-single-input share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    k = np.arange(result.n_outputs)
    ax = axes[0]
    ax.plot(
        k,
        result.per_output_nonlinear_random,
        "o",
        ms=3,
        label=f"random drives (pooled {result.nonlinear_fraction_random:.2f})",
    )
    if result.per_output_nonlinear_encoded is not None:
        ax.plot(
            k,
            result.per_output_nonlinear_encoded,
            "s",
            ms=3,
            label=f"encoder drives (pooled {result.nonlinear_fraction_encoded:.2f})",
        )
    ax.set_xlabel("output index")
    ax.set_ylabel("nonlinear fraction 1 - R² (noise removed)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("nonlinearity per output")
    ax.legend(fontsize=7)
    ax = axes[1]
    lam = result.eigenvalues
    if lam.size and lam[0] > 0:
        ax.semilogy(
            np.arange(1, lam.size + 1),
            np.clip(lam / lam.sum(), 1e-12, None),
            ".-",
            label=f"participation ratio {result.effective_rank:.1f}, 99 % at {result.rank99}",
        )
        ax.legend(fontsize=7)
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("share of output variance")
    ax.set_title(f"output covariance spectrum [{result.output_units}²]")
    ax = axes[2]
    share = result.single_input_share[np.isfinite(result.single_input_share)]
    ax.hist(share, bins=20, range=(0, 1), label=f"median {result.single_input_share_median:.2f}")
    ax.set_xlabel("R² of the best single input")
    ax.set_ylabel("outputs")
    ax.set_title("how much one input explains each output")
    ax.legend(fontsize=7)
    fig.suptitle(
        f"{result.name}: {result.n_inputs} inputs [{result.units}] -> {result.n_outputs} outputs "
        f"[{result.output_units}], noise floor {result.noise_rel:.3g} (relative rms)"
    )
    return _save(fig, path)


def save_bench_plots(result: dict[str, Any], out: Path, max_lines: int = 4) -> list[Path]:
    """Four PNG figures of :func:`bench_sweeps` (linearity, noise, repeatability, drift) with units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    name, du, ou = result["name"], result["drive_units"], result["output_units"]
    n_out = result["linearity"].shape[2]
    outs = list(range(min(max_lines, n_out)))
    paths = []

    fig, axes = plt.subplots(1, len(result["channels"]), figsize=(4 * len(result["channels"]), 3.6), squeeze=False)
    for ax, i in zip(axes[0], range(len(result["channels"]))):
        for k in outs:
            ax.plot(
                result["sweep"],
                result["linearity"][i, :, k],
                marker="o",
                ms=3,
                label=f"output {k} (R²={result['r2'][i, k]:.3f})",
            )
        ax.set_xlabel(f"drive of input {result['channels'][i]} [{du}]")
        ax.set_ylabel(f"measured output [{ou}]")
        ax.set_title(f"input {result['channels'][i]} swept, others at mid-range")
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: linearity")
    paths.append(_save(fig, out / "linearity.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in range(result["noise_mean"].shape[0]):
        ax.scatter(result["noise_mean"][r], result["noise_std"][r], s=10, label=f"drive {r}")
    ax.set_xlabel(f"mean output [{ou}]")
    ax.set_ylabel(f"standard deviation over {result['settings']['repeats']} repeats [{ou}]")
    ax.set_title(f"{name}: noise (median SNR {result['summary']['snr_db_median'] or float('inf'):.1f} dB)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "noise.png"))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    a, b = result["repeat_a"].ravel(), result["repeat_b"].ravel()
    ax.scatter(a, b, s=8, label="same drive, start vs end")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel(f"first measurement [{ou}]")
    ax.set_ylabel(f"repeated measurement [{ou}]")
    ax.set_title(f"{name}: repeatability (RMS diff {result['summary']['repeatability_rms']:.3g} {ou})")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "repeatability.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in outs:
        y = result["drift_y"][:, k]
        ax.plot(result["drift_t"], y - y[0], marker=".", label=f"output {k} ({result['drift_slope'][k]:+.2g} {ou}/s)")
    ax.set_xlabel("time since first drift measurement [s]")
    ax.set_ylabel(f"change of mean output [{ou}]")
    ax.set_title(f"{name}: drift at a fixed mid-range drive")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "drift.png"))
    return paths
