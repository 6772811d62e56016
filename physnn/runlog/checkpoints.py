"""The checkpoint store: ``/checkpoints/data`` (array bytes) described by ``/checkpoints/manifest``
(one JSON record per checkpoint, written after its bytes are on disk).

Why it keeps few checkpoints, and how that survives ``kill -9``
--------------------------------------------------------------
A lab keeps run files for years; one full model + optimiser state per epoch made the main job's
file 85 MiB. Format 3 keeps (docs/run-format.md, "Checkpoints"):

* the **last** checkpoint, complete: what ``--resume`` needs;
* the **best** by a validation metric (``best_metric``), its model only: what a user deploys;
* every ``keep_every``-th epoch's checkpoint, complete, only if asked.

SWMR cannot delete a dataset or shrink one, so ``/checkpoints/data`` is an arena whose space is
reused: a new checkpoint's arrays go to bytes that no retained checkpoint uses (or to the end), its
manifest is written after them, and only that manifest's ``retained`` list frees the space of the
checkpoints it drops. A writer killed mid-checkpoint has written over free bytes only, and the last
committed manifest still names intact checkpoints. An array that is byte-for-byte equal to one a
retained checkpoint already stores (a twin's training set, a replay buffer's older batches) is not
written again but referenced, so state that does not change is stored once.

Format-2 files are appended to as format 2: every checkpoint whole, one after another.
"""

from __future__ import annotations

import sys
import time
import zlib
from typing import Any, Callable, Iterable, Iterator, Mapping

import h5py
import numpy as np

from physnn.core import checks
from physnn.runlog._common import _DATA_CHUNK, _nonneg_int
from physnn.runlog.codec import _Packer
from physnn.runlog.columns import _append_bytes, _create_col, _create_text_log, _put, _read_text_log, _TextLog

#: Arrays at least this large are looked up among the retained checkpoints' arrays before being written.
DEDUP_BYTES = 4096
#: The parts of a checkpoint; a checkpoint retained as "best" keeps only the model.
PARTS = ("model", "optim", "rng", "extra")
_TAGS = ("__tensor__", "__ndarray__", "__npscalar__")


def create_checkpoint_store(f: h5py.File) -> None:
    cg = f.create_group("checkpoints")
    _create_text_log(cg, "manifest", "checkpoint manifests (JSON; see docs/run-format.md)")
    _create_col(
        cg,
        "data",
        "u1",
        chunk=_DATA_CHUNK,
        checksum=True,
        units="",
        long_name="raw array bytes of the retained checkpoints (space of dropped ones is reused)",
    )


def check_checkpoint_seconds(value: Any) -> float | None:
    return None if value is None else checks.positive("checkpoint_seconds", value)


def checkpoint_due(
    epoch: int, *, every: int | None, final: bool, checkpoint_seconds: float | None, last_time: float
) -> bool:
    """See :meth:`RunWriter.should_checkpoint`; ``last_time``: ``time.monotonic()`` of the last checkpoint."""
    epoch = _nonneg_int(epoch, "epoch")
    final = checks.boolean("final", final)
    if every is not None:
        every = checks.integer("every", every, low=1)
    if final or (every is not None and epoch % every == 0):
        return True
    if checkpoint_seconds is None:
        return False
    return time.monotonic() - last_time >= checkpoint_seconds


