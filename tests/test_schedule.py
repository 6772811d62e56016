"""Grouped block-0 queries, the block-0 cache and the pipelined (wavefront) schedule of MF-FF (issue 12)."""

import threading

import pytest
import torch

from physnn.core.checks import ParameterError
from physnn.core.model import PNN
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.simulators.optics import OpticalCavity
from physnn.train.mfff import MFFF
from physnn.train.schedule import DeviceExecutors, run_wavefront


class Toy(PhysicalSystem):
    """Deterministic, rows independent; records every batch size that reached ``_measure``."""

    def __init__(self, n_in, n_out, seed=0, max_batch=None, fail_at=None, exc=RuntimeError):
        super().__init__(SystemSpec(n_in, n_out, name="toy", max_batch=max_batch))
        self.w = torch.randn(n_in, n_out, generator=torch.Generator().manual_seed(seed))
        self.sizes = []
        self.fail_at, self.exc = fail_at, exc

    def _measure(self, x):
        if self.fail_at is not None and len(self.sizes) == self.fail_at:
            raise self.exc("instrument fault")
        self.sizes.append(x.shape[0])
        return torch.tanh(x @ self.w) ** 2


def data(n=200, f=6, c=3):
    x = torch.rand(n, f, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % c
    x[torch.arange(n), y] += 1.0
    return x, y


def train(systems, epochs=2, label_scale="batch_max", **kw):
    x, y = data()
    pnn = PNN(systems, 6, 3, hidden=5, seed=0, label_scale=label_scale)
    trainer = MFFF(epochs=epochs, batch_size=16, seed=0, **kw)
    trainer.fit(pnn, x, y)
    return [p.detach().clone() for p in pnn.parameters()], trainer


def same(a, b):
    return len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))


def toys(**kw):
    return [Toy(9, 8, 1, **kw), Toy(5, 8, 2)]


def optics(noise=False):
    return [OpticalCavity(9, 16, seed=1, noise=noise), OpticalCavity(5, 16, seed=2, noise=noise)]


@pytest.mark.parametrize("make", [toys, optics], ids=["toy", "optics"])
@pytest.mark.parametrize(
    "kw",
    [{}, {"schedule": "pipelined"}, {"schedule": "pipelined", "group_block0": False}],
    ids=["grouped", "pipelined+grouped", "pipelined"],
)
def test_every_schedule_gives_the_batch_by_batch_weights_bit_for_bit(make, kw):
    ref, _ = train(make(), group_block0=False)
    got, _ = train(make(), **kw)
    assert same(ref, got)
    other, _ = train(make(), epochs=1)
    assert not same(ref, other)  # the comparison can fail


def test_pipelined_keeps_each_noisy_devices_call_sequence():
    """Without grouping, each device sees the serial calls in order: even the noise draws agree."""
    ref, _ = train(optics(noise=True), group_block0=False)
    got, _ = train(optics(noise=True), group_block0=False, schedule="pipelined")
    assert same(ref, got)


def test_pipelined_equals_serial_with_block0_grouped_on_a_noisy_device():
    """Grouped on both sides, the devices get the same calls in the same order: the noise draws agree too."""
    ref, _ = train(optics(noise=True))
    got, _ = train(optics(noise=True), schedule="pipelined")
    assert same(ref, got)
    ungrouped, _ = train(optics(noise=True), group_block0=False)
    assert not same(ref, ungrouped)  # grouping changes the noise draws (the comparison can fail)


def test_shared_device_mode_gives_the_same_weights():
    def shared():
        s = Toy(9, 8, 1)  # one system serves both blocks (its width fits block 1's input too)
        return [s, s]

    ref, _ = train(shared(), group_block0=False)
    got, _ = train(shared(), schedule="pipelined")
    assert same(ref, got)
    assert DeviceExecutors([1, 1]).shared and not DeviceExecutors([1, 2]).shared


def test_grouped_block0_calls_respect_max_batch():
    # 200 samples, batch 16: 13 batches (12 x 16 + 8), 26 + ... rows of [pos; neg] per batch
    s = toys(max_batch=100)
    _, trainer = train(s, epochs=1)
    assert max(s[0].sizes) <= 100
    # whole batches packed: 32-row batches, 3 per call (96 rows) -> 4 full calls + one of 32 + 16
    assert s[0].stats.calls == 5 and s[0].stats.samples == 400
    assert s[1].stats.calls == 13  # block 1 depends on block 0's weights: one call per batch
    unlimited = toys()
    train(unlimited, epochs=1)
    assert unlimited[0].stats.calls == 1 and unlimited[0].sizes == [400]


def test_a_system_splits_a_batch_over_its_max_batch():
    s = Toy(4, 3, max_batch=7)
    x = torch.rand(20, 4)
    y = s(x)
    assert s.sizes == [7, 7, 6] and s.stats.calls == 3 and s.stats.samples == 20
    assert torch.allclose(y, Toy(4, 3)(x))
    with pytest.raises(ValueError, match="max_batch"):
        SystemSpec(4, 3, max_batch=0)


