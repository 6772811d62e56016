"""Remote benches on Ray: query overhead, pipelined training over the network, sweep speed-up.

A two-node Ray cluster on this machine, loopback only (head = this driver, 1
CPU; a bench node with ``bench:sim`` and 1 CPU), and three measurements, each
a ratio of runs interleaved in this one process:

1. Remote query overhead at batch 64: the optics simulator called locally and
   through :class:`physnn.scale.remote.RemoteSystem` on the bench node, alternately;
   the distribution of (remote - local) per call. Goal: median <= 2 ms.
2. Pipelined remote training with a simulated bench that takes 20 ms per call:
   MF-FF on one block with the next batch's query submitted (``submit``)
   before the current batch's digital update, against the same training with
   blocking calls. Goal: pipelined wall time <= 1.1 x the bench's busy time.
3. A 12-trial simulator sweep (``physnn.scale.sweep.run_sweep``) on the cluster's 2
   CPUs against the same 12 runs one after another in this process.
   Goal: <= 0.6 x; every run file must read back as completed.

    python benchmarks/remote.py            # writes benchmarks/results/remote.md
    python benchmarks/remote.py --quick    # fewer calls and epochs (smoke run)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from physnn.scale import remote

remote.use_loopback()

import ray  # noqa: E402 - after use_loopback, so Ray stays on 127.0.0.1
from ray.cluster_utils import Cluster  # noqa: E402

from physnn import runlog  # noqa: E402
from physnn.core.goodness import ff_loss  # noqa: E402
from physnn.core.model import PNN, _standardise  # noqa: E402
from physnn.core.registry import build_system  # noqa: E402
from physnn.core.system import PhysicalSystem, SystemSpec  # noqa: E402
from physnn.data.datasets import load_dataset  # noqa: E402
from physnn.run.config import RunConfig  # noqa: E402
from physnn.run.experiment import run_experiment  # noqa: E402
from physnn.scale.sweep import run_sweep  # noqa: E402

BENCH = "bench:sim"


class SlowBench(PhysicalSystem):
    """A stand-in for a slow instrument: a fixed random tanh layer that takes ``call_s`` per call.

    The time is spent waiting (as a real bench's host PC waits for its
    instrument), not computing, so it measures scheduling, not CPU contention.
    """

    def __init__(
        self,
        n_inputs: int | None = None,
        *,
        n_outputs: int = 64,
        call_s: float = 0.02,
        seed: int = 0,
        device: str = "cpu",
    ):
        n = 74 if n_inputs is None else int(n_inputs)
        super().__init__(SystemSpec(n, n_outputs, 0.0, 1.0, name="slow-bench", output_units="a.u."), device=device)
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(n, n_outputs, generator=g) / n**0.5
        self.call_s = call_s

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        t_end = time.perf_counter() + self.call_s
        y = torch.tanh(x @ self.w)
        time.sleep(max(0.0, t_end - time.perf_counter()))
        return y


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


# --------------------------------------------------------------- 1. overhead
def overhead(n_calls: int) -> dict:
    local = build_system("optics", n_inputs=74, seed=1)
    far = remote.RemoteSystem("optics", resource=BENCH, n_inputs=74, seed=1)
    g = torch.Generator().manual_seed(0)
    t_local, t_remote = [], []
    try:
        for i in range(n_calls + 20):
            x = local.spec.low + (local.spec.high - local.spec.low) * torch.rand(64, 74, generator=g)
            x = torch.round(x * 255) / 255  # on the 8-bit SLM grid
            t0 = time.perf_counter()
            local(x)
            t1 = time.perf_counter()
            far(x)
            t2 = time.perf_counter()
            if i >= 20:  # warm-up excluded
                t_local.append(t1 - t0)
                t_remote.append(t2 - t1)
        stats = far.stats.as_dict()
    finally:
        far.close()
    diff = [r - loc for r, loc in zip(t_remote, t_local)]
    return {"local": t_local, "remote": t_remote, "overhead": diff, "stats": stats}


# ----------------------------------------------------------- 2. pipelining
def _train(
    system: PhysicalSystem, data, *, epochs: int, pipelined: bool, batch_size: int = 64, depth: int = 2
) -> tuple[float, float]:
    """One-block MF-FF (positives and negatives in one query); returns the final loss.

    Pipelined: the queries for batches t+1..t+depth are in flight while batch
    t's digital update runs, so the bench measures while the digital layer
    trains (depth 2 absorbs the jitter of a busy machine). One block's
    drive does not depend on the weights being trained, so this look-ahead
    changes nothing in the numbers; deeper stacks need the wavefront schedule.
    Returns the final loss and the seconds spent in the digital steps.
    """
    pnn = PNN([system], data.n_features, data.n_classes, hidden=32, seed=0)
    block = pnn.blocks[0]
    opt = torch.optim.Adam(block.linear.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    x, y = data.x_train, data.y_train
    n, C = x.shape[0], data.n_classes
    loss = float("nan")
    digital = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        batches = []
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            wrong = (y[idx] + torch.randint(1, C, (idx.numel(),), generator=gen)) % C
            batches.append(torch.cat([pnn.embed(x[idx], y[idx]), pnn.embed(x[idx], wrong)]))

        def send(h):
            drive = block.encoder(h)
            return system.submit(drive) if pipelined else system(drive)

        ahead = depth if pipelined else 0
        pending = [send(h) for h in batches[: ahead + 1]] if pipelined else []
        for t, h in enumerate(batches):
            if pipelined:
                meas = pending.pop(0).result()
                if t + ahead + 1 < len(batches):
                    pending.append(send(batches[t + ahead + 1]))  # in flight while this batch trains
            else:
                meas = send(h)
            t_step = time.perf_counter()
            feats = torch.cat([_standardise(meas), _standardise(h)], dim=1)
            B = h.shape[0] // 2
            g = block.goodness(block(feats))
            loss_t = ff_loss(g[:B], g[B:], 10.0)
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            loss = float(loss_t.detach())
            digital += time.perf_counter() - t_step
    return loss, digital


def pipelining(epochs: int) -> dict:
    data = load_dataset("digits", seed=0)
    out = {}
    for mode in ("blocking", "pipelined", "pipelined"):  # the second pipelined run is the one reported
        far = remote.RemoteSystem(SlowBench, resource=BENCH, n_inputs=data.n_features + data.n_classes, seed=0)
        try:
            t0 = time.perf_counter()
            loss, digital = _train(far, data, epochs=epochs, pipelined=mode == "pipelined")
            wall = time.perf_counter() - t0
            out[mode] = {
                "wall": wall,
                "device": far.stats.device_seconds,
                "calls": far.stats.calls,
                "loss": loss,
                "digital": digital,
            }
        finally:
            far.close()
    return out


# ---------------------------------------------------------------- 3. sweep
def sweep(epochs: int, folder: Path) -> dict:
    base = RunConfig(
        dataset="digits",
        system="optics",
        blocks=2,
        hidden=32,
        epochs=epochs,
        batch_size=64,
        probes=0,
        log_samples=False,
        eval_every=0,
        threads=1,
    )
    grid = {"lr": [0.003, 0.01, 0.03]}
    seeds = [0, 1, 2, 3]
    cold = run_sweep(base, grid, seeds, folder / "cold", echo=lambda line: None)  # Ray starts its workers
    t0 = time.perf_counter()
    for lr in grid["lr"]:
        for s in seeds:
            run_experiment(
                base.updated(lr=lr, seed=s, output=str(folder / "seq" / f"lr{lr}-s{s}.h5")),
                progress=False,
                echo=lambda line: None,
            )
    sequential = time.perf_counter() - t0
    warm = run_sweep(base, grid, seeds, folder / "warm", echo=lambda line: None)  # workers already up
    ok = sum(runlog.load(t.path).status == "completed" for t in cold.trials + warm.trials)
    return {
        "sequential": sequential,
        "cold": cold.wall_seconds,
        "sweep": warm.wall_seconds,
        "trials": len(warm.trials),
        "valid": ok,
        "files": len(cold.trials) + len(warm.trials),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls and epochs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "remote.md"))
    args = ap.parse_args(argv)
    n_calls, pipe_epochs, sweep_epochs = (100, 1, 1) if args.quick else (400, 8, 15)
    torch.set_num_threads(1)
    t_start = time.time()
    c = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args=dict(
            num_cpus=1, object_store_memory=100 * 2**20, include_dashboard=False, node_ip_address="127.0.0.1"
        ),
    )
    try:
        c.add_node(num_cpus=1, resources={BENCH: 1}, object_store_memory=100 * 2**20, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        ov = overhead(n_calls)
        pipe = pipelining(pipe_epochs)
        with tempfile.TemporaryDirectory() as tmp:
            sw = sweep(sweep_epochs, Path(tmp))
    finally:
        ray.shutdown()
        c.shutdown()

    ms = 1e3
    med_over = statistics.median(ov["overhead"]) * ms
    p = pipe["pipelined"]
    b = pipe["blocking"]
    pipe_ratio = p["wall"] / p["device"]
    sweep_ratio = sw["sweep"] / sw["sequential"]
    lines = [
        "# Remote benches on Ray (`benchmarks/remote.py`)",
        "",
        f"Ray {ray.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores; a loopback cluster on this machine (head 1 CPU + bench node 1 CPU). "
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t_start))}"
        f"{' (--quick)' if args.quick else ''}. **The machine is shared with other agents' jobs (2 cores, "
        f"load average {os.getloadavg()[0]:.0f} at the end)**: times are noisy and pessimistic; rerun on a quiet "
        "machine before quoting them.",
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
        f"| remote query overhead, batch 64 (median of {len(ov['overhead'])} interleaved calls) | "
        f"{med_over:.2f} ms | <= 2 ms | {'yes' if med_over <= 2 else 'no'} |",
        f"| pipelined remote training, 20 ms/call bench: wall / bench busy time | {pipe_ratio:.3f} | <= 1.1 | "
        f"{'yes' if pipe_ratio <= 1.1 else 'no'} |",
        f"| {sw['trials']}-trial simulator sweep on 2 CPUs / sequential | {sweep_ratio:.2f} | <= 0.6 | "
        f"{'yes' if sweep_ratio <= 0.6 else 'no'} |",
        "",
        "## 1. Query overhead (optics simulator, batch 64 x 74 drives -> 64 x 64 outputs)",
        "",
        "| per call | median | p90 | p99 |",
        "|---|---|---|---|",
    ]
    for key, label in (("local", "local call"), ("remote", "remote call"), ("overhead", "remote - local")):
        v = ov[key]
        lines.append(
            f"| {label} | {statistics.median(v) * ms:.2f} ms | {_pct(v, 0.9) * ms:.2f} ms | "
            f"{_pct(v, 0.99) * ms:.2f} ms |"
        )
    st = ov["stats"]
    lines += [
        "",
        f"RemoteSystem stats over the run: {st['calls']} calls, device {st['device_seconds'] * ms / st['calls']:.2f} "
        f"ms/call on the bench node, transport + queue {st['transport_seconds'] * ms / st['calls']:.2f} ms/call.",
        "",
        f"## 2. Pipelining over the network (one block, digits, {p['calls']} queries of 128 samples)",
        "",
        "| schedule | wall | bench busy | wall / busy | digital steps | final loss |",
        "|---|---|---|---|---|---|",
        f"| blocking calls | {b['wall']:.2f} s | {b['device']:.2f} s | {b['wall'] / b['device']:.3f} | "
        f"{b['digital']:.2f} s | {b['loss']:.4f} |",
        f"| submit 2 ahead, then train (pipelined) | {p['wall']:.2f} s | {p['device']:.2f} s | {pipe_ratio:.3f} | "
        f"{p['digital']:.2f} s | {p['loss']:.4f} |",
        "",
        "Same losses: the look-ahead does not change what is measured or learnt. The digital steps are short, "
        "so what remains of wall - busy is Ray's handling of each call outside the measurement (dispatch, "
        "(de)serialisation in the actor and the driver): "
        f"{(p['wall'] - p['device']) * 1e3 / p['calls']:.1f} ms per call here, on CPUs shared with other jobs; "
        "the 1.1 goal needs it below 2 ms per 20 ms call.",
        "",
        f"## 3. Sweep ({sw['trials']} trials: lr 0.003/0.01/0.03 x seeds 0-3, digits/optics, 2 blocks)",
        "",
        f"Sequential in one process: {sw['sequential']:.1f} s; `run_sweep` on the 2-CPU cluster with its workers "
        f"already started: {sw['sweep']:.1f} s (ratio {sweep_ratio:.2f}); the first sweep, which also starts "
        f"Ray's worker processes (each imports torch and physnn): {sw['cold']:.1f} s (ratio "
        f"{sw['cold'] / sw['sequential']:.2f}). {sw['valid']}/{sw['files']} run files read back as completed.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
