"""The on-disk building blocks of a run file: extendable columns, rows committed key-column-last,
append-only byte streams and JSON logs indexed by (offset, length)."""

from __future__ import annotations

import json
from typing import Any, Sequence

import h5py
import numpy as np

from ._common import _ROW_CHUNK, _TEXT_CHUNK
from .codec import _dumps


def _create_col(g: h5py.Group, name: str, dtype: Any, width: int | None = None, chunk: int = _ROW_CHUNK,
                **kw: Any) -> h5py.Dataset:
    shape = (0,) if width is None else (0, width)
    maxshape = (None,) if width is None else (None, width)
    chunks = (chunk,) if width is None else (chunk, width)
    return g.create_dataset(name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=dtype, **kw)


def _create_json_log(g: h5py.Group, *extra_cols: tuple[str, str]) -> None:
    for name, dtype in extra_cols:
        _create_col(g, name, dtype)
    _create_col(g, "index", "i8", 2)
    _create_col(g, "json", "u1", chunk=_TEXT_CHUNK)


class _Rows:
    """Columns holding one record type; a row is committed once it is in every column.

    ``div`` says how many dataset rows one record takes in a column (probes
    store P rows of outputs per record). Columns are written and flushed in
    order, the last one (the key) last.
    """

    def __init__(self, cols: Sequence[h5py.Dataset], div: Sequence[int] | None = None):
        self.cols = list(cols)
        self.div = list(div) if div is not None else [1] * len(self.cols)

    def committed(self) -> int:
        return min(c.shape[0] // d for c, d in zip(self.cols, self.div))

    def append(self, values: Sequence[np.ndarray], k: int) -> int:
        n = self.committed()
        for c, d, v in zip(self.cols, self.div, values):
            end = (n + k) * d
            if c.shape[0] < end:
                c.resize((end,) + c.shape[1:])
            c[n * d:end] = v
            c.flush()
        return n


def _append_bytes(ds: h5py.Dataset, raw: bytes) -> int:
    """Append at the physical end of a byte stream (never over anything written before)."""
    offset = ds.shape[0]
    if raw:
        ds.resize((offset + len(raw),))
        ds[offset:] = np.frombuffer(raw, dtype=np.uint8)
    ds.flush()
    return offset


class _JsonLog:
    def __init__(self, g: h5py.Group, extra: Sequence[str] = ()):
        self.g = g
        self.rows = _Rows([g[name] for name in extra] + [g["index"]])

    def append(self, record: Any, *extra_values: Any) -> int:
        raw = _dumps(record) + b"\n"
        offset = _append_bytes(self.g["json"], raw)
        values = [np.asarray([v]) for v in extra_values] + [np.asarray([[offset, len(raw)]], dtype=np.int64)]
        return self.rows.append(values, 1)

    def __len__(self) -> int:
        return self.rows.committed()


def _read_json_log(g: h5py.Group, extra: Sequence[str] = ()) -> tuple[list[Any], dict[str, np.ndarray]]:
    cols = {name: g[name] for name in extra}
    n = min([g["index"].shape[0]] + [c.shape[0] for c in cols.values()])
    index = g["index"][:n]
    records: list[Any] = []
    if n:
        end = int((index[:, 0] + index[:, 1]).max())
        buf = g["json"][:end].tobytes()
        for off, length in index:
            records.append(json.loads(buf[off:off + length].decode("utf-8")))
    return records, {name: c[:n] for name, c in cols.items()}
