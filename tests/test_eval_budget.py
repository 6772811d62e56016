"""Evaluation budget, query budget and stop rules (issue 12 items 1 and 5), through the runner."""

import math

import pytest
import torch

from physnn import runlog
from physnn.core.model import PNN
from physnn.run.config import ConfigError, RunConfig
from physnn.run.experiment import run_experiment
from physnn.train.mfff import MFFF

C, L = 10, 2  # digits, two blocks


def run(tmp_path, **overrides):
    cfg = RunConfig(hidden=16, output=str(tmp_path), **overrides)
    return run_experiment(cfg, progress=False, echo=lambda line: None)


def evaluated(result):
    return [e["eval_samples"] for e in result.history if not math.isnan(e.get("eval_samples", math.nan))]


def test_main_job_defaults_spend_at_most_fifteen_percent_beyond_training(tmp_path):
    # the main job's keys (20 epochs, every 10th on the whole validation split), a narrow hidden layer
    result = run(tmp_path)
    assert result.total_queries / result.train_queries <= 1.15
    assert result.test_accuracy > 0.5
    assert math.isnan(result.train_accuracy)  # MF-FF reports no training-batch accuracy; none was measured
    n_val = result.history[-1]["val_n"]
    assert n_val >= 140 and evaluated(result) == [n_val, n_val]  # the whole validation split, twice
    # the test split once, at the end: C L queries per test sample beside training, evaluations and probes
    probes = 8 * L * (2 + 20)
    assert result.total_queries == result.train_queries + 2 * n_val * C * L + C * L * result.test_n + probes


def test_the_last_epoch_is_the_final_test_and_is_measured_once(tmp_path):
    # val_fraction = 0: the evaluations look at the test split, so the last one is the final test
    result = run(tmp_path, epochs=2, eval_every=1, eval_samples=0, val_fraction=0.0)
    n = result.test_n
    assert evaluated(result) == [n, n]
    run_file = runlog.load(result.path)
    probes = 8 * L * (2 + 2)  # two blocks, measured twice before training and after each epoch
    assert result.total_queries == result.train_queries + 2 * C * L * n + probes
    assert "queries/final" not in result.history[-1] or result.history[-1]["queries/final"] == 0
    assert run_file.summary["test_accuracy"] == pytest.approx(result.history[-1]["test_accuracy"])


def test_train_accuracy_is_measured_only_when_asked(tmp_path):
    off = run(tmp_path, epochs=1, val_fraction=0.0)
    on = run(tmp_path, epochs=1, val_fraction=0.0, measure_train_accuracy=True)
    assert math.isnan(off.train_accuracy) and 0.0 <= on.train_accuracy <= 1.0
    n_train = on.train_queries // (2 * L)
    assert on.total_queries - off.total_queries == C * L * n_train


def test_scheduled_evaluations_use_a_fixed_subsample(tmp_path):
    result = run(tmp_path, epochs=3, eval_every=1, eval_samples=20, val_fraction=0.0)
    assert evaluated(result) == [20, 20, result.test_n]  # the last one is the final test
    assert [e["eval_queries"] for e in result.history][:2] == [20 * C * L] * 2
    again = run(tmp_path, epochs=3, eval_every=1, eval_samples=20, val_fraction=0.0)
    assert [e["test_accuracy"] for e in again.history] == [e["test_accuracy"] for e in result.history]
    held_out = run(tmp_path, epochs=3, eval_every=1, eval_samples=20)
    assert evaluated(held_out) == [20, 20, 20] and "val_accuracy" in held_out.history[-1]


def test_query_budget_stops_before_the_epoch_that_would_exceed_it(tmp_path):
    one = run(tmp_path, epochs=1).train_queries
    result = run(tmp_path, epochs=10, query_budget=int(2.5 * one))
    assert len(result.history) == 2 and result.train_queries == 2 * one
    assert result.history[-1]["stopped"] == 1 and result.history[-1]["eval_samples"] >= 140
    events = [e for e in runlog.load(result.path).events if e["kind"] == "early_stop"]
    assert len(events) == 1 and events[0]["fields"]["reason"] == "query_budget"
    # a budget that leaves room for no epoch is refused before any system is built (it trained nothing and
    # reported the untrained network); physnn/run/preflight.py
    with pytest.raises(ConfigError, match=f"query_budget = {one - 1} is below one epoch's learning queries"):
        run(tmp_path, epochs=10, query_budget=one - 1)


@pytest.mark.parametrize("rule", ["loss", "gap"])
def test_plateau_rules_stop_without_a_query(tmp_path, rule):
    # min_delta larger than any change: epoch 1 sets the best, epoch 2 is a plateau of patience 1
    result = run(tmp_path, epochs=10, stop_on=rule, patience=1, min_delta=1e6, eval_samples=0)
    assert len(result.history) == 2 and result.history[-1]["stopped"] == 1
    ev = [e for e in runlog.load(result.path).events if e["kind"] == "early_stop"]
    assert ev[0]["fields"]["reason"] == f"plateau:{rule}"
    free = run(tmp_path, epochs=2, eval_samples=0)  # the same two epochs without a stop rule
    assert result.total_queries == free.total_queries


