"""What the systems measured: ``/samples/<block>`` (a subsample of the queries), ``/probes/<block>``
(fixed drives re-measured to follow drift) and ``/goodness/<block>`` (goodness distributions).

Samples and probe measurements are buffered in memory and written with the epoch's metrics
(:meth:`Measurements.stage`), so the query path never waits for the disk."""

from __future__ import annotations

import functools
import time
from typing import Any

import h5py
import numpy as np
import torch

from physnn.runlog._common import TIME_UNITS, _block_name, _nonneg_int
from physnn.runlog.columns import _create_col, _create_scale, _Rows
from physnn.runlog.records import _spec_of

#: Buffered sample rows per block beyond which log_samples writes before the epoch flush (memory bound).
_SAMPLE_BUFFER_ROWS = 1 << 16


def create_measurements(f: h5py.File, systems: dict[str, dict[str, Any]]) -> None:
    """``/samples``, ``/probes`` and ``/goodness`` groups, with a group per block (samples and probes only
    for blocks whose spec gives ``n_inputs``/``n_outputs``)."""
    samples, probes, goodness = f.create_group("samples"), f.create_group("probes"), f.create_group("goodness")
    for block, desc in systems.items():
        spec = _spec_of(desc)
        n_in, n_out = spec.get("n_inputs"), spec.get("n_outputs")
        drive, out = str(spec.get("units") or "a.u."), str(spec.get("output_units") or "a.u.")
        gg = goodness.create_group(block)
        ge = _create_col(
            gg,
            "epoch",
            "i8",
            chunk=4096,
            checksum=True,
            units="1",
            long_name="epoch of each value (-1: before any epoch; the key column)",
        )
        ge.make_scale("epoch")
        for name, dtype, long_name in (
            ("value", "f4", "goodness"),
            ("positive", "i1", "1: positive data, 0: negative data"),
        ):
            _create_col(
                gg,
                name,
                dtype,
                chunk=4096,
                checksum=True,
                units="a.u." if name == "value" else "1",
                long_name=long_name,
            ).dims[0].attach_scale(ge)
        if isinstance(n_in, int) and isinstance(n_out, int) and n_in > 0 and n_out > 0:
            _create_samples(samples.create_group(block), n_in, n_out, drive, out)
            _create_probes(probes.create_group(block), n_in, n_out, drive, out)


