"""Run files a lab can keep (issue 20): which checkpoints a run file keeps, state stored once, the sample byte
budget, older formats appended to as they were written, and a size that stays flat as epochs grow."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
import torch

from physnn import runlog
from physnn.runlog import RunFileError, RunWriter
from physnn.runlog.checkpoints import PARTS

V2_FILE = Path(__file__).parent / "data" / "run_v2.h5"
KIB = 1024


def _stream(path: Path) -> int:
    with h5py.File(path, "r", swmr=True, locking=False) as f:
        return int(f["checkpoints/data"].shape[0])


def _state(e: int) -> tuple[dict, dict]:
    """A 16 KiB model and a 32 KiB optimiser state that change every epoch."""
    return {"w": torch.full((64, 64), float(e))}, {"m": torch.full((2, 64, 64), -float(e)), "step": e}


def test_the_last_and_the_best_by_validation_are_kept_and_nothing_else(tmp_path):
    path = tmp_path / "r.h5"
    val = {2: 0.5, 4: 0.8, 6: 0.7, 8: 0.8, 10: 0.6}  # evaluated every 2nd epoch; best 0.8 at epoch 4 (8 only ties)
    with RunWriter(path, config={}, seed=0, durable=False) as w:
        for e in range(1, 12):
            w.log_epoch(e, {"loss": 1.0 / e, **({"val_accuracy": val[e]} if e in val else {})})
            w.checkpoint(e, *_state(e))
            assert _stream(path) <= 2 * 48 * KIB + 16 * KIB  # last + the one being written + a best model
    run = runlog.load(path)
    assert run.checkpoints == list(range(1, 12))  # every checkpoint was written...
    assert run.checkpoint_roles == [  # ...these are kept
        {"epoch": 4, "roles": ["best"], "parts": ["model"]},
        {"epoch": 11, "roles": ["last"], "parts": list(PARTS)},
    ]
    best = runlog.best_checkpoint(path)  # what a user deploys: the model, without the optimiser state
    assert best.epoch == 4 and best.roles == ("best",) and not best.complete
    assert torch.equal(best.model_state["w"], torch.full((64, 64), 4.0)) and best.optim_state is None
    last = runlog.last_checkpoint(path)  # what --resume needs: complete
    assert last.epoch == 11 and last.complete and last.optim_state["step"] == 11
    assert torch.equal(last.optim_state["m"], torch.full((2, 64, 64), -11.0))
    with pytest.raises(runlog.NoCheckpointError, match=r"has no checkpoint of epoch 6; it has \[4, 11\]"):
        run.checkpoint(6)
    with pytest.raises(runlog.NoCheckpointError, match=r"keeps no 'kept' checkpoint"):
        run.checkpoint(role="kept")


def test_keep_every_keeps_every_nth_whole_and_no_best_without_a_validation_metric(tmp_path):
    path = tmp_path / "k.h5"
    with RunWriter(path, config={}, seed=0, durable=False, keep_every=4) as w:
        for e in range(1, 10):
            w.log_epoch(e, {"loss": 1.0 / e, "test_accuracy": e / 10})  # a test metric never picks a best
            w.checkpoint(e, *_state(e))
    run = runlog.load(path)
    assert [(c["epoch"], c["roles"]) for c in run.checkpoint_roles] == [(4, ["kept"]), (8, ["kept"]), (9, ["last"])]
    for e in (4, 8):
        ck = run.checkpoint(e)
        assert ck.complete and ck.optim_state["step"] == e and torch.equal(ck.model_state["w"], torch.full((64, 64), e))
    with pytest.raises(runlog.NoCheckpointError, match="keeps no 'best' checkpoint"):
        runlog.best_checkpoint(path)
    with pytest.raises(ValueError, match="keep_every must be an integer >= 0, got -1"):
        RunWriter(tmp_path / "x.h5", config={}, seed=0, keep_every=-1)
    with pytest.raises(ValueError, match="best_mode must be one of"):
        RunWriter(tmp_path / "x.h5", config={}, seed=0, best_mode="up")


def test_state_that_does_not_change_is_stored_once(tmp_path):
    """A PAT twin's training set (here 1 MiB) rides in every checkpoint: it is written once and referenced."""
    path = tmp_path / "s.h5"
    fixed = torch.randn(256, 1024)
    with RunWriter(path, config={}, seed=0, durable=False) as w:
        for e in range(1, 9):
            model, optim = _state(e)
            w.checkpoint(e, model, {**optim, "twin_data": fixed, "buffer": [fixed[:64] * k for k in range(e)]})
    # the twin data once, each buffer batch (256 KiB) once, the changing state twice: about 3.1 MiB (written
    # whole every time it would be 2 x 3 MiB and growing)
    assert _stream(path) < 1.1 * (fixed.numel() * 4 + 8 * 256 * KIB + 3 * 48 * KIB)
    ck = runlog.last_checkpoint(path)
    assert torch.equal(ck.optim_state["twin_data"], fixed) and len(ck.optim_state["buffer"]) == 8
    assert torch.equal(ck.optim_state["buffer"][7], fixed[:64] * 7)


