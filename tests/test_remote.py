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


# ------------------------------------------------------- bounded waits (issue 23)
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.fault("remote")
def test_an_address_where_nothing_listens_is_a_fast_one_line_error(monkeypatch):
    """It used to retry for more than ten minutes without a word."""
    from physnn.scale import cluster

    port = _free_port()
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh training process
    t0 = time.monotonic()
    with pytest.raises(remote.RemoteSystemError, match=rf"nothing listens at 127.0.0.1:{port} \(connection refused\)"):
        cluster.connect(f"127.0.0.1:{port}", timeout_s=5)
    assert time.monotonic() - t0 < 5


@pytest.mark.fault("remote")
def test_a_port_that_is_not_a_ray_cluster_is_named_within_the_timeout():
    """Something answers but never speaks Ray: reported after timeout_s, not waited on."""
    import socket
    import threading

    from physnn.scale import cluster

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(remote.RemoteSystemError, match=rf"127.0.0.1:{port} answers but not as a Ray cluster"):
            cluster.check_reachable(f"127.0.0.1:{port}", timeout_s=1.5)
        assert time.monotonic() - t0 < 6
    finally:
        for s in held:
            s.close()
        server.close()


@pytest.fixture
def short_tmp():
    """A temporary folder with a short path (Ray's socket paths must stay under 108 characters), removed after."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp", ignore_cleanup_errors=True) as folder:
        yield folder


_TOKEN_PROBE = r"""
import os, sys
from physnn.scale import cluster
ray = cluster.require_ray()
from ray._raylet import AuthenticationTokenLoader, Config
ray.init(address="local", num_cpus=0, include_dashboard=False, _node_ip_address="127.0.0.1")
where = ray.get_runtime_context().gcs_address
def probe(**env):
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        cluster.check_reachable(where, timeout_s=5)
        print("OK")
    except cluster.RemoteSystemError as exc:
        print("ERR", exc)
right = os.environ["RAY_AUTH_TOKEN"]
probe(RAY_AUTH_MODE="disabled")
probe(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="a-token-of-another-cluster-0123456789")
home = os.environ["HOME"]
probe(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=None, HOME=os.getcwd())
probe(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=right, HOME=home)
os.environ["RAY_AUTH_TOKEN"] = right
Config.initialize("")
AuthenticationTokenLoader.instance().reset_cache()
ray.shutdown()
"""


@pytest.mark.fault("remote")
def test_token_problems_are_told_apart_from_a_missing_cluster(tmp_path, short_tmp):
    """A missing or wrong Ray token used to read "no Ray cluster ... start one" after 22 s."""
    import os
    import subprocess
    import sys

    tmp = short_tmp
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN="the-right-token-0123456789abcdef",
        RAY_TMPDIR=tmp,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    )
    out = subprocess.run(
        [sys.executable, "-c", _TOKEN_PROBE], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith(("OK", "ERR"))]
    assert out.returncode == 0 and len(lines) == 4, out.stdout + out.stderr[-3000:]
    assert "requires token authentication and this process sends no token (RAY_AUTH_MODE=disabled" in lines[0]
    assert "rejected this machine's token" in lines[1]
    assert "RAY_AUTH_MODE=token but this machine has no Ray token" in lines[2]
    assert lines[3] == "OK"
    assert not any("no Ray cluster" in line for line in lines)


@pytest.mark.fault("remote")
def test_remote_without_name_is_a_one_line_error_before_anything_starts():
    from physnn.core.registry import build_system
    from physnn.run import preflight
    from physnn.run.config import ConfigError

    with pytest.raises(ConfigError, match=r'system = "remote" needs \[system_options\] name'):
        preflight.check_config(RunConfig(dataset="digits", system="remote"))
    with pytest.raises(ConfigError, match="address must be HOST:PORT.*got 'bench-pc'"):
        preflight.check_config(
            RunConfig(dataset="digits", system="remote", system_options={"name": "identity", "address": "bench-pc"})
        )
    with pytest.raises(ConfigError, match="no option.*'noise_levle'"):  # the hosted system's options, when known here
        preflight.check_config(
            RunConfig(
                dataset="digits", system="remote", system_options={"name": "optics", "options": {"noise_levle": 1}}
            )
        )
    with pytest.raises(ValueError, match=r"needs \[system_options\] name"):  # built directly: the same line
        build_system("remote")


@pytest.mark.fault("remote")
def test_another_cluster_than_the_joined_one_is_refused(cluster):
    """One process joins one cluster: an address naming another must not silently use the joined one."""
    with pytest.raises(remote.RemoteSystemError, match="already connected to the Ray cluster at"):
        remote.RemoteSystem("identity", resource=BENCH, address=f"127.0.0.1:{_free_port()}")


@pytest.mark.fault("remote")
def test_a_bench_held_by_another_trainer_times_out_naming_the_cause(cluster):
    first = remote.RemoteSystem("identity", resource=BENCH, n_inputs=4)
    try:
        t0 = time.monotonic()
        with pytest.raises(remote.RemoteSystemError, match="another training process holds the bench bench:sim-a"):
            # another host for the same bench (max_restarts differs: one process's blocks would share one host)
            remote.RemoteSystem("identity", resource=BENCH, n_inputs=4, timeout_s=2, max_restarts=0)
        assert time.monotonic() - t0 < 15  # the unplaced host is dropped at once, not shut down over 60 s
    finally:
        first.close()
    again = remote.RemoteSystem("identity", resource=BENCH, n_inputs=4)  # the bench is free again
    again.close()
