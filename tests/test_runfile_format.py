"""Run-format version 2: self-describing datasets, checksums verified on read, old files still readable,
history and checkpoint cost that do not grow with the run, and the epoch-flush sample buffer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from physnn import runlog
from physnn.runlog import RunFileError, RunWriter

V1_FILE = Path(__file__).parent / "data" / "run_v1.h5"
SYSTEMS = {
    "block0": {
        "class": "x.Optics",
        "spec": {
            "n_inputs": 5,
            "n_outputs": 3,
            "low": 0.0,
            "high": 2.0,
            "levels": 256,
            "units": "pi rad",
            "output_units": "counts",
            "name": "optics",
        },
        "stats": {"calls": 0},
    }
}


def _write(path: Path, epochs: int = 3, **kw) -> Path:
    with RunWriter(
        path, config={"lr": 0.01}, seed=7, systems=SYSTEMS, dataset={"name": "digits"}, durable=False, **kw
    ) as w:
        w.set_probes("block0", np.arange(10, dtype=np.float32).reshape(2, 5))
        for e in range(epochs):
            x = torch.arange(40, dtype=torch.float32).reshape(8, 5) + e
            w.log_samples("block0", x, x[:, :3] * 2)
            w.log_epoch(e, {"loss": 1.0 / (e + 1), "test_accuracy": 0.9 + 0.01 * e, "late/x": float(e)})
            w.log_probe("block0", step=e, y=np.full((2, 3), e, dtype=np.float32))
            w.checkpoint(e, {"w": torch.full((2, 2), float(e))}, {"step": e})
        w.log_goodness(0, [1.0, 2.0], [-1.0])
        w.log_confusion(np.array([[3, 1], [0, 4]]), labels=["a", "b"])
        w.log_summary({"test_accuracy": 0.967, "total_queries": 99})
        w.event("retry", {"attempt": 2, "text": "Ω µm " + "x" * 500})  # non-ASCII and longer than one text row
    return path


def _datasets(path: Path) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f = h5py.File(path, "r")
    f.visititems(lambda name, obj: out.__setitem__("/" + name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_every_dataset_has_units_long_name_and_a_checksum(tmp_path):
    path = _write(tmp_path / "a.h5")
    datasets = _datasets(path)
    assert len(datasets) > 40
    for name, ds in datasets.items():
        assert "units" in ds.attrs and ds.attrs.get("long_name"), name
        if ds.chunks is not None:
            assert ds.fletcher32 and ds.compression is None, name  # compression would leak space under SWMR
        else:  # scalar JSON strings: variable-length data takes no filter; a crc32 attribute instead
            assert ds.shape == () and "crc32" in ds.attrs, name
    assert datasets["/samples/block0/x"].attrs["units"] == "pi rad"
    assert datasets["/samples/block0/y"].attrs["units"] == "counts"
    assert datasets["/probes/block0/y"].attrs["units"] == "counts"
    assert datasets["/metrics/time"].attrs["units"] == "seconds since 1970-01-01 00:00:00"
    assert datasets["/metrics/device_seconds"].attrs["units"] == "s"
    assert datasets["/metrics/test_accuracy"].attrs["long_name"] == "test accuracy (fraction)"
    f = datasets["/config"].file
    assert f["systems/block0"].attrs["output_units"] == "counts" and f["systems/block0"].attrs["units"] == "pi rad"
    assert path.read_bytes()[8] == 3  # superblock version 3: SWMR, readable by HDF5 >= 1.10 (test_runfile_h5dump)


def test_events_and_summary_are_text_tables(tmp_path):
    path = _write(tmp_path / "a.h5")
    with h5py.File(path, "r") as f:
        ev = f["events"]
        assert ev.dtype.names == ("time", "epoch", "kind", "part", "parts", "text")
        assert ev.dtype["kind"].kind == "S" and ev.dtype["text"].kind == "S"
        rows = ev[:]
        kinds = [bytes(k).decode() for k in rows["kind"][rows["part"] == 0]]
        assert kinds == ["run_started", "late_metric", "retry", "run_closed"]
        retry = rows[rows["kind"] == b"retry"]
        assert len(retry) > 1 and retry["parts"].tolist() == [len(retry)] * len(retry)
        text = b"".join(bytes(t) for t in retry["text"]).decode("ascii")  # plain ASCII JSON, readable anywhere
        assert json.loads(text)["fields"]["text"].startswith("Ω µm x")
        summary = f["summary"][:]
        assert json.loads(b"".join(bytes(t) for t in summary["text"])) == {"test_accuracy": 0.967, "total_queries": 99}
    run = runlog.load(path)
    assert run.summary == {"test_accuracy": 0.967, "total_queries": 99}
    assert [e["kind"] for e in run.events] == kinds
    assert run.metrics["late/x"].tolist() == [0.0, 1.0, 2.0]


def test_a_killed_writers_partial_text_record_is_ignored_then_overwritten(tmp_path):
    path = _write(tmp_path / "a.h5")
    with h5py.File(path, "r+", libver=("v110", "v110")) as f:  # what a writer killed mid-record leaves
        ev = f["events"]
        n = ev.shape[0]
        ev.resize((n + 3,))
        row = np.zeros(1, dtype=ev.dtype)
        row["time"], row["kind"], row["part"], row["parts"], row["text"] = 1.0, b"half", 0, 3, b'{"kind":"ha'
        ev[n] = row[0]  # rows n+1, n+2 keep the fill value (parts == 0)
    assert [e["kind"] for e in runlog.load(path).events][-1] == "run_closed"
    w = RunWriter.resume(path)
    w.event("after", {"i": 1})
    w.close()
    kinds = [e["kind"] for e in runlog.load(path).events]
    assert kinds[-3:] == ["resumed", "after", "run_closed"] and "half" not in kinds


def test_systems_are_described_again_at_close(tmp_path):
    class Sys:
        calls = 0

        def describe(self):
            return {**SYSTEMS["block0"], "stats": {"calls": self.calls}}

    s = Sys()
    w = RunWriter(tmp_path / "s.h5", config={}, seed=0, systems={"block0": s}, durable=False)
    s.calls = 41
    w.update_systems({"block0": s})
    s.calls = 42
    w.close("completed", systems={0: s})
    run = runlog.load(tmp_path / "s.h5")
    assert run.systems_start["block0"]["stats"] == {"calls": 0}
    assert run.systems["block0"]["stats"] == {"calls": 42}

    class Broken:
        def describe(self):
            raise ConnectionError("instrument gone")

    w = RunWriter(tmp_path / "b.h5", config={}, seed=0, systems={"block0": s}, durable=False)
    w.close("failed", systems={"block0": Broken()})  # closing never fails on a dead instrument
    run = runlog.load(tmp_path / "b.h5")
    assert run.status == "failed" and run.systems["block0"]["stats"] == {"calls": 42}
    failed = [e for e in run.events if e["kind"] == "describe_failed"][0]["fields"]
    assert failed == {"block": "block0", "type": "ConnectionError", "message": "instrument gone"}
    with pytest.raises(ValueError, match=r"block 'block3' is not in this run file"):
        RunWriter.resume(tmp_path / "b.h5").update_systems({"block3": s})


def _flip_byte_in_chunk(path: Path, dataset: str, byte: int) -> None:
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + byte] ^= 0x40
    path.write_bytes(bytes(raw))


def test_bit_rot_in_metrics_is_a_clear_error_not_a_silent_change(tmp_path):
    path = _write(tmp_path / "a.h5")
    assert runlog.load(path).key_numbers()["best_test_accuracy"] == pytest.approx(0.92)
    _flip_byte_in_chunk(path, "/metrics/test_accuracy", 8 + 6)  # inside the second value (0.91)
    with pytest.raises(RunFileError, match=r"is corrupt: dataset '/metrics/test_accuracy' fails its fletcher32"):
        runlog.load(path)
    with pytest.raises(RunFileError, match=r"'/metrics/test_accuracy' fails its fletcher32 checksum"):
        runlog.last_checkpoint(path)  # what --resume reads
    from physnn.analysis import report

    line = [r for r in report.ls(tmp_path).splitlines() if "a.h5" in r][0]  # physnn ls: a row, not a wrong number
    assert "unreadable" in line and "dataset '/metrics/test_accuracy' fails its fletcher32 checksum" in line


def test_bit_rot_in_checkpoint_bytes_and_config_is_detected(tmp_path):
    path = _write(tmp_path / "a.h5")
    _flip_byte_in_chunk(path, "/checkpoints/data", 3)
    run = runlog.load(path)  # the rest of the file is fine
    with pytest.raises(RunFileError, match=r"dataset '/checkpoints/data' fails its fletcher32 checksum"):
        run.checkpoint()
    path = _write(tmp_path / "b.h5")
    raw = path.read_bytes()
    at = raw.find(b'"lr": 0.01')  # the config text lives in the global heap, outside any filter
    assert at > 0
    path.write_bytes(raw[:at] + b'"lr": 0.91' + raw[at + 10 :])
    with pytest.raises(RunFileError, match=r"dataset '/config' fails its CRC-32 check"):
        runlog.load(path)


def test_external_storage_datasets_are_refused_on_load_and_resume(tmp_path):
    path = _write(tmp_path / "a.h5")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(64))
    with h5py.File(path, "r+", libver=("v110", "v110")) as f:
        del f["checkpoints/data"]
        f.create_dataset("checkpoints/data", shape=(64,), dtype="u1", external=[(str(outside), 0, 64)])
    for call in (runlog.load, runlog.last_checkpoint, RunWriter.resume):
        with pytest.raises(RunFileError, match=r"has datasets stored in external files \(/checkpoints/data -> "):
            call(path)


def test_a_version_1_file_stays_readable_but_is_not_appended_to(tmp_path):
    run = runlog.load(V1_FILE)
    assert run.format_version == 1 and run.status == "completed"
    assert run.metrics["epoch"].tolist() == [0, 1, 2] and run.metrics["late/x"].tolist() == [0.0, 1.0, 2.0]
    assert run.metrics["loss"].tolist() == [1.0, 0.5, 1.0 / 3]
    assert run.summary == {"test_accuracy": 0.5, "total_queries": 99}
    assert [e["kind"] for e in run.events] == ["run_started", "late_metric", "retry", "run_closed"]
    assert run.checkpoints == [0, 1, 2] and run.systems == run.systems_start
    ck = runlog.last_checkpoint(V1_FILE)
    assert ck.epoch == 2 and torch.equal(ck.model_state["w"], torch.full((2, 2), 2.0)) and ck.extra == {"history": [2]}
    assert run.probes["block0"]["y"].shape == (3, 2, 3) and run.samples["block0"]["x"].shape == (4, 5)
    assert run.confusion[0]["matrix"].tolist() == [[3, 1], [0, 4]]
    assert run.history(1) == [
        {"epoch": 0, "loss": 1.0, "loss/block0": 0.5, "test_accuracy": 0.0, "late/x": 0.0},
        {"epoch": 1, "loss": 0.5, "loss/block0": 1.5, "test_accuracy": 0.25, "late/x": 1.0},
    ]
    copy = tmp_path / "v1.h5"
    shutil.copy(V1_FILE, copy)
    with pytest.raises(RunFileError, match="is in run-format version 1, which this physnn reads but does not append"):
        RunWriter.resume(copy)


def test_history_up_to_a_checkpoint_follows_the_latest_segment(tmp_path):
    path = tmp_path / "h.h5"
    w = RunWriter(path, config={}, seed=0, durable=False)
    for e in range(5):
        w.log_epoch(e, {"loss": float(e)})
        if e == 2:
            w.checkpoint(e, {"w": torch.zeros(1)})
    w.close("interrupted")
    run = runlog.load(path)
    assert [r["epoch"] for r in run.history(2)] == [0, 1, 2] and run.history(2)[2] == {"epoch": 2, "loss": 2.0}
    assert len(run.history()) == 5
    w = RunWriter.resume(path)  # resumed from epoch 2: epoch 3 again, with a new value
    w.log_epoch(3, {"loss": 30.0})
    w.close()
    assert [r["loss"] for r in runlog.load(path).history(3)] == [0.0, 1.0, 2.0, 30.0]
    with pytest.raises(ValueError, match="upto_epoch must be an integer, got 2.5"):
        run.history(2.5)


def test_should_checkpoint_by_count_and_by_wall_clock(tmp_path):
    w = RunWriter(tmp_path / "c.h5", config={}, seed=0, durable=False, checkpoint_seconds=60)
    assert w.should_checkpoint(4, every=2) and not w.should_checkpoint(5, every=2)
    assert w.should_checkpoint(5, final=True)
    assert not w.should_checkpoint(5)
    w._last_checkpoint_time -= 61  # a minute of epochs without a checkpoint
    assert w.should_checkpoint(5)
    w.checkpoint(5, {})
    assert not w.should_checkpoint(6)
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        w.should_checkpoint(6, every=0)
    w.close()
    with pytest.raises(ValueError, match="checkpoint_seconds must be a positive finite number, got -1"):
        RunWriter(tmp_path / "d.h5", config={}, seed=0, checkpoint_seconds=-1)
    with pytest.raises(ValueError, match="samples_per_call must be an integer >= 1, got 0"):
        RunWriter(tmp_path / "d.h5", config={}, seed=0, samples_per_call=0)
    with pytest.raises(ValueError, match="status must be one of 'completed', 'interrupted', 'failed', got 'done'"):
        RunWriter(tmp_path / "e.h5", config={}, seed=0).close("done")


def test_file_size_is_linear_in_epochs(tmp_path):
    """Each epoch adds a metrics row, samples and a checkpoint manifest, the same every epoch: nothing is re-packed,
    nothing leaks. (The checkpoint's 16 KiB of arrays reuse the space of the one it replaces: below one per epoch.)"""
    path = tmp_path / "g.h5"
    model = {"w": torch.zeros(64, 64)}
    sizes = {}
    with RunWriter(path, config={}, seed=0, systems=SYSTEMS, durable=False) as w:
        for e in range(1, 241):
            x = torch.rand(16, 5)
            w.log_samples("block0", x, x[:, :3])
            w.log_epoch(e, {"loss": 1.0 / e, "test_accuracy": 0.5})
            w.checkpoint(e, model, {"step": e})
            if e in (60, 120, 240):
                w.flush()
                sizes[e] = path.stat().st_size
    exponent = math.log((sizes[240] - sizes[60]) / (sizes[120] - sizes[60])) / math.log(3)
    assert 0.9 < exponent < 1.1, sizes
    per_epoch = (sizes[240] - sizes[120]) / 120
    assert per_epoch < 64 * 64 * 4 * 1.5, sizes  # about one checkpoint (16 KiB) per epoch


def test_fsync_follows_fsync_seconds_and_close_always_syncs(tmp_path, monkeypatch):
    import physnn.runlog.writer as writer_module

    calls = []
    monkeypatch.setattr(writer_module.os, "fsync", lambda fd: calls.append(fd))
    w = RunWriter(tmp_path / "a.h5", config={}, seed=0, fsync_seconds=3600)
    for e in range(5):
        w.log_epoch(e, {"loss": 1.0})
        w.checkpoint(e, {"w": torch.zeros(2)})
    assert calls == []  # an hour between fsyncs: none yet (a killed process still loses nothing flushed)
    w.close()
    assert len(calls) == 1
    calls.clear()
    w = RunWriter(tmp_path / "b.h5", config={}, seed=0, fsync_seconds=0)
    for e in range(3):
        w.log_epoch(e, {"loss": 1.0})
    assert len(calls) == 3  # 0: after every epoch, as for a power cut that must lose nothing
    w.close()
    calls.clear()
    with RunWriter(tmp_path / "c.h5", config={}, seed=0, durable=False) as w:
        w.log_epoch(0, {})
    assert calls == []
    with pytest.raises(ValueError, match="fsync_seconds must be a finite number >= 0, got -1"):
        RunWriter(tmp_path / "d.h5", config={}, seed=0, fsync_seconds=-1)
