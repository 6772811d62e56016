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
