"""SIGTERM / SIGHUP end a run like Ctrl-C: SAFE frame on the bench, run file readable with status interrupted.

The serial bench is the pty fake firmware. In-process tests send a real signal to this process in the
middle of a bench transaction (after a RUN_BATCH request went out, before its reply was read) and look at
the firmware's log; the subprocess tests host the firmware here and run the lab script in a child that
opens the pty as a real port, so the SAFE frame is seen from outside the process that was killed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers.signals import default_signals

from physnn import runlog
from physnn.core import safety
from physnn.core.safety import Terminated, shutdown_on_signals

pytestmark = [
    pytest.mark.fault("signals"),
    pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals"),
]

LAB = Path(__file__).resolve().parents[1] / "lab_scripts"
SIGNALS = [signal.SIGTERM, signal.SIGHUP]


# ----------------------------------------------------------------- the context manager
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_raises_terminated_a_keyboard_interrupt_and_the_old_handler_comes_back(sig):
    before = signal.getsignal(sig)
    with pytest.raises(Terminated) as info:
        with shutdown_on_signals():
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.signum == sig and info.value.exit_code == 128 + sig
    assert str(info.value) == f"terminated by {signal.Signals(sig).name}"
    assert signal.getsignal(sig) is before


def test_a_second_signal_during_the_shutdown_does_not_abort_it(caplog):
    cleaned = []
    with pytest.raises(Terminated):
        with shutdown_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
            finally:
                with caplog.at_level(logging.WARNING, logger="physnn.core.safety"):
                    os.kill(os.getpid(), signal.SIGTERM)  # e.g. a supervisor repeating itself
                    for _ in range(1000):
                        pass
                cleaned.append("safe state sent")
    assert cleaned == ["safe state sent"]
    assert "SIGTERM received while shutting down" in caplog.text


def test_outside_the_main_thread_it_is_a_no_op():
    errors = []

    def body():
        try:
            with shutdown_on_signals():
                pass
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert errors == []


class _Bench:
    def __init__(self, fail=False):
        self.closed, self.fail = False, fail

    def close(self):
        if self.fail:
            raise OSError("port gone")
        self.closed = True


def test_close_all_closes_what_is_still_open_and_survives_a_failing_close(caplog, monkeypatch):
    import weakref

    monkeypatch.setattr(safety, "_OPEN", weakref.WeakSet())  # only this test's systems
    a, b, done = _Bench(), _Bench(fail=True), _Bench()
    done.closed = True
    for s in (a, b, done):
        safety.track(s)
    with caplog.at_level(logging.WARNING, logger="physnn.core.safety"):
        assert safety.close_all() == 1
    assert a.closed and not b.closed
    assert "could not be closed / put in its safe state at exit: port gone" in caplog.text
    b.fail = False
    safety.close_all()
    assert safety.open_systems() == []


# ----------------------------------------------------------------- in-process, real signals
def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, LAB / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _signal_mid_transaction(bench, sig: int) -> None:
    """Arm ``sig`` to arrive once the first RUN_BATCH request of epoch 2 is on the wire, before its reply."""
    transport = bench.transport
    real_read = transport.read_exact

    def read_exact(n):
        transport.read_exact = real_read  # one shot; the SAFE that follows reads normally
        os.kill(os.getpid(), sig)
        for _ in range(1000):
            pass
        return real_read(n)

    transport.read_exact = read_exact


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
        "0.5",
        "--retries",
        "1",
        "--data-path",
        str(shared_data / "vowels.csv"),
        "--output",
        str(output),
        *more,
    ]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_lab_script_signal_mid_transaction_sends_safe_and_marks_the_run_interrupted(
    sig, shared_data, tmp_path, capsys, monkeypatch
):
    handler_before = signal.getsignal(sig)
    mod = _load("train_serial")
    common = sys.modules["_bench_common"]
    built = []
    real_build = mod.build_bench

    def build(*a, **k):
        built.append(real_build(*a, **k))
        return built[-1]

    monkeypatch.setattr(mod, "build_bench", build)
    real_echo = common.echo

    def echo(line):
        real_echo(line)
        if line.startswith("epoch   1/"):
            _signal_mid_transaction(built[0], sig)

    monkeypatch.setattr(common, "echo", echo)
    try:
        rc = mod.main(_argv(shared_data, tmp_path / "run.h5", "--blocks", "1", "--epochs", "3"))
        err = capsys.readouterr().err
        fw = built[0].firmware
        assert rc == 128 + sig, err
        assert f"terminated by {signal.Signals(sig).name}: the bench was put in its safe state" in err
        run = runlog.load(tmp_path / "run.h5")
        assert run.status == "interrupted"
        assert run.metrics["epoch"].tolist() == [1] and run.checkpoints == [1]
        commands = [c for c, _ in fw.log]
        last_run = max(i for i, c in enumerate(commands) if c == "RUN_BATCH")
        assert "SAFE" in commands[last_run:] and commands[-1] == "SAFE", commands[-6:]
        assert (fw.dac_codes == fw.safe_code).all() and built[0].closed
        assert signal.getsignal(sig) == handler_before  # the handler the process had is back (SIG_IGN under nohup)
    finally:
        for b in built:
            b.close()


# ----------------------------------------------------------------- subprocesses
def _host_firmware(n_inputs: int, n_outputs: int):
    """A fake board served by a thread of *this* process (the child opens its pty as a real port)."""
    from physnn.core.registry import build_system
    from physnn.devices.sim.fake_firmware import FakeFirmware

    return FakeFirmware(build_system("optics", n_inputs=n_inputs, n_outputs=n_outputs, seed=1), safe_code=0)


def _kill_after_first_epoch(cmd: list[str], sig: int, env: dict | None = None) -> tuple[int, str]:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        preexec_fn=default_signals,
    )
    try:
        for line in proc.stdout:
            if line.lstrip().startswith("epoch") and "1/" in line.split(":")[0]:
                proc.send_signal(sig)
                break
        rc = proc.wait(timeout=120)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return rc, err


def test_killed_lab_script_on_a_real_port_leaves_the_board_safe(shared_data, tmp_path):
    sig = signal.SIGTERM  # SIGHUP takes the same path (tested in-process above and on `physnn train` below)
    fw = _host_firmware(n_inputs=19, n_outputs=8)  # vowels: 7 classes + 12 formants
    out = tmp_path / "run.h5"
    try:
        cmd = [
            sys.executable,
            str(LAB / "train_serial.py"),
            "--port",
            fw.port,
            "--high",
            "5",
            "--dac-volts-per-code",
            str(5 / 65535),
            "--adc-volts-per-code",
            str(3.3 / 65535),
            "--serial",
            "SIM-0001",
            "--timeout",
            "0.5",
            "--retries",
            "1",
            "--hidden",
            "8",
            "--data-path",
            str(shared_data / "vowels.csv"),
            "--blocks",
            "1",
            "--epochs",
            "1000",
            "--output",
            str(out),
        ]
        rc, err = _kill_after_first_epoch(cmd, sig)
        commands = [c for c, _ in fw.log]
    finally:
        fw.stop()
    assert rc == 128 + sig, err
    assert f"terminated by {signal.Signals(sig).name}" in err
    assert "RUN_BATCH" in commands and commands[-1] == "SAFE", commands[-6:]
    assert fw.safe_count >= 1 and (fw.dac_codes == 0).all()
    run = runlog.load(out)
    assert run.status == "interrupted" and run.metrics["epoch"].size >= 1


def test_a_bench_left_open_is_put_safe_at_interpreter_exit(tmp_path):
    """atexit, the last resort: a script that never closes its bench still ends with SAFE on the wire."""
    fw = _host_firmware(n_inputs=2, n_outputs=2)
    script = tmp_path / "forgetful.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        from physnn.core import safety
        from physnn.devices.serial_daq import Calibration, SerialDAQSystem
        daq = SerialDAQSystem({fw.port!r}, n_inputs=2, n_outputs=2, low=0.0, high=5.0,
                              dac=Calibration.full_scale(16, 0.0, 5.0), adc=Calibration.full_scale(16, 0.0, 3.3),
                              dac_bits=16, adc_bits=16, timeout=0.5)
        safety.track(daq)
        daq(torch.full((3, 2), 2.5))
        print("drove", flush=True)
        # no close(): the process just ends
    """)
    )
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        commands = [c for c, _ in fw.log]
    finally:
        fw.stop()
    assert proc.returncode == 0 and "drove" in proc.stdout, proc.stderr
    assert commands[-2:] == ["RUN_BATCH", "SAFE"], commands
    assert "closed 1 system(s) left open at exit (safe state sent): serial-daq" in proc.stderr


