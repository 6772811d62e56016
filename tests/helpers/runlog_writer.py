"""A tiny deterministic training run that writes a run file: the subject of the crash tests.

Imported by tests/test_runlog.py (for the uninterrupted reference run) and run
as a subprocess that the tests kill with SIGKILL::

    python runlog_writer.py PATH block   # epochs 0..2, then stops mid-epoch 3 and waits (prints MID)
    python runlog_writer.py PATH spin    # writes epochs as fast as it can, forever

Each completed epoch (metrics flushed and checkpoint written) prints
``EPOCH k`` on stdout, which is how the tests synchronise without sleeping.
The training uses every RNG a real trainer might (a torch.Generator, a numpy
Generator, torch's and Python's global RNGs), so that exact resumption is a
real test of the checkpointed RNG state.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading

import numpy as np
import torch

from physnn import runlog

CONFIG = {"model": "tiny", "lr": 0.05, "epochs": 6, "batch": 8}
SYSTEMS = {"block0": {"class": "tests.Tiny", "spec": {"n_inputs": 4, "n_outputs": 3}}}


def spawn(*args: str) -> subprocess.Popen:
    """A Python subprocess with piped stdio (the tests talk to it line by line)."""
    return subprocess.Popen(
        [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(proc: subprocess.Popen, line: str, timeout: float = 120.0) -> list[str]:
    """Read stdout lines until ``line``; a watchdog kills a stuck process so the test fails instead of hanging."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seen = []
    try:
        while True:
            out = proc.stdout.readline()
            if not out:
                raise AssertionError(f"process ended before printing {line!r}; stderr:\n{proc.stderr.read()}")
            seen.append(out.strip())
            if out.strip() == line:
                return seen
    finally:
        timer.cancel()


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL: the writer gets no chance to close anything."""
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()
    proc.stdin.close()


class Tiny:
    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        random.seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=CONFIG["lr"])
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.np_rng = np.random.default_rng(seed + 2)
        data_gen = torch.Generator().manual_seed(1234)
        self.x = torch.randn(64, 4, generator=data_gen)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.5).long()

    def epoch(self, e: int) -> dict[str, float]:
        perm = torch.randperm(64, generator=self.gen)
        total = 0.0
        for i in range(0, 64, CONFIG["batch"]):
            idx = perm[i : i + CONFIG["batch"]]
            noise = torch.from_numpy(self.np_rng.normal(0, 0.01, size=(len(idx), 4)).astype(np.float32))
            xb = self.x[idx] + noise + 0.01 * torch.randn(len(idx), 4) * random.random()
            loss = torch.nn.functional.cross_entropy(self.model(xb), self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
        with torch.no_grad():
            acc = float((self.model(self.x).argmax(1) == self.y).float().mean())
        return {
            "epoch": e,
            "loss": total / 8,
            "loss/block0": total / 8,
            "train_accuracy": acc,
            "train_queries": 128.0,
            "custom/extra": float(e) ** 2,
        }

    def save(self, writer: runlog.RunWriter, e: int) -> None:
        rng = runlog.capture_rng(torch_generators={"gen": self.gen}, numpy_generators={"np": self.np_rng})
        writer.checkpoint(e, self.model.state_dict(), self.opt.state_dict(), rng, extra={"epochs_done": e + 1})

    def restore(self, ck: runlog.Checkpoint) -> int:
        self.model.load_state_dict(ck.model_state)
        self.opt.load_state_dict(ck.optim_state)
        runlog.restore_rng(ck.rng_state, torch_generators={"gen": self.gen}, numpy_generators={"np": self.np_rng})
        return ck.extra["epochs_done"]


def train(writer: runlog.RunWriter, tiny: Tiny, start: int, stop: int, announce: bool = False) -> None:
    for e in range(start, stop):
        metrics = tiny.epoch(e)
        writer.log_samples("block0", tiny.x[:16], torch.softmax(tiny.model(tiny.x[:16]), 1).detach())
        writer.event("retry", {"epoch": e, "attempt": 1})
        writer.log_epoch(e, metrics)
        tiny.save(writer, e)
        if announce:
            print(f"EPOCH {e}", flush=True)


def main(path: str, mode: str) -> None:
    tiny = Tiny(0)
    writer = runlog.RunWriter(path, config=CONFIG, seed=0, systems=SYSTEMS, durable=False)
    writer.set_probes("block0", tiny.x[:5])
    if mode == "block":
        train(writer, tiny, 0, 3, announce=True)
        tiny.epoch(3)  # in the middle of epoch 3: work done, nothing logged yet
        writer.event("mid_epoch", {"epoch": 3})
        print("MID", flush=True)
        sys.stdin.read()  # wait here until killed
    elif mode == "spin":
        e = 0
        while True:
            writer.log_epoch(e, {"loss": 1.0 / (e + 1), "train_accuracy": e / (e + 1), "queries_total": 10.0 * e})
            writer.log_probe("block0", e, torch.full((5, 3), float(e)))
            writer.checkpoint(e, {"w": torch.full((64, 64), float(e))}, {"step": e}, None)
            writer.event("tick", {"epoch": e})
            print(f"EPOCH {e}", flush=True)
            e += 1
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