def test_block0_cache_reuses_stable_responses_and_can_be_emptied():
    ref, _ = train(toys(), epochs=3, label_scale=1.0)
    s = toys()
    got, trainer = train(s, epochs=3, label_scale=1.0, cache_block0=True)
    assert same(ref, got)  # a deterministic device: cached responses are the responses
    # epoch 1 measures 200 positives + <= 400 negatives' distinct drives; later epochs mostly hit the cache
    assert s[0].stats.samples < 3 * 400 and trainer.cache_hits > 0
    assert s[0].stats.samples + trainer.cache_hits == 3 * 400
    assert trainer.invalidate_cache() > 0 and trainer.invalidate_cache() == 0


def test_a_device_fault_in_a_worker_stops_the_epoch_and_leaves_no_thread_querying():
    s = [Toy(9, 8, 1), Toy(5, 8, 2, fail_at=4)]
    x, y = data()
    pnn = PNN(s, 6, 3, hidden=5, seed=0)
    with pytest.raises(RuntimeError, match="instrument fault"):
        MFFF(epochs=1, batch_size=16, seed=0, schedule="pipelined", group_block0=False).fit(pnn, x, y)
    assert not [t for t in threading.enumerate() if t.name.startswith("physnn-device")]
    calls = [si.stats.calls for si in s]
    assert calls[1] == 4  # nothing was measured after the fault


def test_ctrl_c_in_the_trainer_cancels_pending_measurements():
    class Held(Toy):
        """Holds its 6th call until released: the queue behind it is still pending at Ctrl-C."""

        release = threading.Event()

        def _measure(self, x):
            if len(self.sizes) == 5:
                self.release.wait(10.0)
            return super()._measure(x)

    s = [Held(9, 8, 1), Toy(5, 8, 2)]
    x, y = data()
    pnn = PNN(s, 6, 3, hidden=5, seed=0)
    trainer = MFFF(epochs=1, batch_size=16, seed=0, schedule="pipelined", group_block0=False)

    class Bar:  # the progress bar's update is called on the training thread after each batch
        n = 0

        def update(self, k):
            self.n += k
            if self.n == 3:
                threading.Timer(0.2, Held.release.set).start()  # the in-flight call returns after the Ctrl-C
                raise KeyboardInterrupt

    trainer.prepare(pnn)
    with pytest.raises(KeyboardInterrupt):
        trainer._train_epoch(pnn, x, y, Bar())
    assert not [t for t in threading.enumerate() if t.name.startswith("physnn-device")]
    assert s[0].stats.calls == 6  # the call in flight finished; the 7 queued behind it were cancelled
    assert s[1].stats.calls <= 4


def test_run_wavefront_checks_its_arguments():
    with DeviceExecutors([1, 2]) as ex:
        with pytest.raises(ValueError, match="one future per item"):
            run_wavefront(2, 2, ex, [], lambda *a: None, lambda *a: None)
        with pytest.raises(ValueError, match="stage"):
            run_wavefront(0, 3, ex, [], lambda *a: None, lambda *a: None)
    with pytest.raises(ParameterError, match="schedule"):
        MFFF(schedule="wavefront")


class Stepping(Toy):
    """A deterministic device whose gain steps by half from its ``step_at``-th call on (None: perfectly stable)."""

    def __init__(self, *a, step_at=None, **kw):
        super().__init__(*a, **kw)
        self.step_at = step_at

    def _measure(self, x):
        y = super()._measure(x)
        return y * 1.5 if self.step_at is not None and len(self.sizes) > self.step_at else y


@pytest.mark.parametrize("step_at", [None, 3], ids=["stable", "stepping"])
def test_the_runner_empties_the_block0_cache_when_the_probes_drift(tmp_path, step_at):
    from physnn import runlog
    from physnn.run.config import RunConfig
    from physnn.run.experiment import run_experiment

    cfg = RunConfig(
        hidden=8, epochs=3, label_scale=1.0, output=str(tmp_path), probes=4, method_options={"cache_block0": True}
    )
    # block 0's calls: 2 probe measurements, epoch 1's grouped drives, then epoch 1's probes (stepped from here)
    systems = [Stepping(74, 16, 1, step_at=step_at), Toy(8, 16, 2)]  # digits: 64 features + 10 label slots
    result = run_experiment(cfg, systems=systems, progress=False, echo=lambda line: None)
    events = [e for e in runlog.load(result.path).events if e["kind"] == "block0_cache_invalidated"]
    per_epoch = result.history[0]["train_queries"] / 2  # block 0's share of the first epoch (nothing cached yet)
    block0 = [e["train_queries"] - per_epoch for e in result.history]  # block 1 always queries per_epoch
    assert block0[2] < per_epoch  # the cache answers most drives of the last epoch
    if step_at is None:
        assert events == [] and block0[1] < per_epoch
    else:
        assert [e["fields"]["epoch"] for e in events] == [1]  # the probes after epoch 1 saw the step
        assert block0[1] == per_epoch  # the emptied cache re-measured every drive of epoch 2
