r"""A digital twin of a real device, fitted to its recorded input/output pairs.

Why: a twin fitted to measurements of a physical system that nobody modelled
is the closest thing to hardware that CI has. The acoustic pairs
``acoustic_{x,y}.csv`` (shipped with physnn in ``physnn/data/measured``, MIT
licence, see its README) are real measurements of the chaotic
acoustic cavity of Momeni et al. (Science 2023); :func:`acoustic_twin` fits a
twin on them and caches it so that the CLI, configs and tests can build the
system in a fraction of a second.

Model
-----
A multilayer perceptron :math:`\hat y = \sigma_y \odot f_\theta(u) + \mu_y`
with inputs rescaled from the drive limits to ``[-1, 1]``
(:math:`u = 2(x - \text{low})/(\text{high} - \text{low}) - 1`) and outputs
standardised per column (:math:`\mu_y, \sigma_y` from the training split), so
that every measured feature -- including the faint ones, which a lab PNN may
well use -- carries the same weight in the fit. When every recorded output is
non-negative (spectral magnitudes, intensities) the prediction is clipped at
0, as the device's would be.

Fit
---
Rows are split at random (seeded) into a training and a held-out split
(``val_fraction``, default 10 %). Adam minimises the mean squared standardised
error in minibatches; after each epoch the held-out error is measured and the
best weights so far kept; training stops after ``patience`` epochs without
improvement (early stopping) or at ``epochs``. The fit error kept in
:meth:`MeasuredTwin.describe` is the relative L2 error on the held-out split,
:math:`\lVert \hat Y - Y \rVert_F / \lVert Y \rVert_F`, in the device's own
units. Everything is seeded (initialisation, split, minibatch order) and the
fit runs single-threaded, so a seed gives bit-identical weights on a machine.

Noise
-----
The measured data are noisy; the mean prediction is not. With ``noise=True``
the twin adds Gaussian noise whose per-output standard deviation is the
residual standard deviation of the fit on the held-out split (an upper bound
on the device's repeatability noise, since it also contains model error), drawn
from the twin's own seeded generator. Off by default: a deterministic twin is
what comparisons between training methods want.

File format (no pickle)
-----------------------
One ``.npz`` file (``numpy.savez``, loaded with ``allow_pickle=False``): arrays
``W0, b0, W1, b1, ...`` (float32, ``W`` of shape ``[out, in]``) and ``meta``, a
UTF-8 JSON document stored as a ``uint8`` array, holding the format name and
version, the architecture, the normalisation, the drive limits, the residual
standard deviation and the fit record. Files are written to a temporary name
and renamed into place, so a crash never leaves a half-written twin.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from physnn.core.safety import check_write_path, user_cache_dir
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.data import files as data_files

__all__ = ["MeasuredTwin", "acoustic_twin", "default_data_dir", "default_cache_dir", "TwinFileError"]

FORMAT = "physnn-measured-twin"
VERSION = 1
_ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
}


class TwinFileError(ValueError):
    """A twin file that is missing, corrupt or not a twin. The message names the file."""


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run small-tensor work on one thread.

    Why: tiny matrices gain nothing from intra-op threads, and on a shared
    machine the thread hand-off costs ~20x (measured: 2 ms vs 40 ms per Adam
    step); one thread also makes the fit bit-reproducible.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MeasuredTwin(PhysicalSystem):
    """A :class:`PhysicalSystem` that answers with an MLP fitted to measurements.

    Build one with :meth:`fit`, :meth:`from_csv` or :meth:`load`; the
    constructor takes an already fitted network (lists of weights and biases)
    and its normalisation.

    Args:
        weights: ``[out, in]`` matrices of the layers, first to last.
        biases: the matching bias vectors.
        y_mean, y_std: output standardisation (length n_outputs).
        low, high: drive limits (the measured drive range).
        activation: hidden-layer nonlinearity, one of ``silu, tanh, relu, gelu``.
        nonnegative: clip predictions at 0 (the recorded outputs were all >= 0).
        residual_std: per-output residual std on the held-out split (for noise).
        fit_info: the fit record (errors, sizes, settings) kept in ``describe()``.
        noise: add Gaussian noise of ``residual_std`` to every measurement.
        seed: seeds the noise generator.
        device: where the network runs.
        name: the system's name in messages and run files.
    """

    def __init__(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any],
        y_mean: Any,
        y_std: Any,
        *,
        low: float = 0.0,
        high: float = 1.0,
        activation: str = "silu",
        nonnegative: bool = False,
        residual_std: Any = None,
        fit_info: dict[str, Any] | None = None,
        noise: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        name: str = "twin",
    ):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if len(weights) != len(biases) or not weights:
            raise ValueError(
                f"need one bias per weight matrix and at least one layer, got {len(weights)} and {len(biases)}"
            )
        ws = [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in weights]
        bs = [torch.as_tensor(np.asarray(b, dtype=np.float32)) for b in biases]
        for i, (w, b) in enumerate(zip(ws, bs)):
            if w.dim() != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer {i}: weight {tuple(w.shape)} and bias {tuple(b.shape)} do not fit together")
            if i and w.shape[1] != ws[i - 1].shape[0]:
                raise ValueError(f"layer {i} takes {w.shape[1]} inputs but layer {i - 1} gives {ws[i - 1].shape[0]}")
            if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
                raise ValueError(f"layer {i} has non-finite weights")
        n_in, n_out = int(ws[0].shape[1]), int(ws[-1].shape[0])
        y_mean_t = _vector(y_mean, n_out, "y_mean")
        y_std_t = _vector(y_std, n_out, "y_std")
        if (y_std_t <= 0).any():
            raise ValueError(f"y_std must be > 0 in every column, got min {y_std_t.min().item():g}")
        res = torch.zeros(n_out) if residual_std is None else _vector(residual_std, n_out, "residual_std")
        if (res < 0).any():
            raise ValueError("residual_std must be >= 0")
        if noise and residual_std is None:
            raise ValueError("noise=True needs residual_std (the fit's residual standard deviation)")
        super().__init__(SystemSpec(n_in, n_out, float(low), float(high), None, name=name, units="a.u."), device=device)
        self.activation = activation
        self.nonnegative = bool(nonnegative)
        self.noise = bool(noise)
        self.seed = int(seed)
        self.fit_info: dict[str, Any] = dict(fit_info or {})
        self._w = [w.to(self.device) for w in ws]
        self._b = [b.to(self.device) for b in bs]
        self._y_mean = y_mean_t.to(self.device)
        self._y_std = y_std_t.to(self.device)
        self._res_std = res.to(self.device)
        self._noise_gen = torch.Generator(device=self.device).manual_seed(self.seed)

    # ------------------------------------------------------------- inference
    @property
    def hidden(self) -> list[int]:
        return [int(w.shape[0]) for w in self._w[:-1]]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free prediction with its autograd graph (x already on self.device)."""
        s = self.spec
        h = (x - s.low) * (2.0 / (s.high - s.low)) - 1.0
        act = _ACTIVATIONS[self.activation]
        for i, (w, b) in enumerate(zip(self._w, self._b)):
            h = torch.nn.functional.linear(h, w, b)
            if i < len(self._w) - 1:
                h = act(h)
        y = h * self._y_std + self._y_mean
        return y.clamp_min(0.0) if self.nonnegative else y

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        with _single_thread():
            y = self.predict(x)
        if self.noise:
            y = y + self._res_std * torch.randn(y.shape, generator=self._noise_gen, device=y.device, dtype=y.dtype)
            if self.nonnegative:
                y = y.clamp_min(0.0)
        return y

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free twin with its autograd graph, for the in-silico backprop baseline."""
        return self.predict(x.to(self.device, torch.float32))

    def relative_error(self, x: Any, y: Any) -> float:
        """Relative L2 error ``||pred - y|| / ||y||`` of the noise-free twin on (x, y)."""
        xt = self.validate_input(x).to(self.device)
        yt = torch.as_tensor(np.asarray(y, dtype=np.float32)).to(self.device)
        if yt.shape != (xt.shape[0], self.spec.n_outputs):
            raise ValueError(f"y has shape {tuple(yt.shape)}, expected ({xt.shape[0]}, {self.spec.n_outputs})")
        with torch.no_grad():
            return _rel_l2(self.predict(xt), yt)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            hidden=self.hidden,
            activation=self.activation,
            nonnegative=self.nonnegative,
            noise=self.noise,
            seed=self.seed,
            residual_std=[float(v) for v in self._res_std.cpu()],
            fit=self.fit_info,
        )
        return d

    # ------------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        x: Any,
        y: Any,
        *,
        hidden: Sequence[int] = (128, 128),
        activation: str = "silu",
        val_fraction: float = 0.1,
        epochs: int = 300,
        patience: int = 20,
        batch_size: int = 128,
        lr: float = 2e-3,
        low: float | None = None,
        high: float | None = None,
        seed: int = 0,
        noise: bool = False,
        device: str | torch.device = "cpu",
        name: str = "twin",
        verbose: bool = False,
    ) -> "MeasuredTwin":
        """Fit a twin to recorded pairs ``x: [N, n_in]`` (drives), ``y: [N, n_out]`` (measurements).

        ``low``/``high`` are the drive limits of the twin; by default the range
        of ``x``. Data outside given limits is an error (the twin would be
        asked to extrapolate). The fit itself runs on the CPU; ``device`` is
        where the fitted twin answers.
        """
        X = _matrix(x, "x")
        Y = _matrix(y, "y")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"x has {X.shape[0]} rows but y has {Y.shape[0]}; they must be recorded pairs")
        n = X.shape[0]
        if not (0.0 < val_fraction < 1.0):
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n_val = int(round(n * val_fraction))
        if n_val < 1 or n - n_val < 2:
            raise ValueError(f"{n} rows are too few to hold out val_fraction={val_fraction} and still train")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive, got {hidden}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        for key, value in (("epochs", epochs), ("patience", patience), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr}")
        lo = float(X.min()) if low is None else float(low)
        hi = float(X.max()) if high is None else float(high)
        if not lo < hi:
            raise ValueError(f"drive limits need low < high, got low={lo}, high={hi}")
        if X.min() < lo or X.max() > hi:
            r, c = np.unravel_index(int(np.argmax((X < lo) | (X > hi))), X.shape)
            raise ValueError(f"x[{r}, {c}] = {X[r, c]:.6g} lies outside the drive limits [{lo:g}, {hi:g}]")

        start = time.perf_counter()
        with _single_thread():
            gen = torch.Generator().manual_seed(int(seed))
            perm = torch.randperm(n, generator=gen)
            val_idx, tr_idx = perm[:n_val], perm[n_val:]
            Xt = torch.from_numpy(X)
            Yt = torch.from_numpy(Y)
            y_mean = Yt[tr_idx].mean(0)
            y_std = Yt[tr_idx].std(0)
            # A constant column would divide by zero; give it unit scale (its fit is then just the mean).
            y_std = torch.where(y_std > 1e-12 * max(float(y_std.max()), 1e-30), y_std, torch.ones_like(y_std))
            U = (Xt - lo) * (2.0 / (hi - lo)) - 1.0
            Z = (Yt - y_mean) / y_std
            sizes = [X.shape[1], *hidden, Y.shape[1]]
            params: list[torch.Tensor] = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
                bound = 1.0 / math.sqrt(fan_in)  # PyTorch's nn.Linear default, drawn from our generator
                params.append((torch.rand(fan_out, fan_in, generator=gen) * 2 - 1).mul_(bound).requires_grad_())
                params.append((torch.rand(fan_out, generator=gen) * 2 - 1).mul_(bound).requires_grad_())
            act = _ACTIVATIONS[activation]

            def forward(u: torch.Tensor) -> torch.Tensor:
                h = u
                for i in range(0, len(params), 2):
                    h = torch.nn.functional.linear(h, params[i], params[i + 1])
                    if i < len(params) - 2:
                        h = act(h)
                return h

            opt = torch.optim.Adam(params, lr=lr)
            Utr, Ztr, Uval, Zval = U[tr_idx], Z[tr_idx], U[val_idx], Z[val_idx]
            best = math.inf
            best_params = [p.detach().clone() for p in params]
            best_epoch, stale, epoch = 0, 0, 0
            for epoch in range(1, epochs + 1):
                order = torch.randperm(Utr.shape[0], generator=gen)
                for i in range(0, Utr.shape[0], batch_size):
                    b = order[i : i + batch_size]
                    loss = (forward(Utr[b]) - Ztr[b]).pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    val_loss = float((forward(Uval) - Zval).pow(2).mean())
                if not math.isfinite(val_loss):
                    raise RuntimeError(f"twin fit diverged at epoch {epoch} (held-out loss {val_loss}); lower lr={lr}")
                if val_loss < best:
                    best, best_epoch, stale = val_loss, epoch, 0
                    best_params = [p.detach().clone() for p in params]
                else:
                    stale += 1
                if verbose:
                    print(
                        f"twin fit epoch {epoch}: held-out standardised MSE {val_loss:.5f} (best {best:.5f} @ {best_epoch})"
                    )
                if stale >= patience:
                    break
            weights = best_params[0::2]
            biases = best_params[1::2]
            nonnegative = bool(Y.min() >= 0)
            twin = cls(
                weights,
                biases,
                y_mean,
                y_std,
                low=lo,
                high=hi,
                activation=activation,
                nonnegative=nonnegative,
                residual_std=torch.zeros(Y.shape[1]),
                noise=False,
                seed=seed,
                device="cpu",
                name=name,
            )
            with torch.no_grad():
                pred_val = twin.predict(Xt[val_idx])
                pred_tr = twin.predict(Xt[tr_idx])
            residual_std = (pred_val - Yt[val_idx]).std(0, unbiased=True) if n_val > 1 else torch.zeros(Y.shape[1])
            info = {
                "rel_l2_heldout": _rel_l2(pred_val, Yt[val_idx]),
                "rel_l2_train": _rel_l2(pred_tr, Yt[tr_idx]),
                "n_train": int(tr_idx.numel()),
                "n_heldout": int(n_val),
                "epochs_run": int(epoch),
                "best_epoch": int(best_epoch),
                "heldout_mse_standardised": best,
                "settings": {
                    "hidden": hidden,
                    "activation": activation,
                    "val_fraction": val_fraction,
                    "epochs": epochs,
                    "patience": patience,
                    "batch_size": batch_size,
                    "lr": lr,
                    "seed": int(seed),
                },
                "fit_seconds": time.perf_counter() - start,
            }
        return cls(
            weights,
            biases,
            y_mean,
            y_std,
            low=lo,
            high=hi,
            activation=activation,
            nonnegative=nonnegative,
            residual_std=residual_std,
            fit_info=info,
            noise=noise,
            seed=seed,
            device=device,
            name=name,
        )

    @classmethod
    def from_csv(
        cls,
        x_path: str | os.PathLike,
        y_path: str | os.PathLike,
        *,
        rows: slice | Sequence[int] | None = None,
        **fit_kwargs: Any,
    ) -> "MeasuredTwin":
        """Fit a twin on two comma-separated files of recorded drives and measurements.

        ``rows`` selects the recorded pairs to fit on (a slice or indices into
        the data rows; all by default). The remaining keyword arguments go to
        :meth:`fit`; the data source is recorded in ``describe()['fit']``.
        """
        X = read_csv_matrix(x_path)
        Y = read_csv_matrix(y_path)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(
                f"{x_path} has {X.shape[0]} rows but {y_path} has {Y.shape[0]}; they must be recorded pairs"
            )
        if rows is not None:
            available = X.shape[0]
            X, Y = X[rows], Y[rows]
            if X.shape[0] == 0:
                raise ValueError(f"rows={rows!r} selects no rows of {x_path} ({available} available)")
        twin = cls.fit(X, Y, **fit_kwargs)
        twin.fit_info["data"] = {
            "x": str(x_path),
            "y": str(y_path),
            "rows": _rows_repr(rows),
            "n_rows": int(X.shape[0]),
        }
        return twin

    # ------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the twin to one ``.npz`` file (no pickle), atomically. Returns the path."""
        path = Path(path)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "n_inputs": self.spec.n_inputs,
            "n_outputs": self.spec.n_outputs,
            "hidden": self.hidden,
            "activation": self.activation,
            "low": self.spec.low,
            "high": self.spec.high,
            "name": self.spec.name,
            "nonnegative": self.nonnegative,
            "y_mean": [float(v) for v in self._y_mean.cpu()],
            "y_std": [float(v) for v in self._y_std.cpu()],
            "residual_std": [float(v) for v in self._res_std.cpu()],
            "fit": self.fit_info,
        }
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
        for i, (w, b) in enumerate(zip(self._w, self._b)):
            arrays[f"W{i}"] = w.detach().cpu().numpy().astype(np.float32)
            arrays[f"b{i}"] = b.detach().cpu().numpy().astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, noise: bool = False, seed: int = 0, device: str | torch.device = "cpu"
    ) -> "MeasuredTwin":
        """Read a twin written by :meth:`save`. Raises :class:`TwinFileError` naming the file if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise TwinFileError(f"twin file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.array(data[k]) for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise TwinFileError(f"{path} is not a readable twin file (.npz): {type(exc).__name__}: {exc}") from None
        if "meta" not in arrays or arrays["meta"].dtype != np.uint8:
            raise TwinFileError(f"{path} is an .npz file but not a physnn twin (no 'meta' record)")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TwinFileError(f"{path}: the twin's 'meta' record is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TwinFileError(
                f"{path} is not a physnn twin file (format {meta.get('format') if isinstance(meta, dict) else None!r})"
            )
        if meta.get("version") != VERSION:
            raise TwinFileError(
                f"{path} is twin format version {meta.get('version')!r}; this physnn reads version {VERSION}"
            )
        try:
            n_layers = len(meta["hidden"]) + 1
            weights = [arrays[f"W{i}"] for i in range(n_layers)]
            biases = [arrays[f"b{i}"] for i in range(n_layers)]
            twin = cls(
                weights,
                biases,
                meta["y_mean"],
                meta["y_std"],
                low=meta["low"],
                high=meta["high"],
                activation=meta["activation"],
                nonnegative=meta["nonnegative"],
                residual_std=meta["residual_std"],
                fit_info=meta.get("fit", {}),
                noise=noise,
                seed=seed,
                device=device,
                name=meta.get("name", "twin"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TwinFileError(f"{path}: inconsistent twin file ({type(exc).__name__}: {exc})") from None
        if twin.spec.n_inputs != meta.get("n_inputs") or twin.spec.n_outputs != meta.get("n_outputs"):
            raise TwinFileError(
                f"{path}: weights give {twin.spec.n_inputs} -> {twin.spec.n_outputs} but the record says "
                f"{meta.get('n_inputs')} -> {meta.get('n_outputs')}"
            )
        return twin


# ---------------------------------------------------------------- the acoustic twin
def default_data_dir() -> Path:
    """Where the measured files are read from: ``$PHYSNN_DATA`` (or the old ``$PHYSNN_SHARED_DATA``), else the
    copy shipped with physnn (:func:`physnn.data.files.data_dir`)."""
    return data_files.data_dir()


def default_cache_dir() -> Path:
    """``$PHYSNN_CACHE`` or ``$XDG_CACHE_HOME/physnn`` or ``~/.cache/physnn``, plus ``twins``."""
    return user_cache_dir() / "twins"


def acoustic_twin(
    n_inputs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_dir: str | os.PathLike | None = None,
    rows: int = 9000,
    noise: bool = False,
    cache: bool | str | os.PathLike = True,
    fit_seed: int = 0,
) -> MeasuredTwin:
    """The twin of the paper's acoustic cavity: 20 drive amplitudes in [0, 1] -> 20 spectral magnitudes.

    Fits on data rows ``1..rows`` of ``acoustic_x.csv``/``acoustic_y.csv``
    (row 0 is an all-zero placeholder; rows after 9000 are left for testing
    the twin, e.g. 9300+). The fitted twin is cached (``cache=True``: under
    :func:`default_cache_dir`; a path: that folder, which must lie inside the
    run's or the user's cache folder while a run file's options are in use,
    see :func:`physnn.core.safety.check_write_path`; False: no cache) in a file
    keyed by a hash of the data and the fit settings, so repeated builds are
    fast and a change of data or settings refits.

    ``seed`` seeds the twin's measurement noise (``noise=True``); the fit
    itself uses ``fit_seed``, fixed by default, so that runs with different
    seeds share one twin, as they would share one device.

    The twin has exactly 20 inputs. ``n_inputs`` is the width the model asks
    for: up to 20 is fine (the model's encoder holds the unused drives at 0),
    more is an error.
    """
    # A cache folder named in a run file (``--resume``) must stay inside the run's or the user's cache
    # folder: checked first, before anything is fitted or written.
    folder_c = None
    if cache is not False and cache is not None:
        folder_c = default_cache_dir() if cache is True else check_write_path("acoustic-twin option cache", cache)
    if n_inputs is not None and int(n_inputs) > 20:
        raise ValueError(
            f"the acoustic twin has 20 inputs (the measured cavity's 20 tone amplitudes), the model asks for "
            f"n_inputs={n_inputs}; lower the block width (hidden <= 20)"
        )
    try:  # the measured pairs shipped with physnn, or data_dir / $PHYSNN_DATA (plain .csv or .csv.gz)
        x_path, y_path = (data_files.measured_file(f"acoustic_{v}.csv", data_dir) for v in "xy")
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"acoustic twin data: {exc}; data_dir (or $PHYSNN_DATA) must be a folder holding acoustic_x.csv and "
            "acoustic_y.csv (or their .gz); leave both unset to use the data shipped with physnn"
        ) from None
    if not isinstance(rows, int) or rows < 10:
        raise ValueError(f"rows must be an integer >= 10 (fit on data rows 1..rows), got {rows!r}")
    X = read_csv_matrix(x_path)
    Y = read_csv_matrix(y_path)
    if X.shape != Y.shape or X.shape[1] != 20:
        raise ValueError(f"expected two 20-column files of equal length, got {x_path} {X.shape} and {y_path} {Y.shape}")
    if rows + 1 > X.shape[0]:
        raise ValueError(f"rows={rows} asks for data rows 1..{rows} but {x_path} has only {X.shape[0] - 1} after row 0")
    sel = slice(1, rows + 1)
    settings = dict(
        hidden=(128, 128),
        activation="silu",
        val_fraction=0.1,
        epochs=300,
        patience=20,
        batch_size=128,
        lr=2e-3,
        low=0.0,
        high=1.0,
        seed=int(fit_seed),
    )
    data_info = {"x": str(x_path), "y": str(y_path), "rows": f"1..{rows}", "n_rows": rows}

    cache_file = None
    if folder_c is not None:
        key = _cache_key(X[sel], Y[sel], settings)
        cache_file = folder_c / f"acoustic-twin-{key}.npz"
        if cache_file.is_file():
            try:
                twin = MeasuredTwin.load(cache_file, noise=noise, seed=seed, device=device)
                twin.fit_info["cache_file"] = str(cache_file)
                return twin
            except TwinFileError as exc:
                warnings.warn(f"ignoring a bad cached twin and refitting: {exc}", RuntimeWarning, stacklevel=2)
    twin = MeasuredTwin.fit(X[sel], Y[sel], name="acoustic-twin", **settings)
    twin.fit_info["data"] = data_info
    if cache_file is not None:
        try:
            twin.save(cache_file)
        except OSError as exc:  # a read-only or full cache folder must not stop a run: keep the fit in memory
            warnings.warn(
                f"could not cache the fitted twin at {cache_file}: {exc}; using it uncached",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            twin = MeasuredTwin.load(cache_file, noise=noise, seed=seed, device=device)
            twin.fit_info["cache_file"] = str(cache_file)
            return twin
    return MeasuredTwin(
        twin._w,
        twin._b,
        twin._y_mean,
        twin._y_std,
        low=twin.spec.low,
        high=twin.spec.high,
        activation=twin.activation,
        nonnegative=twin.nonnegative,
        residual_std=twin._res_std,
        fit_info=twin.fit_info,
        noise=noise,
        seed=seed,
        device=device,
        name=twin.spec.name,
    )


# ------------------------------------------------------------------ helpers
def read_csv_matrix(path: str | os.PathLike) -> np.ndarray:
    """Read a headerless comma-separated numeric file as float32 ``[rows, cols]``, naming the file on error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path} is not a comma-separated table of numbers: {exc}") from None
    if data.size == 0:
        raise ValueError(f"{path} holds no data")
    if not np.isfinite(data).all():
        r, c = np.argwhere(~np.isfinite(data))[0]
        raise ValueError(f"{path}: row {r}, column {c} is not finite ({data[r, c]})")
    return data.astype(np.float32)


def _cache_key(x: np.ndarray, y: np.ndarray, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(f"{FORMAT}-v{VERSION}-torch{torch.__version__.split('+')[0]}".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    for a in (x, y):
        a = np.ascontiguousarray(a, dtype=np.float32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _rel_l2(pred: torch.Tensor, y: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(y.double()))
    num = float(torch.linalg.vector_norm((pred - y).double()))
    return num / den if den > 0 else math.inf


def _rows_repr(rows: Any) -> Any:
    if rows is None:
        return "all"
    if isinstance(rows, slice):
        return f"{rows.start}:{rows.stop}:{rows.step}"
    return [int(r) for r in rows]


def _matrix(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 2-D array of numbers: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [rows, columns], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        r, c = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}[{r}, {c}] is not finite ({arr[r, c]})")
    return np.ascontiguousarray(arr)


def _vector(v: Any, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(
        np.asarray(v if not isinstance(v, torch.Tensor) else v.detach().cpu().numpy(), dtype=np.float32)
    )
    if t.shape != (n,):
        raise ValueError(f"{name} must have length {n}, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries")
    return t
