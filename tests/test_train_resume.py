"""The real `physnn train` killed with SIGKILL / interrupted with Ctrl-C, then resumed."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.signals import default_signals

from physnn import runlog

ARGS = ["--epochs", "5", "--hidden", "24", "--batch-size", "128", "--no-progress", "--seed", "3"]


def physnn(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "physnn.cli", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
        **kw,
    )


def wait_for_epochs(path, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted: {proc.communicate()}")
        if path.exists():
            try:
                if len(runlog.load(path).checkpoints) >= n:
                    return
            except runlog.RunFileError:
                pass
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


def final_state(path):
    ck = runlog.last_checkpoint(path)
    run = runlog.load(path)
    keep = [
        k
        for k in (
            "epoch",
            "loss",
            "loss/block0",
            "loss/block1",
            "test_accuracy",
            "train_queries",
            "train_accuracy",
            "twin_rel_error/block1",
            "digital_flops",
        )
        if k in run.metrics
    ]
    return ck.model_state, {k: np.asarray(run.metrics[k]) for k in keep}, run


#: Every method, with options that keep it fast (PAT's twin is small).
METHOD_ARGS = {
    "mfff": [],
    "pat": [
        "--method",
        "pat",
        "--method-option",
        "twin_samples=300",
        "--method-option",
        "twin_epochs=3",
        "--method-option",
        "twin_hidden=[32]",
        "--method-option",
        "refit_steps=5",
    ],
    "zeroth_order": ["--method", "zeroth_order"],
    "backprop": ["--method", "backprop"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_kill9_then_resume_equals_an_uninterrupted_run(tmp_path, method):
    args = [*ARGS, *METHOD_ARGS[method]]
    ref = tmp_path / "ref.h5"
    p = physnn(*args, "--output", str(ref))
    assert p.wait(timeout=300) == 0, p.communicate()
    w_ref, m_ref, _ = final_state(ref)

    cut = tmp_path / "cut.h5"
    p = physnn(*args, "--output", str(cut))
    wait_for_epochs(cut, 2, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run = runlog.load(cut)  # the killed run's file opens and holds its completed epochs
    assert run.status != "completed" and len(run.checkpoints) >= 2
    done = len(run.checkpoints)

    p = subprocess.run(
        [sys.executable, "-m", "physnn.cli", "train", "--resume", str(cut), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert f"after epoch {done}" in p.stdout
    w_cut, m_cut, run = final_state(cut)
    assert run.status == "completed"
    assert run.config["method"] == method
    # the totals count every process's queries, not only the last one's
    assert run.summary["total_queries"] >= runlog.load(ref).summary["total_queries"]
    assert not any(e["kind"] == "late_metric" for e in run.events)
    for k in w_ref:
        assert np.array_equal(np.asarray(w_ref[k]), np.asarray(w_cut[k])), k
    for k in m_ref:
        assert np.array_equal(m_ref[k], m_cut[k], equal_nan=True), (k, m_ref[k], m_cut[k])  # NaN: not evaluated


@pytest.mark.slow
def test_ctrl_c_leaves_an_interrupted_readable_run(tmp_path):
    path = tmp_path / "int.h5"
    p = physnn(*ARGS, "--output", str(path))
    wait_for_epochs(path, 1, p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    run = runlog.load(path)
    assert run.status == "interrupted" and len(run.metrics["epoch"]) >= 1


# ------------------------------------------------------------------ every run finishable (issue 23 item 2)
from physnn.run import experiment  # noqa: E402
from physnn.run.config import RunConfig  # noqa: E402

#: A child that runs `physnn train ARGS` and dies by SIGKILL at a named step of the runner.
KILL_AT = """
import os, signal, sys
from physnn.run import experiment

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

