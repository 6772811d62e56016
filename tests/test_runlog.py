"""Run files: round trip of every group, crash safety (kill -9), concurrent reading, exact resume, bad files."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import shutil
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physnn import runlog
from physnn.runlog import RunFileError, RunWriter
from physnn.runlog.checkpoints import PARTS

HELPER = Path(__file__).parent / "helpers" / "runlog_writer.py"
_spec = importlib.util.spec_from_file_location("runlog_writer_helper", HELPER)
helper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)

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
            "name": "optics",
        },
    },
    "block1": {"class": "x.Optics", "spec": {"n_inputs": 3, "n_outputs": 2}},
}


_spawn, _wait_for, _kill9 = helper.spawn, helper.wait_for, helper.kill9


def _last_manifest(path: Path) -> dict:
    """The last checkpoint manifest of a run file (its arrays' offsets into /checkpoints/data)."""
    from physnn.runlog.reader import _manifests

    with h5py.File(path, "r", swmr=True, locking=False) as f:
        return _manifests(f, int(f.attrs["format_version"]))[-1]


# ------------------------------------------------------------------ round trip
def test_round_trip_of_every_group(tmp_path):
    path = tmp_path / "runs" / "a.h5"
    config = {"lr": 0.01, "blocks": 2, "system": {"name": "optics", "noise": True}, "path": Path("/data")}
    with RunWriter(
        path,
        config=config,
        seed=7,
        systems=SYSTEMS,
        dataset={"name": "digits", "n_train": 10},
        samples_per_call=4,
        goodness_per_call=3,
        keep_every=1,  # every checkpoint kept (by default only the last and the best: tests/test_runfile_retention.py)
    ) as w:
        assert w.blocks == ["block0", "block1"] and "loss/block1" in w.metric_names
        w.set_probes("block0", np.arange(10, dtype=np.float32).reshape(2, 5))
        for e in range(3):
            w.log_epoch(
                e,
                {
                    "epoch": e,
                    "loss": 1.0 / (e + 1),
                    "loss/block0": 0.5 + e,
                    "test_accuracy": 0.25 * e,
                    "train_queries": 100,
                    "late/name": e * 10.0,
                    "g_pos/block1": torch.tensor(1.5),
                },
            )
            if e == 1:
                w.log_epoch(e, {"loss/block1": float("nan"), "late/nan": float("nan")})  # e.g. a diverged loss
            w.log_probe("block0", step=10 * e, y=np.full((2, 3), e, dtype=np.float32))
            w.checkpoint(e, {"w": torch.full((2, 2), float(e))}, {"lr": 0.01}, None)
        x = torch.arange(50, dtype=torch.float32).reshape(10, 5)
        w.log_samples("block0", x, x[:, :3] * 2, step=42)
        w.log_goodness(1, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), [-1.0, -2.0])
        w.log_confusion(np.array([[3, 1], [0, 4]]), labels=["zero", "one"])
        w.log_summary({"test_accuracy": 0.875, "total_queries": 1234})
        w.event("retry", {"attempt": 2, "value": np.float32(0.5), "array": torch.arange(3), "err": OSError("x")})

    run = runlog.load(path)
    a = run.attrs
    assert (a["format"], a["format_version"], a["seed"], a["status"]) == ("physnn-run", 3, 7, "completed")
    assert run.status == "completed" and run.format_version == runlog.FORMAT_VERSION
    import datetime

    import physnn

    assert a["physnn_version"] == physnn.__version__
    assert datetime.datetime.fromisoformat(a["start_time"]).tzinfo is not None
    assert datetime.datetime.fromisoformat(a["end_time"]) >= datetime.datetime.fromisoformat(a["start_time"])
    assert a["host"] and a["pid"] == os.getpid()
    assert run.config == {"lr": 0.01, "blocks": 2, "system": {"name": "optics", "noise": True}, "path": "/data"}
    assert run.dataset == {"name": "digits", "n_train": 10}
    assert run.systems == SYSTEMS
    with h5py.File(path, "r") as f:  # plain HDF5 readers see the spec as attributes too
        assert dict(f["systems/block0"].attrs)["units"] == "pi rad"
        assert f["systems/block0"].attrs["n_inputs"] == 5

    m = run.metrics
    assert m["epoch"].tolist() == [0, 1, 2]
    assert m["loss"].tolist() == [1.0, 0.5, 1.0 / 3]
    assert m["loss/block0"].tolist() == [0.5, 1.5, 2.5]
    assert m["late/name"].tolist() == [0.0, 10.0, 20.0]  # not pre-created: stored in /metrics/extra, merged
    assert m["g_pos/block1"].tolist() == [1.5] * 3
    assert "digital_flops" not in m  # pre-created but never logged
    assert np.isnan(m["loss/block1"]).all() and np.isnan(m["late/nan"]).all()  # logged NaN is kept...
    assert "loss/block1" not in run.epoch_rows[0] and math.isnan(run.epoch_rows[1]["loss/block1"])  # ...as logged
    assert math.isnan(run.epoch_rows[1]["late/nan"]) and run.epoch_rows[1]["loss"] == 0.5  # rows of an epoch merge
    assert np.all(np.diff(m["time"]) >= 0)
    frame = run.metrics_frame()
    assert frame.loc[2, "test_accuracy"] == 0.5 and frame.index.name == "epoch"
    assert run.epoch_rows[1]["train_queries"] == 100.0

    assert run.checkpoints == [0, 1, 2]
    assert torch.equal(run.checkpoint(1).model_state["w"], torch.full((2, 2), 1.0))

    pr = run.probes["block0"]
    assert pr["x"].tolist() == np.arange(10).reshape(2, 5).tolist()
    assert pr["y"].shape == (3, 2, 3) and pr["y"][2].tolist() == [[2.0] * 3] * 2
    assert pr["step"].tolist() == [0, 10, 20] and np.all(np.diff(pr["time"]) >= 0)
    assert "block1" not in run.probes

    s = run.samples["block0"]  # 4 rows kept of 10, evenly spaced: rows 0, 3, 6, 9
    assert s["x"].tolist() == x[[0, 3, 6, 9]].tolist() and s["y"].tolist() == (x[[0, 3, 6, 9], :3] * 2).tolist()
    assert s["step"].tolist() == [42] * 4
    assert run.samples["block1"]["x"].shape == (0, 3)

    g = run.goodness["block1"]  # 3 of 5 positives kept (evenly spaced), both negatives, epoch = last logged
    assert g["value"].tolist() == [1.0, 3.0, 5.0, -1.0, -2.0]
    assert g["positive"].tolist() == [True, True, True, False, False] and g["epoch"].tolist() == [2] * 5

    assert len(run.confusion) == 1
    c = run.confusion[0]
    assert c["labels"] == ["zero", "one"] and c["matrix"].tolist() == [[3, 1], [0, 4]] and c["epoch"] == 2
    assert run.summary == {"test_accuracy": 0.875, "total_queries": 1234}

    kinds = [e["kind"] for e in run.events]
    assert kinds == ["run_started", "late_metric", "late_metric", "retry", "run_closed"]
    retry = run.events[3]["fields"]
    assert retry == {"attempt": 2, "value": 0.5, "array": [0, 1, 2], "err": "OSError: x"}
    assert run.events[1]["fields"]["names"] == ["late/name"] and run.events[2]["fields"]["names"] == ["late/nan"]
    assert run.events[-1]["fields"] == {"status": "completed"}

    k = run.key_numbers()
    assert (k["epochs"], k["test_accuracy"], k["queries"], k["best_test_accuracy"], k["best_epoch"]) == (
        3,
        0.875,
        1234.0,
        0.5,
        2,
    )


