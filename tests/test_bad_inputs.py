"""Every user error at the CLI ends in one line on stderr naming the value and what is allowed, exit code 2.

A table of bad inputs is walked through ``physnn.cli.main([...])`` in this process (fast: each one fails
before any training); disk full runs in a child process on a small tmpfs, where the machine allows it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physnn import runlog
from physnn.cli import main

pytestmark = pytest.mark.fault("bad input")

HEADER = "speaker,vowel,label," + ",".join(f"{f}_{t}" for t in ("steady", "20", "50", "80") for f in ("F1", "F2", "F3"))


def _row(speaker: str, label: int) -> str:
    return f"{speaker},v{label},{label}," + ",".join(["600"] * 12)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bad files the table refers to as ``{name}``."""
    d = tmp_path_factory.mktemp("bad-inputs")
    f = {
        "dir": d,
        "existing_h5": d / "existing.h5",
        "afile": d / "afile.txt",
        "bad_toml": d / "bad.toml",
        "unknown_toml": d / "unknown.toml",
        "typed_toml": d / "typed.toml",
        "binary_toml": d / "binary.toml",
        "not_a_run": d / "not-a-run.h5",
        "short_csv": d / "short.csv",
        "binary_csv": d / "binary.csv",
        "tiny_csv": d / "tiny.csv",
        "label_scale_toml": d / "label_scale.toml",
        "digital_continual_toml": d / "digital_continual.toml",
        "continual_typo_toml": d / "continual_typo.toml",
        "missing": d / "missing",
    }
    f["existing_h5"].write_bytes(b"an earlier run")
    f["afile"].write_text("hello")
    f["bad_toml"].write_text("epochs = = 3\n")
    f["unknown_toml"].write_text("epoch = 3\n")
    f["typed_toml"].write_text('epochs = "ten"\n')
    f["binary_toml"].write_bytes(bytes(range(256)))
    f["not_a_run"].write_bytes(bytes(range(256)) * 4)
    f["short_csv"].write_text("\n".join([HEADER, _row("w01", 0), _row("w02", 0), "w03,ae,0,600"]) + "\n")
    f["binary_csv"].write_bytes(bytes(range(256)) * 4)
    f["tiny_csv"].write_text("\n".join([HEADER, _row("w01", 0), _row("w02", 1)]) + "\n")  # one sample per class
    f["label_scale_toml"].write_text("label_scale = -1\n")
    f["digital_continual_toml"].write_text('method = "digital"\ncontinual_ticks = 20\n')
    f["continual_typo_toml"].write_text("continual_ticks = 0\n[continual_options]\nprobe_evry = 5\n")
    return f


T = ["train", "--no-progress", "--epochs", "1"]
FAULT = 'faults=[{kind="no_reply", command="*OPC?", times=1000}]'
VOWELS = ["--dataset", "vowels", "--data-path"]

