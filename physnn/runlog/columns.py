"""The on-disk building blocks of a run file: extendable checksummed columns, rows committed key-column-last,
append-only byte streams, and text logs of fixed-length rows (version 2) or JSON byte streams (version 1)."""

from __future__ import annotations

import json
from typing import Any, Sequence

import h5py
import numpy as np

from physnn.runlog._common import _ROW_CHUNK, _TEXT_CHUNK
from physnn.runlog.codec import _dumps

#: One row of a text log (events, summary, confusion matrices, checkpoint manifests, late metrics,
#: system descriptions). SWMR forbids appending variable-length strings, so a record's JSON text is cut
#: into fixed-length ``text`` pieces, one row each: ``part`` counts 0..parts-1 within the record. Every
#: field is a fixed-size number or a fixed-length ASCII string, so HDFView, h5dump and MATLAB show the
#: rows as a table of text.
TEXT_ROW = np.dtype(
    [("time", "<f8"), ("epoch", "<i8"), ("kind", "S32"), ("part", "<u4"), ("parts", "<u4"), ("text", "S200")]
)
_TEXT_WIDTH = TEXT_ROW["text"].itemsize - 1  # NUL-terminated on disk: one byte for the terminator
_KIND_WIDTH = TEXT_ROW["kind"].itemsize - 1
_TEXT_ROWS_PER_CHUNK = 64


def _text_row_type() -> h5py.h5t.TypeID:
    """TEXT_ROW as an HDF5 compound whose strings are NUL-terminated (numpy's 'S' maps to NUL-padded,
    which h5dump and HDFView print with every padding byte as \\000)."""
    ct = h5py.h5t.create(h5py.h5t.COMPOUND, TEXT_ROW.itemsize)
    for name in TEXT_ROW.names:
        dtype, offset = TEXT_ROW.fields[name][:2]
        if dtype.kind == "S":
            member = h5py.h5t.C_S1.copy()
            member.set_size(dtype.itemsize)
            member.set_strpad(h5py.h5t.STR_NULLTERM)
        else:
            member = h5py.h5t.py_create(dtype)
        ct.insert(name.encode(), offset, member)
    return ct


def _describe(ds: h5py.Dataset, units: str, long_name: str) -> h5py.Dataset:
    ds.attrs["units"] = units
    ds.attrs["long_name"] = long_name
    return ds


def _create_col(
    g: h5py.Group,
    name: str,
    dtype: Any,
    width: int | None = None,
    chunk: int = _ROW_CHUNK,
    *,
    units: str | None = None,
    long_name: str | None = None,
    checksum: bool = False,
    **kw: Any,
) -> h5py.Dataset:
    """An empty extendable column ``[0]`` or ``[0, width]``.

    ``checksum``: HDF5's fletcher32 filter (version-2 files). It keeps every chunk the same size, so a
    partly filled chunk is rewritten in place under SWMR (compression would reallocate it each time and
    leak the old space).
    """
    shape = (0,) if width is None else (0, width)
    maxshape = (None,) if width is None else (None, width)
    chunks = (chunk,) if width is None else (chunk, width)
    if checksum:
        kw["fletcher32"] = True
    ds = g.create_dataset(name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=dtype, **kw)
    if units is not None:
        _describe(ds, units, long_name if long_name is not None else name)
    return ds


def _create_scale(g: h5py.Group, name: str, values: np.ndarray, units: str, long_name: str) -> h5py.Dataset:
    """A fixed dimension scale (channel indices, metric names) for the second axis of 2-D columns."""
    ds = g.create_dataset(name, data=values, fletcher32=True, chunks=(max(len(values), 1),))
    _describe(ds, units, long_name)
    ds.make_scale(name)
    return ds


def _create_text_log(g: h5py.Group, name: str, long_name: str) -> h5py.Dataset:
    space = h5py.h5s.create_simple((0,), (h5py.h5s.UNLIMITED,))
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((_TEXT_ROWS_PER_CHUNK,))
    dcpl.set_fletcher32()
    ds = h5py.Dataset(h5py.h5d.create(g.id, name.encode(), _text_row_type(), space, dcpl=dcpl))
    _describe(ds, "", long_name)
    ds.attrs["field_units"] = "time: seconds since 1970-01-01 00:00:00 UTC; epoch: 1 (-1: none)"
    ds.attrs["layout"] = (
        "one record = rows part 0..parts-1 with the same time/epoch/kind; "
        "JSON = concatenation of their text fields (ASCII)"
    )
    return ds


def _put(ds: h5py.Dataset, start: int, values: Any, dtype: np.dtype | None = None) -> int:
    """Write ``values`` (rows) at row ``start``, growing the dataset as needed; returns the end row.

    Low-level h5py calls: the high-level ``resize``/``__setitem__``/``shape`` cost about 90 us per
    column, which is most of an epoch's run-file time when a run logs 25 metric columns per epoch.
    ``dtype``: the dataset's (``ds.dtype`` asks HDF5 each time; callers that write often pass it).
    """
    arr = np.ascontiguousarray(values, dtype=ds.dtype if dtype is None else dtype)
    dsid = ds.id
    shape = dsid.shape
    if arr.ndim != len(shape):
        arr = arr.reshape((-1,) + shape[1:])
    end = start + arr.shape[0]
    if shape[0] < end:
        dsid.set_extent((end,) + shape[1:])
    if arr.shape[0]:
        fspace = dsid.get_space()
        fspace.select_hyperslab((start,) + (0,) * (arr.ndim - 1), arr.shape)
        dsid.write(h5py.h5s.create_simple(arr.shape), fspace, arr)
    return end


