"""Metric sinks: the per-epoch metrics of a run, also sent to TensorBoard or MLflow.

Why: the HDF5 run file is the record of a run, but a lab already watches its
other experiments in TensorBoard or an MLflow server; a sink puts the PNN's
curves next to them without a converter. Sinks are optional extras -- the
libraries are imported only when a sink is made, and a missing one is a
one-line error that names the extra to install. A sink only receives numbers
the run has already written to its file, so a sink that fails never costs a
measurement (the runner logs the failure and carries on).

Selected by the config key ``metric_sinks = ["tensorboard", "mlflow"]``; both
write next to the run file: ``<folder>/tensorboard/<run name>/`` (an event file)
and ``<folder>/mlflow.db`` (an MLflow SQLite store, experiment ``physnn``;
``mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`` shows it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from physnn.core import checks

__all__ = [
    "MetricSink",
    "TensorBoardSink",
    "MLflowSink",
    "make_sinks",
    "close_sinks",
    "log_to_sinks",
    "run_status",
    "SINKS",
]

log = logging.getLogger(__name__)

#: Names the config key ``metric_sinks`` accepts.
SINKS = ("tensorboard", "mlflow")


@runtime_checkable
class MetricSink(Protocol):
    """Anything that takes one epoch's metrics at a time and can be closed."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among ``metrics`` (a NaN "not measured this epoch" is left out, not plotted as a gap)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        v = float(value)
        if math.isfinite(v):
            out[key] = v
    return out


class TensorBoardSink:
    """Scalars in a TensorBoard event file under ``log_dir`` (``torch.utils.tensorboard.SummaryWriter``).

    Metric names keep their slashes (``loss/block0``), which TensorBoard shows
    as groups. The x axis is the epoch number as the run file counts it (1 = the
    first finished epoch).
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "metric sink 'tensorboard' needs the tensorboard package: pip install 'physnn[tensorboard]'"
            ) from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        checks.integer("epoch", epoch, low=0)
        for key, value in _scalars(metrics).items():
            self._writer.add_scalar(key, value, global_step=epoch)
        self._writer.flush()  # an epoch is minutes of bench time: visible now, not when the run ends

    def close(self) -> None:
        self._writer.close()


class MLflowSink:
    """One MLflow run per physnn run, its metrics stepped by epoch.

    ``tracking_uri`` is any MLflow tracking URI; the runner uses a local SQLite
    store (``sqlite:///<folder>/mlflow.db``: MLflow 3 refuses new ``file:``
    stores) so nothing leaves the machine unless a lab points it at its server.
    The config is logged as parameters so runs can be compared by their keys in
    the MLflow UI. A client (not ``mlflow.start_run``) is used so that the sink
    never touches MLflow's global "active run".

    A resumed physnn run continues its MLflow run: an existing run of that name
    in the experiment is reused (run file names are unique, so the name is the
    run's identity), its parameters are kept as first logged (MLflow parameters
    are immutable; the run file records the config of each segment) and its
    metric curves continue at the resumed epochs.
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any] | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImportError("metric sink 'mlflow' needs the mlflow package: pip install 'physnn[mlflow]'") from None
        checks.string("tracking_uri", tracking_uri, empty=False)
        checks.string("experiment", experiment, empty=False)
        checks.string("run_name", run_name, empty=False)
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else self._client.create_experiment(experiment)
        safe_name = run_name.replace("'", "")
        old = self._client.search_runs([exp_id], filter_string=f"tags.mlflow.runName = '{safe_name}'", max_results=1)
        self.resumed = bool(old) and old[0].info.run_name == run_name
        if self.resumed:
            self.run_id: str = old[0].info.run_id
            self._client.update_run(self.run_id, status="RUNNING")
            params = {}
        else:
            self.run_id = self._client.create_run(exp_id, run_name=run_name).info.run_id
        self._closed = False
        for key, value in sorted((params or {}).items()):
            # MLflow parameters are short strings; long values (options tables) are cut, not refused
            self._client.log_param(self.run_id, key, str(value)[:500])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        checks.integer("epoch", epoch, low=0)
        for key, value in _scalars(metrics).items():
            self._client.log_metric(self.run_id, key, value, step=epoch)

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            self._closed = True
            self._client.set_terminated(self.run_id, status=status)


def make_sinks(names: list[str], folder: Path, run_name: str, config: dict[str, Any]) -> list[MetricSink]:
    """The sinks ``names`` asks for, writing beside the run file in ``folder``; a bad name is a one-line error.

    If one sink cannot be made (its extra missing), the ones already made are
    closed before the error propagates, so no event file or MLflow run is left open.
    """
    sinks: list[MetricSink] = []
    folder = Path(folder)
    try:
        for i, name in enumerate(names):
            checks.choice(f"metric_sinks[{i}]", name, SINKS)
            if name == "tensorboard":
                sinks.append(TensorBoardSink(folder / "tensorboard" / run_name))
            else:
                uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
                sinks.append(MLflowSink(uri, "physnn", run_name, params=config))
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def run_status(exc_type: type[BaseException] | None) -> str:
    """How a run ended, from the exception type leaving it (None: it completed)."""
    if exc_type is None:
        return "completed"
    return "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"


def close_sinks(sinks: list[MetricSink], status: str = "completed") -> None:
    """Close every sink; a failure is logged, never raised (the run file is the record, not the sink).

    ``status`` is how the run ended (``completed``, ``interrupted``, ``failed``); an MLflow run is marked
    FINISHED, KILLED or FAILED accordingly, so a crashed bench run does not look finished in the MLflow UI.
    """
    mlflow_status = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
    for sink in sinks:
        try:
            if isinstance(sink, MLflowSink):
                sink.close(status=mlflow_status)
            else:
                sink.close()
        except Exception:  # noqa: BLE001 - a dashboard must not fail a finished run
            log.warning("metric sink %s could not be closed", type(sink).__name__, exc_info=True)


def log_to_sinks(sinks: list[MetricSink], epoch: int, metrics: dict[str, float]) -> None:
    """Send one epoch to every sink; a failure is logged, never raised (the epoch is already in the run file)."""
    for sink in sinks:
        try:
            sink.log_epoch(epoch, metrics)
        except Exception:  # noqa: BLE001 - a dashboard must not stop a bench run
            log.warning("metric sink %s failed at epoch %d", type(sink).__name__, epoch, exc_info=True)
