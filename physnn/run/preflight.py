"""The pre-flight check: one validation pass of a run's configuration before anything is opened or queried.

Why: a value refused only after every epoch has trained (a bad ``[continual_options]`` value), or never
(``stop_on = "val"`` with no validation split stopped on the *test* split; a misspelt continual option was
accepted when ``continual_ticks = 0``), costs a night of bench time or gives a silently wrong result. So
everything that can be decided from the configuration is decided here, in one place, before data is loaded,
a system is built or a run file is touched, and what needs the data (one epoch's queries) right after the
data is loaded, before any system is built. Each refusal is a :class:`ConfigError`: one line naming the key,
the value and what is allowed.

The passes, in the runner's order (:func:`physnn.run.experiment.run_experiment`):

1. :func:`check_config` -- the configuration alone:

   * every key's type and range (:meth:`RunConfig.validate`);
   * the system by name and ``[system_options]`` against its factory's signature and annotations (the
     factory is looked up, never called; a factory may carry a ``preflight(options)`` callable that checks
     the values too, for factories taking ``**kwargs``); skipped for the digital controls (no system) and
     when a lab script hands over its own instruments;
   * the method, its top-level keys and ``[method_options]`` (:func:`trainer_arguments`; the trainer is
     constructed, which checks every value -- no model, no system);
   * ``[continual_options]``, keys and values, whether or not ``continual_ticks`` uses them
     (:meth:`physnn.run.continual.Continual.check_options`);
   * the combinations of :data:`COMBINATIONS`.

2. :func:`check_resume` -- ``--resume``: the epochs asked for against the epochs the run file has trained.
3. :func:`check_budget` -- after the data is loaded: ``query_budget`` against one epoch's learning queries.

What is accepted on purpose (walked key by key, not forgotten): ``patience``/``min_delta`` with
``stop_on = "none"``, and model keys a method does not use (``goodness`` for an end-to-end method, ``hidden``
or ``[system_options]`` for a digital control) -- a control shares the configuration of the network it is
the control of, and sweeps vary one key of a shared base; neither changes what runs. ``epochs = 0`` is an
explicit request for the untrained network (unlike a budget that leaves room for no epoch, refused below).

To add a rule: write ``rule(config, trainer_cls) -> str | None`` (the error message, or None) and append it
to :data:`COMBINATIONS`; the runner, ``physnn train`` and sweeps all go through :func:`check_config`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from physnn.core import checks
from physnn.run.config import ConfigError, RunConfig
from physnn.train import trainer_class

__all__ = [
    "check_config",
    "check_resume",
    "check_budget",
    "trainer_arguments",
    "COMBINATIONS",
    "TRAINER_KEYS",
    "METHOD_KEYS",
]

log = logging.getLogger(__name__)

#: Config keys the runner passes to every trainer (never through ``method_options``).
TRAINER_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "eval_every")
#: Top-level config keys that are options of some methods only (kept top-level for MF-FF configs).
METHOD_KEYS = ("inner_steps", "theta", "schedule")
#: ``[system_options]`` keys the run sets itself (the model's width, the seed per block, the device).
RUN_SET_SYSTEM_KEYS = ("n_inputs", "seed", "device")

Rule = Callable[[RunConfig, Any], "str | None"]


# ==================================================================== single parts
def trainer_arguments(config: RunConfig) -> tuple[Any, dict[str, Any]]:
    """``(trainer class, keyword arguments)`` of the configured method: the run's keys plus ``[method_options]``,
    checked against the trainer's signature (a method key the method does not take is refused if it was set)."""
    cls = trainer_class(config.method)
    accepted = set(cls._param_names())
    defaults = RunConfig()
    kwargs: dict[str, Any] = {k: getattr(config, k) for k in TRAINER_KEYS}
    for key in METHOD_KEYS:
        if key in accepted:
            kwargs[key] = getattr(config, key)
        elif getattr(config, key) != getattr(defaults, key):
            raise ConfigError(
                f"config key {key!r} = {getattr(config, key)!r} is not an option of method {config.method!r}; remove it"
            )
    try:
        options = checks.check_options(
            cls, config.method_options, f"method {config.method!r}", reserved=(*TRAINER_KEYS, *METHOD_KEYS, "progress")
        )
    except checks.ParameterError as exc:
        raise ConfigError(f"config key method_options: {exc}") from None
    return cls, {**kwargs, **options}


