"""The configuration ``physnn train`` runs for its flags, shared with ``physnn characterize``.

Why one function: ``physnn characterize`` must measure the system that
``physnn train`` would train on for the same flags -- the system's recipe
(:mod:`physnn.run.recipes`: optics at 1024 pixels, the microwave cavity with the
thermometer encoder ...), the encoder, the data set. Two copies of "config file,
then flags, then the recipe" drift apart; in round 2 they did (characterize
measured optics at 128 pixels and the microwave cavity with min-max encoding).
"""

from __future__ import annotations

from typing import Any, Sequence

from physnn.run.config import RunConfig, parse_option, read_config
from physnn.run.recipes import with_recipe

__all__ = ["config_from_flags"]


def config_from_flags(
    config_file: str | None,
    flags: dict[str, Any],
    system_options: Sequence[str] = (),
    method_options: Sequence[str] = (),
) -> RunConfig:
    """The config file's keys, then the flags given (``None``: not given), then the system's recipe for what
    neither sets. ``system_options`` / ``method_options`` are ``KEY=VALUE`` texts, merged key by key."""
    data = read_config(config_file) if config_file else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    if system_options:
        data["system_options"] = {
            **data.get("system_options", {}),
            **dict(parse_option(o) for o in system_options),
        }
    if method_options:
        data["method_options"] = {
            **data.get("method_options", {}),
            **dict(parse_option(o, "--method-option") for o in method_options),
        }
    return RunConfig.from_dict(with_recipe(data), source=config_file or "command line")
