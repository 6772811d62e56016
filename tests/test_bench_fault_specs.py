"""Issue 23, "tracebacks in simulated benches' fault options": every fault spec is checked before the first query.

``faults = [3]``, a fault without its command, an unknown field, a command the instrument never receives: each
is a one-line ParameterError naming the spec, the value and what is allowed, raised before any pty, thread or
instrument exists -- and, through ``physnn train``, a one-line error with exit code 2, never a traceback.
"""

from __future__ import annotations

import pytest

from physnn.cli import main
from physnn.core.checks import ParameterError
from physnn.devices.sim import fake_firmware
from physnn.devices.sim.bench import SCPIBench
from physnn.devices.sim.fake_firmware import simulated_serial_daq
from physnn.devices.sim.scpi_bench import Fault, simulated_awg_scope

pytestmark = pytest.mark.fault("bad input")

SERIAL_BAD = [
    (3, r"faults must be a list of faults, each a fault kind name or a table of fault fields \(kind, command"),
    ("drop", r"faults must be a list of faults.*got 'drop'"),
    (
        [3],
        r"faults\[0\] must be a fault kind name or a table of fault fields \(kind, command, after, count, delay\), got 3",
    ),
    (["drop", "nope"], r"faults\[1\]: fault kind must be one of 'drop', 'late'.*got 'nope'"),
    ([{"kind": "drop", "command": 3}], r"faults\[0\]: fault command must be one of 'IDENT', .*got 3"),
    ([{"kind": "drop", "count": 0}], r"faults\[0\]: fault count must be an integer >= 1, got 0"),
    ([{"kind": "drop", "bogus": 1}], r"faults\[0\] has unknown field\(s\) bogus; allowed: kind, command, after"),
    ([{"command": "SAFE"}], r"faults\[0\] \(\{'command': 'SAFE'\}\) lacks kind"),
]

AWG_BAD = [
    ([3], r"faults\[0\] must be a fault kind name or a table of fault fields \(kind, command, instrument"),
    (["no_reply"], r"faults\[0\] \(\{'kind': 'no_reply'\}\) lacks command \(command: the text of the command"),
    ([{"kind": "no_reply"}], r"faults\[0\] .* lacks command"),
    ([{"kind": "no_reply", "command": 5}], r"faults\[0\]: fault command must be a non-empty string, got 5"),
    ([{"kind": "no_reply", "command": ""}], r"faults\[0\]: fault command must be a non-empty string"),
    (
        [{"kind": "no_reply", "command": "*FROB"}],
        r"faults\[0\]: fault command must start like a command the awg or the scope receives \(.*\*TRG.*\), got '\*FROB'",
    ),
    (
        [{"kind": "no_reply", "command": ":WAV:DATA?", "instrument": "awg"}],
        r"fault command must start like a command the awg receives",
    ),
    ([{"kind": "no_reply", "command": "*TRG", "instrument": "x"}], r"fault instrument must be one of 'awg'"),
    ([{"kind": "no_reply", "command": "*TRG", "times": 0}], r"fault times must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("faults, message", SERIAL_BAD, ids=[repr(f)[:40] for f, _ in SERIAL_BAD])
def test_serial_bench_fault_specs_are_one_line_errors_before_any_pty(faults, message, monkeypatch):
    monkeypatch.setattr(fake_firmware, "FakeFirmware", lambda *a, **k: pytest.fail("a fake board was built"))
    with pytest.raises(ParameterError, match=message) as info:
        simulated_serial_daq(n_inputs=4, backend="identity", faults=faults)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("faults, message", AWG_BAD, ids=[repr(f)[:40] for f, _ in AWG_BAD])
def test_scpi_bench_fault_specs_are_one_line_errors_before_any_instrument(faults, message, monkeypatch):
    from physnn.devices.sim import bench

    monkeypatch.setattr(bench, "build_system", lambda *a, **k: pytest.fail("a system was built"))
    with pytest.raises(ParameterError, match=message) as info:
        simulated_awg_scope(n_inputs=4, faults=faults)
    assert "\n" not in str(info.value)


def test_good_fault_specs_still_arm_and_fire():
    bench = SCPIBench(faults=[{"kind": "no_reply", "command": ":wav:data?"}])
    assert bench.faults == [Fault("no_reply", ":wav:data?")]  # case and a leading colon as the instrument reads them
    assert bench.add_fault({"kind": "late_reply", "command": "SOUR1:VOLT 0.5", "instrument": "awg"}).command
    with pytest.raises(ParameterError, match=r"fault\[0\] .* lacks command"):
        bench.add_fault({"kind": "no_reply"})
    daq = simulated_serial_daq(n_inputs=4, backend="identity", faults=["busy", {"kind": "drop", "after": 1}])
    try:
        assert daq.firmware.pending_faults == 2
    finally:
        daq.close()


@pytest.mark.parametrize(
    "system, option, message",
    [
        ("serial-daq-sim", "faults=[3]", "faults[0] must be a fault kind name or a table of fault fields"),
        ("awg-scope-sim", 'faults=[{kind="no_reply"}]', "lacks command"),
        ("awg-scope-sim", 'faults=[{kind="no_reply",command=5}]', "fault command must be a non-empty string, got 5"),
    ],
)
def test_physnn_train_reports_a_bad_fault_in_one_line_with_exit_2(system, option, message, tmp_path, capsys):
    argv = ["train", "--system", system, "--dataset", "digits", "--epochs", "1", "--output", str(tmp_path)]
    assert main([*argv, "--system-option", option, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and message in err[-1] and "Traceback" not in "\n".join(err), err
    assert not list(tmp_path.glob("*.h5"))  # refused before a run file