def _check_system(config: RunConfig) -> None:
    """The system's name and ``[system_options]`` against its factory, which is looked up, never called."""
    from physnn.core.registry import system_factory

    try:
        factory = system_factory(config.system)  # an unknown name lists the available ones
    except ValueError as exc:
        raise ConfigError(f"config key system: {exc}") from None
    what = f"system {config.system!r}"
    try:
        options = checks.check_options(factory, config.system_options, what, reserved=RUN_SET_SYSTEM_KEYS)
        hook = getattr(factory, "preflight", None)
        if callable(hook):  # a factory taking **kwargs (a wrapper, a remote bench) checks its values here
            hook(dict(options))
    except checks.ParameterError as exc:
        msg = str(exc)
        if "set by the run itself" in msg:
            msg += f" ({', '.join(RUN_SET_SYSTEM_KEYS)} come from the model's width, --seed and --device)"
        raise ConfigError(f"config key system_options: {msg}") from None


def _check_continual_options(config: RunConfig) -> None:
    from physnn.run.continual import Continual

    try:
        Continual.check_options(config.continual_options)
    except checks.ParameterError as exc:
        raise ConfigError(f"config key continual_options: {exc}") from None


# ==================================================================== combinations
def stop_on_val_needs_a_validation_split(c: RunConfig, cls: Any) -> str | None:
    if c.stop_on in ("val", "val_significant") and not c.val_fraction:
        return (
            f"stop_on = {c.stop_on!r} with val_fraction = 0 would choose when to stop on the test split; "
            "set val_fraction > 0 (at most 0.5) or stop_on = 'none', 'loss' or 'gap'"
        )
    return None


