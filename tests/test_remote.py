"""RemoteSystem on a two-node Ray cluster on this machine (loopback only).

The bench node advertises ``bench:sim-a``; the tests check that the system
runs there, that a bad drive never leaves the training process, that errors
keep their type, that training through the remote system equals training
locally, and what a lost actor does to a run and its run file.
"""

from __future__ import annotations

import time

import pytest
import torch

from physnn.run.config import RunConfig
from physnn.run.experiment import run_experiment
from physnn.scale import remote, serving

remote.use_loopback()  # before Ray is imported: nothing binds beyond 127.0.0.1
ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'physnn[ray]')")

BENCH = "bench:sim-a"
_MB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    """A head node (driver) and a bench node, both on 127.0.0.1; every process is stopped afterwards."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args=dict(
            num_cpus=1, object_store_memory=100 * _MB, include_dashboard=False, node_ip_address="127.0.0.1"
        ),
    )
    try:
        bench = c.add_node(num_cpus=1, resources={BENCH: 1}, object_store_memory=100 * _MB, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        yield c, bench
    finally:
        ray.shutdown()
        c.shutdown()


def _small_config(**kw) -> RunConfig:
    base = dict(
        dataset="digits",
        system="optics",
        blocks=2,
        hidden=24,
        epochs=1,
        batch_size=128,
        probes=2,
        log_samples=False,
        seed=3,
    )
    base.update(kw)
    return RunConfig(**base)


def _remote_config(cfg: RunConfig) -> RunConfig:
    return cfg.updated(
        system="remote", system_options={"name": cfg.system, "options": dict(cfg.system_options), "resource": BENCH}
    )


def test_runs_on_the_bench_node_and_records_where(cluster):
    c, bench = cluster
    s = remote.RemoteSystem("identity", resource=BENCH, n_inputs=8)
    try:
        assert s.where["node_id"] == bench.node_id != c.head_node.node_id
        assert s.where["node_ip"] == "127.0.0.1"
        x = torch.rand(5, 8)
        assert torch.equal(s(x), x)
        d = s.describe()
        assert d["remote"]["where"]["node_id"] == bench.node_id and d["remote"]["resource"] == BENCH
        assert d["remote"]["system"]["class"].endswith("IdentitySystem")
        assert s.stats.calls == 1 and s.stats.samples == 5
        assert 0 < s.stats.device_seconds < s.stats.seconds
        assert s.stats.transport_seconds == pytest.approx(s.stats.seconds - s.stats.device_seconds)
    finally:
        s.close()
    assert s.final["safe_state_calls"] >= 1  # closing put the hosted system in its safe state


def test_limits_are_checked_before_anything_is_sent(cluster):
    s = remote.RemoteSystem("identity", resource=BENCH, n_inputs=4)
    try:
        with pytest.raises(ValueError, match=r"input\[1, 2\] = 1.5 .* above the drive limit high=1"):
            s(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 1.5, 0.4]]))
        with pytest.raises(ValueError, match="4 columns|n_inputs=4"):
            s.submit(torch.zeros(2, 3))
        assert s.remote_describe()["stats"]["calls"] == 0  # the bench never saw either batch
        assert s.stats.calls == 0
    finally:
        s.close()


def test_bad_options_and_unknown_resource_fail_clearly(cluster):
    with pytest.raises(ValueError, match="no option.*'noise_levle'"):
        remote.RemoteSystem("optics", resource=BENCH, options={"noise_levle": 1.0})
    with pytest.raises(remote.RemoteSystemError, match="resource='bench:nowhere'.*no node"):
        remote.RemoteSystem("identity", resource="bench:nowhere")


def test_remote_errors_keep_their_type_and_traceback(cluster):
    s = remote.RemoteSystem("optics", resource=BENCH, n_inputs=6)
    try:
        with pytest.raises(ValueError, match="no random generator") as info:
            s.set_rng_state({"no_such_generator": torch.zeros(4, dtype=torch.uint8)})
        assert "set_rng_state" in info.value.remote_traceback
        assert any("raised in the bench actor" in n for n in getattr(info.value, "__notes__", []))
    finally:
        s.close()


def test_submit_pipelines_in_order_and_matches_blocking_calls(cluster):
    s = remote.RemoteSystem("optics", resource=BENCH, n_inputs=6, seed=5)
    t = remote.RemoteSystem("optics", resource=BENCH, n_inputs=6, seed=5)
    try:
        xs = [
            torch.round(255 * torch.rand(16, 6, generator=torch.Generator().manual_seed(i))) / 255 for i in range(6)
        ]  # on the 8-bit SLM's levels
        queries = [s.submit(x) for x in xs]  # all in flight at once
        piped = [q.result() for q in queries]
        blocking = [t(x) for x in xs]
        for a, b in zip(piped, blocking):
            assert torch.equal(a, b)  # same noise draws in the same order
        assert s.stats.calls == 6 and s.stats.samples == 96
    finally:
        s.close()
        t.close()


def test_training_through_the_remote_system_equals_local(cluster):
    _, bench = cluster
    cfg = _small_config()
    quiet = dict(write_file=False, progress=False, echo=lambda line: None)
    local = run_experiment(cfg, **quiet)
    far = run_experiment(_remote_config(cfg), **quiet)
    for key in ("loss", "loss/block0", "loss/block1", "g_pos/block1"):
        assert far.history[-1][key] == local.history[-1][key], key  # bit for bit
    assert far.test_accuracy == local.test_accuracy
    assert far.total_queries == local.total_queries


def test_run_file_records_where_each_block_ran(cluster, tmp_path):
    from physnn import runlog

    _, bench = cluster
    cfg = _remote_config(_small_config(blocks=2, output=str(tmp_path / "far.h5")))
    run_experiment(cfg, progress=False, echo=lambda line: None)
    run = runlog.load(tmp_path / "far.h5")
    assert run.status == "completed"
    for block in ("block0", "block1"):
        assert run.systems_start[block]["remote"]["where"]["node_id"] == bench.node_id


class _Killable(remote.RemoteSystem):
    """Kills its own host actor (for good) just before the next query once ``kill_next`` is set."""

    kill_next = False

    def _send(self, batch):
        if self.kill_next:
            self.kill_next = False
            ray.kill(self._host.actor, no_restart=True)
            time.sleep(0.5)  # let the kill land before the batch is sent
        return super()._send(batch)


def test_killing_the_actor_mid_run_fails_clearly_and_leaves_a_readable_run_file(cluster, tmp_path):
    from physnn import runlog

    cfg = _remote_config(_small_config(blocks=1, epochs=3, output=str(tmp_path / "killed.h5")))
    sys_ = _Killable("optics", resource=BENCH, n_inputs=64 + 10, seed=3000 + 1, max_restarts=0)

    def kill_after_epoch_1(line: str) -> None:  # echoed once epoch 1 is on disk
        if line.startswith("epoch   1/"):
            sys_.kill_next = True

    with (
        pytest.warns(RuntimeWarning, match="could not be closed"),
        pytest.raises(remote.ActorLost, match="at-most-once"),
    ):
        run_experiment(cfg, progress=False, echo=kill_after_epoch_1, systems=[sys_])
    run = runlog.load(tmp_path / "killed.h5")
    assert run.status == "failed"
    assert run.checkpoints == [1]  # the epoch before the loss is on disk, resumable
    kinds = [e["kind"] for e in run.events]
    assert "exception" in kinds and "close_failed" in kinds
    assert "ActorLost" in str([e["fields"] for e in run.events if e["kind"] == "exception"])
    # a later trainer can take the bench again: the dead actor released its resource
    again = remote.RemoteSystem("identity", resource=BENCH, n_inputs=4)
    again.close()


def test_a_restarted_actor_reopens_the_system(cluster):
    s = remote.RemoteSystem("identity", resource=BENCH, n_inputs=4, max_restarts=1)
    try:
        x = torch.rand(3, 4)
        assert torch.equal(s(x), x)
        first_pid = s.where["pid"]
        ray.kill(s._host.actor, no_restart=False)
        lost = False
        for _ in range(100):  # the kill is asynchronous: the query in flight when it lands fails
            try:
                s(x)
            except remote.ActorLost as exc:
                assert "not re-sent" in str(exc)
                lost = True
                break
            time.sleep(0.05)
        assert lost
        assert torch.equal(s(x), x)  # waits for the restart, re-opens the system, then measures
        assert s.where["restarted"] and s.where["pid"] != first_pid
        assert s.stats.counters.get("remote_reopened") == 1
    finally:
        s.close()


def test_serve_refuses_a_public_bind_without_allow_remote():
    with pytest.raises(ValueError, match="--bind 10.1.2.3.*--allow-remote"):
        serving.serve("identity", {}, "bench:x", bind="10.1.2.3", block=False)
