"""Experiment configuration: one flat TOML file, the same keys as the CLI flags.

Why strict: a misspelt key in a config that silently falls back to a default
wastes a night of bench time. Every key is known, typed and range-checked here;
anything else is an error that lists the valid keys.

Example ``run.toml``::

    dataset = "vowels"
    data_path = "../shared/data/vowels.csv"
    system = "microwave"
    blocks = 2
    epochs = 50
    seed = 3

    [system_options]      # passed to the system's factory
    noise_db = -40
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "load_config", "ConfigError"]


class ConfigError(ValueError):
    """A config file or key that cannot be used; the message names the key and what is allowed."""


@dataclass
class RunConfig:
    """Everything a training run needs; defaults are the main job (digits through optics)."""

    dataset: str = "digits"
    data_path: str = ""
    test_fraction: float = 0.2
    method: str = "mfff"
    system: str = "optics"
    system_options: dict[str, Any] = field(default_factory=dict)
    blocks: int = 2
    hidden: int = 100
    skip: bool = True
    encoder: str = "minmax"
    goodness: str = "cosine"
    label_scale: str | float = "batch_max"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    inner_steps: int = 1
    theta: float = 10.0
    weight_decay: float = 0.0
    eval_every: int = 1
    seed: int = 0
    device: str = "cpu"
    output: str = "runs"
    checkpoint_every: int = 1
    probes: int = 8
    threads: int = 1
    log_samples: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------ checks
    def validate(self) -> None:
        def need(cond: bool, key: str, what: str) -> None:
            if not cond:
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r}: {what}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key in ("dataset", "data_path", "method", "system", "encoder", "goodness", "device", "output"):
            need(isinstance(getattr(self, key), str), key, "must be a string")
        need(is_int(self.blocks) and 1 <= self.blocks <= 64, "blocks", "must be an integer in 1..64")
        need(is_int(self.hidden) and 1 <= self.hidden <= 100_000, "hidden", "must be a positive integer")
        need(is_int(self.epochs) and self.epochs >= 0, "epochs", "must be an integer >= 0")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an integer >= 1")
        need(is_int(self.inner_steps) and self.inner_steps >= 1, "inner_steps", "must be an integer >= 1")
        need(is_int(self.eval_every) and self.eval_every >= 0, "eval_every", "must be an integer >= 0")
        need(is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every", "must be an integer >= 1")
        need(is_int(self.seed) and self.seed >= 0, "seed", "must be an integer >= 0")
        need(is_int(self.probes) and 0 <= self.probes <= 10_000, "probes", "must be an integer in 0..10000")
        need(isinstance(self.log_samples, bool), "log_samples", "must be true or false")
        need(is_int(self.threads) and 0 <= self.threads <= 1024, "threads", "must be an integer >= 0 (0: torch's default)")
        need(is_num(self.lr) and self.lr > 0, "lr", "must be a positive number")
        need(is_num(self.theta) and self.theta > 0, "theta", "must be a positive number")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be a number >= 0")
        need(is_num(self.test_fraction) and 0 < self.test_fraction < 1, "test_fraction", "must lie strictly between 0 and 1")
        need(isinstance(self.skip, bool), "skip", "must be true or false")
        need(isinstance(self.system_options, dict), "system_options", "must be a table of the system's options")
        need(self.label_scale in ("batch_max", "sample_max") or is_num(self.label_scale), "label_scale",
             "must be 'batch_max', 'sample_max' or a number")
        from .data import DATASETS
        from .encoding import ENCODERS
        from .goodness import GOODNESS

        need(self.dataset in DATASETS, "dataset", f"unknown dataset; available: {', '.join(DATASETS)}")
        from .train import METHODS

        need(self.method in METHODS, "method", f"unknown training method; available: {', '.join(METHODS)}")
        need(self.encoder in ENCODERS, "encoder", f"unknown encoder; available: {', '.join(ENCODERS)}")
        need(self.goodness in GOODNESS, "goodness", f"unknown goodness; available: {', '.join(GOODNESS)}")

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


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML config; a missing file, bad TOML or an unknown key is a :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return RunConfig.from_dict(data, source=str(p))
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
    except TypeError as exc:  # pragma: no cover - dataclass signature errors
        raise ConfigError(f"{p}: {exc}") from None
