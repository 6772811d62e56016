"""Config files and the command line: clear errors for bad input, the main job end to end."""

import pytest

from physnn import runlog
from physnn.cli import main
from physnn.run.config import ConfigError, RunConfig, load_config


def test_defaults_are_the_main_job():
    c = RunConfig()
    assert (c.dataset, c.system, c.blocks) == ("digits", "optics", 2)


def test_toml_round_trip_and_unknown_key(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('dataset = "vowels"\nepochs = 3\nseed = 7\n[system_options]\nnoise = false\n')
    c = load_config(p)
    # the optics recipe (a 1024-pixel camera) fills what the file does not set; the file's own keys win
    assert (c.dataset, c.epochs, c.seed, c.system_options) == ("vowels", 3, 7, {"n_outputs": 1024, "noise": False})
    assert load_config(p, recipe=False).system_options == {"noise": False}
    p.write_text("epoch = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'epoch'; valid keys: dataset, .*epochs"):
        load_config(p)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("epochs = -2", r"config key epochs must be an integer >= 0, got -2"),
        ('epochs = "ten"', r"config key epochs must be an integer >= 0, got 'ten'"),
        ("lr = 0", r"config key lr must be a positive finite number, got 0"),
        ('dataset = "cifar"', r"config key dataset must be one of 'digits', 'vowels', .*got 'cifar'"),
        ("skip = 1", r"config key skip must be true or false, got 1"),
        ("test_fraction = 1.5", "config key test_fraction must be a finite number > 0 and < 1, got 1.5"),
        ("epochs = [", "not valid TOML"),
    ],
)
def test_bad_config_values(tmp_path, text, pattern):
    p = tmp_path / "bad.toml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError, match=pattern):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*none.toml"):
        load_config(tmp_path / "none.toml")


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["train", "--system", "optix"], "unknown system 'optix'; available systems: .*optics"),
        (["train", "--dataset", "cifar"], "dataset must be one of 'digits'"),
        (["train", "--epochs", "-1"], "config key epochs must be an integer >= 0, got -1"),
        (["train", "--system-option", "bogus=3", "--epochs", "0"], "system 'optics' has no option\\(s\\) 'bogus'"),
        (
            ["train", "--dataset", "vowels", "--data-path", "/nonexistent/v.csv"],
            "vowels data file not found: /nonexistent/v.csv",
        ),
        (["train", "--config", "/nonexistent/run.toml"], "config file not found"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, pattern, capsys, tmp_path):
    rc = main(argv + ["--output", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    import re

    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_cli_systems_lists_specs(capsys):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out
    assert "optics" in out and "identity" in out and "0..1 pi rad" in out


@pytest.mark.slow
def test_cli_train_writes_a_run_file(tmp_path, capsys):
    out = tmp_path / "r.h5"
    rc = main(["train", "--epochs", "2", "--hidden", "32", "--output", str(out), "--no-progress", "--seed", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "test accuracy" in text and "physical queries" in text and out.is_file()
    from physnn import runlog

    run = runlog.load(out)
    assert run.config["seed"] == 1 and len(run.metrics["epoch"]) == 2
    assert run.attrs["status"] == "completed"


@pytest.mark.parametrize("method", ["pat", "zeroth_order", "backprop"])
def test_cli_trains_the_baselines_into_a_run_file(tmp_path, capsys, method):
    out = tmp_path / f"{method}.h5"
    rc = main(["train", "--method", method, "--epochs", "1", "--hidden", "16", "--output", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    from physnn import runlog

    run = runlog.load(out)
    assert run.status == "completed" and run.config["method"] == method
    assert 0.0 <= run.metrics["val_accuracy"][-1] <= 1.0  # scheduled evaluations: the validation split
    assert 0.3 < run.summary["test_accuracy"] <= 1.0  # the test split, once at the end (chance: 0.1)
    assert "test_accuracy" not in run.metrics


def test_unknown_method_and_resume_of_a_finished_baseline(tmp_path, capsys):
    assert main(["train", "--method", "sgd", "--output", str(tmp_path)]) == 2
    assert (
        "config key method must be one of 'mfff', 'local_ce', 'pat', 'zeroth_order', 'backprop'"
        in capsys.readouterr().err
    )
    out = tmp_path / "b.h5"
    assert (
        main(["train", "--method", "backprop", "--epochs", "1", "--hidden", "8", "--output", str(out), "--no-progress"])
        == 0
    )
    before = out.read_bytes()
    capsys.readouterr()
    # a finished run with nothing more to do: nothing is measured and the file is not touched
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert out.read_bytes() == before
    # --epochs extends it; any other flag beside --resume is refused
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    run = runlog.load(out)
    assert list(run.metrics["epoch"]) == [1, 2] and run.status == "completed"
    assert main(["train", "--resume", str(out), "--lr", "0.1"]) == 2
    assert "--resume continues a run with its own configuration" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_runs_started_in_the_same_second_never_collide(tmp_path):
    """A sweep by hand: three runs into one folder at once each get their own run file (method in the name)."""
    import subprocess
    import sys

    args = ["--epochs", "1", "--hidden", "8", "--batch-size", "256", "--no-progress", "--output", str(tmp_path)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "physnn.cli", "train", "--lr", lr, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lr in ("0.01", "0.02", "0.03")
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    files = sorted(tmp_path.glob("*.h5"))
    assert len(files) == 3
    assert all("-mfff-" in f.name for f in files)
    assert sorted(runlog.load(f).config["lr"] for f in files) == [0.01, 0.02, 0.03]


@pytest.mark.slow
def test_continual_mode_keeps_training_after_fit_and_records_its_events(tmp_path):
    """continual_ticks: after fit, a stream of training batches on a drifting device; events in the run file."""
    from physnn.run.experiment import run_experiment

    cfg = RunConfig(
        epochs=1,
        hidden=16,
        batch_size=128,
        output=str(tmp_path / "c.h5"),
        continual_ticks=30,
        system="drifting",
        system_options={"base": "optics", "events": [[3000.0, 2.0]]},
        continual_options={"probe_every": 5, "probes": 8},
        eval_samples=32,  # the bump must land in the stream, not in the first epoch's evaluation
    )
    r = run_experiment(cfg, progress=False, echo=lambda line: None)
    run = runlog.load(r.path)
    kinds = [e["kind"] for e in run.events]
    assert "reference" in kinds and kinds.count("continual_tick") == 6
    assert "drift_detected" in kinds  # block 0's bump at 3,000 of its queries lands during the stream
    assert run.summary["total_queries"] > run.summary["train_queries"] + 30 * 128
    ticks = [e["fields"] for e in run.events if e["kind"] == "continual_tick"]
    assert all(0.0 <= t["val_accuracy"] <= 1.0 for t in ticks)  # accuracy over the stream, on validation
    from physnn.analysis.report import main_report

    files = main_report(r.path, tmp_path / "report")
    assert any(str(f).endswith("continual.png") for f in files)  # accuracy and drift over queries, detections marked
    with pytest.raises(ValueError, match="continual has no option"):
        run_experiment(
            RunConfig(continual_ticks=1, epochs=1, hidden=8, continual_options={"bogus": 1}),
            write_file=False,
            progress=False,
            echo=lambda line: None,
        )
