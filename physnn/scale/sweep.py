"""Sweeps over hyperparameters, seeds and benches on a Ray cluster: ``physnn sweep``.

Every trial is an ordinary run: ``run_experiment`` on the base config with the
trial's values, writing its own run file into the sweep folder, so
``physnn ls SWEEP_DIR`` and ``physnn compare SWEEP_DIR/*.h5`` summarise it and
``physnn report`` works on any trial.

Why plain Ray tasks and not Ray Tune: a grid of seeds x values needs no
search algorithm or early-stopping scheduler, and physnn runs already
checkpoint into self-describing run files and resume from them; Tune would add
a second checkpoint and result store beside them, and its per-trial resources
would place the trial *on* the bench node holding the bench resource, which the
bench's own actor (placed by that resource, see :mod:`physnn.scale.remote`) then
could not get. With plain tasks the sweep is a short loop whose scheduling
rules can be read here:

* **Benches.** With ``benches``, trial ``i`` drives ``benches[i % n]`` through
  ``system = "remote"``; the driver keeps at most one trial per bench in
  flight, and the bench's actor holds the bench's whole Ray resource, so two
  trials never drive one bench at once even with several drivers.
* **CPUs.** Each trial is a Ray task with ``cpus_per_trial`` CPUs (default 1;
  runs are single-threaded), so simulator-only sweeps use every CPU of the
  cluster.
* **Dying trials.** A trial whose worker dies (or whose bench actor is lost)
  is retried by Ray and resumes from its run file's last checkpoint; running
  the same sweep again skips completed trials and resumes the others.

``sweep.json`` in the folder records every trial: its values, bench, run file,
status (``completed``, ``skipped`` -- completed by an earlier run of the sweep --
or ``failed``), node and start/end times, and the counts of each status.

Every argument is checked before any cluster starts (a one-line error naming
the value and the limit), a grid of more than :data:`MAX_TRIALS` trials is
refused before it is expanded, and a private cluster started by the sweep is
stopped when the sweep ends, however it ends.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from physnn.core import checks
from physnn.run.config import ConfigError, RunConfig

__all__ = ["Trial", "SweepResult", "MAX_TRIALS", "parse_grid", "parse_seeds", "plan", "run_sweep", "summarise"]

logger = logging.getLogger(__name__)

#: Keys a grid may not vary: they define where the trial's file goes and what it is.
_FIXED_KEYS = ("output", "seed", "system_options")
#: The most trials one sweep may have. Why a limit: every trial writes a run file and costs a run, so a grid
#: past this is a typo (``--seeds 0-9999999``) more often than a plan; split a real one into several sweeps.
MAX_TRIALS = 10_000
#: Trial statuses that are not failures.
_DONE = ("completed", "skipped")


@dataclass
class Trial:
    """One run of the sweep: the values it overrides, the bench it drives and its run file."""

    index: int
    values: dict[str, Any]
    seed: int
    bench: str | None
    path: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem


@dataclass
class SweepResult:
    folder: Path
    trials: list[Trial]
    wall_seconds: float

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.record.get("status") not in _DONE]

    @property
    def counts(self) -> dict[str, int]:
        """Trials by outcome: ``completed`` (run now), ``skipped`` (completed before), ``failed``."""
        return _counts(self.trials)


def _counts(trials: Sequence[Trial]) -> dict[str, int]:
    out = {"completed": 0, "skipped": 0, "failed": 0, "pending": 0}
    for t in trials:
        status = t.record.get("status")
        out[status if status in _DONE else "pending" if status is None else "failed"] += 1
    return out


# ----------------------------------------------------------------- parsing
def _parse_value(text: str) -> Any:
    from physnn.run.config import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["lr=0.003,0.01", "hidden=50,100"]`` -> ``{"lr": [0.003, 0.01], "hidden": [50, 100]}``.

    Keys must be config keys (``seed`` has its own flag); values are read as TOML.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid needs KEY=V1,V2,..., got {item!r}")
        key, values = (s.strip() for s in item.split("=", 1))
        if key not in RunConfig.keys():
            raise ConfigError(f"--grid key {key!r} is not a config key; valid keys: {', '.join(RunConfig.keys())}")
        if key in _FIXED_KEYS:
            raise ConfigError(f"--grid key {key!r} cannot be swept here (seeds: --seeds; benches: --benches)")
        if key in grid:
            raise ConfigError(f"--grid key {key!r} given twice")
        parsed = [_parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError(f"--grid {key} has no values, got {item!r}")
        grid[key] = parsed
    return grid


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7"`` -> ``[0, 3, 7]``; at most :data:`MAX_TRIALS` seeds."""
    ranges: list[range] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                ranges.append(range(lo, hi + 1))
            else:
                ranges.append(range(int(part), int(part) + 1))
        except ValueError:
            raise ConfigError(f"--seeds must be like 0-4 or 0,3,7 (integers >= 0), got {text!r}") from None
    n = sum(len(r) for r in ranges)  # counted before a single seed is listed
    if n > MAX_TRIALS:
        raise ConfigError(
            f"--seeds {text} gives {n} seeds, above the {MAX_TRIALS} trials a sweep may have; split it into "
            f"several sweeps"
        )
    seeds = [s for r in ranges for s in r]
    for s in seeds:
        checks.integer("seed", s, low=0)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed, got {text!r}")
    return seeds


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).replace("/", "_").replace(" ", "")


