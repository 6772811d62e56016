"""physnn sweep: planning, and sweeps on a three-node Ray cluster on this machine (loopback only).

Two nodes advertise a simulated bench each (``bench:a``, ``bench:b``); the
tests check that every trial writes a valid run file, that two trials never
drive one bench at once, and that a trial that died resumes from its run file.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from physnn import runlog
from physnn.run.config import ConfigError, RunConfig
from physnn.run.experiment import run_experiment
from physnn.scale import remote
from physnn.scale.sweep import parse_grid, parse_seeds, plan, run_sweep, summarise

remote.use_loopback()  # before Ray is imported: nothing binds beyond 127.0.0.1

_MB = 1024 * 1024


def _base(**kw) -> RunConfig:
    cfg = dict(
        dataset="digits",
        system="identity",
        blocks=1,
        hidden=16,
        epochs=1,
        batch_size=256,
        probes=0,
        log_samples=False,
        eval_every=1,
    )
    cfg.update(kw)
    return RunConfig(**cfg)


# ------------------------------------------------------------- no cluster
def test_parse_grid_and_seeds():
    assert parse_grid(["lr=0.003,0.01", "hidden=8,16"]) == {"lr": [0.003, 0.01], "hidden": [8, 16]}
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0,3,7") == [0, 3, 7]
    with pytest.raises(ConfigError, match="'lrate' is not a config key"):
        parse_grid(["lrate=0.1"])
    with pytest.raises(ConfigError, match="'seed' cannot be swept here"):
        parse_grid(["seed=1,2"])
    with pytest.raises(ConfigError, match="--seeds must be like 0-4"):
        parse_seeds("4-0")
    with pytest.raises(ConfigError, match="repeats a seed"):
        parse_seeds("1,1")


def test_plan_spreads_trials_over_benches_and_names_their_files(tmp_path):
    trials = plan(_base(), {"lr": [0.01, 0.03]}, [0, 1, 2], ["bench:a", "bench:b"], tmp_path)
    assert len(trials) == 6
    assert [t.bench for t, _ in trials] == ["bench:a", "bench:b"] * 3
    t, cfg = trials[1]
    assert cfg.system == "remote" and cfg.system_options == {"name": "identity", "options": {}, "resource": "bench:b"}
    assert cfg.lr == 0.01 and cfg.seed == 1 and cfg.output == t.path and t.path.endswith("trial001-lr0.01-s1.h5")
    with pytest.raises(ConfigError, match="trial 0 .*'lr'"):
        plan(_base(), {"lr": [-1.0]}, [0], [], tmp_path)


def test_physnn_imports_no_ray_and_says_how_to_get_it():
    """physnn without the extra works as before: Ray is imported only inside the remote features."""
    code = (
        "import sys; import physnn.scale.remote, physnn.scale.sweep, physnn.cli; assert 'ray' not in sys.modules; "
        "sys.modules['ray'] = None\n"
        "try:\n    physnn.scale.remote.require_ray()\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'physnn[ray]'" in out.stdout


# ------------------------------------------------------------ on Ray
try:
    import ray
except ImportError:  # the planning tests above still run
    ray = None


@pytest.fixture(scope="module")
def cluster():
    """Head (the driver) + two bench nodes, all on 127.0.0.1, one CPU each; every process is stopped afterwards."""
    if ray is None:
        pytest.skip("the Ray extra is not installed (pip install 'physnn[ray]')")
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
        nodes = {
            b: c.add_node(num_cpus=1, resources={b: 1}, object_store_memory=100 * _MB, node_ip_address="127.0.0.1")
            for b in ("bench:a", "bench:b")
        }
        c.wait_for_nodes()
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def test_a_sweep_over_two_benches_never_overlaps_trials_on_one_bench(cluster, tmp_path):
    _, nodes = cluster
    lines: list[str] = []
    result = run_sweep(
        _base(), {"lr": [0.01, 0.03]}, [0, 1, 2], tmp_path / "sweep", benches=["bench:a", "bench:b"], echo=lines.append
    )
    assert not result.failed, [t.record for t in result.failed]
    assert len(result.trials) == 6 and len(lines) == 7
    for bench in ("bench:a", "bench:b"):
        spans = sorted((t.record["start"], t.record["end"]) for t in result.trials if t.bench == bench)
        assert len(spans) == 3
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two trials drove {bench} at once: {spans}"
    for t in result.trials:
        run = runlog.load(t.path)
        assert run.status == "completed" and run.config["lr"] == t.values["lr"] and run.config["seed"] == t.seed
        where = run.systems_start["block0"]["remote"]["where"]
        assert where["resource"] == t.bench and where["node_id"] == nodes[t.bench].node_id
    text = summarise(result.folder)
    assert text.count("trial0") >= 12  # each trial in the ls table and in the compare table
    assert (result.folder / "sweep.json").is_file()


class _Stop(Exception):
    pass


def test_a_trial_that_died_resumes_from_its_run_file(cluster, tmp_path):
    base = _base(epochs=2)
    (trial, cfg), _ = plan(base, {}, [0, 1], [], tmp_path)

    def die_after_first_epoch(line: str) -> None:
        if line.startswith("epoch   1/"):
            raise _Stop("killed after epoch 1")

    with pytest.raises(_Stop):
        run_experiment(cfg, progress=False, echo=die_after_first_epoch)
    assert runlog.load(trial.path).checkpoints == [1]
    result = run_sweep(base, {}, [0, 1], tmp_path, echo=lambda line: None)
    assert not result.failed
    records = [t.record for t in result.trials]
    assert records[0]["resumed"] and not records[1]["resumed"]
    for t in result.trials:
        run = runlog.load(t.path)
        assert run.status == "completed" and list(run.metrics["epoch"]) == [1, 2]
    again = run_sweep(base, {}, [0, 1], tmp_path, echo=lambda line: None)  # nothing left to do
    assert all(t.record.get("skipped") for t in again.trials)
