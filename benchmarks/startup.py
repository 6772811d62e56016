"""Start-up: how long ``physnn train`` takes to its first physical query, against ``python -c "import torch"``.

A bench user waits for the first query every time they start a run; the floor is the interpreter and
torch itself. Each round starts fresh processes, interleaved (torch, physnn train, physnn systems, torch ...),
so a busy machine slows all three alike; the table gives medians and the ratios of the medians.

The first query is timed inside the child: a wrapper patches ``PhysicalSystem.__call__`` and
``PhysicalSystem.submit`` to write the wall-clock time and leave at once (``os._exit``), so nothing after
the first query counts. A second row stops at the first optimiser step instead (``Adam.step``): the
one-off ``torch._dynamo`` import that the runner warms in the background while the device answers its
first queries is paid by then, so this row shows what the first query no longer waits for. Usage::

    python benchmarks/startup.py [--rounds 7] [--out benchmarks/results/startup.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_FIRST_QUERY = r"""
import os, sys, time
import physnn.core.system as s
def _stop(self, *a, **k):
    sys.stdout.write(repr(time.time()) + "\n"); sys.stdout.flush(); os._exit(0)
s.PhysicalSystem.__call__ = _stop
s.PhysicalSystem.submit = _stop
from physnn.cli import main
sys.argv = ["physnn", "train", "--output", sys.argv[1], "--no-progress"]
main()
"""


# the same run, stopped at its first optimiser step instead (the first query happens before it): where the
# one-off imports the first query no longer waits for (torch._dynamo, warmed in the background) end up
_FIRST_STEP = _FIRST_QUERY.replace(
    "s.PhysicalSystem.__call__ = _stop\ns.PhysicalSystem.submit = _stop\n",
    "import torch\ntorch.optim.Adam.step = _stop\n",
)


def _wall(cmd: list[str]) -> float:
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0


def _first_query(out: str, script: str = _FIRST_QUERY) -> float:
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", script, out], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1]) - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args()
    physnn = str(Path(sys.executable).with_name("physnn"))
    times: dict[str, list[float]] = {
        "import torch": [],
        "physnn train: first query": [],
        "physnn train: first optimiser step": [],
        "physnn systems": [],
    }
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            times["import torch"].append(_wall([sys.executable, "-c", "import torch"]))
            times["physnn train: first query"].append(_first_query(out))
            times["physnn train: first optimiser step"].append(_first_query(out, _FIRST_STEP))
            times["physnn systems"].append(_wall([physnn, "systems"]))
    base = statistics.median(times["import torch"])
    lines = [
        f"Start-up, {args.rounds} interleaved rounds (`python benchmarks/startup.py --rounds {args.rounds}`); "
        f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs",
        "",
        "| what | median s | min s | ratio to import torch (medians) |",
        "| --- | --- | --- | --- |",
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {statistics.median(ts) / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
