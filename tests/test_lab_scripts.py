"""lab_scripts/train_awg_scope.py and train_serial.py on their simulated benches: the HDF5 run file they
write (completed, interrupted by Ctrl-C, failed on an instrument fault), exit codes, and the bench left safe."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from helpers.signals import default_signals

from physnn import runlog
from physnn.run.config import RunConfig
from physnn.run.experiment import run_experiment

LAB = Path(__file__).resolve().parents[1] / "lab_scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, LAB / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _common():
    """The scripts' shared module, the very instance they use (loading a script puts lab_scripts/ on sys.path)."""
    if "_bench_common" not in sys.modules:
        _load("train_serial")
    return sys.modules["_bench_common"]


@dataclass
class Script:
    """One lab script on its simulated bench, and what the tests need to know about that bench."""

    module: Any
    name: str  # the run file's system name
    safe: Callable[[Any], bool]  # the bench is closed and in its safe state
    transport: Callable[[Any], Any]  # the transport a command goes out on
    recoverable: Callable[[Any], None]  # arm a fault that one retry cures
    fatal: Callable[[Any], None]  # arm a fault that outlives every retry
    built: list = field(default_factory=list)  # the benches the script built, in order


def _awg_fault(times: int) -> Callable[[Any], None]:
    def arm(b) -> None:  # the scope never reports the acquisition complete
        from physnn.devices.sim.scpi_bench import Fault

        b.bench.add_fault(Fault("no_reply", "*OPC?", times=times))

    return arm


SCRIPTS = {
    "train_awg_scope": dict(
        name="awg-scope-sim",
        safe=lambda b: b.closed and b.bench.awg.output is False,
        transport=lambda b: b.awg.transport,
        recoverable=_awg_fault(1),
        fatal=_awg_fault(1000),
    ),
    "train_serial": dict(
        name="serial-daq-sim",
        safe=lambda b: b.closed and b.firmware.safe_count >= 1 and b.firmware.log[-1][0] == "SAFE",
        transport=lambda b: b.transport,
        recoverable=lambda b: b.firmware.inject("drop"),
        fatal=lambda b: b.firmware.inject("drop", count=1000),
    ),
}


@pytest.fixture(params=list(SCRIPTS))
def script(request, monkeypatch) -> Script:
    """A script whose ``build_bench`` is spied on (``script.built``)."""
    mod = _load(request.param)
    sc = Script(mod, **SCRIPTS[request.param])
    real = mod.build_bench

    def spy(*a, **k):
        sc.built.append(real(*a, **k))
        return sc.built[-1]

    monkeypatch.setattr(mod, "build_bench", spy)
    yield sc
    for b in sc.built:  # whatever a failing test left open
        b.close()


def _argv(shared_data, output, *more):
    return [
        "--simulate",
        "--n-outputs",
        "8",
        "--hidden",
        "8",
        "--batch-size",
        "64",
        "--timeout",
        "0.2",
        "--retries",
        "1",
        "--data-path",
        str(shared_data / "vowels.csv"),
        "--output",
        str(output),
        *more,
    ]


def _in_epoch(monkeypatch, built: list, epoch: int, action) -> None:
    """Run ``action()`` just before the first training query of ``epoch`` on the first bench in ``built``.

    Found from the console: after the line of epoch ``epoch - 1`` the run measures its probes (8-row queries)
    and logs the epoch; the next query with more rows is training.
    """
    common = _common()
    real_echo = common.echo

    def echo(line: str) -> None:
        real_echo(line)
        if line.startswith(f"epoch {epoch - 1:3d}/"):
            bench = built[0]
            real_measure = bench._measure

            def measure(x):
                if x.shape[0] > 8:
                    del bench._measure  # one shot
                    action()
                return real_measure(x)

            bench._measure = measure

    monkeypatch.setattr(common, "echo", echo)