def pack_checkpoint(
    model_state: Mapping[str, Any], optim_state: Any, rng_state: Any, extra: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    """The trees (JSON), the array table and each array's raw bytes of one checkpoint (nothing is pickled).

    The bytes of a tensor are a view of its memory: write them before the tensor changes."""
    if not isinstance(model_state, Mapping):
        raise TypeError(f"model_state must be a state dict (mapping), got {type(model_state).__name__}")
    packer = _Packer()
    trees = {
        "model": packer.pack(model_state, "model_state"),
        "optim": packer.pack(optim_state, "optim_state"),
        "rng": packer.pack(rng_state, "rng_state"),
        "extra": packer.pack(extra, "extra"),
    }
    return trees, packer.table, packer.chunks


def tree_arrays(tree: Any) -> Iterator[int]:
    """Indices into the array table that a packed tree refers to."""
    if isinstance(tree, list):
        for v in tree:
            yield from tree_arrays(v)
    elif isinstance(tree, dict):
        if len(tree) == 1:
            ((tag, val),) = tree.items()
            if tag in _TAGS:
                yield int(val)
                return
        for v in tree.values():
            yield from tree_arrays(v)


def retained_arrays(record: Mapping[str, Any], parts: Iterable[str]) -> list[int]:
    """Indices of the arrays of ``parts`` of a format-3 manifest (sorted, each once)."""
    return sorted({i for p in parts for i in tree_arrays(record.get(p))})


class _Space:
    """Free space of the arena: the gaps between the extents in use, below the end of the stream."""

    def __init__(self, used: Iterable[tuple[int, int]], end: int):
        self.end = end
        self.gaps, at = [], 0
        for start, stop in sorted((o, o + n) for o, n in used if n > 0):
            if start > at:
                self.gaps.append([at, start])
            at = max(at, stop)
        if end > at:
            self.gaps.append([at, end])

    def allocate(self, sizes: list[int]) -> list[int]:
        """An offset for each size: first fit in a gap (largest arrays first), else at the end of the stream."""
        out = [0] * len(sizes)
        for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
            gap = next((g for g in self.gaps if g[1] - g[0] >= sizes[i]), None)
            if gap is None:
                out[i], self.end = self.end, self.end + sizes[i]
            else:
                out[i], gap[0] = gap[0], gap[0] + sizes[i]
        return out


class CheckpointStore:
    """Appends checkpoints to an open run file, keeping the ones the retention policy names."""

    def __init__(self, f: h5py.File, version: int, *, keep_every: int = 0, best_mode: str = "max"):
        ck = f["checkpoints"]
        self._manifest = _TextLog(ck["manifest"])
        self._data = ck["data"]
        self.version = version
        self.keep_every = keep_every
        self.best_mode = best_mode
        records = [r for *_, r in _read_text_log(ck["manifest"])]
        self.count = len(records)
        #: the last committed manifest's retained list, and the records it names (format 3)
        self.retained: list[dict[str, Any]] = []
        self._records: dict[int, dict[str, Any]] = {}
        self.best: dict[str, Any] | None = None
        if version >= 3 and records:
            last = records[-1]
            by_id = {int(r["id"]): r for r in records}
            self.retained = [dict(e) for e in last["retained"]]
            self._records = {int(e["id"]): by_id[int(e["id"])] for e in self.retained}
            self.best = last.get("best")
        self._next_id = int(records[-1].get("id", -1)) + 1 if records else 0

    # ------------------------------------------------------------ retention
    def _live(self) -> tuple[list[tuple[int, int]], dict[tuple[Any, ...], tuple[int, int]]]:
        """Extents of the retained arrays, and an index of them for de-duplication."""
        extents, index = [], {}
        for e in self.retained:
            r = self._records[int(e["id"])]
            for i in retained_arrays(r, e["parts"]):
                a = r["arrays"][i]
                extents.append((int(a["offset"]), int(a["nbytes"])))
                if a["nbytes"] >= DEDUP_BYTES:
                    index[_key(a)] = (int(a["offset"]), int(a["nbytes"]))
        return extents, index

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best["value"] if self.best_mode == "max" else value < self.best["value"]

    def _retain(self, cid: int, epoch: int, best: tuple[str, float] | None) -> list[dict[str, Any]]:
        """The retained list once checkpoint ``cid`` (of ``epoch``, validation ``best``) is committed."""
        new_best = best is not None and self._better(best[1])
        kept = bool(self.keep_every) and epoch % self.keep_every == 0
        roles = ["last"] + (["best"] if new_best else []) + (["kept"] if kept else [])
        out = [{"id": cid, "epoch": epoch, "roles": roles, "parts": list(PARTS)}]
        for e in self.retained:
            roles = [r for r in e["roles"] if r != "last" and not (new_best and r == "best")]
            if roles:
                parts = list(PARTS) if "kept" in roles else ["model"]
                out.append({"id": e["id"], "epoch": e["epoch"], "roles": roles, "parts": parts})
        return out

    # ---------------------------------------------------------------- write
    def write(
        self,
        epoch: int,
        segment: int,
        trees: dict[str, Any],
        table: list[dict[str, Any]],
        chunks: list[Any],
        flush: Callable[[], None],
        best: tuple[str, float] | None = None,
    ) -> None:
        """Write the arrays, ``flush()`` them to the file, then the manifest that points to them.

        ``best``: (metric, value) of this epoch's validation, when it was measured.
        """
        if self.version < 3:
            return self._write_v2(epoch, segment, trees, table, chunks, flush)
        now = time.time()
        extents, index = self._live()
        arrays, todo = [], []
        for i, (entry, raw) in enumerate(zip(table, chunks)):
            a = {k: v for k, v in entry.items() if k != "offset"}
            a["crc32"] = zlib.crc32(raw)
            arrays.append(a)
            hit = index.get(_key(a)) if len(raw) >= DEDUP_BYTES else None
            if hit is not None and self._stored_equal(hit[0], raw):
                a["offset"] = hit[0]
            else:
                todo.append(i)
        space = _Space(extents, int(self._data.id.shape[0]))
        for i, offset in zip(todo, space.allocate([len(chunks[i]) for i in todo])):
            arrays[i]["offset"] = offset
        self._write_runs([(arrays[i]["offset"], chunks[i]) for i in todo])
        flush()  # the bytes reach the file before the manifest that points to them
        cid = self._next_id
        retained = self._retain(cid, epoch, best)
        record = {
            "id": cid,
            "epoch": epoch,
            "time": now,
            "segment": segment,
            "byteorder": sys.byteorder,
            "arrays": arrays,
            **trees,
            "retained": retained,
            "best": self.best,
        }
        if best is not None and "best" in retained[0]["roles"]:
            record["best"] = {"metric": best[0], "value": best[1], "id": cid, "epoch": epoch}
        self._manifest.append(record, time=now, epoch=epoch, kind="checkpoint")
        self._records = {int(e["id"]): (record if e["id"] == cid else self._records[int(e["id"])]) for e in retained}
        self.retained, self.best = retained, record["best"]
        self._next_id, self.count = cid + 1, self.count + 1

    def _stored_equal(self, offset: int, raw: Any) -> bool:
        """Whether the arena holds exactly ``raw`` at ``offset`` (a CRC match is confirmed byte for byte)."""
        return np.array_equal(self._data[offset : offset + len(raw)], np.frombuffer(raw, dtype=np.uint8))

    def _write_runs(self, pieces: list[tuple[int, Any]]) -> None:
        """Write the pieces, those that follow each other as one write."""
        pieces.sort(key=lambda p: p[0])
        i = 0
        while i < len(pieces):
            start, parts, end = pieces[i][0], [pieces[i][1]], pieces[i][0] + len(pieces[i][1])
            i += 1
            while i < len(pieces) and pieces[i][0] == end:
                parts.append(pieces[i][1])
                end += len(pieces[i][1])
                i += 1
            if end > start:
                _put(self._data, start, np.frombuffer(b"".join(parts), dtype=np.uint8))

    def _write_v2(
        self,
        epoch: int,
        segment: int,
        trees: dict[str, Any],
        table: list[dict[str, Any]],
        chunks: list[Any],
        flush: Callable[[], None],
    ) -> None:
        """Format 2: every checkpoint whole, appended after the ones before (kept for files of that format)."""
        raw = b"".join(chunks)
        now = time.time()
        offset = _append_bytes(self._data, raw)
        flush()  # the bytes reach the file before the manifest that points to them
        record = {
            "epoch": epoch,
            "time": now,
            "segment": segment,
            "data_offset": offset,
            "data_length": len(raw),
            "crc32": zlib.crc32(raw),
            "byteorder": sys.byteorder,
            "arrays": table,
            **trees,
        }
        self._manifest.append(record, time=now, epoch=epoch, kind="checkpoint")
        self.count += 1

    @property
    def last_epoch(self) -> int | None:
        """The epoch of the last checkpoint (format 3), for the ``resumed`` event."""
        last = [e for e in self.retained if "last" in e["roles"]]
        return int(last[0]["epoch"]) if last else None


def _key(a: Mapping[str, Any]) -> tuple[Any, ...]:
    return (a["kind"], a["dtype"], tuple(a["shape"]), int(a["nbytes"]), int(a["crc32"]))
