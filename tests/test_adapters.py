"""Adapters (issue 11.3): PyMeasure and QCoDeS simulated instruments behind a PhysicalSystem.

Uses each library's own simulated instruments (``pymeasure.instruments.fakes``,
``qcodes.instrument_drivers.mock_instruments``); each test skips with the
install line when its library is missing (CI does not install the extras).
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from physnn.core import checks

HAS_PYMEASURE = importlib.util.find_spec("pymeasure") is not None
HAS_QCODES = importlib.util.find_spec("qcodes") is not None
needs_pymeasure = pytest.mark.skipif(
    not HAS_PYMEASURE, reason="pymeasure not installed (pip install 'physnn[pymeasure]')"
)
needs_qcodes = pytest.mark.skipif(not HAS_QCODES, reason="qcodes not installed (pip install 'physnn[qcodes]')")


# ------------------------------------------------------------------ PyMeasure
def _pymeasure_fake():
    """SwissArmyFake plus a second drive and a measured property depending on both.

    ``level`` is a plain property like SwissArmyFake's ``output_voltage``: a ``FakeInstrument.control`` echoes a
    shared write buffer (two writes without a read concatenate), so it cannot stand for a register here.
    """
    from pymeasure.instruments.fakes import SwissArmyFake

    class Bench(SwissArmyFake):
        def __init__(self) -> None:
            super().__init__(wait=0)
            self.writes: list[tuple[str, float]] = []
            self._level = 0.0

        @property
        def level(self) -> float:
            """Control: the second drive level."""
            return self._level

        @level.setter
        def level(self, value: float) -> None:
            self._level = value

        @property
        def power(self) -> float:
            """Measured: a nonlinear function of both drives."""
            return self.output_voltage**2 + 3.0 * self.level

        def __setattr__(self, name: str, value: object) -> None:
            if name in ("output_voltage", "level"):
                self.writes.append((name, float(value)))  # type: ignore[arg-type]
            super().__setattr__(name, value)

    return Bench()


@needs_pymeasure
def test_pymeasure_sets_drives_reads_outputs() -> None:
    from physnn.devices.adapters import PyMeasureSystem

    inst = _pymeasure_fake()
    system = PyMeasureSystem(
        inst,
        drive=["output_voltage", "level"],
        measure=["power", "output_voltage"],
        low=-1.0,
        high=1.0,
        units="V",
        output_units="W",
        safe={"output_voltage": 0.0},
    )
    x = torch.tensor([[0.5, 0.25], [-1.0, 1.0]])
    y = system(x)
    expected = torch.tensor([[0.25 + 0.75, 0.5], [1.0 + 3.0, -1.0]])
    assert torch.allclose(y, expected)
    assert system.stats.samples == 2
    assert system.spec.output_units == "W" and system.spec.n_inputs == 2 and system.spec.n_outputs == 2
    d = system.describe()
    assert d["adapter"] == "pymeasure" and d["safe"] == {"output_voltage": 0.0}


@needs_pymeasure
def test_pymeasure_limits_checked_before_anything_is_set() -> None:
    from physnn.devices.adapters import PyMeasureSystem

    inst = _pymeasure_fake()
    system = PyMeasureSystem(
        inst, drive=["output_voltage", "level"], measure=["power"], low=-1.0, high=1.0, safe={"output_voltage": 0.0}
    )
    inst.writes.clear()
    with pytest.raises(ValueError, match=r"input\[1, 0\] = 1.5 V is above the drive limit high=1"):
        system(torch.tensor([[0.5, 0.5], [1.5, 0.0]]))  # row 0 is fine, but the batch is refused whole
    assert inst.writes == []


@needs_pymeasure
def test_pymeasure_safe_state_on_close_and_after_an_error() -> None:
    from physnn.devices.adapters import PyMeasureSystem

    inst = _pymeasure_fake()
    system = PyMeasureSystem(
        inst,
        drive=["output_voltage"],
        measure=["power"],
        low=-1.0,
        high=1.0,
        safe={"output_voltage": 0.0, "level": 0.0},
    )
    system(torch.tensor([[0.75]]))
    inst.level = 0.5
    assert inst.output_voltage == 0.75
    system.close()
    assert (inst.output_voltage, inst.level) == (0.0, 0.0)
    with pytest.raises(RuntimeError, match="closed"):
        system(torch.tensor([[0.1]]))

    class Flaky(type(inst)):  # the read fails mid-batch: the drive must not stay at 0.625
        @property
        def power(self) -> float:
            raise OSError("instrument stopped answering")

    flaky = Flaky()
    system = PyMeasureSystem(
        flaky, drive=["output_voltage"], measure=["power"], low=-1.0, high=1.0, safe={"output_voltage": 0.0}
    )
    with pytest.raises(OSError, match="stopped answering"):
        system(torch.tensor([[0.625]]))
    assert flaky.writes[-2:] == [("output_voltage", 0.625), ("output_voltage", 0.0)]


@needs_pymeasure
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"drive": ["output_voltag"]}, r"drive 'output_voltag' is not a property of Bench"),
        ({"measure": []}, r"measure must be a non-empty list"),
        (
            {"safe": {"output_voltage": 5.0}},
            r"safe\['output_voltage'\] \(V\) must be a finite number in -1..1, got 5.0",
        ),
        ({"safe": {"nonsense": 0.0}}, r"safe 'nonsense' is not a property"),
        ({"low": float("nan")}, r"low"),
    ],
)
def test_pymeasure_bad_arguments_are_one_line_errors(kwargs: dict, match: str) -> None:
    from physnn.devices.adapters import PyMeasureSystem

    args = {"drive": ["output_voltage"], "measure": ["power"], "low": -1.0, "high": 1.0, "units": "V"} | kwargs
    with pytest.raises(checks.ParameterError, match=match) as err:
        PyMeasureSystem(_pymeasure_fake(), **args)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ QCoDeS
_names = itertools.count()


def _qcodes_bench():
    """A DummyInstrument DAC with two gates and a deterministic QCoDeS Parameter reading them."""
    from qcodes.instrument_drivers.mock_instruments import DummyInstrument
    from qcodes.parameters import Parameter

    dac = DummyInstrument(f"dac{next(_names)}", gates=["ch1", "ch2"])
    out = Parameter("out", get_cmd=lambda: 2.0 * dac.ch1() - dac.ch2(), unit="V")
    return dac, out


@needs_qcodes
def test_qcodes_sets_and_gets_with_units_from_the_parameters() -> None:
    from physnn.devices.adapters import QCoDeSSystem

    dac, out = _qcodes_bench()
    try:
        system = QCoDeSSystem([dac.ch1, dac.ch2], [out, dac.ch1], low=-2.0, high=2.0, safe={"ch1": 0.0, "ch2": 0.0})
        y = system(torch.tensor([[1.0, 0.5], [-2.0, 2.0]]))
        assert torch.allclose(y, torch.tensor([[1.5, 1.0], [-6.0, -2.0]]))
        assert (system.spec.units, system.spec.output_units) == ("V", "V")
        assert system.describe()["drive"] == [dac.ch1.full_name, dac.ch2.full_name]
        system.close()
        assert (dac.ch1(), dac.ch2()) == (0.0, 0.0)
    finally:
        dac.close()


@needs_qcodes
def test_qcodes_limits_checked_before_anything_is_set() -> None:
    from physnn.devices.adapters import QCoDeSSystem

    dac, out = _qcodes_bench()
    try:
        dac.ch1(0.3)
        system = QCoDeSSystem([dac.ch1, dac.ch2], [out], low=0.0, high=1.0)
        with pytest.raises(ValueError, match=r"input\[0, 1\] = -0.5 V is below the drive limit low=0"):
            system(torch.tensor([[0.9, -0.5]]))
        assert dac.ch1() == 0.3  # nothing was set
    finally:
        dac.close()


@needs_qcodes
def test_qcodes_safe_state_after_a_failed_read() -> None:
    from qcodes.parameters import Parameter

    from physnn.devices.adapters import QCoDeSSystem

    dac, _ = _qcodes_bench()

    def fail() -> float:
        raise TimeoutError("VISA timeout")

    try:
        system = QCoDeSSystem(
            [dac.ch1], [Parameter("broken", get_cmd=fail, unit="A")], low=-1.0, high=1.0, safe={dac.ch1.full_name: 0.0}
        )
        with pytest.raises(TimeoutError):
            system(torch.tensor([[0.8]]))
        assert dac.ch1() == 0.0
        assert system.spec.output_units == "A"
    finally:
        dac.close()


@needs_qcodes
def test_qcodes_bad_arguments_are_one_line_errors() -> None:
    from qcodes.parameters import Parameter

    from physnn.devices.adapters import QCoDeSSystem

    dac, out = _qcodes_bench()
    try:
        with pytest.raises(checks.ParameterError, match=r"safe key 'ch3' is not one of set_params"):
            QCoDeSSystem([dac.ch1], [out], low=-1.0, high=1.0, safe={"ch3": 0.0})
        with pytest.raises(checks.ParameterError, match=r"get_params\[0\] must be a QCoDeS parameter, got float"):
            QCoDeSSystem([dac.ch1], [1.0], low=-1.0, high=1.0)
        read_only = Parameter("ro", get_cmd=lambda: 1.0, set_cmd=False)
        with pytest.raises(checks.ParameterError, match=r"set_params\[0\] 'ro' is not settable"):
            QCoDeSSystem([read_only], [out], low=-1.0, high=1.0)
        amps = Parameter("amps", get_cmd=lambda: 1.0, unit="A")
        with pytest.raises(checks.ParameterError, match=r"output_units: the parameters have different units"):
            QCoDeSSystem([dac.ch1], [out, amps], low=-1.0, high=1.0)
    finally:
        dac.close()


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from physnn.devices.adapters import PyMeasureSystem, QCoDeSSystem

    monkeypatch.setitem(sys.modules, "pymeasure", None)
    monkeypatch.setitem(sys.modules, "qcodes", None)
    monkeypatch.setitem(sys.modules, "qcodes.parameters", None)
    with pytest.raises(ImportError, match=r"pip install 'physnn\[pymeasure\]'"):
        PyMeasureSystem(object(), ["a"], ["b"], 0.0, 1.0)
    with pytest.raises(ImportError, match=r"pip install 'physnn\[qcodes\]'"):
        QCoDeSSystem([], [], 0.0, 1.0)


@needs_pymeasure
@needs_qcodes
def test_docs_snippets_run() -> None:
    """docs/adapters.md's two examples run as written (and their asserts hold)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "adapters.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    for i, code in enumerate(blocks):
        scope: dict = {}
        exec(compile(code, f"docs/adapters.md[{i}]", "exec"), scope)  # noqa: S102 - our own documentation
        system = scope["system"]
        assert system.closed
        assert system.stats.samples == scope["y"].shape[0]
    assert torch.equal(scope["y"], torch.tensor([[1.5]]))