def stop_rule_can_fire(c: RunConfig, cls: Any) -> str | None:
    """A stop rule that can never stop the run before its last epoch is a silent no-op: refused."""
    if c.stop_on in ("val", "val_significant"):
        if not c.eval_every:
            return (
                f"stop_on = {c.stop_on!r} with eval_every = 0 can never stop the run: the validation split is "
                "evaluated only after the last epoch; set eval_every >= 1"
            )
        before_last = max(0, (c.epochs - 1) // c.eval_every)  # evaluations a stop can still act on
        if before_last < c.patience + 1:
            return (
                f"stop_on = {c.stop_on!r} can never stop this run: eval_every = {c.eval_every} gives {before_last} "
                f"evaluation(s) before the last of {c.epochs} epoch(s), and patience = {c.patience} needs "
                f"{c.patience + 1}; lower patience or eval_every, raise epochs, or set stop_on = 'none'"
            )
    if c.stop_on in ("loss", "gap") and c.epochs < c.patience + 2:
        return (
            f"stop_on = {c.stop_on!r} can never stop this run early: patience = {c.patience} needs "
            f"epochs >= {c.patience + 2}, got epochs = {c.epochs}; lower patience or set stop_on = 'none'"
        )
    return None


def stop_on_gap_needs_goodness(c: RunConfig, cls: Any) -> str | None:
    if c.stop_on == "gap" and cls.model_kind != "pnn":
        return (
            f"stop_on = 'gap' needs a method that reports the goodness (mfff, ff_digital); method = "
            f"{c.method!r} does not: use stop_on = 'loss' or 'val'"
        )
    return None


def budget_needs_physical_queries(c: RunConfig, cls: Any) -> str | None:
    if c.query_budget and not cls.uses_systems:
        return (
            f"query_budget = {c.query_budget} counts physical queries and method = {c.method!r} makes none; "
            "set query_budget = 0"
        )
    return None


def continual_needs_a_physical_method(c: RunConfig, cls: Any) -> str | None:
    if c.continual_ticks and not cls.uses_systems:
        return (
            f"continual_ticks = {c.continual_ticks} with method = {c.method!r}: a digital control has no "
            "physical system to keep training on; set continual_ticks = 0 or a physical method"
        )
    return None


def continual_probes_can_detect(c: RunConfig, cls: Any) -> str | None:
    every = c.continual_options.get("probe_every", 10)
    if c.continual_ticks and every and every >= c.continual_ticks:
        return (
            f"continual_options probe_every = {every} with continual_ticks = {c.continual_ticks}: the probes "
            f"would be measured at tick 0 only, so no drift could be detected; set probe_every < "
            f"{c.continual_ticks}, or 0 for no drift detection"
        )
    return None


def encoder_bits_need_the_thermometer(c: RunConfig, cls: Any) -> str | None:
    if c.encoder_bits and c.encoder != "thermometer":
        return (
            f"encoder_bits = {c.encoder_bits} is used only by encoder = 'thermometer' (encoder = "
            f"{c.encoder!r}); remove encoder_bits or set encoder = 'thermometer'"
        )
    return None


def data_path_is_used(c: RunConfig, cls: Any) -> str | None:
    if c.data_path and c.dataset in ("digits", "mnist5k"):
        return (
            f"data_path {c.data_path!r} is not used by dataset {c.dataset!r} (bundled); "
            "data_path is for vowels (a CSV file) and mnist-idx (a folder of IDX files)"
        )
    return None


def mnist_idx_has_its_own_test_split(c: RunConfig, cls: Any) -> str | None:
    if c.dataset == "mnist-idx" and c.test_fraction != RunConfig.test_fraction:
        return (
            f"test_fraction = {c.test_fraction} is not used by dataset 'mnist-idx' (its test split is the "
            "IDX test files); remove test_fraction"
        )
    return None


#: Every combination rule, in the order they are checked (append new ones: see the module docstring).
COMBINATIONS: list[Rule] = [
    stop_on_val_needs_a_validation_split,
    stop_rule_can_fire,
    stop_on_gap_needs_goodness,
    budget_needs_physical_queries,
    continual_needs_a_physical_method,
    continual_probes_can_detect,
    encoder_bits_need_the_thermometer,
    data_path_is_used,
    mnist_idx_has_its_own_test_split,
]


# ==================================================================== the passes
def check_config(config: RunConfig, *, build_systems: bool = True) -> None:
    """Every key and combination of ``config``, before anything is opened (see the module docstring).

    ``build_systems=False``: the systems are handed over (a lab script's instruments), so the system name
    and ``[system_options]`` only describe them and are not checked against a factory.
    """
    config.validate()  # a RunConfig is mutable: checked again as it is now
    cls, kwargs = trainer_arguments(config)
    try:
        cls(**kwargs).set_budget(
            eval_samples=config.eval_samples,
            query_budget=config.query_budget,
            stop_on=config.stop_on,
            patience=config.patience,
            min_delta=config.min_delta,
        )
    except checks.ParameterError as exc:
        raise ConfigError(f"method {config.method!r}: {exc}") from None
    if build_systems and cls.uses_systems:
        _check_system(config)
    _check_continual_options(config)
    for rule in COMBINATIONS:
        problem = rule(config, cls)
        if problem:
            raise ConfigError(problem)


def check_resume(config: RunConfig, path: Any, epochs_done: int) -> None:
    """``--resume``: the epochs asked for may extend the run, never cut it below what it has trained."""
    if config.epochs < epochs_done:
        raise ConfigError(
            f"epochs = {config.epochs} is below the {epochs_done} epoch(s) {str(path)!r} has already trained; "
            f"give --epochs N with N > {epochs_done} to extend it, or leave --epochs out to finish it"
        )


def check_budget(config: RunConfig, trainer: Any, n_train: int) -> None:
    """``query_budget`` against one epoch's learning queries on ``n_train`` samples (a fresh run, data loaded).

    A budget below one epoch used to train nothing and report the untrained network; it is refused when the
    method knows an epoch's cost in advance (MF-FF: 2 x blocks x samples). A method that learns its cost
    from the first epoch always runs that epoch whole; this is said (a warning) rather than hidden.
    """
    if not config.query_budget or trainer.epochs_done:
        return
    per_epoch = trainer.expected_first_epoch_queries(n_train, blocks=config.blocks)
    if per_epoch is None:
        log.warning(
            "query_budget = %d: method %r cannot tell one epoch's learning queries before an epoch ran, so its "
            "first epoch always runs whole (and may exceed the budget); the budget then stops the run",
            config.query_budget,
            config.method,
        )
        return
    if config.query_budget < per_epoch:
        need = int(math.ceil(per_epoch))
        raise ConfigError(
            f"query_budget = {config.query_budget} is below one epoch's learning queries ({need} for method "
            f"{config.method!r} on {n_train} training samples through {config.blocks} block(s)), so no epoch "
            f"could run; give query_budget >= {need}, or 0 for no budget"
        )