def _one_block_run(script: Script, shared_data, tmp_path, capsys, monkeypatch, action, epochs: int = 3):
    """A one-block run of ``epochs`` with ``action(bench)`` at the start of epoch 2: (exit code, stderr, run)."""
    _in_epoch(monkeypatch, script.built, 2, lambda: action(script.built[0]))
    rc = script.module.main(_argv(shared_data, tmp_path / "run.h5", "--blocks", "1", "--epochs", str(epochs)))
    return rc, capsys.readouterr().err, runlog.load(tmp_path / "run.h5")


def test_completed_run_writes_the_run_file_and_nothing_else(script, shared_data, tmp_path, capsys):
    rc = script.module.main(_argv(shared_data, tmp_path, "--blocks", "2", "--epochs", "2"))
    out = capsys.readouterr().out
    assert rc == 0
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".h5", files  # no summary.json, no pickled model.pt
    run = runlog.load(files[0])
    assert f"run file: {files[0]}" in out
    assert f"completed: test accuracy {run.summary['test_accuracy']:.4f}" in out
    assert run.status == "completed"
    assert run.metrics["epoch"].tolist() == [1, 2] and run.checkpoints == [1, 2]
    acc = run.metrics["val_accuracy"]  # scheduled evaluations look at the validation split (the last epoch always)
    assert acc.shape == (2,) and 0 <= acc[-1] <= 1
    assert 0 <= run.summary["test_accuracy"] <= 1
    assert run.config["system"] == script.name and run.config["hidden"] == 8
    assert run.config["output"] == str(files[0])
    # one simulated bench per block: block 0 takes classes + features, block 1 the hidden width
    width = 7 + 12  # vowels: 7 classes, 12 formant features
    assert [run.systems[f"block{i}"]["spec"]["n_inputs"] for i in range(2)] == [width, 8]
    assert len(script.built) == 2 and all(script.safe(b) for b in script.built)
    ckpt = run.checkpoint()
    assert ckpt.epoch == 2 and any(k.endswith("linear.weight") for k in ckpt.model_state)


def test_bench_events_go_to_the_run_file_and_a_sample_to_the_console(
    script, shared_data, tmp_path, capsys, monkeypatch
):
    rc, err, run = _one_block_run(script, shared_data, tmp_path, capsys, monkeypatch, script.recoverable, epochs=2)
    assert rc == 0 and run.status == "completed"
    bench_events = [e for e in run.events if e["fields"].get("system") == script.built[0].spec.name]
    assert "timeout" in {e["kind"] for e in bench_events}, run.events
    assert f"bench event #1 {bench_events[0]['kind']}" in err
    assert script.safe(script.built[0])


def test_ctrl_c_leaves_an_interrupted_run_file_and_a_safe_bench(script, shared_data, tmp_path, capsys, monkeypatch):
    def interrupt_next_write(bench):
        transport = script.transport(bench)
        real = transport.write_raw

        def write_raw(data):
            transport.write_raw = real  # one Ctrl-C; the safe-state command that follows goes through
            raise KeyboardInterrupt

        transport.write_raw = write_raw

    rc, err, run = _one_block_run(script, shared_data, tmp_path, capsys, monkeypatch, interrupt_next_write)
    assert rc == 130 and run.status == "interrupted"
    assert run.metrics["epoch"].tolist() == [1] and run.checkpoints == [1]  # the completed epoch survives
    assert "status interrupted, 1 epoch(s) logged" in err
    assert len(script.built) == 1 and script.safe(script.built[0])


def test_instrument_fault_fails_the_run_with_exit_2_and_a_safe_bench(
    script, shared_data, tmp_path, capsys, monkeypatch
):
    rc, err, run = _one_block_run(script, shared_data, tmp_path, capsys, monkeypatch, script.fatal)
    assert rc == 2 and run.status == "failed"
    assert any(line.startswith("error: InstrumentTimeout: ") for line in err.splitlines()), err
    assert run.metrics["epoch"].tolist() == [1] and run.checkpoints == [1]
    kinds = [e["kind"] for e in run.events]
    assert kinds.count("timeout") == 2, kinds  # --retries 1: two attempts, both recorded
    assert "status failed, 1 epoch(s) logged" in err
    assert script.safe(script.built[0])