@pytest.mark.fault("run file")
def test_a_checkpoint_cut_short_leaves_the_last_one_intact(tmp_path, monkeypatch):
    """The new checkpoint is written over free space only: dying in the middle of it loses nothing committed."""
    import physnn.runlog.checkpoints as store

    path = tmp_path / "c.h5"
    w = RunWriter(path, config={}, seed=0, durable=False)
    for e in range(1, 4):
        w.log_epoch(e, {"loss": 1.0})
        w.checkpoint(e, *_state(e))
    real_put, calls = store._put, []

    def put_then_die(ds, start, values):  # the first piece reaches the file, then the process "dies"
        calls.append(start)
        real_put(ds, start, values[: len(values) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_put", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        w.checkpoint(4, *_state(4))
    monkeypatch.setattr(store, "_put", real_put)
    w.close("interrupted")
    assert calls
    ck = runlog.last_checkpoint(path)
    assert ck.epoch == 3 and torch.equal(ck.optim_state["m"], torch.full((2, 64, 64), -3.0))
    w = RunWriter.resume(path, durable=False)  # and the next writer carries on from it
    w.checkpoint(4, *_state(4))
    w.close()
    assert runlog.last_checkpoint(path).optim_state["step"] == 4


def test_the_sample_log_keeps_to_its_byte_budget_spread_over_the_planned_epochs(tmp_path):
    systems = {"block0": {"spec": {"n_inputs": 30, "n_outputs": 30}}}
    row = 4 * 60 + 8  # bytes of one kept sample row (x, y, step)
    path = tmp_path / "b.h5"
    with RunWriter(path, config={}, seed=0, systems=systems, max_sample_bytes=40 * row, planned_epochs=10) as w:
        for e in range(1, 11):
            for _ in range(5):  # 5 queries of 64 per epoch: up to 16 rows kept of each without a budget
                w.log_samples("block0", torch.rand(64, 30), torch.rand(64, 30))
            w.log_epoch(e, {"loss": 1.0})
    steps = runlog.load(path).samples["block0"]["step"]
    assert len(steps) == 40  # the budget, no more
    assert len(set(steps.tolist())) == 10  # 4 rows from the first query of each epoch: the whole run is covered
    events = [e for e in runlog.load(path).events if e["kind"] == "samples_full"]
    assert events == []  # shared out evenly, the budget never ran out
    with RunWriter(tmp_path / "n.h5", config={}, seed=0, systems=systems, max_sample_bytes=40 * row) as w:
        for _ in range(5):  # no plan: the first queries fill it, then one event says so
            w.log_samples("block0", torch.rand(64, 30), torch.rand(64, 30))
    run = runlog.load(tmp_path / "n.h5")
    assert len(run.samples["block0"]["step"]) == 40
    (full,) = [e["fields"] for e in run.events if e["kind"] == "samples_full"]
    assert full == {"block": "block0", "max_samples": 40, "max_sample_bytes": 40 * row}


@pytest.mark.fault("run file")
def test_a_format_2_file_is_read_and_appended_to_as_format_2(tmp_path):
    """tests/data/run_v2.h5 was written by physnn at commit ade1634 (format 2), closed as interrupted."""
    run = runlog.load(V2_FILE)
    assert run.format_version == 2 and run.status == "interrupted" and run.checkpoints == [0, 1, 2]
    assert run.kept_checkpoints == [0, 1, 2] and run.checkpoint_roles[-1]["roles"] == ["last"]
    assert run.metrics["late/x"].tolist() == [0.0, 1.0, 2.0] and run.summary["total_queries"] == 99
    assert torch.equal(run.checkpoint(1).optim_state["m"], torch.arange(3.0))
    copy = tmp_path / "v2.h5"
    shutil.copy(V2_FILE, copy)
    w = RunWriter.resume(copy, durable=False)
    for e in (3, 4):
        w.log_epoch(e, {"loss": 1.0 / (e + 1)})
        w.checkpoint(e, {"w": torch.full((2, 2), float(e))}, {"step": e})
    w.close()
    run = runlog.load(copy)
    assert run.format_version == 2 and run.status == "completed"
    assert run.checkpoints == run.kept_checkpoints == [0, 1, 2, 3, 4]  # format 2 keeps every checkpoint
    assert run.checkpoint(0).extra == {"n": 0} and runlog.last_checkpoint(copy).optim_state == {"step": 4}
    assert run.metrics["epoch"].tolist() == [0, 1, 2, 3, 4] and run.epoch_segments.tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(RunFileError, match="run-format version 1, which this physnn reads but does not append"):
        RunWriter.resume(Path(__file__).parent / "data" / "run_v1.h5")


def test_the_run_file_size_stays_flat_as_epochs_grow(tmp_path):
    """A real run through the runner: 10 epochs take little more room than 5 (checkpoints do not pile up)."""
    from physnn.run.config import RunConfig
    from physnn.run.experiment import run_experiment

    base = RunConfig(
        dataset="digits",
        system="optics",
        system_options={"n_outputs": 64},
        hidden=16,
        batch_size=512,
        eval_every=2,
        probes=2,
        seed=0,
    )
    sizes = {}
    for epochs in (5, 10):
        path = tmp_path / f"e{epochs}.h5"
        run_experiment(base.updated(epochs=epochs, output=str(path)), progress=False, echo=lambda s: None)
        sizes[epochs] = path.stat().st_size
        assert len(runlog.load(path).kept_checkpoints) <= 2
    assert sizes[10] / sizes[5] < 1.25, sizes


def test_totals_across_a_resume_keep_the_gap_apart(tmp_path):
    """Active time (the writers' segments) and elapsed time (gaps included) are reported apart; a per-process
    counter such as the trainers' wall_seconds continues across the resume instead of dropping to zero."""
    import time

    path = tmp_path / "t.h5"
    with RunWriter(path, config={}, seed=0, durable=False) as w:
        for e in (1, 2):
            w.log_epoch(e, {"wall_seconds": 10.0 * e})
    time.sleep(1.0)  # the gap between the run and its resume
    w = RunWriter.resume(path, durable=False)
    for e in (3, 4):
        w.log_epoch(e, {"wall_seconds": 10.0 * (e - 2)})  # a new process counts from 0 again
    w.close()
    run = runlog.load(path)
    k = run.key_numbers()
    assert k["epochs"] == 4 and k["segments"] == 2
    assert k["elapsed_seconds"] - k["wall_seconds"] >= 1.0 and k["wall_seconds"] < 1.0
    assert k["size_bytes"] == path.stat().st_size
    assert run.metrics["wall_seconds"].tolist() == [10.0, 20.0, 10.0, 20.0]  # as logged
    assert run.cumulative("wall_seconds").tolist() == [10.0, 20.0, 30.0, 40.0]  # continuous