# ----------------------------------------------------------------- physnn train
def _vowels_cli(shared_data, out, *more):
    return [
        "train",
        "--no-progress",
        "--system",
        "serial-daq-sim",
        "--system-option",
        "n_outputs=8",
        "--system-option",
        "timeout=0.5",
        "--dataset",
        "vowels",
        "--data-path",
        str(shared_data / "vowels.csv"),
        "--hidden",
        "8",
        "--blocks",
        "1",
        "--output",
        str(out),
        *more,
    ]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_physnn_train_signal_mid_transaction_sends_safe_and_marks_the_run_interrupted(
    sig, shared_data, tmp_path, capsys, monkeypatch
):
    import functools

    from physnn.cli import main
    from physnn.core.registry import _RUNTIME
    from physnn.devices.sim.fake_firmware import simulated_serial_daq

    built = []

    @functools.wraps(simulated_serial_daq)
    def spy(**kw):
        built.append(simulated_serial_daq(**kw))
        return built[-1]

    monkeypatch.setitem(_RUNTIME, "serial-daq-sim", spy)  # runtime registrations win over entry points
    real_log_epoch = runlog.RunWriter.log_epoch

    def log_epoch(self, epoch, metrics):
        real_log_epoch(self, epoch, metrics)
        if epoch == 1:
            _signal_mid_transaction(built[0], sig)

    monkeypatch.setattr(runlog.RunWriter, "log_epoch", log_epoch)
    try:
        rc = main(_vowels_cli(shared_data, tmp_path / "run.h5", "--epochs", "3"))
        err = capsys.readouterr().err
        assert rc == 128 + sig, err
        assert f"terminated by {signal.Signals(sig).name}" in err
        fw = built[0].firmware
        commands = [c for c, _ in fw.log]
        last_run = max(i for i, c in enumerate(commands) if c == "RUN_BATCH")
        assert "SAFE" in commands[last_run:] and commands[-1] == "SAFE", commands[-6:]
        assert (fw.dac_codes == fw.safe_code).all() and built[0].closed
        run = runlog.load(tmp_path / "run.h5")
        assert run.status == "interrupted" and run.metrics["epoch"].tolist() == [1]
    finally:
        for b in built:
            b.close()