def test_the_run_files_config_rebuilds_the_same_simulated_run(shared_data, tmp_path, capsys):
    """system/system_options of a --simulate run are the registry name and factory keywords: `physnn train`
    with that config builds the same benches and reproduces the run bit for bit."""
    mod = _load("train_awg_scope")
    assert mod.main(_argv(shared_data, tmp_path / "a.h5", "--blocks", "2", "--epochs", "1")) == 0
    first = runlog.load(tmp_path / "a.h5")
    config = RunConfig.from_dict(first.config).updated(output=str(tmp_path / "b.h5"))
    result = run_experiment(config, progress=False, echo=lambda line: None)
    again = runlog.load(tmp_path / "b.h5")
    assert result.test_accuracy == first.summary["test_accuracy"]
    a, b = first.checkpoint().model_state, again.checkpoint().model_state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_event_sampler_prints_the_first_three_then_powers_of_ten(capsys):
    sampler = _common().EventSampler()
    for _ in range(120):
        sampler("retry", {"attempt": 1})
    sampler("clipped", {})
    lines = capsys.readouterr().err.splitlines()
    assert [int(line.split("#")[1].split()[0]) for line in lines] == [1, 2, 3, 10, 100, 1]
    assert sampler.counts == {"retry": 120, "clipped": 1} and sampler.total == 121


def test_real_benches_refuse_to_start_without_their_limits(shared_data, tmp_path):
    data = ["--data-path", str(shared_data / "vowels.csv"), "--output", str(tmp_path)]
    awg = _load("train_awg_scope")
    with pytest.raises(SystemExit, match="--max-vpp"):
        awg.main(["--awg", "TCPIP0::1.2.3.4::INSTR", "--scope", "TCPIP0::1.2.3.5::INSTR", "--vpp", "0.1", *data])
    serial = _load("train_serial")
    with pytest.raises(SystemExit, match="--high"):
        serial.main(["--port", "/dev/does-not-exist", *data])
    assert list(tmp_path.iterdir()) == []