def test_validation_plateau_and_stop_state_survive_a_checkpoint():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(90, 6, generator=g), torch.arange(90) % 3
    from physnn.simulators.optics import OpticalCavity

    pnn = PNN([OpticalCavity(9, 16, seed=1), OpticalCavity(5, 16, seed=2)], 6, 3, hidden=5, seed=0)
    trainer = MFFF(epochs=10, batch_size=30, seed=0, eval_every=1).set_budget(stop_on="val", patience=2, min_delta=2.0)
    trainer.fit(pnn, x, y, x, y)
    assert trainer.stop_reason == "plateau:val" and trainer.epochs_done == 3
    state = trainer.state_dict()
    assert state["stopping"]["wait"] == 2 and state["stopping"]["best"] is not None
    fresh = MFFF(epochs=10, batch_size=30, seed=0, eval_every=1).set_budget(stop_on="val", patience=2)
    fresh.load_state_dict(pnn, state)
    assert (fresh._stop_best, fresh._stop_wait) == (state["stopping"]["best"], 2)


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("stop_on", "accuracy", "stop_on"),
        ("patience", 0, "patience"),
        ("eval_samples", -1, "eval_samples"),
        ("query_budget", 1.5, "query_budget"),
        ("schedule", "wavefront", "schedule"),
        ("measure_train_accuracy", "yes", "measure_train_accuracy"),
        ("min_delta", -1.0, "min_delta"),
    ],
)
def test_bad_budget_keys_name_the_key(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        RunConfig(**{key: value})


# ------------------------------------------------------------- validation with its n (issue 19 item 1)
def test_every_scheduled_validation_uses_the_whole_split_and_carries_n_and_interval(tmp_path):
    lines = []
    cfg = RunConfig(hidden=16, output=str(tmp_path), epochs=2, eval_every=1)
    result = run_experiment(cfg, progress=False, echo=lines.append)
    n_val = result.history[0]["val_n"]
    assert n_val >= 140  # digits: 10 % of the training split, all of it
    for e in result.history:
        assert e["eval_samples"] == e["val_n"] == n_val
        assert e["val_ci_low"] <= e["val_accuracy"] <= e["val_ci_high"]
        assert 0 < e["val_ci_high"] - e["val_ci_low"] < 0.2
    # the epoch line prints it the way the test line does: value (correct/n, 95 % CI lo-hi)
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    correct = round(result.history[-1]["val_accuracy"] * n_val)
    assert f"({correct}/{int(n_val)}, 95 % CI " in epoch_lines[-1]
    stored = runlog.load(result.path).metrics
    assert list(stored["val_n"]) == [n_val, n_val]


def test_significant_stop_rule_ignores_a_one_sample_rise():
    from physnn.train.base import Trainer, _binomial_tail

    assert _binomial_tail(5, 5) == pytest.approx(1 / 32) and _binomial_tail(0, 0) == 1.0
    t = Trainer(epochs=10).set_budget(stop_on="val_significant", patience=2)
    y = torch.zeros(100, dtype=torch.bool)
    first = y.clone()
    first[:80] = True  # 0.80
    assert not t._plateaued({"val_accuracy": 0.80, "eval_samples": 100}, first)
    one_more = first.clone()
    one_more[80] = True  # 0.81: one sample, well inside the interval
    assert not t._plateaued({"val_accuracy": 0.81, "eval_samples": 100}, one_more)
    assert t._stop_wait == 1 and t._stop_best == 0.80  # not counted as an improvement
    jump = first.clone()
    jump[80:90] = True  # 0.90: ten samples won, none lost (p = 2^-10)
    assert not t._plateaued({"val_accuracy": 0.90, "eval_samples": 100}, jump)
    assert t._stop_wait == 0 and t._stop_best == 0.90
    assert not t._plateaued({"val_accuracy": 0.91, "eval_samples": 100}, one_more | jump)
    assert t._plateaued({"val_accuracy": 0.90, "eval_samples": 100}, jump)  # two evaluations without: stop
    # without per-sample predictions: the accuracy must clear the best one's 95 % interval
    u = Trainer(epochs=10).set_budget(stop_on="val_significant", patience=1)
    assert not u._plateaued({"val_accuracy": 0.80, "eval_samples": 100})
    assert u._plateaued({"val_accuracy": 0.85, "eval_samples": 100})  # inside 0.71-0.87
    state = t.state_dict()["stopping"]
    assert torch.equal(state["best_correct"], jump)