#: (id, argv with {file} placeholders, regex the one error line must match)
CASES: list[tuple[str, list[str], str]] = [
    # the command line itself
    ("not-an-int", ["train", "--epochs", "abc"], r"argument --epochs: invalid int value: 'abc'"),
    ("not-a-float", ["train", "--lr", "fast"], r"argument --lr: invalid float value: 'fast'"),
    ("unknown-flag", ["train", "--epochz", "3"], r"unrecognized arguments: --epochz 3"),
    ("unknown-command", ["frobnicate"], r"invalid choice: 'frobnicate' \(choose from .*train"),
    ("no-command", [], r"the following arguments are required: command"),
    # training keys
    ("epochs<0", [*T, "--epochs", "-1"], r"epochs.* -1"),
    ("seed-2**70", [*T, "--seed", str(2**70)], r"seed.*1180591620717411303424"),
    ("seed<0", [*T, "--seed", "-1"], r"seed.* -1"),
    ("lr-nan", [*T, "--lr", "nan"], r"lr.*nan"),
    ("lr-inf", [*T, "--lr", "inf"], r"lr.*inf"),
    ("lr-0", [*T, "--lr", "0"], r"lr.*\b0"),
    ("batch-0", [*T, "--batch-size", "0"], r"batch_size.*\b0"),
    ("blocks-0", [*T, "--blocks", "0"], r"blocks.*\b0"),
    ("blocks-65", [*T, "--blocks", "65"], r"blocks.*65"),
    ("hidden-0", [*T, "--hidden", "0"], r"hidden.*\b0"),
    ("theta<0", [*T, "--theta", "-1"], r"theta.*-1"),
    ("inner-0", [*T, "--inner-steps", "0"], r"inner_steps.*\b0"),
    ("threads<0", [*T, "--threads", "-1"], r"threads.*-1"),
    ("dataset", [*T, "--dataset", "cifar"], r"(?=.*dataset)(?=.*'cifar')(?=.*digits)"),
    ("method", [*T, "--method", "sgd"], r"(?=.*method)(?=.*'sgd')(?=.*mfff)"),
    ("encoder", [*T, "--encoder", "zscore"], r"(?=.*encoder)(?=.*'zscore')(?=.*minmax)"),
    ("goodness", [*T, "--goodness", "energy"], r"(?=.*goodness)(?=.*'energy')(?=.*cosine)"),
    ("system", [*T, "--system", "optix"], r"unknown system 'optix'; available systems: .*optics"),
    ("device-banana", [*T, "--device", "banana"], r"(?=.*device)(?=.*'banana')(?=.*cpu)"),
    # system options, typed by the factory's signature
    (
        "noise=False",
        [*T, "--system-option", "noise=False"],
        r"system 'optics' option noise must be true or false, got 'False'",
    ),
    ("noise=maybe", [*T, "--system-option", "noise=maybe"], r"option noise must be true or false, got 'maybe'"),
    ("noise={a=1}", [*T, "--system-option", "noise={a=1}"], r"option noise must be true or false, got \{'a': 1\}"),
    (
        "n_outputs=12.7",
        [*T, "--system-option", "n_outputs=12.7"],
        r"option n_outputs must be an integer or none, got 12.7",
    ),
    (
        "bogus-option",
        [*T, "--system-option", "bogus=3"],
        r"system 'optics' has no option\(s\) 'bogus'; its options are: ",
    ),
    ("option-no-value", [*T, "--system-option", "noise"], r"--system-option needs KEY=VALUE, got 'noise'"),
    ("option-seed", [*T, "--system-option", "seed=3"], r"seed"),
    ("option-n_inputs", [*T, "--system-option", "n_inputs=3"], r"n_inputs"),
    (
        "neuromorphic-noise",
        [*T, "--system", "neuromorphic", "--system-option", "noise=true"],
        r"system 'neuromorphic' option noise must be a number, got True",
    ),
    ("twin-too-wide", [*T, "--system", "acoustic-twin", "--dataset", "digits"], r"the acoustic twin has 20 inputs"),
    # config files
    ("config-missing", ["train", "--config", "{missing}.toml"], r"config file not found: .*missing.toml"),
    ("config-bad-toml", ["train", "--config", "{bad_toml}"], r"bad.toml: not valid TOML"),
    ("config-binary", ["train", "--config", "{binary_toml}"], r"binary.toml: not valid TOML"),
    ("config-unknown-key", ["train", "--config", "{unknown_toml}"], r"unknown.toml: unknown key\(s\) 'epoch'"),
    ("config-typed", ["train", "--config", "{typed_toml}"], r"typed.toml: .*epochs.*'ten'"),
    # data
    ("csv-missing", [*T, *VOWELS, "{missing}.csv"], r"vowels data file not found: .*missing.csv"),
    ("csv-short-row", [*T, *VOWELS, "{short_csv}"], r"short.csv: line 4 has 4 field\(s\), the header has 15"),
    ("csv-binary", [*T, *VOWELS, "{binary_csv}"], r"binary.csv: not a text CSV file \(byte 0x80 at offset 128"),
    (
        "csv-empty-test-split",
        [*T, *VOWELS, "{tiny_csv}"],
        r"tiny.csv: (the test split is empty|line 2 .* occurs on 1 row\(s\) only)",
    ),
    ("mnist-no-path", [*T, "--dataset", "mnist-idx"], r"dataset 'mnist-idx' needs data_path"),
    (
        "mnist-file-as-folder",
        [*T, "--dataset", "mnist-idx", "--data-path", "{afile}"],
        r"MNIST folder not found: .*afile",
    ),
    # the run file
    # combinations of keys, refused before anything is opened (physnn/run/preflight.py)
    (
        "stop-val-on-test-split",
        [*T, "--stop-on", "val", "--val-fraction", "0", "--epochs", "20"],
        r"stop_on = 'val' with val_fraction = 0 would choose when to stop on the test split",
    ),
    (
        "budget-below-one-epoch",
        [*T, "--query-budget", "1"],
        r"query_budget = 1 is below one epoch's learning queries \(\d+ for method 'mfff'",
    ),
    ("label-scale<0", ["train", "--config", "{label_scale_toml}"], r"label_scale .* positive finite number, got -1"),
    (
        "digital-continual",
        ["train", "--config", "{digital_continual_toml}"],
        r"continual_ticks = 20 with method = 'digital'",
    ),
    (
        "continual-option-typo",
        ["train", "--config", "{continual_typo_toml}"],
        r"continual_options: continual has no option\(s\) 'probe_evry'",
    ),
    ("output-not-h5", [*T, "--output", "{dir}/run.txt"], r"output '.*run.txt' ends in '.txt': give a run file"),
    (
        "data-path-unused",
        [*T, "--data-path", "{short_csv}"],
        r"data_path '.*short.csv' is not used by dataset 'digits'",
    ),
    ("output-exists", [*T, "--output", "{existing_h5}"], r"existing.h5.* already exists"),
    ("output-under-a-file", [*T, "--output", "{afile}/run.h5"], r"afile.txt"),
    ("output-file-as-folder", [*T, "--output", "{afile}"], r"afile.txt"),
    ("resume-missing", ["train", "--resume", "{missing}.h5"], r"run file .*missing.h5' does not exist"),
    ("resume-not-a-run", ["train", "--resume", "{not_a_run}"], r"not-a-run.h5' is not an HDF5 file"),
    ("resume-with-flags", ["train", "--resume", "{not_a_run}", "--epochs", "3"], r"--resume|not an HDF5 file"),
    ("ls-a-file", ["ls", "{afile}"], r"afile.txt.* not a folder"),
    ("ls-missing", ["ls", "{missing}"], r"folder .*missing' does not exist"),
    ("report-missing", ["report", "{missing}.h5"], r"run file .*missing.h5' does not exist"),
    ("report-not-a-run", ["report", "{not_a_run}"], r"not-a-run.h5' is not an HDF5 file"),
    ("compare-not-a-run", ["compare", "{not_a_run}"], r"not-a-run.h5' is not an HDF5 file"),
    # an instrument fault that outlives every retry, under `physnn train`
    (
        "persistent-instrument-fault",
        [
            *T,
            "--system",
            "awg-scope-sim",
            "--system-option",
            FAULT,
            "--system-option",
            "timeout=0.05",
            "--hidden",
            "8",
            "--blocks",
            "1",
        ],
        r"InstrumentTimeout.*acquisition not complete",
    ),
]