def test_bad_training_flag_is_one_line_and_exit_2_before_any_bench_is_built(tmp_path, capsys, monkeypatch):
    mod = _load("train_serial")
    monkeypatch.setattr(mod, "build_bench", lambda *a, **k: pytest.fail("a bench was built"))
    assert mod.main(["--simulate", "--epochs", "-1", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: ConfigError: config key epochs must be an integer >= 0, got -1"
    assert mod.parse_args(["--simulate", "--out", "old/place"]).output == "old/place"  # the former flag still works


def test_sigint_to_the_real_script_process_exits_130_with_an_interrupted_run_file(shared_data, tmp_path):
    out = tmp_path / "run.h5"
    cmd = [sys.executable, str(LAB / "train_serial.py"), *_argv(shared_data, out), "--blocks", "1", "--epochs", "1000"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=default_signals,
    )
    try:
        for line in proc.stdout:
            # epoch 2's line: epoch 1 is then on disk (its own line is echoed before it is logged)
            if line.startswith("epoch   2/"):
                proc.send_signal(signal.SIGINT)
                break
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, err
    run = runlog.load(out)
    assert run.status == "interrupted" and run.metrics["epoch"].size >= 1
    assert "interrupted: the bench was put in its safe state" in err


def test_resume_extends_a_run_on_a_rebuilt_bench(script, shared_data, tmp_path, capsys):
    """--resume continues the run file on a bench rebuilt from the same flags; --epochs N extends it."""
    out = tmp_path / "run.h5"
    assert script.module.main(_argv(shared_data, out, "--blocks", "1", "--epochs", "1")) == 0
    first = runlog.load(out)
    assert first.checkpoints == [1]
    capsys.readouterr()
    assert script.module.main(_argv(shared_data, out, "--blocks", "1", "--epochs", "2", "--resume", str(out))) == 0
    run = runlog.load(out)
    assert run.status == "completed" and run.checkpoints == [1, 2]
    assert run.metrics["epoch"].tolist() == [1, 2]
    assert run.summary["total_queries"] > first.summary["total_queries"]  # counted across both processes
    assert all(script.safe(b) for b in script.built)  # every bench of both processes ended safe


def _serial_script(monkeypatch) -> Script:
    """train_serial alone (not parametrised), with its built benches spied on."""
    mod = _load("train_serial")
    sc = Script(mod, **SCRIPTS["train_serial"])
    real = mod.build_bench

    def spy(*a, **k):
        sc.built.append(real(*a, **k))
        return sc.built[-1]

    monkeypatch.setattr(mod, "build_bench", spy)
    return sc


def _cut_next_write(transport, k: int) -> None:
    """The next write stops after ``k`` of its bytes reached the port, with a Ctrl-C (inside a chunk)."""
    write_chunk = transport._write_bytes
    left = [k]

    def chunk(c):
        if left[0] >= len(c):
            left[0] -= len(c)
            return write_chunk(c)
        if left[0]:
            write_chunk(c[: left[0]])
        del transport._write_bytes
        raise KeyboardInterrupt

    transport._write_bytes = chunk


@pytest.mark.fault("unsafe")
def test_ctrl_c_mid_frame_on_a_board_without_frame_timeout_is_safe_and_says_so(
    shared_data, tmp_path, capsys, monkeypatch
):
    """Issue 23: Ctrl-C in the middle of a RUN_BATCH frame, on a board that never drops a half frame. The driver
    ends the frame, SAFE is acknowledged, and only then does the console call the bench safe."""
    sc = _serial_script(monkeypatch)
    _in_epoch(monkeypatch, sc.built, 2, lambda: _cut_next_write(sc.built[0].transport, 300))
    argv = _argv(shared_data, tmp_path / "run.h5", "--blocks", "1", "--epochs", "3", "--sim-no-frame-timeout")
    try:
        rc = sc.module.main(argv)
        err = capsys.readouterr().err
        run = runlog.load(tmp_path / "run.h5")
        bench = sc.built[0]
        assert bench.firmware.frame_timeout is None and run.config["system_options"]["frame_timeout"] is None
        assert rc == 130 and run.status == "interrupted", err
        assert "interrupted: the bench was put in its safe state (acknowledged)" in err
        assert bench.safe_confirmed is True and sc.safe(bench)
        assert "frame_flushed" in [e["kind"] for e in run.events]
        assert "close_failed" not in [e["kind"] for e in run.events]
    finally:
        for b in sc.built:
            b.close()


@pytest.mark.fault("unsafe")
@pytest.mark.filterwarnings("ignore:serial-daq-sim could not be closed")
def test_a_bench_that_never_acknowledges_safe_is_reported_as_possibly_driven(
    shared_data, tmp_path, capsys, monkeypatch
):
    """SAFE never answered: the console says plainly that the outputs may be driven, never "safe", and the
    run file's close_failed event says the same."""
    sc = _serial_script(monkeypatch)

    def ctrl_c_with_a_mute_safe():
        sc.built[0].firmware.inject("drop", command="SAFE", count=1000)
        raise KeyboardInterrupt

    _in_epoch(monkeypatch, sc.built, 2, ctrl_c_with_a_mute_safe)
    try:
        rc = sc.module.main(_argv(shared_data, tmp_path / "run.h5", "--blocks", "1", "--epochs", "3"))
        err = capsys.readouterr().err
        run = runlog.load(tmp_path / "run.h5")
        assert rc == 130 and run.status == "interrupted"
        assert "safe state" in err and "put in its safe state" not in err
        assert "did NOT acknowledge its safe state: its outputs may still be driven" in err, err
        failed = [e for e in run.events if e["kind"] == "close_failed"]
        assert failed and "NOT acknowledged, the outputs may still be driven" in failed[0]["fields"]["message"]
        assert sc.built[0].safe_confirmed is False
    finally:
        for b in sc.built:
            b.close()
