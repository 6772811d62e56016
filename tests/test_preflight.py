"""The pre-flight check (issue 23 item 1): every key and combination refused before anything is opened.

Each bad configuration must end in one :class:`ConfigError` naming the key, the value and what is
allowed, before the data is loaded (config-only checks) or before any system is built (checks that need
the data) -- the spy factory and the spy loader below fail the test if they are reached.
"""

from __future__ import annotations

import logging

import pytest

from physnn.core import registry
from physnn.core.system import PhysicalSystem
from physnn.run import experiment, preflight
from physnn.run.config import ConfigError, RunConfig
from physnn.run.continual import Continual
from physnn.run.recipes import RECIPES, with_recipe
from physnn.train import METHODS

pytestmark = pytest.mark.fault("combination")


def _spy_factory(n_inputs: int | None = None, seed: int = 0, device: str = "cpu", noise: bool = True) -> PhysicalSystem:
    """A system factory a pre-flight refusal must never reach."""
    raise AssertionError("a system was built before the configuration was refused")


@pytest.fixture
def spy(monkeypatch):
    """``system = "spy"``; the data loader counts its calls."""
    registry.register_system("spy", _spy_factory)
    calls = {"data": 0}
    real = experiment.load_data

    def load(*args, **kwargs):
        calls["data"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "load_data", load)
    yield calls
    registry._RUNTIME.pop("spy", None)