setattr(experiment._Run, sys.argv[1], die)
from physnn.cli import main
sys.exit(main(["train", *sys.argv[2:]]))
"""

SMALL = ["--epochs", "2", "--hidden", "8", "--blocks", "1", "--batch-size", "256", "--no-progress", "--seed", "5"]
SMALL += ["--system-option", "n_outputs=64"]


@pytest.mark.slow
@pytest.mark.fault("resume")
def test_a_run_killed_before_its_final_test_is_finished_by_resume(tmp_path):
    """Killed after its last checkpoint, before the test split: --resume measures only that, status completed."""
    ref = tmp_path / "ref.h5"
    p = physnn(*SMALL, "--output", str(ref))
    assert p.wait(timeout=300) == 0, p.communicate()
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)
    cut = tmp_path / "cut.h5"
    p = subprocess.run(
        [sys.executable, str(script), "finish", *SMALL, "--output", str(cut)], capture_output=True, timeout=300
    )
    assert p.returncode == -signal.SIGKILL
    killed = runlog.load(cut)
    assert killed.status == "aborted" and killed.checkpoints[-1] == 2 and not killed.summary

    p = subprocess.run(
        [sys.executable, "-m", "physnn.cli", "train", "--resume", str(cut), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "after epoch 2: training is done; left: the test split" in p.stdout
    assert "nothing to do" not in p.stdout and "nan" not in p.stdout and " 0 in total" not in p.stdout
    run, done = runlog.load(cut), runlog.load(ref)
    assert run.status == "completed"
    assert list(run.metrics["epoch"]) == [1, 2]  # no epoch trained again
    # the same numbers as the run that was never killed: the checkpoint holds the systems' noise state and the
    # query totals, and the test split is measured once
    for key in ("test_accuracy", "test_correct", "test_n", "train_queries", "total_queries"):
        assert run.summary[key] == done.summary[key], key


def small(tmp_path, name="r.h5", **keys):
    keys = {"epochs": 2, "hidden": 8, "blocks": 1, "batch_size": 256, "seed": 5, "output": str(tmp_path / name), **keys}
    return RunConfig(system_options={"n_outputs": 64}, **keys)


def run(config, **kwargs):
    return experiment.run_experiment(config, progress=False, echo=lambda line: None, **kwargs)


def interrupted_at(monkeypatch, step, after=False, times=1):
    """``_Run.<step>`` raises KeyboardInterrupt (after doing its work with ``after``) the first ``times`` calls."""
    real = getattr(experiment._Run, step)
    left = [times]

    def cut(self, *args, **kwargs):
        if left[0] <= 0:
            return real(self, *args, **kwargs)
        left[0] -= 1
        if after:
            real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment._Run, step, cut)


def resumed(config, path, lines=None, **keys):
    echo = lines.append if lines is not None else lambda line: None
    return experiment.run_experiment(
        experiment.resume_config(path, keys.get("epochs")), progress=False, echo=echo, resume=path
    )


@pytest.mark.slow
@pytest.mark.fault("resume")
def test_a_run_stopped_by_its_budget_and_killed_before_the_test_does_not_train_on(tmp_path, monkeypatch):
    one = run(small(tmp_path, "one.h5", epochs=1)).train_queries
    config = small(tmp_path, epochs=10, query_budget=int(2.5 * one))
    interrupted_at(monkeypatch, "finish")
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert runlog.load(config.output).status == "interrupted"
    lines: list[str] = []
    result = resumed(config, config.output, lines)
    assert any("after epoch 2: training is done" in line for line in lines), lines
    file = runlog.load(config.output)
    assert file.status == "completed" and list(file.metrics["epoch"]) == [1, 2]
    assert result.train_queries == 2 * one and 0 < file.summary["test_accuracy"] <= 1


@pytest.mark.slow
@pytest.mark.fault("resume")
def test_a_run_killed_after_its_summary_is_marked_completed_without_measuring_again(tmp_path, monkeypatch):
    config = small(tmp_path)
    interrupted_at(monkeypatch, "finish", after=True)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    before = runlog.load(config.output)
    assert before.status == "interrupted" and before.summary["test_n"] > 0
    lines: list[str] = []
    result = resumed(config, config.output, lines)
    after = runlog.load(config.output)
    assert after.status == "completed" and "marked completed, nothing measured again" in lines[-1]
    assert after.summary == before.summary and result.test_accuracy == before.summary["test_accuracy"]
    assert [e["kind"] for e in after.events][-2:] == ["finished_on_resume", "run_closed"]


@pytest.mark.slow
@pytest.mark.fault("resume")
def test_a_run_killed_before_its_first_checkpoint_trains_again_from_the_start(tmp_path, monkeypatch):
    ref = run(small(tmp_path, "ref.h5"))
    config = small(tmp_path)
    interrupted_at(monkeypatch, "checkpoint")
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert runlog.load(config.output).checkpoints == []
    lines: list[str] = []
    result = resumed(config, config.output, lines)
    assert "no checkpoint yet; training from the start again" in lines[0]
    assert runlog.load(config.output).status == "completed"

    def numbers(history):  # wall-clock columns aside, the same run
        return [{k: v for k, v in e.items() if "seconds" not in k} for e in history]

    assert numbers(result.history) == numbers(ref.history)
    assert result.test_accuracy == ref.test_accuracy


@pytest.mark.slow
@pytest.mark.fault("resume")
def test_an_extension_killed_half_way_resumes_to_its_new_target(tmp_path, monkeypatch):
    config = small(tmp_path, epochs=1)
    run(config)
    interrupted_at(monkeypatch, "checkpoint")  # --epochs 3: epoch 2 trains, its checkpoint never lands
    with pytest.raises(KeyboardInterrupt):
        resumed(config, config.output, epochs=3)
    assert runlog.load(config.output).checkpoints == [1]
    assert experiment.resume_config(config.output).epochs == 3  # the target the run was last given
    resumed(config, config.output)
    file = runlog.load(config.output)
    assert file.status == "completed" and list(file.metrics["epoch"]) == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.fault("resume")
def test_a_run_killed_in_its_continual_phase_runs_it_again_and_finishes(tmp_path, monkeypatch):
    config = small(tmp_path, epochs=1, continual_ticks=4, continual_options={"probe_every": 2, "probes": 4})
    interrupted_at(monkeypatch, "continual")
    with pytest.raises(KeyboardInterrupt):
        run(config)
    lines: list[str] = []
    resumed(config, config.output, lines)
    assert "left: the continual phase (again from the last checkpoint), then the test split" in lines[0]
    file = runlog.load(config.output)
    kinds = [e["kind"] for e in file.events]
    assert file.status == "completed" and kinds.count("continual_tick") == 2
    assert kinds.index("resumed") < kinds.index("continual_tick")


@pytest.mark.fault("resume")
def test_resume_refuses_fewer_epochs_than_it_has_trained(tmp_path, capsys):
    from physnn.cli import main
    from physnn.runlog import RunWriter

    path = tmp_path / "two.h5"
    with RunWriter(path, config=small(tmp_path).to_dict(), seed=5) as writer:
        writer.checkpoint(1, {}, {}, runlog.capture_rng())
        writer.checkpoint(2, {}, {}, runlog.capture_rng())
    assert main(["train", "--resume", str(path), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"physnn train: error: epochs = 1 is below the 2 epoch(s) {str(path)!r} has already trained; give "
        "--epochs N with N > 2 to extend it, or leave --epochs out to finish it"
    )