def _create_samples(s: h5py.Group, n_in: int, n_out: int, drive: str, out: str) -> None:
    rows = int(min(1024, max(16, (1 << 14) // (4 * max(n_in, n_out)))))
    s.attrs["chunk_rows"] = rows
    step = _create_col(
        s,
        "step",
        "i8",
        chunk=rows,
        checksum=True,
        units="1",
        long_name="training step (or call counter) of the query; the key column",
    )
    step.make_scale("step")
    inp = _create_scale(s, "input", np.arange(n_in, dtype=np.int32), "1", "system input channel")
    outp = _create_scale(s, "output", np.arange(n_out, dtype=np.int32), "1", "system output channel")
    for name, width, unit, scale, what in (
        ("x", n_in, drive, inp, "drive sent to the system"),
        ("y", n_out, out, outp, "output measured by the system"),
    ):
        ds = _create_col(s, name, "f4", width, chunk=rows, checksum=True, units=unit, long_name=what)
        ds.dims[0].attach_scale(step)
        ds.dims[1].attach_scale(scale)


def _create_probes(p: h5py.Group, n_in: int, n_out: int, drive: str, out: str) -> None:
    pstep = _create_col(
        p,
        "step",
        "i8",
        checksum=True,
        units="1",
        long_name="training step of the re-measurement; the key column",
    )
    pstep.make_scale("step")
    # netCDF readers (xarray) need a scale on every axis: probe and row grow with the data
    probe = _create_col(p, "probe", "i4", chunk=64, checksum=True, units="1", long_name="probe index")
    probe.make_scale("probe")
    row = _create_col(
        p, "row", "i8", chunk=256, checksum=True, units="1", long_name="row of y: measurement * P + probe"
    )
    row.make_scale("row")
    pin = _create_scale(p, "input", np.arange(n_in, dtype=np.int32), "1", "system input channel")
    pout = _create_scale(p, "output", np.arange(n_out, dtype=np.int32), "1", "system output channel")
    px = _create_col(
        p,
        "x",
        "f4",
        n_in,
        chunk=64,
        checksum=True,
        units=drive,
        long_name="fixed probe drives [probe, input]",
    )
    py = _create_col(
        p,
        "y",
        "f4",
        n_out,
        chunk=max(16, min(256, (1 << 16) // (4 * n_out))),  # about 64 KiB: a wide camera's chunk stays small
        checksum=True,
        units=out,
        long_name="probe outputs [measurement * P + probe, output]",
    )
    for ds, scales in ((px, (probe, pin)), (py, (row, pout))):
        for axis, scale in enumerate(scales):
            ds.dims[axis].attach_scale(scale)
    _create_col(p, "time", "f8", checksum=True, units=TIME_UNITS, long_name="time of the re-measurement (UTC)").dims[
        0
    ].attach_scale(pstep)


@functools.lru_cache(maxsize=64)
def _spaced_cached(n: int, k: int) -> np.ndarray:
    idx = np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))
    idx.setflags(write=False)
    return idx


def _spaced(n: int, k: int) -> np.ndarray:
    """``k`` row indices evenly spaced through ``n`` rows (cached: the query path calls it every time)."""
    return _spaced_cached(int(n), int(k))


@functools.lru_cache(maxsize=64)
def _spaced_tensor(n: int, k: int) -> torch.Tensor:
    return torch.from_numpy(_spaced(n, k).copy())


def _as_2d(a: Any, width: int, what: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what} must have shape [batch, {width}], got {tuple(arr.shape)}")
    return arr.astype(np.float32, copy=False)


class Measurements:
    """Buffers and appends an open run file's samples, probe measurements and goodness values.

    Not thread-safe by itself: the :class:`RunWriter` calls it under its lock.
    """

    def __init__(
        self,
        f: h5py.File,
        samples_per_call: int,
        max_samples: int,
        goodness_per_call: int,
        max_sample_bytes: int | None = None,
    ):
        self.samples_per_call = samples_per_call
        self.max_samples = max_samples
        self.goodness_per_call = goodness_per_call
        self.goodness = {b: _Rows([g["value"], g["positive"], g["epoch"]]) for b, g in f["goodness"].items()}
        self.samples: dict[str, dict[str, Any]] = {}
        for b, g in f["samples"].items():
            rows = _Rows([g["x"], g["y"], g["step"]])
            n = rows.committed()
            n_in, n_out = g["x"].shape[1], g["y"].shape[1]
            limit = max_samples
            if max_sample_bytes is not None:  # the byte budget, shared evenly by the blocks
                row_bytes = 4 * (n_in + n_out) + 8
                limit = min(limit, int(max_sample_bytes) // len(f["samples"]) // row_bytes)
            self.samples[b] = {
                "rows": rows,
                "dims": (n_in, n_out),
                "limit": limit,
                "quota": None,  # rows still allowed in this epoch (None: no per-epoch share)
                "buf": [],
                "buffered": 0,
                "next_step": int(g["step"][n - 1]) + 1 if n else 0,
                "full_reported": False,
            }
        self.probes: dict[str, dict[str, Any]] = {}
        for b, g in f["probes"].items():
            n_probe = g["x"].shape[0]
            self.probes[b] = {
                "g": g,
                "n": n_probe,
                "buf": [],
                "rows": _Rows([g["y"], g["row"], g["time"], g["step"]], [max(n_probe, 1), max(n_probe, 1), 1, 1]),
            }

    def sample_state(self, block: Any, what: str) -> tuple[str, dict[str, Any]]:
        b = _block_name(block)
        if b not in self.samples:
            known = sorted(self.samples)
            raise ValueError(
                f"{what}: block {b!r} has no sample/probe datasets in this run file; they are created "
                f"for the blocks given as systems= with spec n_inputs/n_outputs: {known}"
            )
        return b, self.samples[b]

    def new_epoch(self, epochs_done: int | None, planned_epochs: int | None) -> None:
        """Share what is left of each block's sample budget evenly over the epochs still planned.

        Without a plan the budget is filled by the first queries; with one, every epoch gets its share, so
        the sample log covers the whole run (and an extension of it: the rest is shared again).
        """
        remaining = None if planned_epochs is None else max(1, planned_epochs - (epochs_done or 0))
        for st in self.samples.values():
            if remaining is None:
                st["quota"] = None
            else:
                room = max(st["limit"] - st["rows"].committed() - st["buffered"], 0)
                st["quota"] = -(-room // remaining)

    def add_samples(self, block: Any, x: Any, y: Any, step: int | None) -> tuple[bool, bool]:
        """Keep a subsample of one query in memory. Returns (the block just filled up, the buffer is full)."""
        b, st = self.sample_state(block, "log_samples")
        n_in, n_out = st["dims"]
        if (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.ndim == 2
            and y.ndim == 2
            and x.shape[0] == y.shape[0]
        ):
            if st["quota"] == 0 and x.shape[1] == n_in and y.shape[1] == n_out:  # this epoch's share is used
                st["next_step"] = (st["next_step"] if step is None else _nonneg_int(step, "step")) + 1
                return False, False
            # pick the rows first: only those are copied off the device and converted
            pick = _spaced_tensor(x.shape[0], self.samples_per_call)
            x, y = x.detach()[pick.to(x.device)], y.detach()[pick.to(y.device)]
        xa = _as_2d(x, n_in, f"log_samples({b!r}) x")
        ya = _as_2d(y, n_out, f"log_samples({b!r}) y")
        if xa.shape[0] != ya.shape[0]:
            raise ValueError(f"log_samples({b!r}): x has {xa.shape[0]} rows but y has {ya.shape[0]}")
        s = st["next_step"] if step is None else _nonneg_int(step, "step")
        st["next_step"] = s + 1
        k = min(self.samples_per_call, xa.shape[0])
        if st["quota"] is not None:  # this epoch's share of the budget
            k = min(k, st["quota"])
        room = st["limit"] - st["rows"].committed() - st["buffered"]
        filled = False
        if room < k:
            k = max(room, 0)
            if not st["full_reported"]:
                st["full_reported"] = filled = True
        if st["quota"] is not None:
            st["quota"] -= k
        if k == 0:
            return filled, False
        if k == xa.shape[0]:  # already picked: one copy (the caller may reuse its buffers)
            kept = (np.array(xa, dtype=np.float32), np.array(ya, dtype=np.float32))
        else:
            idx = _spaced(xa.shape[0], k)
            kept = (xa[idx], ya[idx])
        st["buf"].append((*kept, np.full(len(kept[0]), s, dtype=np.int64)))
        st["buffered"] += len(kept[0])
        return filled, st["buffered"] >= _SAMPLE_BUFFER_ROWS  # a very long epoch: bound the memory

    def stage(self) -> list[_Rows]:
        """Write the buffered samples and probe measurements but their key columns; the rows to commit."""
        pending = []
        for st in self.samples.values():
            if st["buffered"]:
                st["rows"].stage([np.concatenate([t[i] for t in st["buf"]]) for i in range(3)], st["buffered"])
                pending.append(st["rows"])
                st["buf"], st["buffered"] = [], 0
        for pr in self.probes.values():
            if pr["buf"]:
                k, n = len(pr["buf"]), pr["n"]
                first = pr["rows"].committed()
                rows = np.arange(first * n, (first + k) * n, dtype=np.int64)
                pr["rows"].stage(
                    [
                        np.concatenate([t[0] for t in pr["buf"]]),
                        rows,
                        np.asarray([t[1] for t in pr["buf"]]),
                        np.asarray([t[2] for t in pr["buf"]], dtype=np.int64),
                    ],
                    k,
                )
                pending.append(pr["rows"])
                pr["buf"] = []
        return pending

    def set_probes(self, block: Any, x: Any) -> bool:
        """Store the fixed probe inputs of a block; False when the same ones are stored already."""
        b, st = self.sample_state(block, "set_probes")
        xa = _as_2d(x, st["dims"][0], f"set_probes({b!r}) x")
        if xa.shape[0] == 0:
            raise ValueError(f"set_probes({b!r}): x has no rows")
        pr = self.probes[b]
        if pr["n"]:
            if pr["n"] == xa.shape[0] and np.array_equal(pr["g"]["x"][:], xa):
                return False
            raise ValueError(
                f"set_probes({b!r}): this run already has {pr['n']} different probe inputs; "
                f"probes are fixed for the whole run"
            )
        for ds, values in ((pr["g"]["probe"], np.arange(xa.shape[0], dtype=np.int32)), (pr["g"]["x"], xa)):
            ds.resize((xa.shape[0],) + ds.shape[1:])
            ds[:] = values
            ds.flush()
        pr["n"] = xa.shape[0]
        pr["rows"].div[0] = pr["rows"].div[1] = xa.shape[0]
        pr["rows"].recount()
        return True

    def add_probe(self, block: Any, step: int, y: Any) -> None:
        b, st = self.sample_state(block, "log_probe")
        pr = self.probes[b]
        if not pr["n"]:
            raise ValueError(f"log_probe({b!r}): call set_probes({b!r}, x) first")
        ya = _as_2d(y, st["dims"][1], f"log_probe({b!r}) y")
        if ya.shape[0] != pr["n"]:
            raise ValueError(f"log_probe({b!r}): y has {ya.shape[0]} rows, the block has {pr['n']} probes")
        pr["buf"].append((ya.copy(), time.time(), step))

    def goodness_block(self, block: Any) -> str:
        b = _block_name(block)
        if b not in self.goodness:
            raise ValueError(f"log_goodness: block {b!r} is not in this run file; blocks: {sorted(self.goodness)}")
        return b

    def add_goodness(self, b: str, g_pos: Any, g_neg: Any, epoch: int) -> bool:
        """Append goodness values of block ``b`` (up to ``goodness_per_call`` of each kind); False if none."""
        parts = []
        for values, positive in ((g_pos, 1), (g_neg, 0)):
            arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
            arr = arr.astype(np.float32).reshape(-1)
            if arr.size > self.goodness_per_call:
                arr = arr[np.linspace(0, arr.size - 1, self.goodness_per_call).round().astype(np.int64)]
            parts.append((arr, np.full(arr.size, positive, dtype=np.int8)))
        v = np.concatenate([p[0] for p in parts])
        if v.size == 0:
            return False
        pos = np.concatenate([p[1] for p in parts])
        self.goodness[b].append([v, pos, np.full(v.size, epoch, dtype=np.int64)], v.size)
        return True