class _Rows:
    """Columns holding one record type; a row is committed once it is in every column.

    ``div`` says how many dataset rows one record takes in a column (probes
    store P rows of outputs per record). The other columns are written, the
    file is flushed, then the key column (the last) is written: a reader, or
    the file a killed writer leaves, never has a key row whose data is not on disk.
    """

    def __init__(self, cols: Sequence[h5py.Dataset], div: Sequence[int] | None = None):
        self.cols = list(cols)
        self.dtypes = [c.dtype for c in self.cols]
        self.div = list(div) if div is not None else [1] * len(self.cols)
        self._fid = self.cols[0].file.id
        self._pending: tuple[Any, int] | None = None
        self.recount()

    def recount(self) -> None:
        """Count the committed rows from the datasets' lengths (after opening, or a change of ``div``)."""
        self.n = min(c.shape[0] // d for c, d in zip(self.cols, self.div))

    def committed(self) -> int:
        return self.n

    def stage(self, values: Sequence[np.ndarray], k: int) -> None:
        """Write ``k`` records into every column but the key; :meth:`commit` (after a file flush) ends them.

        Staging several record types, one flush, then committing them all makes an epoch's samples,
        probes and metrics cost one flush instead of one each.
        """
        for c, d, t, v in zip(self.cols[:-1], self.div, self.dtypes, values):
            _put(c, self.n * d, v, t)
        self._pending = (values[-1], k)

    def commit(self) -> None:
        key, k = self._pending
        _put(self.cols[-1], self.n * self.div[-1], key, self.dtypes[-1])
        self.n += k
        self._pending = None

    def append(self, values: Sequence[np.ndarray], k: int) -> int:
        n = self.n
        self.stage(values, k)
        h5py.h5f.flush(self._fid)
        self.commit()
        return n


def _append_bytes(ds: h5py.Dataset, raw: bytes) -> int:
    """Append at the physical end of a byte stream (never over anything written before)."""
    offset = ds.id.shape[0]
    if raw:
        _put(ds, offset, np.frombuffer(raw, dtype=np.uint8))
    return offset


# ---------------------------------------------------------------- version 2: text logs
def _parse_text_rows(rows: np.ndarray) -> tuple[list[tuple[float, int, str, bytes]], int]:
    """Complete records ``(time, epoch, kind, json_bytes)`` of a text log, and the row count they cover.

    Reading stops at the first row that does not start or continue a record properly: that is the
    uncommitted tail a killed writer may leave (rows of fill value, with ``parts == 0``, or a record
    cut short), which the next writer overwrites.
    """
    out: list[tuple[float, int, str, bytes]] = []
    i, n = 0, len(rows)
    part, parts, time_, epoch = rows["part"], rows["parts"], rows["time"], rows["epoch"]
    while i < n:
        k = int(parts[i])
        if k == 0 or part[i] != 0 or i + k > n:
            break
        seg = slice(i, i + k)
        if not (
            np.array_equal(part[seg], np.arange(k))
            and np.all(parts[seg] == k)
            and np.all(time_[seg] == time_[i])
            and np.all(epoch[seg] == epoch[i])
        ):
            break
        kind = bytes(rows["kind"][i]).decode("ascii", "replace")
        out.append((float(time_[i]), int(epoch[i]), kind, b"".join(bytes(t) for t in rows["text"][seg])))
        i += k
    return out, i


class _TextLog:
    """Append-only JSON records in a text-log dataset (see :data:`TEXT_ROW`); SWMR-safe."""

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds
        records, self.rows = _parse_text_rows(ds[:])
        self.count = len(records)

    def append(self, record: Any, *, time: float, epoch: int = -1, kind: str = "") -> None:
        raw = json.dumps(record, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
        pieces = [raw[i : i + _TEXT_WIDTH] for i in range(0, len(raw), _TEXT_WIDTH)] or [b""]
        rows = np.zeros(len(pieces), dtype=TEXT_ROW)
        rows["time"], rows["epoch"], rows["parts"] = time, epoch, len(pieces)
        rows["kind"] = kind.encode("ascii", "replace")[:_KIND_WIDTH]
        rows["part"] = np.arange(len(pieces))
        rows["text"] = pieces
        self.rows = _put(self.ds, self.rows, rows)
        self.count += 1

    def __len__(self) -> int:
        return self.count


def _read_text_log(ds: h5py.Dataset) -> list[tuple[float, int, Any]]:
    """``[(time, epoch, record)]`` of every committed record."""
    records, _ = _parse_text_rows(ds[:])
    return [(t, e, json.loads(raw.decode("ascii"))) for t, e, _, raw in records]


# ------------------------------------------------- version 1: JSON byte streams (read, recover)
def _create_json_log(g: h5py.Group, *extra_cols: tuple[str, str]) -> None:
    for name, dtype in extra_cols:
        _create_col(g, name, dtype)
    _create_col(g, "index", "i8", 2)
    _create_col(g, "json", "u1", chunk=_TEXT_CHUNK)


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
            records.append(json.loads(buf[off : off + length].decode("utf-8")))
    return records, {name: c[:n] for name, c in cols.items()}
