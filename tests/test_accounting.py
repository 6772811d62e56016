"""Accounting: queries per phase equal the samples sent, FLOPs equal hand counts and exclude the physics."""

import pytest
import torch

from physnn.core.e2e_model import E2ENet
from physnn.core.model import PNN
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.simulators.optics import OpticalCavity
from physnn.train.accounting import Accountant, StandIn, count_flops, probe_flops, with_stand_ins
from physnn.train.mfff import MFFF
from physnn.train.pat import PAT
from physnn.train.zeroth_order import ZerothOrder


class MatmulSystem(PhysicalSystem):
    """A system whose physics is a real matrix product (it would count 2*B*n_in*n_out FLOPs if not excluded)."""

    def __init__(self, n_in=7, n_out=9, seed=0):
        super().__init__(SystemSpec(n_in, n_out, name="matmul"))
        self.w = torch.randn(n_in, n_out, generator=torch.Generator().manual_seed(seed))
        self.rows = 0

    def _measure(self, x):
        self.rows += x.shape[0]
        return torch.tanh(x @ self.w)

    def differentiable(self, x):
        return torch.tanh(x @ self.w)


def test_linear_forward_backward_flops_equal_the_hand_count_and_exclude_the_system():
    torch.manual_seed(0)
    B, n_in, n_out = 3, 7, 5
    lin = torch.nn.Linear(n_in, n_out)
    system = MatmulSystem(n_in=4, n_out=n_in)
    acct = Accountant([system])
    with acct.phase("train"):
        with acct.flops("step"):
            h = system(torch.rand(B, 4))  # physics: 2*3*4*7 = 168 FLOPs that must not be counted
            lin(h).sum().backward()
    # forward addmm 2*B*in*out = 210; backward: grad weight (out x B @ B x in) = 210; the measurement
    # is detached (no gradient reaches a system), so there is no grad-input product
    m = acct.metrics()
    assert m["flops/train"] == 420
    with acct.phase("eval"):
        with acct.flops("step with input gradient"):
            h = system(torch.rand(B, 4)).requires_grad_(True)
            lin(h).sum().backward()
    m = acct.metrics()
    assert m["flops/eval"] == 3 * (2 * B * n_in * n_out) == 630  # + grad input (B x out @ out x in)
    assert m["flops/learning"] == 420 and m["flops/total"] == 1050
    # the simulator's differentiable model, run by a computer, *is* digital compute
    _, n = count_flops(lambda: system.differentiable(torch.rand(B, 4)))
    assert n == 2 * B * 4 * n_in
    _, n = count_flops(lambda: system(torch.rand(B, 4)))
    assert n == 0


def test_optical_simulator_query_costs_no_digital_flops_even_nested_in_a_drift_wrapper():
    from physnn.simulators.drift import Drifting

    s = Drifting(OpticalCavity(8, 16, seed=0), events=[(0.0, 0.1)])
    _, n = count_flops(lambda: s(torch.zeros(5, 8)))
    assert n == 0
    _, n = count_flops(lambda: s.system.differentiable(torch.zeros(5, 8)))
    assert n == 2 * 5 * 8 * 16


def test_queries_per_phase_equal_the_samples_sent_and_shared_systems_count_once():
    a, b = MatmulSystem(seed=1), MatmulSystem(seed=2)
    a(torch.rand(4, 7))  # before the accountant: not charged
    a_seconds = a.stats.seconds
    acct = Accountant([a, b, a])
    with acct.phase("train"):
        a(torch.rand(5, 7))
        b(torch.rand(6, 7))
    with acct.phase("eval"):
        a(torch.rand(3, 7))
    b(torch.rand(2, 7))  # outside any phase
    with acct.phase("train"):
        b(torch.rand(1, 7))
    m = acct.metrics()
    assert m["queries/train"] == 12 and m["queries/eval"] == 3 and m["queries/other"] == 2
    assert m["queries/total"] == 17 == (a.rows - 4) + b.rows
    assert m["queries/learning"] == 12
    assert m["device_seconds/total"] == pytest.approx(a.stats.seconds - a_seconds + b.stats.seconds)
    assert set(m) >= {"wall_seconds/train", "wall_seconds/eval", "device_seconds/train"}