def refused(config: RunConfig, pattern: str, **kwargs) -> str:
    with pytest.raises(ConfigError, match=pattern) as info:
        experiment.run_experiment(config, progress=False, echo=lambda line: None, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


#: (id, config keys, regex of the one-line error): refused before the data is loaded
CONFIG_ONLY = [
    (
        "stop-val-no-split",
        dict(stop_on="val", val_fraction=0.0, epochs=20, eval_every=1),
        r"stop_on = 'val' with val_fraction = 0 .*test split",
    ),
    (
        "stop-val-eval-0",
        dict(stop_on="val", eval_every=0, epochs=20),
        r"stop_on = 'val' with eval_every = 0 can never stop",
    ),
    (
        "stop-val-too-few-evals",
        dict(stop_on="val", epochs=20, eval_every=5),
        r"eval_every = 5 gives 3 evaluation\(s\) .*patience = 5 needs 6",
    ),
    (
        "stop-loss-too-few-epochs",
        dict(stop_on="loss", epochs=3),
        r"stop_on = 'loss' can never stop .*epochs >= 7, got epochs = 3",
    ),
    ("stop-gap-no-goodness", dict(stop_on="gap", method="pat", epochs=20), r"stop_on = 'gap' needs .*method = 'pat'"),
    ("digital-continual", dict(method="digital", continual_ticks=5), r"continual_ticks = 5 with method = 'digital'"),
    (
        "ff_digital-continual",
        dict(method="ff_digital", continual_ticks=5),
        r"continual_ticks = 5 with method = 'ff_digital'",
    ),
    ("digital-budget", dict(method="digital", query_budget=100), r"query_budget = 100 counts physical queries"),
    (
        "continual-misspelt-unused",
        dict(continual_options={"probe_evry": 5}),
        r"continual_options: continual has no option\(s\) 'probe_evry'; its options are: .*probe_every",
    ),
    (
        "continual-bad-value",
        dict(continual_ticks=30, continual_options={"threshold": 0.5}),
        r"continual_options: threshold must be a finite number > 1, got 0.5",
    ),
    (
        "continual-bad-type",
        dict(continual_options={"lr_policy": 3}),
        r"continual_options: continual option lr_policy .*got 3",
    ),
    ("continual-burst", dict(continual_options={"budget_burst": 5}), r"budget_burst = 5 needs a query_budget"),
    ("continual-probes-never", dict(continual_ticks=5), r"probe_every = 10 with continual_ticks = 5"),
    ("encoder-bits-unused", dict(encoder_bits=4), r"encoder_bits = 4 is used only by encoder = 'thermometer'"),
    ("data-path-unused", dict(data_path="v.csv"), r"data_path 'v.csv' is not used by dataset 'digits'"),
    (
        "mnist-idx-test-fraction",
        dict(dataset="mnist-idx", data_path="x", test_fraction=0.3),
        r"test_fraction = 0.3 is not used by dataset 'mnist-idx'",
    ),
    (
        "method-option",
        dict(method_options={"twin_samples": 5}),
        r"method_options: method 'mfff' has no option\(s\) 'twin_samples'",
    ),
    (
        "method-option-value",
        dict(method="pat", method_options={"twin_samples": -5}),
        r"method 'pat': twin_samples .*-5",
    ),
    ("method-key", dict(method="pat", theta=3.0), r"config key 'theta' = 3.0 is not an option of method 'pat'"),
    (
        "system-option",
        dict(system="spy", system_options={"nois": True}),
        r"system 'spy' has no option\(s\) 'nois'; its options are: noise",
    ),
    (
        "system-option-type",
        dict(system="spy", system_options={"noise": "no"}),
        r"system 'spy' option noise must be true or false, got 'no'",
    ),
    ("system-option-run-set", dict(system="spy", system_options={"seed": 3}), r"'seed' are set by the run itself"),
    ("system-unknown", dict(system="spyy"), r"unknown system 'spyy'; available systems: .*spy"),
]


@pytest.mark.parametrize("case, keys, pattern", CONFIG_ONLY, ids=[c[0] for c in CONFIG_ONLY])
def test_a_bad_combination_is_refused_before_anything_is_loaded_or_opened(spy, tmp_path, case, keys, pattern):
    config = RunConfig(**{"system": "spy", "output": str(tmp_path), **keys})
    refused(config, pattern)
    assert spy["data"] == 0
    assert not list(tmp_path.iterdir())  # no run file either


@pytest.mark.parametrize("value", [-1, 0, float("nan"), float("inf"), "max", True])
def test_label_scale_must_be_a_positive_number_or_a_rule(value):
    with pytest.raises(ConfigError, match=r"label_scale must be 'batch_max', 'sample_max' or a positive finite number"):
        RunConfig(label_scale=value)
    assert RunConfig(label_scale=0.5).label_scale == 0.5


def test_a_budget_below_one_epoch_is_refused_before_any_system_is_built(spy, tmp_path):
    # MF-FF knows an epoch's cost in advance: 2 x blocks x training samples (digits: 1437 training samples, 10 %
    # of them held out for validation)
    message = refused(
        RunConfig(system="spy", query_budget=1, output=str(tmp_path)),
        r"query_budget = 1 is below one epoch's learning queries \(5180 for method 'mfff' on 1295 training samples "
        r"through 2 block\(s\)\), so no epoch could run; give query_budget >= 5180, or 0 for no budget",
    )
    assert "5180" in message and spy["data"] == 1  # the data was needed for it; no system was


def test_a_budget_a_method_cannot_foresee_is_said_not_hidden(caplog):
    from physnn.train.pat import PAT

    config = RunConfig(method="pat", query_budget=10)
    with caplog.at_level(logging.WARNING, logger="physnn.run.preflight"):
        preflight.check_budget(config, PAT(), 1000)
    assert "query_budget = 10: method 'pat' cannot tell one epoch's learning queries" in caplog.text
    assert "first epoch always runs whole" in caplog.text


def test_lab_scripts_instruments_are_closed_when_their_config_is_refused():
    from physnn.simulators.optics import OpticalCavity

    handed = [OpticalCavity(20, 8, seed=1), OpticalCavity(8, 8, seed=2)]
    refused(RunConfig(stop_on="val", val_fraction=0.0, epochs=20, eval_every=1), r"stop_on = 'val'", systems=handed)
    assert all(s.closed for s in handed)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("system", ["optics", *RECIPES])
def test_the_defaults_and_every_recipe_pass_for_every_method(method, system):
    """No rule is stricter than the configurations the project itself runs."""
    preflight.check_config(RunConfig.from_dict(with_recipe({"system": system, "method": method})))


def test_each_stop_rule_is_accepted_where_it_can_fire():
    for keys in (
        dict(stop_on="val", epochs=20, eval_every=1),
        dict(stop_on="val", epochs=7, eval_every=1, patience=5),
        dict(stop_on="loss", epochs=7, patience=5),
        dict(stop_on="gap", epochs=10, patience=1, method="ff_digital"),
    ):
        preflight.check_config(RunConfig(**keys))
    with pytest.raises(ConfigError, match="patience = 5 needs 6"):
        preflight.check_config(RunConfig(stop_on="val", epochs=6, eval_every=1, patience=5))


def test_continual_options_are_checked_without_a_trainer():
    assert Continual.check_options({"probe_every": 5, "query_budget": 64}) == {"probe_every": 5, "query_budget": 64.0}
    with pytest.raises(ValueError, match="continual option seed .*set by the run itself|'seed' are set by the run"):
        Continual.check_options({"seed": 3})
    with pytest.raises(ValueError, match="budget_burst = 700 needs a query_budget"):
        Continual.check_options({"budget_burst": 700})
    with pytest.raises(ValueError, match="budget_burst must be a finite number >= 64, got 10"):
        Continual.check_options({"query_budget": 64, "budget_burst": 10})


def test_every_rule_is_listed_once():
    names = [rule.__name__ for rule in preflight.COMBINATIONS]
    assert len(names) == len(set(names)) >= 9
