"""Continual training: drift detection against the probes' noise floor, actions as events, budget, replay."""

from __future__ import annotations

import pytest
import torch

from physnn.core.model import PNN
from physnn.run.continual import Continual, ProbeMonitor, train_step
from physnn.simulators.drift import Drifting
from physnn.simulators.optics import OpticalCavity
from physnn.train.mfff import MFFF


def tiny_data(n=120, f=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g)
    y = torch.arange(n) % c
    x[torch.arange(n), y] += 1.0
    return x, y


class Clock:
    """A settable clock for the drift wrappers: one unit per stream tick."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def device(clock: Clock, n_in: int, seed: int, **drift) -> Drifting:
    return Drifting(OpticalCavity(n_in, 16, seed=seed), clock="wall", time_fn=clock, seed=seed + 50, **drift)


def trained(clock: Clock, events=(), epochs=6, **drift):
    x, y = tiny_data()
    systems = [device(clock, 9, 1, events=events, **drift), device(clock, 8, 2, events=events, **drift)]
    model = PNN(systems, 6, 3, hidden=8, seed=0)
    trainer = MFFF(epochs=epochs, batch_size=32, lr=0.02, seed=0, eval_every=0)
    trainer.fit(model, x, y)
    return model, trainer, x, y


def stream(x, y, batch=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        yield x[idx], y[idx]


def ticking(clock: Clock):
    def on_tick(k, record):
        clock.t += 1.0

    return on_tick


# ------------------------------------------------------------------ detection
def test_probes_see_a_jump_but_not_the_noise():
    clock = Clock()
    system = device(clock, 8, 4, events=[(5.0, 0.5)])
    monitor = ProbeMonitor([system, system], probes=8, repeats=3, threshold=3.0, seed=1)
    assert len(monitor.systems) == 1  # a system used twice is watched once
    floors = monitor.reference()
    assert floors[0] > 0  # shot and read noise: a real floor
    quiet = [monitor.check()[0] for _ in range(5)]
    assert all(0.7 < r < 1.5 for r in quiet), quiet  # no drift: r ~ 1
    clock.t = 5.0
    assert monitor.check()[0] > 5 * monitor.threshold  # the bump stands far above the floor


def test_no_drift_means_no_detection_and_plain_training():
    clock = Clock()
    model, trainer, x, y = trained(clock, epochs=2)
    cont = Continual(trainer, probe_every=3, replay_batch=8, seed=0)
    hist = cont.run(model, stream(x, y), on_tick=ticking(clock), max_ticks=30)
    assert [e["kind"] for e in hist.events] == ["reference"]
    assert len(hist.ticks) == 30 and all(t["steps"] == 1 for t in hist.ticks)
    assert all(t["lr"] == trainer.lr for t in hist.ticks)


def test_a_sudden_event_is_detected_acted_on_and_recorded():
    clock = Clock()
    model, trainer, x, y = trained(clock, events=[(12.0, 1.0)])
    before = model.score(x, y)
    seen = []
    cont = Continual(trainer, probe_every=4, retrain_steps=5, lr_boost=3.0, boost_ticks=10, replay_batch=16, seed=0)
    refits = []

    def refit(m, xr, yr):
        refits.append(xr.shape[0])
        return {"what": "readout"}

    hist = cont.run(
        model,
        stream(x, y),
        on_tick=ticking(clock),
        on_event=lambda k, f: seen.append((k, f)),
        refit=refit,
        max_ticks=60,
    )
    kinds = [e["kind"] for e in hist.events]
    assert kinds[:7] == ["reference", "drift_detected", "lr_change", "retrain", "refit", "reference", "retrain_done"]
    detected = hist.events_of("drift_detected")
    assert len(detected) == 1 and detected[0]["tick"] == 12  # the first probe at or after the bump
    assert detected[0]["ratio"][0] > 10 and sorted(detected[0]["systems"]) == [0, 1]
    assert hist.events_of("lr_change")[0]["lr"] == pytest.approx(3 * trainer.lr)
    assert hist.events_of("lr_change")[-1]["lr"] == trainer.lr  # the boost decayed back
    assert refits == [min(13 * 16, cont.replay_size)] and hist.events_of("refit")[0]["what"] == "readout"
    assert [k for k, _ in seen] == kinds and all("kind" not in f for _, f in seen)  # a run file's event(kind, fields)
    tick12 = hist.ticks[12]
    assert tick12["steps"] == 6 and tick12["drift_ratio"] > 10  # the step of the tick plus 5 re-training steps
    assert model.score(x, y) > before - 0.1  # it kept (or got back) its accuracy on the changed device


def test_continual_beats_a_frozen_copy_after_a_bump():
    clocks = Clock(), Clock()
    frozen, _, x, y = trained(clocks[0], events=[(1.0, 1.0)])
    model, trainer, _, _ = trained(clocks[1], events=[(1.0, 1.0)])
    clocks[0].t = 1.0
    frozen_acc = frozen.score(x, y)
    Continual(trainer, probe_every=1, retrain_steps=10, replay_batch=16, seed=0).run(
        model, stream(x, y), on_tick=ticking(clocks[1]), max_ticks=40
    )
    assert model.score(x, y) > frozen_acc + 0.1


# ------------------------------------------------------------------ budget, replay, determinism
def test_the_query_budget_holds():
    clock = Clock()
    model, trainer, x, y = trained(clock, epochs=1)
    cont = Continual(trainer, query_budget=100.0, probe_every=0, replay_batch=8, seed=0)
    q0 = sum(s.stats.samples for s in model.systems)
    hist = cont.run(model, stream(x, y), on_tick=ticking(clock), max_ticks=40)
    spent = sum(s.stats.samples for s in model.systems) - q0
    # one step costs 2 x 2 blocks x 24 samples = 96 queries; 100 per tick with a debt of at most one step
    assert spent <= 100 * 40 + 96
    assert spent == sum(t["queries"] for t in hist.ticks) > 0.8 * 100 * 40
    assert all(t["budget_tokens"] <= cont.budget_burst for t in hist.ticks)
    cheap = Continual(trainer, query_budget=30.0, probe_every=0, replay_batch=8, seed=0)
    h2 = cheap.run(model, stream(x, y), on_tick=ticking(clock), max_ticks=40)
    assert 0 < sum(t["steps"] for t in h2.ticks) < 20 and h2.events_of("budget_exhausted")


def test_replay_keeps_the_most_recent_samples_only():
    clock = Clock()
    model, trainer, x, y = trained(clock, epochs=1)
    cont = Continual(trainer, replay_size=50, replay_batch=4, probe_every=0, seed=0)
    gen = stream(x, y, batch=16, seed=9)
    batches = [next(gen) for _ in range(10)]
    cont.run(model, iter(batches), max_ticks=10)
    recent = torch.cat([b[0] for b in batches])[-50:]
    assert cont._x.shape[0] == 50 and torch.equal(cont._x, recent)


def test_runs_are_deterministic():
    def run():
        clock = Clock()
        model, trainer, x, y = trained(clock, events=[(5.0, 0.5)], epochs=1)
        hist = Continual(trainer, probe_every=2, retrain_steps=3, replay_batch=8, seed=4).run(
            model, stream(x, y), on_tick=ticking(clock), max_ticks=15
        )
        return hist.ticks, [e["kind"] for e in hist.events]

    assert run() == run()


def test_train_step_is_one_batch_of_the_trainer():
    clock = Clock()
    model, trainer, x, y = trained(clock, epochs=1)
    q0 = sum(s.stats.samples for s in model.systems)
    metrics = train_step(trainer, model, x[:20], y[:20])
    assert "loss" in metrics and sum(s.stats.samples for s in model.systems) - q0 == 2 * 2 * 20
    assert not model.training


def test_bad_options_are_named():
    clock = Clock()
    _, trainer, _, _ = trained(clock, epochs=1)
    with pytest.raises(ValueError, match="lr_policy must be one of 'constant', 'boost', got 'warm'"):
        Continual(trainer, lr_policy="warm")
    with pytest.raises(ValueError, match="threshold must be a finite number > 1, got 1"):
        Continual(trainer, threshold=1)
    with pytest.raises(ValueError, match="budget_burst = 5 needs a query_budget"):
        Continual(trainer, budget_burst=5)
    with pytest.raises(ValueError, match="replay_size must be an integer >= 1, got 0"):
        Continual(trainer, replay_size=0)
    with pytest.raises(TypeError, match="Trainer contract"):
        Continual(object())