if not torch.cuda.is_available():
    CASES += [
        ("device-cuda-on-cpu-build", [*T, "--device", "cuda"], r"device.*'cuda'.*CUDA"),
        ("device-cuda:1-on-cpu-build", [*T, "--device", "cuda:1"], r"device.*'cuda:1'.*CUDA"),
    ]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse exits itself
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case, argv, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, argv, pattern, files, capsys, monkeypatch, shared_data):
    monkeypatch.chdir(files["dir"])  # a default runs/ folder lands in the temporary folder
    for key, path in files.items():
        argv = [a.replace("{" + key + "}", str(path)) for a in argv]
    if case == "persistent-instrument-fault":
        argv += [*VOWELS, str(shared_data / "vowels.csv"), "--output", str(files["dir"] / "fault.h5")]
    rc, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert not re.search(r"[A-Za-z_]\w*\.[A-Za-z_]\w*\(", lines[0]), lines[0]  # no Python call to make at the CLI


def test_the_table_has_at_least_40_bad_inputs():
    assert len(CASES) >= 40


def test_typed_system_options_agree_in_the_config_and_the_systems_description(tmp_path, capsys):
    """noise=false (a TOML boolean) reaches the system as False and both records in the run file say so."""
    out = tmp_path / "run.h5"
    rc = main(
        [
            "train",
            "--no-progress",
            "--epochs",
            "0",
            "--blocks",
            "1",
            "--system-option",
            "noise=false",
            "--output",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    run = runlog.load(out)
    assert run.config["system_options"]["noise"] is False
    assert run.systems["block0"]["noise"] is False


@pytest.mark.fault("disk full")
def test_disk_full_ends_in_one_line_and_a_readable_run_file(tmp_path):
    """A run whose file system fills up: one line on stderr, exit 2, and the file keeps what was written."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (disk full is simulated on one)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    # the main job's run file is ~0.9 MB at the start and grows ~0.85 MB per epoch: full during epoch 2 or 3
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "physnn.cli",
                "train",
                "--no-progress",
                "--epochs",
                "30",
                "--system-option",
                "n_outputs=128",  # the run file's size per epoch this test's tmpfs is sized for
                "--output",
                str(mnt / "run.h5"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])  # was -11: SIGSEGV in HDF5's exit
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        # the last line is the error (a RuntimeWarning of the run file's failed close may come before it)
        assert re.fullmatch(
            r"physnn train: error: No space left on device writing .*run.h5; free some space or "
            r"give an --output on another disk \(the run file keeps every epoch written before\)",
            err_lines[-1],
        ), proc.stderr[-3000:]
        run = runlog.load(mnt / "run.h5")  # readable, with an honest status
        assert run.status in ("failed", "aborted")
        # every epoch the console announced (it prints an epoch once it is on disk) is in the file
        announced = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
        # (the disk may fill after an epoch's metrics are written and before it is announced: one more at most)
        stored = run.metrics["epoch"].tolist()
        assert len(announced) >= 1 and stored[: len(announced)] == list(range(1, len(announced) + 1))
        assert len(stored) - len(announced) in (0, 1)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
