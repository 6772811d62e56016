"""Metric sinks (issue 11.3): a TensorBoard event file and an MLflow run, written by the sinks and by a real run.

Each test that needs an extra skips with the install line when it is missing (CI does not install them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from physnn.core import checks
from physnn.run.config import ConfigError, RunConfig
from physnn.run.sinks import MetricSink, close_sinks, log_to_sinks, make_sinks

HAS_TB = importlib.util.find_spec("tensorboard") is not None
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_tb = pytest.mark.skipif(not HAS_TB, reason="tensorboard not installed (pip install 'physnn[tensorboard]')")
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow not installed (pip install 'physnn[mlflow]')")


def _tb_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _mlflow_metric(store: Path, run_name: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.resolve()}")
    exp = client.get_experiment_by_name("physnn")
    assert exp is not None
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == run_name]
    assert len(runs) == 1, f"expected one MLflow run named {run_name!r}, got {len(runs)}"
    assert runs[0].info.status == "FINISHED"
    return sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, key))


@needs_tb
def test_tensorboard_sink_writes_scalars(tmp_path: Path) -> None:
    (sink,) = make_sinks(["tensorboard"], tmp_path, "run-a", {})
    assert isinstance(sink, MetricSink)
    sink.log_epoch(1, {"loss": 0.5, "loss/block0": 0.25, "val_accuracy": float("nan")})
    sink.log_epoch(2, {"loss": 0.125})
    sink.close()
    assert _tb_scalars(tmp_path / "tensorboard" / "run-a", "loss") == [(1, 0.5), (2, 0.125)]
    assert _tb_scalars(tmp_path / "tensorboard" / "run-a", "loss/block0") == [(1, 0.25)]


@needs_mlflow
def test_mlflow_sink_writes_a_run(tmp_path: Path) -> None:
    (sink,) = make_sinks(["mlflow"], tmp_path, "run-b", {"lr": 0.01, "method": "mfff"})
    log_to_sinks([sink], 1, {"loss": 0.5, "train_queries": 100.0})
    log_to_sinks([sink], 2, {"loss": 0.25})
    close_sinks([sink])
    assert _mlflow_metric(tmp_path / "mlflow.db", "run-b", "loss") == [(1, 0.5), (2, 0.25)]


@needs_mlflow
def test_mlflow_sink_continues_a_resumed_run(tmp_path: Path) -> None:
    """The same run name (a resumed run file) continues one MLflow run instead of making a second one."""
    (first,) = make_sinks(["mlflow"], tmp_path, "run-c", {"epochs": 2})
    first.log_epoch(1, {"loss": 0.5})
    close_sinks([first], "interrupted")
    (again,) = make_sinks(["mlflow"], tmp_path, "run-c", {"epochs": 4})  # extended: a changed param is not refused
    assert again.resumed and again.run_id == first.run_id
    again.log_epoch(2, {"loss": 0.25})
    close_sinks([again])
    assert _mlflow_metric(tmp_path / "mlflow.db", "run-c", "loss") == [(1, 0.5), (2, 0.25)]


@needs_tb
@needs_mlflow
def test_a_run_fills_both_sinks(tmp_path: Path) -> None:
    """The runner opens the sinks beside the run file, logs every epoch and closes them when the run ends."""
    from physnn.run.experiment import run_experiment

    out = tmp_path / "r.h5"
    config = RunConfig(
        system="identity",
        epochs=2,
        blocks=1,
        hidden=8,
        probes=0,
        eval_every=0,
        output=str(out),
        metric_sinks=["tensorboard", "mlflow"],
    )
    result = run_experiment(config, progress=False, echo=lambda _: None)
    losses = [e["loss"] for e in result.history]
    tb = _tb_scalars(tmp_path / "tensorboard" / "r", "loss")
    assert [s for s, _ in tb] == [1, 2]
    assert [v for _, v in tb] == pytest.approx(losses, rel=1e-6)  # event files store float32
    ml = _mlflow_metric(tmp_path / "mlflow.db", "r", "loss")
    assert [s for s, _ in ml] == [1, 2]
    assert [v for _, v in ml] == pytest.approx(losses, rel=1e-12)

    # --resume with more epochs: the same TensorBoard folder and the same MLflow run continue at epoch 3
    more = run_experiment(config.updated(epochs=3), progress=False, echo=lambda _: None, resume=out)
    assert len(more.history) == 3
    assert [s for s, _ in _tb_scalars(tmp_path / "tensorboard" / "r", "loss")] == [1, 2, 3]
    ml = _mlflow_metric(tmp_path / "mlflow.db", "r", "loss")
    assert [s for s, _ in ml] == [1, 2, 3]
    assert ml[2][1] == pytest.approx(more.history[2]["loss"], rel=1e-12)


def test_unknown_sink_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"metric_sinks\[1\].*'tensorboard', 'mlflow'.*'wandb'"):
        RunConfig(metric_sinks=["tensorboard", "wandb"])
    with pytest.raises(ConfigError, match="metric_sinks"):
        RunConfig(metric_sinks="tensorboard")  # type: ignore[arg-type]


def test_make_sinks_refuses_an_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(checks.ParameterError, match=r"metric_sinks\[0\]"):
        make_sinks(["csv"], tmp_path, "x", {})
    assert not any(tmp_path.iterdir())


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ImportError, match=r"pip install 'physnn\[tensorboard\]'"):
        make_sinks(["tensorboard"], tmp_path, "x", {})
    with pytest.raises(ImportError, match=r"pip install 'physnn\[mlflow\]'"):
        make_sinks(["mlflow"], tmp_path, "x", {})


def test_a_failing_sink_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            raise OSError("disk full")

    seen = []

    class Good:
        def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            seen.append((epoch, metrics["loss"]))

        def close(self) -> None:
            seen.append("closed")

    sinks = [Broken(), Good()]
    log_to_sinks(sinks, 3, {"loss": 1.0})
    close_sinks(sinks)
    assert seen == [(3, 1.0), "closed"]
    assert "Broken failed at epoch 3" in caplog.text