def test_phases_do_not_nest_and_bad_arguments_are_named():
    acct = Accountant()
    with pytest.raises(RuntimeError, match="phase 'eval' started inside phase 'train'; phases do not nest"):
        with acct.phase("train"):
            with acct.phase("eval"):
                pass
    with pytest.raises(ValueError, match="phase name must be a non-empty string, got ''"):
        with acct.phase(""):
            pass
    with pytest.raises(TypeError, match="systems must be PhysicalSystem objects, got int"):
        Accountant([3])
    with pytest.raises(ValueError, match="flops must be an integer >= 0, got -1"):
        acct.prime("k", -1)


def test_memoised_flops_equal_exact_counting_for_whole_runs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(37, 5, generator=g)
    y = torch.arange(37) % 3

    def run(cls, exact, **kw):
        systems = [MatmulSystem(n_in=8, n_out=6, seed=1), MatmulSystem(n_in=8, n_out=6, seed=2)]
        model = E2ENet(systems, 5, 3, hidden=8, seed=0)
        trainer = cls(epochs=2, batch_size=16, seed=0, **kw)
        trainer.accountant = Accountant(systems, exact=exact)
        hist = trainer.fit(model, x, y, x, y)
        return hist.epochs[-1], trainer.accountant

    for cls, kw in (
        (ZerothOrder, dict(directions=2)),
        (PAT, dict(twin_samples=40, twin_epochs=2, twin_hidden=(8,), refit_steps=3)),
    ):
        memo, acct_m = run(cls, False, **kw)
        exact, acct_e = run(cls, True, **kw)
        for key in ("flops/train", "flops/twin_fit", "flops/eval"):
            assert memo.get(key) == exact.get(key), (cls.__name__, key)
        assert memo["flops/train"] > 0
        assert acct_m.memo_hits > 0 and acct_e.memo_hits == 0


def test_zeroth_order_training_flops_match_the_hand_count():
    # one block of interest: the classifier (8+8 -> 3) gets forward + 2 backward matmuls per evaluation;
    # block 0 (6+5 -> 8) runs forward only (no autograd through upstream weights)
    x = torch.rand(16, 5)
    y = torch.arange(16) % 3
    systems = [MatmulSystem(n_in=8, n_out=6, seed=1), MatmulSystem(n_in=8, n_out=8, seed=2)]
    model = E2ENet(systems, 5, 3, hidden=8, seed=0)
    trainer = ZerothOrder(epochs=1, batch_size=16, seed=0, directions=1, eval_every=0)
    hist = trainer.fit(model, x, y)
    B = 16
    block0 = 2 * B * (6 + 5) * 8
    head_fwd = 2 * B * (8 + 8) * 3
    head_bwd_w = 2 * B * (8 + 8) * 3  # grad weight only: the input of the head needs no gradient
    per_eval = block0 + head_fwd + head_bwd_w
    assert hist.epochs[0]["flops/train"] == 2 * per_eval


def test_probe_on_stand_ins_counts_the_same_flops_as_the_real_run_without_queries():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 6, generator=g)
    y = torch.arange(40) % 3
    systems = [OpticalCavity(9, 12, seed=1), OpticalCavity(10, 12, seed=2)]
    pnn = PNN(systems, 6, 3, hidden=10, seed=0)
    trainer = MFFF(epochs=1, batch_size=16, seed=0, eval_every=0)
    probe_model = with_stand_ins(pnn, systems)
    probe_trainer = with_stand_ins(trainer, systems)
    assert all(isinstance(s, StandIn) for s in probe_model.systems)
    n_probe = probe_flops(lambda: probe_trainer.fit(probe_model, x, y))
    assert sum(s.stats.samples for s in systems) == 0  # the probe never touched the real systems
    _, n_real = count_flops(lambda: trainer.fit(pnn, x, y))
    assert n_probe == n_real > 0
    assert sum(s.stats.samples for s in systems) == 2 * 2 * 40
    # the probe did not disturb the real run: a run without a probe ends with the same weights
    ref_systems = [OpticalCavity(9, 12, seed=1), OpticalCavity(10, 12, seed=2)]
    ref = PNN(ref_systems, 6, 3, hidden=10, seed=0)
    MFFF(epochs=1, batch_size=16, seed=0, eval_every=0).fit(ref, x, y)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in pnn.state_dict().items())


def test_lu_solve_flops_are_counted():
    A = torch.randn(3, 5, 5)
    b = torch.randn(3, 5, 2)
    _, n = count_flops(lambda: torch.linalg.solve(A, b))
    assert n == 3 * ((2 * 125) // 3 + 2 * 25 * 2)
    _, n = count_flops(lambda: torch.linalg.solve(torch.randn(4, 4), torch.randn(4)))
    assert n == (2 * 64) // 3 + 2 * 16
