"""HDF5 run files: one file per training run, written as it happens, read back exactly.

A run on a bench lasts hours and cannot be repeated exactly (the hardware
drifts), so everything it learns goes to disk as it happens. The format is
written down in ``docs/run-format.md``; this module is its only writer and
the reference reader.

Why the file is written the way it is
-------------------------------------
* **SWMR from the first byte of data.** After a short set-up phase the file is
  switched to HDF5 single-writer/multiple-reader mode. In that mode HDF5 writes
  its metadata in dependency order, so the file on disk is consistent at every
  instant: a writer killed with ``kill -9`` leaves a file that opens and holds
  everything flushed (we flush after every epoch, checkpoint and event), and
  another process can read the file while the run writes it.
* **Readable by every HDF5 >= 1.10 tool.** Format version 2 is written with
  ``libver=("v110", "v110")`` (the lowest bound that keeps SWMR); every dataset
  has ``units`` and ``long_name`` attributes and its axes are dimension scales,
  so h5dump, HDFView, MATLAB and xarray read it without physnn.
* **Every object is created before SWMR starts.** SWMR forbids new groups,
  datasets and attributes, and appending variable-length strings. So all
  datasets are pre-created and extendable: metric columns for the names known
  at construction (unknown names later go to a text log, never dropped), and
  records of free structure (events, summary, checkpoint manifests, confusion
  matrices, later system descriptions) are JSON text cut into fixed-length
  string fields of compound rows ("text logs"). Checkpoint tensors are raw bytes
  in one byte stream, described by their manifest (dtype, shape, offset): any
  state dict round-trips bit for bit, and nothing is ever pickled.
* **Append-only, commit column last.** A record is a row across several
  columns; the key column is written after the file is flushed, and readers
  count only rows present in every column. A crash mid-record leaves at most an
  uncommitted partial row, which the next writer overwrites; committed data is
  never rewritten.
* **Bounded: a file a lab can keep.** Only the last checkpoint, the best by
  validation (its model) and every ``keep_every``-th are kept; a new checkpoint
  is written over the space of dropped ones (never over a kept one) before the
  manifest that names what is kept, and arrays a kept checkpoint already has are
  stored once (``checkpoints.py``). Raw query samples have a byte budget.
* **Off the query path.** ``log_samples`` (a system's ``query_hook``) only copies
  the kept rows into memory; samples and probes are written with the epoch's
  metrics, and ``fsync`` runs at most once per ``fsync_seconds``.
* **Checksums.** HDF5's fletcher32 filter on every chunked dataset (it keeps
  chunk sizes fixed, so partly filled chunks are rewritten in place under SWMR;
  compression would leak space), CRC-32 on checkpoints and JSON scalars; a
  failure is a :class:`RunFileError` naming the dataset, never silently wrong data.
* **Crash recovery without external tools.** A writer that dies leaves the
  HDF5 "file is open for writing" flag set in the superblock; other programs
  then refuse the file until ``h5clear -s``. :func:`recover` (called by
  :meth:`RunWriter.resume`) clears it the same way, after checking the
  superblock checksum, and the reader opens such files in SWMR-read mode.
"""

# The code lives in one module per job; this package re-exports the public API (and the few private
# helpers that tests use), so ``from physnn import runlog; runlog.load(...)`` works as before.
#   _common.py   format constants, errors, argument checks and small shared helpers
#   codec.py     JSON encodings, checkpoint trees without pickle, RNG capture/restore
#   columns.py   append-only columns, byte streams and text logs on disk
#   reader.py    load(), Run, Checkpoint, last_checkpoint() and the checks on bad files
#   recovery.py  superblock flags, h5clear-like clearing, recover()
#   metric_table.py  /metrics (a column per metric, the epoch key column written last) and /late_metrics
#   checkpoints.py   /checkpoints: array bytes and their manifests
#   samples.py       /samples, /probes, /goodness: what the systems measured, buffered off the query path
#   records.py       /config, /dataset, /systems and the text logs /events, /summary, /confusion
#   writer.py        RunWriter: composes the parts; the file, its SWMR session, epoch flush, close, resume
from physnn.runlog._common import (
    FORMAT_NAME,
    FORMAT_VERSION,
    STATUSES,
    NoCheckpointError,
    RunFileError,
    default_metric_names,
)
from physnn.runlog.codec import _dumps, _Packer, _unpack, capture_rng, restore_rng
from physnn.runlog.reader import Checkpoint, Run, best_checkpoint, last_checkpoint, load
from physnn.runlog.recovery import _lookup3, recover
from physnn.runlog.writer import RunWriter

# Private helpers that tests/test_runlog.py checks directly stay reachable as runlog._name; naming them
# here marks them as re-exported (pyflakes), without adding them to __all__ (star-imports stay public-only).
_REEXPORTED_PRIVATE = (_dumps, _Packer, _unpack, _lookup3)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATUSES",
    "RunFileError",
    "NoCheckpointError",
    "RunWriter",
    "Run",
    "Checkpoint",
    "load",
    "last_checkpoint",
    "best_checkpoint",
    "recover",
    "capture_rng",
    "restore_rng",
    "default_metric_names",
]
