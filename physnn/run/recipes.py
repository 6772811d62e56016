"""Per-system recipes: the defaults that work for each system, applied under a config's own keys.

A physicist who types ``physnn train --system microwave`` should get a run
that learns, not one that needs the paper's supplement to set up. A recipe is
a small table of config keys per system name (``[system_options]`` merged key
by key); anything the config file or the command line sets wins, and the run
file records the effective configuration, so a recipe never hides what ran.

Each entry says *why*, with the measurement behind it (README, "Recipes").
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["RECIPES", "with_recipe"]

#: system name -> config keys (``system_options`` merged with the user's, key by key)
RECIPES: dict[str, dict[str, Any]] = {
    # a 1024-pixel camera: 8x the speckle features of the 128-pixel default, for the same physical queries; on
    # digits (main job, MF-FF, 2 blocks, 20 epochs, seeds 0-2) 0.966/0.961/- (128 px) -> 0.983/0.981/0.969 (512 px)
    # -> 0.981/0.992/0.978 (1024 px); a larger camera helps MNIST-5k too (local_ce 0.931 at 1024 and 2048 px).
    # The same light as the 128-pixel default: `photons` is a budget per query shared by the pixels (seed 0: 0.978
    # at the default 768 000 e- per query, 0.978 at 8x that, the light the earlier per-pixel setting gave 1024 px)
    "optics": {"system_options": {"n_outputs": 1024}},
    # a 1-bit metasurface: the thermometer encoder (features standardised, then on/off at the median) turns on
    # 7.9 of 19 bits where min-max scaling then rounding turned on 2.8; nonlinear fraction at the encoder's drives
    # on vowels 0.154 -> 0.256; MF-FF vowels 0.946 +- 0.077 -> 0.946 +- 0.031 (3 seeds): same mean, less spread
    "microwave": {"encoder": "thermometer"},
    # the measured acoustic cavity takes 20 drive amplitudes: vowels (12 formants + 7 label slots) fits it,
    # with the published recipe's narrow blocks and long training (206 training samples per epoch)
    "acoustic-twin": {"dataset": "vowels", "hidden": 20, "epochs": 100},
}


def with_recipe(data: dict[str, Any], default_system: str = "optics") -> dict[str, Any]:
    """``data`` (config keys as given) on top of the recipe of its system; ``system_options`` merged per key."""
    system = data.get("system", default_system)
    recipe = copy.deepcopy(RECIPES.get(system, {})) if isinstance(system, str) else {}
    options = {**recipe.pop("system_options", {}), **dict(data.get("system_options") or {})}
    merged = {**recipe, **data}
    if options:
        merged["system_options"] = options
    return merged
