"""Shared fixtures and the hardware options.

Hardware tests run only when a real address is given:
    pytest --visa-address "TCPIP0::192.168.1.5::INSTR" --serial-port /dev/ttyACM0
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One intra-op thread: the suite's tensors are small, so threads buy nothing and (on a shared or
# 2-core machine) cost a lot; it also sidesteps a oneMKL bug in multi-threaded batched solves of
# order >= 151 on CPU (pytorch/pytorch#142815). Simulators guard against that bug themselves too.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--visa-address", default=None, help="VISA resource of a real AWG/scope bench")
    parser.addoption("--scope-address", default=None, help="VISA resource of the real oscilloscope")
    parser.addoption("--serial-port", default=None, help="serial port of a real DAQ bench")


@pytest.fixture
def visa_address(request: pytest.FixtureRequest) -> str:
    addr = request.config.getoption("--visa-address")
    if not addr:
        pytest.skip("hardware test: give --visa-address to run it on a real bench")
    return addr


@pytest.fixture
def serial_port(request: pytest.FixtureRequest) -> str:
    port = request.config.getoption("--serial-port")
    if not port:
        pytest.skip("hardware test: give --serial-port to run it on a real bench")
    return port


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The measured data shipped inside the package (``physnn/data/measured``: vowels.csv, acoustic_x.csv.gz,
    acoustic_y.csv.gz); it is always there, so no test skips for missing data and none reads ../shared."""
    from physnn.data.files import packaged_data_dir

    folder = packaged_data_dir()
    assert (folder / "vowels.csv").is_file(), f"the package's measured data are missing from {folder}"
    return folder
