"""The per-epoch metrics table: ``/metrics`` (one column per known metric name, the key column ``epoch``
written last) and ``/late_metrics`` (a text log for names that got no column when the file was made).

Kept generic about names: a trainer may log any metric, a new one (say ``val_n``) costs nothing but a
``late_metric`` event the first time, and nothing logged is ever dropped."""

from __future__ import annotations

import json
import math
from typing import Mapping

import h5py
import numpy as np

from physnn.runlog._common import TIME_UNITS, _attr_str, _column_name, metric_units
from physnn.runlog.columns import _create_col, _create_scale, _create_text_log, _read_text_log, _Rows, _TextLog


def create_metric_table(f: h5py.File, names: list[str], units: Mapping[str, str]) -> None:
    """Create ``/metrics`` with a column per name, and the root-level ``/late_metrics`` text log."""
    mg = f.create_group("metrics")
    mg.attrs["columns"] = json.dumps(names)
    epoch = _create_col(
        mg,
        "epoch",
        "i8",
        checksum=True,
        units="1",
        long_name="epoch (one row per log_epoch call; the key column, written last)",
    )
    epoch.make_scale("epoch")
    metric = _create_scale(
        mg,
        "metric",
        np.array([n.encode() for n in names] or [b""], dtype="S64"),
        "",
        "metric name of each column of 'logged'",
    )
    cols = [
        _create_col(mg, "time", "f8", checksum=True, units=TIME_UNITS, long_name="time of the log_epoch call (UTC)"),
        _create_col(
            mg,
            "segment",
            "i4",
            checksum=True,
            units="1",
            long_name="writer segment: 0, then 1, 2, ... after each resume",
        ),
    ]
    logged = _create_col(
        mg,
        "logged",
        "u1",
        max(len(names), 1),
        checksum=True,
        units="1",
        long_name="1 where the row logged the metric (even as NaN)",
    )
    for name in names:
        col = _column_name(name)
        if col in mg:
            raise ValueError(f"metric names {name!r} and another collide in the file (as {col!r})")
        unit, long_name = metric_units(name)
        ds = _create_col(
            mg, col, "f8", checksum=True, fillvalue=np.nan, units=units.get(name, unit), long_name=long_name
        )
        ds.attrs["name"] = name
        cols.append(ds)
    for ds in cols + [logged]:
        ds.dims[0].attach_scale(epoch)
    logged.dims[1].attach_scale(metric)
    # a root-level text log: inside /metrics, netCDF readers would put it on the epoch axis
    _create_text_log(f, "late_metrics", "metrics without a column of their own: {row, epoch, segment, values}")


class MetricTable:
    """Appends metric rows to an open run file's ``/metrics`` (and ``/late_metrics``).

    :meth:`stage` writes a row's data columns; the writer commits it (the ``epoch`` key column) with the
    rest of the epoch after one file flush.
    """

    def __init__(self, f: h5py.File):
        m = f["metrics"]
        self.names: list[str] = json.loads(_attr_str(m.attrs["columns"]))
        cols = [m[_column_name(n)] for n in self.names]
        for ds in cols + [m["logged"], m["time"], m["segment"], m["epoch"]]:
            if ds.chunks is None or ds.maxshape[0] is not None:
                raise TypeError(f"dataset {ds.name!r} is not an extendable chunked column")
        self.rows = _Rows(cols + [m["logged"], m["time"], m["segment"], m["epoch"]])
        self._late = _TextLog(f["late_metrics"])
        self._late_seen = {k for _, _, r in _read_text_log(f["late_metrics"]) for k in r.get("values", {})}
        n = self.rows.committed()
        self.last_epoch: int | None = int(m["epoch"][n - 1]) if n else None

    def stage(self, epoch: int, values: Mapping[str, float], segment: int, now: float) -> list[str]:
        """Write one row (all but its key column); values without a column go to ``/late_metrics``.

        Returns the names that had no column (see :meth:`first_seen`).
        """
        row = [np.asarray([values.get(n, math.nan)], dtype=np.float64) for n in self.names]
        logged = np.zeros((1, max(len(self.names), 1)), dtype=np.uint8)
        logged[0, : len(self.names)] = [n in values for n in self.names]
        known = set(self.names)
        extras = {k: v for k, v in values.items() if k not in known}
        n = self.rows.committed()
        if extras:
            self._late.append(
                {
                    "row": n,
                    "epoch": epoch,
                    "segment": segment,
                    "values": {k: (v if math.isfinite(v) else repr(v)) for k, v in extras.items()},
                },
                time=now,
                epoch=epoch,
                kind="values",
            )
        self.rows.stage(
            row
            + [
                logged,
                np.asarray([now]),
                np.asarray([segment], dtype=np.int32),
                np.asarray([epoch], dtype=np.int64),
            ],
            1,
        )
        return list(extras)

    def first_seen(self, late: list[str]) -> list[str]:
        """Those of ``late`` (names without a column) never logged before in this file, now marked as seen."""
        new = sorted(set(late) - self._late_seen)
        self._late_seen.update(new)
        return new