def test_physnn_train_process_killed_by_sighup_leaves_an_interrupted_run_file(shared_data, tmp_path):
    out = tmp_path / "run.h5"
    cmd = [sys.executable, "-m", "physnn.cli", *_vowels_cli(shared_data, out, "--epochs", "1000")]
    rc, err = _kill_after_first_epoch(cmd, signal.SIGHUP)
    assert rc == 128 + signal.SIGHUP, err
    assert "terminated by SIGHUP" in err and "Traceback" not in err
    run = runlog.load(out)
    assert run.status == "interrupted" and run.metrics["epoch"].size >= 1


def test_a_signal_while_closing_waits_for_the_close_then_terminates():
    steps = []
    with pytest.raises(Terminated) as info:
        with shutdown_on_signals():
            with safety.deferred_signals():
                steps.append("SAFE sent")
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
                steps.append("port closed")  # not cut short by the signal
            steps.append("never reached")
    assert steps == ["SAFE sent", "port closed"] and info.value.signum == signal.SIGTERM


def test_an_error_leaving_a_deferred_block_is_not_replaced_by_the_signal():
    with pytest.raises(OSError, match="port gone"):
        with shutdown_on_signals():
            with safety.deferred_signals():
                os.kill(os.getpid(), signal.SIGHUP)
                for _ in range(1000):
                    pass
                raise OSError("port gone")
    with shutdown_on_signals():  # the state is reset for the next run
        with safety.deferred_signals():
            pass