def plan(
    config: RunConfig,
    grid: dict[str, list[Any]],
    seeds: Sequence[int],
    benches: Sequence[str],
    folder: str | os.PathLike,
) -> list[tuple[Trial, RunConfig]]:
    """Every trial and its full config, checked now so that a bad value fails before anything runs.

    The size of the grid is checked before it is expanded (at most :data:`MAX_TRIALS` trials), and each
    combination of values is checked once, whole (:func:`physnn.run.preflight.check_config`: keys, system
    and method options, their combinations); the seeds, files and benches that vary within it are checked
    by themselves.
    """
    from physnn.run import preflight

    folder = Path(folder)
    keys = list(grid)
    n = math.prod(len(grid[k]) for k in keys) * len(seeds)
    if n > MAX_TRIALS:
        sizes = " x ".join([*(f"{len(grid[k])} {k}" for k in keys), f"{len(seeds)} seeds"])
        raise ConfigError(
            f"the sweep has {n} trials ({sizes}), above the {MAX_TRIALS} a sweep may have; split it into several sweeps"
        )
    width = max(3, len(str(max(n - 1, 0))))
    trials = []
    for c, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        tag = "-".join(f"{k}{_fmt(v)}" for k, v in values.items())
        checked: RunConfig | None = None
        for s, seed in enumerate(seeds):
            i = c * len(seeds) + s
            bench = benches[i % len(benches)] if benches else None
            path = folder / f"trial{i:0{width}d}-{tag + '-' if tag else ''}s{seed}.h5"
            where = _bench_overrides(config, bench)
            if checked is None:  # the combination, whole, once: what varies below is checked by itself
                try:
                    checked = config.updated(**values, **where, seed=seed, output=str(path))
                    preflight.check_config(checked)
                except ConfigError as exc:
                    raise ConfigError(f"trial {i} ({values}, seed {seed}): {exc}") from None
            cfg = copy.copy(checked)  # 10^4 validated copies would take seconds; seed, file and bench are checked
            cfg.seed, cfg.output = checks.integer("seed", seed, low=0), str(path)
            if bench is not None:
                cfg.system_options = dict(where["system_options"])
            trials.append((Trial(i, values, seed, bench, str(path)), cfg))
    return trials


