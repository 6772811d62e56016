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
status, node and start/end times.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from physnn.core import checks
from physnn.run.config import ConfigError, RunConfig

__all__ = ["Trial", "SweepResult", "parse_grid", "parse_seeds", "plan", "run_sweep", "summarise"]

logger = logging.getLogger(__name__)

#: Keys a grid may not vary: they define where the trial's file goes and what it is.
_FIXED_KEYS = ("output", "seed", "system_options")


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
        return [t for t in self.trials if t.record.get("status") != "completed"]


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
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7"`` -> ``[0, 3, 7]``."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"--seeds must be like 0-4 or 0,3,7 (integers >= 0), got {text!r}") from None
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
    """Every trial and its full config (checked now, so a bad value fails before anything runs)."""
    folder = Path(folder)
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys))) or [()]
    trials = []
    for i, (combo, seed) in enumerate(itertools.product(combos, seeds)):
        values = dict(zip(keys, combo))
        bench = benches[i % len(benches)] if benches else None
        tag = "-".join(f"{k}{_fmt(v)}" for k, v in values.items())
        path = folder / f"trial{i:03d}-{tag + '-' if tag else ''}s{seed}.h5"
        overrides: dict[str, Any] = dict(values, seed=seed, output=str(path))
        if bench is not None:
            if config.system == "remote":
                overrides["system_options"] = dict(config.system_options, resource=bench)
            else:
                overrides.update(
                    system="remote",
                    system_options={"name": config.system, "options": dict(config.system_options), "resource": bench},
                )
        try:
            cfg = config.updated(**overrides)
        except ConfigError as exc:
            raise ConfigError(f"trial {i} ({values}, seed {seed}): {exc}") from None
        trials.append((Trial(i, values, seed, bench, str(path)), cfg))
    return trials


# ------------------------------------------------------------------ a trial
def run_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume, or skip if completed) one trial; return its record. Runs in a Ray worker."""
    from physnn import runlog
    from physnn.run.experiment import run_experiment

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
        if status == "completed":
            k = run.key_numbers()
            return dict(
                record,
                status="completed",
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


# -------------------------------------------------------------- the driver
def _connect(address: str | None, num_cpus: int | None) -> Any:
    """Join ``address`` ("auto": the cluster on this machine); ``None``: a private cluster on loopback."""
    from physnn.scale.cluster import connect, require_ray, use_loopback

    ray = require_ray()
    if ray.is_initialized() or address is not None:
        return connect(address)
    use_loopback()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    return ray


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
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run every trial of ``grid`` x ``seeds`` (x ``benches``) as a Ray task; see the module docstring.

    ``num_cpus`` sizes the private local cluster started when ``address`` is
    None and this process is not yet connected (default: every core).
    """
    folder = Path(folder)
    seeds = [checks.integer("seed", s, low=0) for s in seeds] or [config.seed]
    benches = [checks.string("bench", b, empty=False) for b in benches]
    checks.positive("cpus_per_trial", cpus_per_trial)
    checks.integer("max_retries", max_retries, low=0)
    planned = plan(config, grid, seeds, benches, folder)
    folder.mkdir(parents=True, exist_ok=True)
    ray = _connect(address, num_cpus)
    from physnn.scale.cluster import RemoteSystemError

    task = ray.remote(run_trial).options(
        num_cpus=cpus_per_trial, max_retries=max_retries, retry_exceptions=[RemoteSystemError]
    )
    meta = {
        "base_config": config.to_dict(),
        "grid": grid,
        "seeds": list(seeds),
        "benches": list(benches),
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
            f"  {t.name}: {t.record.get('status')}{acc_text}"
            + (f" on {t.bench}" if t.bench else "")
            + (" (resumed)" if t.record.get("resumed") else "")
            + (f" -- {t.record['error']}" if "error" in t.record else "")
        )
        meta["trials"][t.index] = asdict(t)
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
