"""The checkpoint store: ``/checkpoints/data`` (raw array bytes, append-only) described by
``/checkpoints/manifest`` (one JSON record per checkpoint, written after its bytes are on disk)."""

from __future__ import annotations

import sys
import time
import zlib
from typing import Any, Callable, Mapping

import h5py

from physnn.core import checks
from physnn.runlog._common import _DATA_CHUNK, _nonneg_int
from physnn.runlog.codec import _Packer
from physnn.runlog.columns import _append_bytes, _create_col, _create_text_log, _TextLog


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
        long_name="raw array bytes of all checkpoints, one after another",
    )


def check_checkpoint_seconds(value: Any) -> float | None:
    return None if value is None else checks.positive("checkpoint_seconds", value)


def pack_checkpoint(
    model_state: Mapping[str, Any], optim_state: Any, rng_state: Any, extra: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """The trees (JSON), the array table and the raw bytes of one checkpoint (nothing is pickled)."""
    if not isinstance(model_state, Mapping):
        raise TypeError(f"model_state must be a state dict (mapping), got {type(model_state).__name__}")
    packer = _Packer()
    trees = {
        "model": packer.pack(model_state, "model_state"),
        "optim": packer.pack(optim_state, "optim_state"),
        "rng": packer.pack(rng_state, "rng_state"),
        "extra": packer.pack(extra, "extra"),
    }
    return trees, packer.table, b"".join(packer.chunks)


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


class CheckpointStore:
    """Appends checkpoints to an open run file."""

    def __init__(self, f: h5py.File):
        ck = f["checkpoints"]
        self._manifest = _TextLog(ck["manifest"])
        self._data = ck["data"]

    def write(
        self,
        epoch: int,
        segment: int,
        trees: dict[str, Any],
        table: list[dict[str, Any]],
        raw: bytes,
        flush: Callable[[], None],
    ) -> None:
        """Append the bytes, ``flush()`` them to the file, then the manifest that points to them."""
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