def test_writer_refuses_to_overwrite_and_validates(tmp_path):
    path = tmp_path / "a.h5"
    w = RunWriter(path, config={}, seed=0, systems=SYSTEMS)
    with pytest.raises(FileExistsError, match="already exists.*resume"):
        RunWriter(path, config={}, seed=0)
    with pytest.raises(ValueError, match=r"metric name 'bad name' is not allowed"):
        w.log_epoch(0, {"bad name": 1.0})
    with pytest.raises(ValueError, match=r"metrics\['epoch'\] = 5 disagrees with epoch=0"):
        w.log_epoch(0, {"epoch": 5})
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
        w.log_epoch(-1, {})
    with pytest.raises(ValueError, match=r"metric 'loss' must be a number, got str"):
        w.log_epoch(0, {"loss": "low"})
    with pytest.raises(ValueError, match=r"log_samples\('block0'\) x must have shape \[batch, 5\], got \(4, 4\)"):
        w.log_samples("block0", np.zeros((4, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"block 'block7' has no sample/probe datasets.*\['block0', 'block1'\]"):
        w.log_samples(7, np.zeros((4, 5)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"call set_probes\('block0', x\) first"):
        w.log_probe("block0", 0, np.zeros((2, 3)))
    w.set_probes("block0", np.ones((2, 5)))
    w.set_probes("block0", np.ones((2, 5)))  # the same probes again (as after a resume): accepted
    with pytest.raises(ValueError, match="already has 2 different probe inputs"):
        w.set_probes("block0", np.zeros((2, 5)))
    with pytest.raises(ValueError, match="y has 3 rows, the block has 2 probes"):
        w.log_probe("block0", 0, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"square \[C, C\], got shape \(2, 3\)"):
        w.log_confusion(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"optim_state\['opt'\]\[0\] is a object"):
        w.checkpoint(0, {}, {"opt": [object()]})
    w.close()
    with pytest.raises(RuntimeError, match="is closed; reopen it with RunWriter.resume"):
        w.log_epoch(1, {})
    with pytest.warns(RuntimeWarning, match="event 'late' .* not stored"):
        w.event("late", {"x": 1})
    with pytest.raises(TypeError, match=r"config\['f'\] is a builtin_function_or_method"):
        RunWriter(tmp_path / "b.h5", config={"f": len}, seed=0)
    with pytest.raises(ValueError, match=r"config\['x'\] = nan is not a finite number"):
        RunWriter(tmp_path / "b.h5", config={"x": float("nan")}, seed=0)
    assert not (tmp_path / "b.h5").exists()


def test_status_on_exception_and_ctrl_c(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunWriter(tmp_path / "f.h5", config={}, seed=0) as w:
            w.log_epoch(0, {"loss": 1.0})
            _ = 1 / 0
    run = runlog.load(tmp_path / "f.h5")
    assert run.status == run.attrs["status"] == "failed"
    exc = [e for e in run.events if e["kind"] == "exception"][0]["fields"]
    assert exc["type"] == "ZeroDivisionError" and "division by zero" in exc["message"] and "1 / 0" in exc["traceback"]
    assert run.metrics["loss"].tolist() == [1.0]

    with pytest.raises(KeyboardInterrupt):
        with RunWriter(tmp_path / "i.h5", config={}, seed=0) as w:
            w.log_epoch(0, {"loss": 1.0})
            raise KeyboardInterrupt
    run = runlog.load(tmp_path / "i.h5")
    assert run.status == run.attrs["status"] == "interrupted"
    assert [e["kind"] for e in run.events][-2:] == ["interrupted", "run_closed"]


# ------------------------------------------------------------------ checkpoints
def _same(a, b) -> bool:
    """Equal including types, with tensors/arrays compared bit for bit."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.contiguous().reshape(-1).view(torch.uint8).tolist()
            == b.contiguous().reshape(-1).view(torch.uint8).tolist()
        )
    if isinstance(a, (np.ndarray, np.generic)):
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and np.shape(a) == np.shape(b)
            and np.asarray(a).tobytes() == np.asarray(b).tobytes()
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return (
            type(a) is type(b)
            and list(a) == list(b)
            and all(_same(a[k], b[k]) for k in a)
            and getattr(a, "_metadata", None) == getattr(b, "_metadata", None)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model = OrderedDict(
        f32=torch.randn(3, 4),
        f64=torch.randn(2, dtype=torch.float64),
        bf16=torch.randn(5).bfloat16(),
        f16=torch.tensor([float("nan"), -0.0, float("inf")], dtype=torch.float16),
        i64=torch.arange(4),
        b=torch.tensor([True, False]),
        c64=torch.randn(2, dtype=torch.complex64),
        scalar=torch.tensor(3.25),
        empty=torch.zeros(0, 3),
        strided=torch.arange(12.0).reshape(3, 4).t(),
    )
    model._metadata = OrderedDict({"": {"version": 1}, "layer": {"version": 2}})
    optim = {
        "state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(3)}, 1: {}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "fused": False}],
        "nan": float("nan"),
        "inf": float("-inf"),
        "big": 2**100,
        "np": np.arange(5, dtype=np.uint32),
        "np_scalar": np.float32(1.5),
        "tuple_key": {(1, "a"): "x"},
        "tagged": {"__tensor__": 0},
        "unicode": "Ω µm",
        "nested": [[1, [2.5, None]], ()],
    }
    with RunWriter(tmp_path / "c.h5", config={"k": 1}, seed=0, keep_every=1) as w:
        w.checkpoint(4, model, optim, {"gen": torch.Generator().manual_seed(3).get_state()}, extra={"h": [1.0]})
        w.checkpoint(5, {"w": torch.ones(1)})
    ck = runlog.last_checkpoint(tmp_path / "c.h5", epoch=4)
    epoch, m, o, r, cfg = ck  # unpacks like the tuple the trainer expects
    assert epoch == 4 and cfg == {"k": 1} and ck.extra == {"h": [1.0]}
    assert _same(model, m) and m._metadata == model._metadata
    assert _same(optim, o)
    assert torch.equal(r["gen"], torch.Generator().manual_seed(3).get_state())
    assert runlog.last_checkpoint(tmp_path / "c.h5").epoch == 5
    with pytest.raises(runlog.NoCheckpointError, match=r"has no checkpoint of epoch 9; it has \[4, 5\]"):
        runlog.last_checkpoint(tmp_path / "c.h5", epoch=9)


def test_rng_state_restores_the_same_random_numbers(tmp_path):
    gen = torch.Generator().manual_seed(11)
    npg = np.random.default_rng(12)
    torch.randn(3), np.random.rand(), random.random(), torch.rand(2, generator=gen), npg.normal()  # advance all
    with RunWriter(tmp_path / "r.h5", config={}, seed=0) as w:
        w.checkpoint(0, {}, None, runlog.capture_rng(torch_generators={"g": gen}, numpy_generators={"n": npg}))

    def draw():
        return (
            torch.randn(4).tolist(),
            np.random.rand(3).tolist(),
            [random.random() for _ in range(3)],
            torch.rand(4, generator=gen).tolist(),
            npg.normal(size=3).tolist(),
        )

    expected = draw()
    draw()  # move every generator on
    ck = runlog.last_checkpoint(tmp_path / "r.h5")
    runlog.restore_rng(ck.rng_state, torch_generators={"g": gen}, numpy_generators={"n": npg})
    assert draw() == expected
    with pytest.raises(KeyError, match="no torch generator 'other'"):
        runlog.restore_rng(ck.rng_state, torch_generators={"other": gen})


json_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None)
@given(tree=json_trees)
def test_checkpoint_codec_round_trips_any_tree(tree):
    packer = runlog._Packer()
    packed = packer.pack(tree, "tree")
    back = runlog._unpack(json.loads(runlog._dumps(packed)), packer.table, b"".join(packer.chunks))
    assert _same(tree, back)


# ------------------------------------------------------------ crash safety
def _plain_open_fails(path: Path) -> bool:
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        assert "already open for write" in str(exc)
        return True
    return False


def test_kill9_mid_epoch_keeps_completed_epochs_and_resume_equals_uninterrupted(tmp_path):
    path = tmp_path / "killed.h5"
    proc = _spawn(str(HELPER), str(path), "block")
    lines = _wait_for(proc, "MID")
    assert lines == ["EPOCH 0", "EPOCH 1", "EPOCH 2", "MID"]
    _kill9(proc)

    assert _plain_open_fails(path)  # the writer died holding the file: HDF5's open-for-writing flag is set
    run = runlog.load(path)  # ... yet it opens, with every completed epoch
    assert run.status == "aborted" and run.attrs["status"] == "running"
    assert run.metrics["epoch"].tolist() == [0, 1, 2]
    assert run.checkpoints == [0, 1, 2] and run.kept_checkpoints == [2]  # the earlier ones' space is reused
    assert [e["kind"] for e in run.events].count("retry") == 3 and run.events[-1]["kind"] == "mid_epoch"
    # samples reach the file at each epoch flush: those of the 3 completed epochs are kept, epoch 3's are lost
    assert run.samples["block0"]["x"].shape == (48, 4) and run.samples["block0"]["step"][-1] == 2

    # resume from the last checkpoint and finish; compare with a run that was never interrupted
    ck = runlog.last_checkpoint(path)
    assert ck.epoch == 2 and ck.config == helper.CONFIG
    w = RunWriter.resume(path)
    tiny = helper.Tiny(0)
    start = tiny.restore(ck)
    w.set_probes("block0", tiny.x[:5])
    helper.train(w, tiny, start, 6)
    w.close()

    ref_path = tmp_path / "ref.h5"
    ref = helper.Tiny(0)
    with RunWriter(ref_path, config=helper.CONFIG, seed=0, systems=helper.SYSTEMS, durable=False) as wr:
        wr.set_probes("block0", ref.x[:5])
        helper.train(wr, ref, 0, 6)

    for key, value in ref.model.state_dict().items():
        assert torch.equal(tiny.model.state_dict()[key], value), key
    a, b = runlog.load(path), runlog.load(ref_path)
    assert set(a.metrics) == set(b.metrics)
    for key in a.metrics:
        if key != "time":
            np.testing.assert_array_equal(a.metrics[key], b.metrics[key], err_msg=key)
    assert _same(a.checkpoint().model_state, b.checkpoint().model_state)
    assert _same(a.checkpoint().optim_state, b.checkpoint().optim_state)
    assert a.status == "completed" and a.checkpoints == [0, 1, 2, 3, 4, 5] and a.kept_checkpoints == [5]
    resumed = [e for e in a.events if e["kind"] == "resumed"][0]["fields"]
    assert resumed["previous_status"] == "aborted" and resumed["last_checkpoint"] == 2
    with h5py.File(path, "r") as f:  # flags cleared: any HDF5 program opens it again
        assert f["metrics/segment"][:].tolist() == [0, 0, 0, 1, 1, 1]
        stream = f["checkpoints/data"].shape[0]
    # space for the last checkpoint and the one being written: the dropped ones' space was reused
    assert stream <= 2 * sum(a["nbytes"] for a in _last_manifest(path)["arrays"])


def test_kill9_while_writing_leaves_a_consistent_file(tmp_path):
    path = tmp_path / "spin.h5"
    proc = _spawn(str(HELPER), str(path), "spin")
    _wait_for(proc, "EPOCH 12")
    _kill9(proc)  # lands at an arbitrary point of the write loop

    run = runlog.load(path)
    ep = run.metrics["epoch"]
    n = len(ep)
    assert n >= 13 and ep.tolist() == list(range(n))
    assert run.metrics["loss"].tolist() == [1.0 / (e + 1) for e in range(n)]
    assert run.metrics["queries_total"].tolist() == [10.0 * e for e in range(n)]
    # only the last checkpoint is kept, in space that earlier ones used: a kill mid-checkpoint wrote over
    # free space only, so the last committed one is intact
    assert run.checkpoints == list(range(len(run.checkpoints))) and len(run.checkpoints) >= 13
    (e,) = run.kept_checkpoints
    assert e >= 12 and run.checkpoint_roles == [{"epoch": e, "roles": ["last"], "parts": list(PARTS)}]
    ck = run.checkpoint()
    assert torch.equal(ck.model_state["w"], torch.full((64, 64), float(e))) and ck.optim_state == {"step": e}
    with h5py.File(path, "r", swmr=True, locking=False) as f:
        assert f["checkpoints/data"].shape[0] <= 3 * 64 * 64 * 4  # at most the last, the new one and a spare
    pr = run.probes["block0"]
    assert pr["y"].shape[0] >= 13 and all(np.all(pr["y"][i] == i) for i in range(pr["y"].shape[0]))
    ticks = [e["fields"]["epoch"] for e in run.events if e["kind"] == "tick"]
    assert ticks == list(range(len(ticks))) and len(ticks) >= 13

    assert _plain_open_fails(path)
    assert runlog.recover(path) is True
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == b"aborted"
    run2 = runlog.load(path)
    assert run2.status == "aborted" and run2.events[-1]["kind"] == "recovered"
    assert run2.metrics["epoch"].tolist() == ep.tolist()
    assert runlog.recover(path) is False  # nothing left to do


READER = r"""
import sys
from physnn import runlog
path, n = sys.argv[1], int(sys.argv[2])
seen, loads = -1, 0
while seen < n - 1:
    run = runlog.load(path)
    loads += 1
    ep = run.metrics["epoch"]
    assert ep.tolist() == list(range(len(ep))), ep
    assert run.metrics["loss"].tolist() == [1.0 / (e + 1) for e in ep.tolist()]
    ticks = [e["fields"]["i"] for e in run.events if e["kind"] == "tick"]
    assert ticks == list(range(len(ticks))), ticks
    if len(ep) - 1 > seen:
        seen = len(ep) - 1
        print(f"SEEN {seen} {run.status} {run.live}", flush=True)
print(f"DONE {loads}", flush=True)
"""


def test_another_process_reads_while_the_run_writes(tmp_path):
    path = tmp_path / "live.h5"
    n = 5
    w = RunWriter(path, config={}, seed=0, durable=False)
    w.log_epoch(0, {"loss": 1.0})
    reader = _spawn("-c", READER, str(path), str(n))
    try:
        assert _wait_for(reader, "SEEN 0 running True")[-1] == "SEEN 0 running True"
        tick = 0
        for e in range(1, n):
            for _ in range(30):  # writes that race the reader's loads
                w.event("tick", {"i": tick})
                tick += 1
            w.log_epoch(e, {"loss": 1.0 / (e + 1)})
            _wait_for(reader, f"SEEN {e} running True")  # the reader saw the epoch while the file is open
        out = reader.stdout.readline()
        assert out.startswith("DONE") and int(out.split()[1]) >= n, out
        assert reader.wait(timeout=60) == 0, reader.stderr.read()
    finally:
        if reader.poll() is None:
            reader.kill()
        w.close()
    assert runlog.load(path).status == "completed"


def test_resume_appends_and_never_rewrites(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, config={}, seed=0) as w:
        for e in range(3):
            w.log_epoch(e, {"loss": float(e), "test_accuracy": 0.1 * e})
            w.checkpoint(e, {"w": torch.full((3,), float(e))})
    with h5py.File(path, "r") as f:
        before = {k: f[k][:].tobytes() for k in ("metrics/epoch", "metrics/loss", "checkpoints/data", "events")}
    # resume from the checkpoint of epoch 1: epoch 2 is done again, with different numbers
    w = RunWriter.resume(path)
    assert w.segment == 1 and w.last_epoch == 2
    w.log_epoch(2, {"loss": 20.0})
    w.log_epoch(3, {"loss": 30.0, "test_accuracy": 0.3})
    w.close("completed")
    with h5py.File(path, "r") as f:
        for k, raw in before.items():
            assert f[k][:].tobytes()[: len(raw)] == raw, f"{k} was rewritten"
        assert f["metrics/epoch"][:].tolist() == [0, 1, 2, 2, 3]
    run = runlog.load(path)
    assert run.metrics["epoch"].tolist() == [0, 1, 2, 3]
    assert run.metrics["loss"].tolist() == [0.0, 1.0, 20.0, 30.0]  # the resumed segment supersedes epoch 2
    np.testing.assert_array_equal(run.metrics["test_accuracy"], [0.0, 0.1, np.nan, 0.3])
    assert [e["kind"] for e in run.events] == ["run_started", "run_closed", "resumed", "run_closed"]
    assert run.events[2]["fields"]["previous_status"] == "completed"


def test_samples_are_capped_and_written_at_the_epoch_flush(tmp_path):
    path = tmp_path / "s.h5"
    systems = {"b": {"spec": {"n_inputs": 2, "n_outputs": 1}}}
    w = RunWriter(path, config={}, seed=0, systems=systems, samples_per_call=8, max_samples=40)
    for i in range(10):
        w.log_samples("b", np.full((20, 2), i), np.full((20, 1), -i))
    with h5py.File(path, "r", swmr=True, locking=False) as f:  # same process: same locking flags as the writer
        assert f["samples/b/x"].shape[0] == 0  # 40 rows buffered in memory: no epoch flushed yet
    w.log_epoch(0, {})
    with h5py.File(path, "r", swmr=True, locking=False) as f:
        assert f["samples/b/x"].shape[0] == 40  # written with the epoch
    w.close()
    s = runlog.load(path).samples["b"]
    assert s["x"].shape == (40, 2) and s["step"].tolist() == sorted(list(range(5)) * 8)
    assert s["x"][:, 0].tolist() == s["step"].tolist() and s["y"][:, 0].tolist() == (-s["step"]).tolist()
    assert [e["kind"] for e in runlog.load(path).events].count("samples_full") == 1


# ------------------------------------------------------------------ bad files
@pytest.fixture
def good_file(tmp_path) -> Path:
    path = tmp_path / "good.h5"
    with RunWriter(path, config={"a": 1}, seed=0, keep_every=2) as w:
        for e in range(20):
            w.log_epoch(e, {"loss": 1.0 / (e + 1)})
            w.checkpoint(e, {"w": torch.randn(32, 32)})
    return path


def test_bad_files_get_clear_messages(tmp_path, good_file):
    def msg(path) -> str:
        with pytest.raises(RunFileError) as info:
            runlog.load(path)
        assert str(path) in str(info.value) and isinstance(info.value, ValueError)
        return info.value.problem

    assert msg(tmp_path / "nope.h5") == "does not exist"
    assert msg(tmp_path) == "is a directory, not a run file"
    (tmp_path / "empty.h5").write_bytes(b"")
    assert msg(tmp_path / "empty.h5") == "is empty (0 bytes)"
    (tmp_path / "text.h5").write_text("epoch,loss\n0,1.0\n")
    assert msg(tmp_path / "text.h5").startswith("is not an HDF5 file (no HDF5 signature)")

    raw = good_file.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    assert msg(tmp_path / "trunc.h5").startswith("is truncated")

    corrupt = bytearray(raw)
    corrupt[48:4096] = bytes(range(256)) * 15 + bytes(range(256))[:248]  # the root object header and beyond
    (tmp_path / "corrupt.h5").write_bytes(bytes(corrupt))
    assert "damaged" in msg(tmp_path / "corrupt.h5")

    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["data"] = np.arange(3)
    assert msg(tmp_path / "foreign.h5") == (
        "is an HDF5 file but not a physnn run file (its root has no 'format' attribute; top-level objects: ['data'])"
    )

    newer = tmp_path / "newer.h5"
    shutil.copy(good_file, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 4
    assert msg(newer).startswith("was written in run-format version 4; this physnn")
    assert "reads versions up to 3 — upgrade physnn" in msg(newer)
    with pytest.raises(RunFileError, match="version 4"):
        runlog.last_checkpoint(newer)


def test_damaged_checkpoint_is_detected(tmp_path, good_file):
    offset = [a["offset"] for a in _last_manifest(good_file)["arrays"]][0]
    with h5py.File(good_file, "r+") as f:  # flip one byte of the last checkpoint's tensor data
        d = f["checkpoints/data"]
        d[offset + 10] = (int(d[offset + 10]) + 1) % 256
    with pytest.raises(RunFileError, match=r"checkpoint of epoch 19 is corrupt \(CRC32 mismatch in array 0"):
        runlog.last_checkpoint(good_file)
    assert runlog.last_checkpoint(good_file, epoch=18).epoch == 18  # kept (keep_every=2), in other bytes
    with RunWriter(tmp_path / "none.h5", config={}, seed=0) as w:
        w.log_epoch(0, {})
    with pytest.raises(runlog.NoCheckpointError, match="holds no checkpoint"):
        runlog.last_checkpoint(tmp_path / "none.h5")


def test_lookup3_matches_the_superblock_checksum(good_file):
    head = good_file.read_bytes()[:48]
    assert head[8] in (2, 3) and head[9] == 8
    assert runlog._lookup3(head[:44]) == int.from_bytes(head[44:48], "little")
    assert runlog._lookup3(b"") == 0xDEADBEEF
