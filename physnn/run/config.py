"""Experiment configuration: one flat TOML file, the same keys as the CLI flags.

Why strict: a misspelt key in a config that silently falls back to a default
wastes a night of bench time. Every key is known, typed and range-checked here;
anything else is an error that lists the valid keys.

Example ``run.toml``::

    dataset = "vowels"    # shipped with physnn; or dataset = "csv", data_path = "my.csv", label_column = "kind"
    system = "microwave"
    blocks = 2
    epochs = 50
    seed = 3

    [system_options]      # passed to the system's factory, checked against its signature
    noise_db = -40

    [method_options]      # passed to the trainer's constructor (e.g. PAT's twin_samples)
    twin_samples = 1000
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from physnn.core import checks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "load_config", "read_config", "parse_option", "ConfigError"]


class ConfigError(checks.ParameterError):
    """A config file or key that cannot be used; the message names the key and what is allowed."""


@dataclass
class RunConfig:
    """Everything a training run needs; defaults are the main job (digits through optics)."""

    dataset: str = "digits"
    data_path: str = ""
    # the column of a CSV data set (dataset = "csv") that holds the labels; every other column is a feature
    label_column: str = "label"
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    method: str = "mfff"
    system: str = "optics"
    system_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    blocks: int = 2
    hidden: int = 100
    skip: bool = True
    encoder: str = "minmax"
    goodness: str = "cosine"
    label_scale: str | float = "batch_max"
    label_repeat: int = 1
    encoder_bits: int = 0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    inner_steps: int = 1
    theta: float = 10.0
    weight_decay: float = 0.0
    # every 10 epochs on the whole validation split: the main job's total / training queries 1.13 (at every 5
    # epochs 1.18); stop_on = 'val_significant' stops on the same evaluations (benchmarks/queries_to_accuracy.py)
    eval_every: int = 10
    seed: int = 0
    device: str = "cpu"
    output: str = "runs"
    # after training, keep training on a stream drawn from the training split while the device changes
    # (physnn/run/continual.py); [continual_options] are Continual's keyword options (probes, threshold, budget...)
    continual_ticks: int = 0
    continual_options: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 1
    checkpoint_seconds: float = 0.0
    # the run file keeps the last checkpoint (for --resume) and the best by validation (its model); with N > 0
    # also every N-th epoch's checkpoint, whole (docs/run-format.md, "Checkpoints")
    keep_checkpoints: int = 0
    probes: int = 8
    threads: int = 1
    log_samples: bool = True
    # byte budget of the raw query samples in the run file (all blocks), spread evenly over the epochs
    sample_log_bytes: int = 524_288
    # scheduled evaluations on the whole validation split by default (0), so every printed validation accuracy
    # carries a usable interval (143 samples on digits: +-3 points; 32 samples gave +-8-10); a positive value is a
    # fixed seeded subsample, allowed only where its 95 % interval stays usable (see preflight). No on-device
    # train-accuracy pass unless asked; query budget and stop rules that cost no query
    eval_samples: int = 0
    measure_train_accuracy: bool = False
    query_budget: int = 0
    stop_on: str = "none"
    patience: int = 5
    min_delta: float = 0.0
    schedule: str = "serial"
    # extra places the per-epoch metrics go, beside the run file (optional extras; physnn/run/sinks.py)
    metric_sinks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------ checks
    def validate(self) -> None:
        """Type- and range-check every key (:mod:`physnn.core.checks`); a :class:`ConfigError` names the key."""
        try:
            self._validate()
        except checks.ParameterError as exc:
            raise ConfigError(f"config key {exc}") from None

    def _validate(self) -> None:
        from physnn.core.encoding import ENCODERS
        from physnn.core.goodness import GOODNESS
        from physnn.data.registry import available_datasets, known_dataset
        from physnn.train import METHODS

        for key in ("data_path", "device", "output"):
            checks.string(key, getattr(self, key))
        if not known_dataset(self.dataset):  # built-in, registered, or a physnn.datasets entry point
            checks.choice("dataset", self.dataset, available_datasets())
        checks.string("label_column", self.label_column, empty=False)
        checks.choice("method", self.method, METHODS)
        checks.string("system", self.system, empty=False)
        checks.choice("encoder", self.encoder, ENCODERS)
        checks.choice("goodness", self.goodness, GOODNESS)
        checks.integer("blocks", self.blocks, low=1, high=64)
        checks.integer("hidden", self.hidden, low=1, high=100_000)
        checks.integer("label_repeat", self.label_repeat, low=1, high=1000)
        checks.integer("encoder_bits", self.encoder_bits, low=0, high=16)
        checks.integer("epochs", self.epochs, low=0)
        checks.integer("batch_size", self.batch_size, low=1)
        checks.integer("inner_steps", self.inner_steps, low=1)
        checks.integer("eval_every", self.eval_every, low=0)
        checks.integer("checkpoint_every", self.checkpoint_every, low=1)
        checks.nonnegative("checkpoint_seconds", self.checkpoint_seconds)
        checks.integer("continual_ticks", self.continual_ticks, low=0)
        checks.integer("seed", self.seed, low=0, high=2**63 - 1)
        checks.integer("probes", self.probes, low=0, high=10_000)
        checks.integer("threads", self.threads, low=0, high=1024)
        checks.boolean("log_samples", self.log_samples)
        checks.integer("keep_checkpoints", self.keep_checkpoints, low=0)
        checks.integer("sample_log_bytes", self.sample_log_bytes, low=0, high=2**40)
        checks.integer("eval_samples", self.eval_samples, low=0)
        checks.boolean("measure_train_accuracy", self.measure_train_accuracy)
        checks.integer("query_budget", self.query_budget, low=0)
        checks.choice("stop_on", self.stop_on, ("none", "loss", "gap", "val", "val_significant"))
        checks.integer("patience", self.patience, low=1)
        checks.nonnegative("min_delta", self.min_delta)
        checks.choice("schedule", self.schedule, ("serial", "pipelined"))
        if not isinstance(self.metric_sinks, list):
            raise checks.ParameterError(
                f"metric_sinks must be a list of sink names ('tensorboard', 'mlflow'), got {self.metric_sinks!r}"
            )
        for i, name in enumerate(self.metric_sinks):
            checks.choice(f"metric_sinks[{i}]", name, ("tensorboard", "mlflow"))
        checks.boolean("skip", self.skip)
        checks.positive("lr", self.lr)
        checks.positive("theta", self.theta)
        checks.nonnegative("weight_decay", self.weight_decay)
        checks.fraction("test_fraction", self.test_fraction)
        checks.real("val_fraction", self.val_fraction, low=0.0, high=0.5)
        for key in ("system_options", "method_options", "continual_options"):
            if not isinstance(getattr(self, key), dict):
                raise checks.ParameterError(f"{key} must be a table of KEY = VALUE options, got {getattr(self, key)!r}")
        _check_device(self.device)
        if self.label_scale not in ("batch_max", "sample_max"):
            # a number is the drive of the hot label slot: 0 or less would carry no label (or an inverted one)
            try:
                checks.positive("label_scale", self.label_scale)
            except checks.ParameterError:
                raise checks.ParameterError(
                    f"label_scale must be 'batch_max', 'sample_max' or a positive finite number, got {self.label_scale!r}"
                ) from None

    # ---------------------------------------------------------- building
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "RunConfig":
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(cls.keys())}"
            )
        return cls(**data)

    def updated(self, **overrides: Any) -> "RunConfig":
        """A copy with the given keys replaced (None values are ignored: unset CLI flags)."""
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return RunConfig.from_dict(data, source="overrides")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_device(value: str) -> None:
    """A torch device this build and machine can use, checked before any data or system is built."""
    import torch

    allowed = "'cpu' or 'cuda[:N]'"
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise checks.ParameterError(f"device must be {allowed}, got {value!r}") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise checks.ParameterError(f"device must be {allowed}, got {value!r}")
    if not torch.cuda.is_available():
        raise checks.ParameterError(
            f"device = {value!r} needs CUDA, which this torch build or machine does not have; use 'cpu'"
        )
    n = torch.cuda.device_count()
    if dev.index is not None and dev.index >= n:
        raise checks.ParameterError(f"device = {value!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")


def load_config(path: str | Path, *, recipe: bool = True) -> RunConfig:
    """Read a TOML config on top of its system's recipe (:mod:`physnn.run.recipes`); a missing file, bad TOML or
    an unknown key is a :class:`ConfigError`."""
    return RunConfig.from_dict(read_config(path, recipe=recipe), source=str(path))


def read_config(path: str | Path, *, recipe: bool = False) -> dict[str, Any]:
    """The keys of a TOML config file as written (checked: known keys, valid values), optionally with the recipe."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    if recipe:
        from physnn.run.recipes import with_recipe

        data = with_recipe(data)
    try:
        RunConfig.from_dict(data, source=str(p))
        return data
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
    except TypeError as exc:  # pragma: no cover - dataclass signature errors
        raise ConfigError(f"{p}: {exc}") from None


def parse_option(text: str, flag: str = "--system-option") -> tuple[str, Any]:
    """``KEY=VALUE`` of a command-line option (``flag`` names it in the error), VALUE read as TOML (numbers,
    booleans, quoted strings) or else a bare string: the one parser of every ``--*-option`` flag."""
    if "=" not in text:
        raise ConfigError(f"{flag} needs KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed
