"""physnn sweep: planning, and sweeps on a three-node Ray cluster on this machine (loopback only).

Two nodes advertise a simulated bench each (``bench:a``, ``bench:b``); the
tests check that every trial writes a valid run file, that two trials never
drive one bench at once, and that a trial that died resumes from its run file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from physnn import runlog
from physnn.run.config import ConfigError, RunConfig
from physnn.run.experiment import run_experiment
from physnn.scale import remote
from physnn.scale.sweep import MAX_TRIALS, parse_grid, parse_seeds, plan, run_sweep, summarise

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


@pytest.mark.fault("sweep")
def test_absurd_grids_are_refused_at_once_with_the_limit(tmp_path):
    """``--seeds 0-9999999`` used to validate 10^7 trials before printing anything."""
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"--seeds 0-9999999 gives 10000000 seeds, above the 10000 trials"):
        parse_seeds("0-9999999")
    with pytest.raises(ConfigError, match=r"20000 trials \(200 lr x 100 seeds\), above the 10000"):
        plan(_base(), {"lr": [0.001 * (i + 1) for i in range(200)]}, list(range(100)), [], tmp_path)
    assert time.monotonic() - t0 < 2
    assert len(plan(_base(), {"lr": [0.01, 0.02]}, list(range(MAX_TRIALS // 2)), [], tmp_path)) == MAX_TRIALS


@pytest.mark.fault("sweep")
def test_each_combination_is_checked_whole_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"trial 0 .*system_options.*'noise_levle'"):
        plan(_base(system="optics", system_options={"noise_levle": 1.0}), {}, [0], [], tmp_path)
    with pytest.raises(ConfigError, match=r"trial 0 .*stop_on = 'val'.*val_fraction = 0"):
        plan(_base(epochs=5), {"stop_on": ["val"], "val_fraction": [0.0]}, [0], [], tmp_path)


_NO_CLUSTER = "a cluster was started or joined before every argument was checked"


@pytest.mark.fault("sweep")
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_cpus=-1), r"num_cpus must be an integer >= 1, got -1"),
        (dict(num_cpus=0), r"num_cpus must be an integer >= 1, got 0"),
        (dict(num_cpus=1, cpus_per_trial=2), r"cpus_per_trial = 2 is more than the 1 CPU\(s\)"),
        (dict(cpus_per_trial=0), r"cpus_per_trial must be"),
        (dict(max_retries=-1), r"max_retries must be an integer >= 0, got -1"),
        (dict(benches=["bench:a"]), r"--benches bench:a needs the cluster where `physnn serve` offers them"),
        (dict(benches=["bench:a", "bench:a"], address="auto"), r"names a bench twice"),
        (dict(address="bench-pc"), r"address must be HOST:PORT"),
        (dict(address="127.0.0.1:6379", num_cpus=2), r"--num-cpus 2 sizes the private cluster"),
        (dict(seeds=[1, 1]), r"repeat a seed"),
        (dict(seeds=[-1]), r"seed must be an integer >= 0"),
    ],
)
def test_every_sweep_argument_is_checked_before_a_cluster_starts(tmp_path, monkeypatch, kwargs, message):
    """``physnn sweep --num-cpus -1`` used to fail inside Ray, after its GCS server had started (and stayed)."""
    from physnn.scale import cluster

    def no_cluster(*args, **kw):
        raise AssertionError(_NO_CLUSTER)

    monkeypatch.setattr(cluster, "start_local", no_cluster)
    monkeypatch.setattr(cluster, "connect", no_cluster)
    monkeypatch.setitem(sys.modules, "ray", None)  # as in a fresh `physnn sweep` process: not connected
    seeds = kwargs.pop("seeds", [0])
    with pytest.raises((ConfigError, ValueError), match=message):
        run_sweep(_base(), {}, seeds, tmp_path / "sweep", echo=lambda line: None, **kwargs)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.fault("sweep")
def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        run_sweep(_base(), {}, [0], tmp_path / "file", echo=lambda line: None)


@pytest.fixture
def short_tmp():
    """A temporary folder with a short path (Ray's socket paths must stay under 108 characters), removed after."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp", ignore_cleanup_errors=True) as folder:
        yield folder


_LEFTOVERS = r"""
import sys, time
from physnn.run.config import RunConfig
from physnn.scale import cluster
from physnn.scale.sweep import run_sweep
ray = cluster.require_ray()
import psutil

def alive_children():
    time.sleep(1.0)
    return [p.pid for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"]

# 1. Ray refuses a value only after its GCS server has started (the failure mode of --num-cpus -1)
try:
    cluster.start_local(num_cpus=1, resources={"bench:x": -1})
except ValueError as exc:
    print("start failed:", str(exc)[:60])
print("after failed start:", alive_children())

# 2. a sweep that fails once its private cluster is up
def fail(line):
    raise KeyboardInterrupt("stopped by the test")

cfg = RunConfig(dataset="digits", system="identity", blocks=1, hidden=8, epochs=1, probes=0, log_samples=False)
try:
    run_sweep(cfg, {}, [0], sys.argv[1], num_cpus=1, echo=fail)
except KeyboardInterrupt:
    print("sweep failed")
print("after failed sweep:", alive_children())
"""


@pytest.mark.fault("sweep")
def test_no_ray_process_is_left_behind_by_an_error(tmp_path, short_tmp):
    """A failed start and a failed sweep each stop every process they started (checked by their parent)."""
    import os

    if ray is None:
        pytest.skip("the Ray extra is not installed (pip install 'physnn[ray]')")
    tmp = short_tmp
    env = dict(os.environ, RAY_TMPDIR=tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    out = subprocess.run(
        [sys.executable, "-c", _LEFTOVERS, str(tmp_path / "sweep")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "start failed: Resource quantities must be nonnegative" in out.stdout
    assert "after failed start: []" in lines and "sweep failed" in lines and "after failed sweep: []" in lines, (
        out.stdout
    )
    assert len(list(Path(tmp, "ray").glob("session_2*"))) == 2  # both clusters did start (the test is not vacuous)
    deadline = time.monotonic() + 20  # stop_local has terminated them; let the OS finish
    while (left := _processes_mentioning(tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args[:120])
    return found


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
    lines: list[str] = []
    again = run_sweep(base, {}, [0, 1], tmp_path, echo=lines.append)  # nothing left to do
    # issue 20: a rerun used to print "completed" for the trials it skipped
    assert [t.record["status"] for t in again.trials] == ["skipped", "skipped"] and not again.failed
    assert again.counts == {"completed": 0, "skipped": 2, "failed": 0, "pending": 0}
    assert sum(": skipped (completed by an earlier run of this sweep)" in line for line in lines) == 2
    assert not any(": completed" in line for line in lines)
    assert json.loads((tmp_path / "sweep.json").read_text())["counts"]["skipped"] == 2
    # a rerun with another config into the same folder is refused before anything starts; the files stay
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}
    with pytest.raises(ConfigError, match=r"was written by a different config \(lr 0.01 != 0.02\).*left untouched"):
        run_sweep(base.updated(lr=0.02), {}, [0, 1], tmp_path, echo=lambda line: None)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")} == before
    # more epochs extend the trials (as --resume --epochs does): run now, so "completed", not "skipped"
    longer = run_sweep(base.updated(epochs=3), {}, [0, 1], tmp_path, echo=lambda line: None)
    assert [t.record["status"] for t in longer.trials] == ["completed", "completed"]
    assert all(list(runlog.load(t.path).metrics["epoch"]) == [1, 2, 3] for t in longer.trials)