def _bench_overrides(config: RunConfig, bench: str | None) -> dict[str, Any]:
    """The config keys that send a trial to ``bench`` through ``system = "remote"`` (none without a bench)."""
    if bench is None:
        return {}
    if config.system == "remote":
        return {"system_options": dict(config.system_options, resource=bench)}
    return {
        "system": "remote",
        "system_options": {"name": config.system, "options": dict(config.system_options), "resource": bench},
    }


# ------------------------------------------------------------------ a trial
def run_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume, or skip if completed) one trial; return its record. Runs in a Ray worker."""
    from physnn import runlog
    from physnn.run.experiment import resume_config, run_experiment

    cfg = RunConfig.from_dict(config, source="sweep trial")
    path = Path(cfg.output)
    record: dict[str, Any] = {"path": str(path), "pid": os.getpid(), "resumed": False}
    try:
        import ray

        record["node_id"] = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:  # pragma: no cover - trials run in Ray workers
        record["node_id"] = None
    resume = None
    if path.exists():
        try:
            run = runlog.load(path)
            status, checkpoints = run.status, run.checkpoints
        except runlog.RunFileError as exc:
            status, checkpoints = f"unreadable: {exc}", []
        stored = None
        if checkpoints or status == "completed":
            try:
                stored = resume_config(path)  # as written, for the epochs it was last asked for
            except ConfigError as exc:
                raise ConfigError(
                    f"{path}: left by an earlier sweep, with a config this physnn refuses ({exc})"
                ) from None
            _check_same_config(path, stored, cfg)
        if status == "completed" and stored is not None and stored.epochs >= cfg.epochs:
            # done by an earlier run of the sweep: reported and counted as skipped, never as run now
            k = run.key_numbers()
            return dict(
                record,
                status="skipped",
                skipped=True,
                test_accuracy=k["test_accuracy"],
                start=float(run.attrs.get("start_time_unix", 0.0)),
                end=float(run.attrs.get("start_time_unix", 0.0)),
            )
        if checkpoints:
            resume = path
            record["resumed"] = True
        else:  # nothing to resume from: keep the evidence, start again
            path.rename(path.with_name(f"{path.name}.abandoned-{int(time.time())}"))
    record["start"] = time.time()
    result = run_experiment(
        cfg, write_file=True, progress=False, resume=resume, echo=lambda line: logger.info("%s: %s", path.stem, line)
    )
    record["end"] = time.time()
    record.update(
        status=result.status,
        test_accuracy=result.test_accuracy,
        train_queries=result.train_queries,
        wall_seconds=result.wall_seconds,
    )
    return record


def _check_same_config(path: Path, stored: RunConfig, cfg: RunConfig) -> None:
    """A trial's run file left by an earlier sweep is skipped or resumed only if that sweep ran the same config.

    Why: trial files are named by index, values and seed, so a rerun into the same folder with another base
    config (say, another learning rate) would otherwise report the old results as this sweep's. More epochs
    than the file has extend it (as ``--resume --epochs`` does); fewer are refused. The file is left as it is.
    """
    old, new = stored.to_dict(), cfg.to_dict()
    diff = [k for k in new if k != "epochs" and old.get(k) != new.get(k)]
    if old["epochs"] > new["epochs"]:
        diff.append("epochs")
    if diff:
        shown = ", ".join(f"{k} {old.get(k)!r} != {new.get(k)!r}" for k in diff[:3])
        raise ConfigError(
            f"{path} was written by a different config ({shown}); it is left untouched: give another --out or "
            f"move the file away"
        )


# -------------------------------------------------------------- the driver
def _check_arguments(
    seeds: Sequence[int],
    benches: Sequence[str],
    address: str | None,
    num_cpus: int | None,
    cpus_per_trial: float,
    max_retries: int,
    folder: Path,
    connected: bool,
) -> None:
    """Every argument of :func:`run_sweep`, before any cluster is started or joined (one-line errors)."""
    from physnn.scale.cluster import check_address

    if len(seeds) > MAX_TRIALS:
        raise ConfigError(f"{len(seeds)} seeds, above the {MAX_TRIALS} trials a sweep may have")
    for s in seeds:
        checks.integer("seed", s, low=0)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat a seed, got {list(seeds)[:20]}")
    for b in benches:
        checks.string("bench", b, empty=False)
    if len(set(benches)) != len(benches):
        raise ConfigError(f"--benches names a bench twice, got {','.join(benches)}")
    check_address(address)
    checks.positive("cpus_per_trial", cpus_per_trial)
    checks.integer("max_retries", max_retries, low=0)
    if num_cpus is not None:
        checks.integer("num_cpus", num_cpus, low=1)
        if address is not None or connected:
            raise ConfigError(
                f"--num-cpus {num_cpus} sizes the private cluster this sweep starts; with "
                f"{'--address ' + address if address else 'a cluster already joined'} the cluster's own CPUs are used: "
                f"remove --num-cpus"
            )
    if address is None and not connected:
        cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
        if cpus_per_trial > cpus:
            raise ConfigError(
                f"cpus_per_trial = {cpus_per_trial:g} is more than the {cpus} CPU(s) of the private cluster, so no "
                f"trial could ever start; lower it or raise --num-cpus"
            )
        if benches:
            raise ConfigError(
                f"--benches {','.join(benches)} needs the cluster where `physnn serve` offers them: give --address "
                f"(auto: the cluster on this machine); a private cluster has no benches"
            )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file, not a folder")


def _check_cluster(ray: Any, benches: Sequence[str], cpus_per_trial: float) -> None:
    """What a joined cluster must offer for the trials to start at all (else they would wait forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    offered = {k for n in nodes for k in n.get("Resources", {})}
    missing = [b for b in benches if b not in offered]
    if missing:
        have = sorted(k for k in offered if ":" in k and not k.startswith("node:"))
        raise ConfigError(
            f"--benches {','.join(missing)}: no node of the cluster offers it; serve it with `physnn serve "
            f"--resource {missing[0]}` (nodes offer: {', '.join(have) or 'no bench resources'})"
        )
    most = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    if cpus_per_trial > most:
        raise ConfigError(
            f"cpus_per_trial = {cpus_per_trial:g} is more than any node of the cluster has (at most {most:g} CPU), "
            f"so no trial could ever start"
        )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def run_sweep(
    config: RunConfig,
    grid: dict[str, list[Any]],
    seeds: Sequence[int],
    folder: str | os.PathLike,
    *,
    benches: Sequence[str] = (),
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: float = 1.0,
    max_retries: int = 2,
    echo: Callable[[str], None] = logger.info,
) -> SweepResult:
    """Run every trial of ``grid`` x ``seeds`` (x ``benches``) as a Ray task; see the module docstring.

    ``num_cpus`` sizes the private local cluster started when ``address`` is
    None and this process is not yet connected (default: every core); that
    cluster is stopped when the sweep returns or fails. Every argument, every
    trial's config and the run files an earlier sweep left in ``folder`` are
    checked before any cluster is started or joined.
    """
    from physnn.scale.cluster import RemoteSystemError, connect, own_children, require_ray, start_local, stop_local

    folder = Path(folder)
    seeds = list(seeds) or [config.seed]
    benches = list(benches)
    loaded = sys.modules.get("ray")  # not imported yet: not connected (and the checks need no Ray)
    connected = bool(loaded is not None and loaded.is_initialized())
    _check_arguments(seeds, benches, address, num_cpus, cpus_per_trial, max_retries, folder, connected)
    planned = plan(config, grid, seeds, benches, folder)
    for t, cfg in planned:  # a rerun into this folder: the files there must be this sweep's trials
        _check_left_file(Path(t.path), cfg)
    folder.mkdir(parents=True, exist_ok=True)
    ray = require_ray()
    before = own_children()
    private = not connected and address is None
    if private:
        start_local(num_cpus=num_cpus)
    try:
        if not private:
            connect(address)
        _check_cluster(ray, benches, cpus_per_trial)
        task = ray.remote(run_trial).options(
            num_cpus=cpus_per_trial, max_retries=max_retries, retry_exceptions=[RemoteSystemError]
        )
        return _drive(ray, task, config, grid, seeds, benches, folder, planned, echo)
    finally:
        if private:
            stop_local(before)


def _check_left_file(path: Path, cfg: RunConfig) -> None:
    from physnn import runlog
    from physnn.run.experiment import resume_config

    if not path.exists():
        return
    try:
        run = runlog.load(path)
    except runlog.RunFileError:
        return  # unreadable: the trial keeps it as *.abandoned-TIME and starts again
    if run.checkpoints or run.status == "completed":
        try:
            stored = resume_config(path)
        except ConfigError as exc:
            raise ConfigError(f"{path}: left by an earlier sweep, with a config this physnn refuses ({exc})") from None
        _check_same_config(path, stored, cfg)


def _drive(
    ray: Any,
    task: Any,
    config: RunConfig,
    grid: dict[str, list[Any]],
    seeds: Sequence[int],
    benches: Sequence[str],
    folder: Path,
    planned: list[tuple[Trial, RunConfig]],
    echo: Callable[[str], None],
) -> SweepResult:
    """Launch the trials (at most one per bench at a time), record each as it ends, keep ``sweep.json`` current."""
    meta: dict[str, Any] = {
        "base_config": config.to_dict(),
        "grid": grid,
        "seeds": list(seeds),
        "benches": list(benches),
        "counts": _counts([t for t, _ in planned]),
        "trials": [asdict(t) for t, _ in planned],
    }
    _write_json(folder / "sweep.json", meta)
    echo(f"sweep: {len(planned)} trials into {folder}" + (f" over benches {', '.join(benches)}" if benches else ""))
    t0 = time.perf_counter()
    waiting: dict[str | None, list[tuple[Trial, RunConfig]]] = {}
    for t, cfg in planned:
        waiting.setdefault(t.bench, []).append((t, cfg))
    running: dict[Any, Trial] = {}
    busy: set[str] = set()

    def launch() -> None:
        for bench, queue in waiting.items():
            while queue and (bench is None or bench not in busy):
                t, cfg = queue.pop(0)
                running[task.remote(cfg.to_dict())] = t
                if bench is not None:
                    busy.add(bench)

    launch()
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        t = running.pop(ready[0])
        try:
            t.record = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - a failed trial is recorded; the others go on
            cause = getattr(exc, "cause", None) or exc
            t.record = {
                "status": "failed",
                "error": f"{type(cause).__name__}: {str(cause).splitlines()[0]}",
                "path": t.path,
            }
        if t.bench is not None:
            busy.discard(t.bench)
        launch()
        acc = t.record.get("test_accuracy")
        acc_text = f", test accuracy {acc:.4f}" if isinstance(acc, float) else ""
        echo(
            f"  {t.name}: {t.record.get('status')}"
            + (" (completed by an earlier run of this sweep)" if t.record.get("status") == "skipped" else "")
            + acc_text
            + (f" on {t.bench}" if t.bench else "")
            + (" (resumed)" if t.record.get("resumed") else "")
            + (f" -- {t.record['error']}" if "error" in t.record else "")
        )
        meta["trials"][t.index] = asdict(t)
        meta["counts"] = _counts([t for t, _ in planned])
        _write_json(folder / "sweep.json", meta)
    return SweepResult(folder, [t for t, _ in planned], time.perf_counter() - t0)


def summarise(folder: str | os.PathLike) -> str:
    """``physnn ls`` of the sweep folder, then ``physnn compare`` of its completed trials."""
    from physnn.analysis.report import compare, ls

    folder = Path(folder)
    text = ls(folder)
    files = sorted(p for p in folder.glob("*.h5"))
    if files:
        text += "\n\n" + compare(files)
    return text


# -------------------------------------------------------------------- CLI
