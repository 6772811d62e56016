"""The last line of an interrupted ``physnn`` command says what *that* command left behind (issue 23).

A SIGTERM during ``physnn report`` used to answer "the run file holds every completed epoch; instruments were
put in their safe state" -- no run file was being written and no instrument was open. Each command is
interrupted in-process by a real signal to this process at a point where it is busy, and its last line is
checked: instruments only where the command opened some, "safe" only where no failed safe state was reported.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from physnn.core import safety
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.runlog import RunWriter

pytestmark = [
    pytest.mark.fault("signals"),
    pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals"),
]


def _sigterm(*_args, **_kwargs):
    """Stand-in for a command's busy part: a SIGTERM arrives while it runs."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(2)  # the handler raises at the next bytecode boundary, long before this ends
    raise AssertionError("SIGTERM was not delivered")


def _run_file(path: Path) -> Path:
    with RunWriter(path, config={}, seed=0) as w:
        w.log_epoch(0, {"loss": 1.0, "val_accuracy": 0.5})
    return path


def _interrupt(capsys, argv: list[str]) -> str:
    from physnn.cli import main

    assert main(argv) == 128 + signal.SIGTERM
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_report_interrupted_talks_neither_about_instruments_nor_a_run_file(tmp_path, capsys, monkeypatch):
    from physnn.analysis import report

    monkeypatch.setattr(report, "main_report", _sigterm)
    last = _interrupt(capsys, ["report", str(_run_file(tmp_path / "r.h5"))])
    assert last == "terminated by SIGTERM"


@pytest.mark.parametrize("command", ["compare", "ls"])
def test_compare_and_ls_interrupted_say_only_that(command, tmp_path, capsys, monkeypatch):
    from physnn.analysis import report

    monkeypatch.setattr(report, command, _sigterm)
    path = _run_file(tmp_path / "r.h5")
    last = _interrupt(capsys, [command, str(path if command == "compare" else tmp_path)])
    assert last == "terminated by SIGTERM"


def test_characterize_of_a_simulator_interrupted_names_no_instrument(tmp_path, capsys, monkeypatch):
    from physnn.analysis import characterize

    monkeypatch.setattr(characterize, "characterize", _sigterm)  # while measuring the open simulator
    argv = ["characterize", "--system", "identity", "--dataset", "none", "--out", str(tmp_path)]
    assert _interrupt(capsys, argv) == "terminated by SIGTERM"
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_train_on_a_simulator_keeps_its_run_file_and_names_no_instrument(tmp_path, capsys, monkeypatch):
    real = RunWriter.log_epoch

    def log_epoch(self, epoch, metrics):
        real(self, epoch, metrics)
        _sigterm()

    monkeypatch.setattr(RunWriter, "log_epoch", log_epoch)
    argv = ["train", "--no-progress", "--system", "identity", "--blocks", "1", "--epochs", "3"]
    last = _interrupt(capsys, [*argv, "--output", str(tmp_path / "t.h5")])
    assert last == "terminated by SIGTERM: the run file holds every completed epoch"


class _Bench(PhysicalSystem):
    """A stand-in instrument: its own safe state (which can be made to fail, as a board that never acks)."""

    def __init__(self, name: str, fail: bool = False):
        super().__init__(SystemSpec(2, 2, name=name))
        self.fail, self.safe_calls = fail, 0

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def safe_state(self) -> None:
        self.safe_calls += 1
        if self.fail:
            self.report_event("safe_state_failed", after="close", error="no SAFE acknowledgement")
            raise OSError("no SAFE acknowledgement")


def test_an_instrument_left_open_is_put_safe_and_named(capsys, monkeypatch):
    cli = importlib.import_module("physnn.cli.main")

    held = []

    def busy(args):
        held.append(safety.track(_Bench("bench-a")))
        _sigterm()

    monkeypatch.setattr(cli, "_cmd_ls", busy)
    last = _interrupt(capsys, ["ls"])
    assert last == "terminated by SIGTERM: put in its safe state: bench-a"
    assert held[0].closed and held[0].safe_calls == 1


def test_an_instrument_whose_safe_state_failed_is_not_called_safe(capsys, monkeypatch, caplog):
    cli = importlib.import_module("physnn.cli.main")

    held = []

    def busy(args):
        held.append(safety.track(_Bench("bench-b", fail=True)))
        _sigterm()

    monkeypatch.setattr(cli, "_cmd_ls", busy)
    last = _interrupt(capsys, ["ls"])
    assert "safe state NOT confirmed for bench-b: its outputs may still be driven" in last
    assert "put in its safe state" not in last


def test_only_systems_with_their_own_safe_state_count_as_instruments():
    from physnn.core.registry import build_system

    with build_system("identity") as sim:
        assert not safety.drives_hardware(sim)
    with build_system("drifting", base="identity") as wrapped:  # a wrapper counts as what it wraps
        assert not safety.drives_hardware(wrapped)
    bench = _Bench("bench-c")
    assert safety.drives_hardware(bench)
    mark = safety.instrument_mark()
    safety.track(bench)
    assert safety.instruments_since(mark) == [("bench-c", "open")]
    bench.close()
    assert safety.instruments_since(mark) == [("bench-c", "safe")]
