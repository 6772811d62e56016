"""physnn against a plain script of the paper's recipe: the wall time per seed, interleaved in one process.

A lab that already has the paper's script (Momeni et al., Science 2023, PhyLL: MF-FF on the vowels through
the acoustic cavity) asks what physnn costs on top. :func:`reference_run` is our own, faithful, plain-PyTorch
reading of that recipe -- the same hyperparameters as physnn's ``acoustic-twin`` recipe
(:mod:`physnn.run.recipes`: vowels, 2 blocks, hidden 20, 100 epochs, batch 64, Adam lr 0.01, theta 10,
cosine goodness against a fixed random prototype, label one-hot at the batch's max|x|, min-max drives,
standardised measurements with a skip of the block input) -- querying the same twin of the measured cavity,
writing nothing and using none of physnn's runner, trainer, model or checks: a loop a physicist would write.
It trains on the same 206 samples per epoch, evaluates the validation split every 10 epochs and the test
split once, as the runner's defaults do, so both spend the same queries but for the runner's 16 probe
measurements per epoch (its drift monitor).

Per seed and repetition, in turn: the reference, ``run_experiment`` with its run file, and
``run_experiment(write_file=False)`` (so the file's share of the gap shows). The table gives the median wall of
each and their ratios; accuracies are the test accuracies with n (the two differ in weight initialisation,
so they are not expected to be equal -- only similar).

Run: ``.venv/bin/python benchmarks/paper_recipe.py [--seeds 0 1 2] [--reps 3] [--out benchmarks/results/paper_recipe.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from physnn.run.config import RunConfig
from physnn.run.experiment import block_seed, load_data, run_experiment, split_validation
from physnn.run.recipes import with_recipe
from physnn.simulators.twin import acoustic_twin

HIDDEN, EPOCHS, BATCH, LR, THETA, EVAL_EVERY = 20, 100, 64, 0.01, 10.0, 10


def recipe_config(seed: int, output: str, epochs: int = EPOCHS) -> RunConfig:
    """physnn's ``acoustic-twin`` recipe (what ``physnn train --system acoustic-twin`` runs)."""
    return RunConfig.from_dict(
        with_recipe({"system": "acoustic-twin", "seed": seed, "output": output, "epochs": epochs})
    )


# ------------------------------------------------------------ the reference script
def _embed(x: torch.Tensor, labels: torch.Tensor, n_classes: int, hot: float) -> torch.Tensor:
    return torch.cat([F.one_hot(labels, n_classes).to(x.dtype) * hot, x], dim=1)


def _drive(h: torch.Tensor, width: int) -> torch.Tensor:
    lo, hi = h.amin(1, keepdim=True), h.amax(1, keepdim=True)
    d = (h - lo) / (hi - lo).clamp_min(1e-12)  # the twin's drives lie in [0, 1]
    return F.pad(d, (0, width - d.shape[1]))  # unused tones silent


def _norm(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean(1, keepdim=True)) / t.std(1, unbiased=False, keepdim=True).clamp_min(1e-6)


def reference_run(seed: int, epochs: int = EPOCHS) -> tuple[float, int, int]:
    """Train and test the recipe as a plain script; returns (test accuracy, correct, n)."""
    torch.manual_seed(seed)
    d = load_data(recipe_config(seed, "unused"))
    xtr, ytr, xval, yval = split_validation(recipe_config(seed, "unused"), d)  # the same 206 training samples
    C = d.n_classes
    devices = [acoustic_twin(seed=block_seed(seed, i)) for i in range(2)]
    widths = [C + d.n_features, HIDDEN]
    layers = [torch.nn.Linear(20 + w, HIDDEN) for w in widths]
    protos = [F.normalize(torch.randn(HIDDEN).abs(), dim=0) for _ in layers]
    opts = [torch.optim.Adam(layer.parameters(), lr=LR) for layer in layers]
    gen = torch.Generator().manual_seed(seed)

    def goodness(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        a = z.abs()
        return (a @ p) / a.norm(dim=1).clamp_min(1e-12)

    @torch.no_grad()
    def accuracy(x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        n = x.shape[0]
        cand = torch.arange(C).repeat(n)
        xr = x.repeat_interleave(C, 0)
        h = _embed(xr, cand, C, float(xr.abs().max()))
        total = torch.zeros(n * C)
        for dev, layer, p in zip(devices, layers, protos):
            feats = torch.cat([_norm(dev(_drive(h, 20))), _norm(h)], 1)
            h = layer(feats)
            total += goodness(h, p)
        pred = total.view(n, C).argmax(1)
        return int((pred == y).sum()), n

    for epoch in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=gen)
        for start in range(0, len(perm), BATCH):
            idx = perm[start : start + BATCH]
            xb, yb = xtr[idx], ytr[idx]
            B = len(idx)
            wrong = (yb + torch.randint(1, C, (B,), generator=gen)) % C
            hot = float(xb.abs().max())
            h = torch.cat([_embed(xb, yb, C, hot), _embed(xb, wrong, C, hot)])
            for dev, layer, p, opt in zip(devices, layers, protos, opts):
                feats = torch.cat([_norm(dev(_drive(h, 20))), _norm(h)], 1)
                z = layer(feats)
                g = goodness(z, p)
                loss = F.softplus(-THETA * (g[:B] - g[B:])).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():  # the next block sees this block after its step
                    h = layer(feats)
        if (epoch + 1) % EVAL_EVERY == 0 and epoch + 1 < epochs:
            accuracy(xval, yval)  # the validation curve a script prints
    correct, n = accuracy(d.x_test, d.y_test)
    return correct / n, correct, n


def physnn_run(seed: int, write_file: bool, epochs: int = EPOCHS) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as out:
        r = run_experiment(recipe_config(seed, out, epochs), write_file=write_file, progress=False, echo=lambda m: None)
    return r.test_accuracy, round(r.test_accuracy * r.test_n), r.test_n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions per seed (median reported)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as the runner (threads = 1): the comparison is of the code, not of thread counts
    variants = {
        "reference": lambda s: reference_run(s, args.epochs),
        "physnn": lambda s: physnn_run(s, True, args.epochs),
        "physnn, no file": lambda s: physnn_run(s, False, args.epochs),
    }
    physnn_run(args.seeds[0], False, 1)  # one-off imports and the twin's cache, outside the timings
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    rows = []
    for seed in args.seeds:
        walls: dict[str, list[float]] = {k: [] for k in variants}
        acc: dict[str, tuple[float, int, int]] = {}
        for _ in range(args.reps):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                acc[name] = fn(seed)
                walls[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in walls.items()}
        rows.append((seed, med, acc))
    lines = [
        "| seed | reference s | physnn s | physnn no file s | physnn / reference | no file / reference "
        "| test acc reference | test acc physnn |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, med, acc in rows:
        ref = med["reference"]
        lines.append(
            f"| {seed} | {ref:.2f} | {med['physnn']:.2f} | {med['physnn, no file']:.2f} | "
            f"{med['physnn'] / ref:.2f} | {med['physnn, no file'] / ref:.2f} | "
            f"{acc['reference'][1]}/{acc['reference'][2]} | {acc['physnn'][1]}/{acc['physnn'][2]} |"
        )
    ratios = [m["physnn"] / m["reference"] for _, m, _ in rows]
    nofile = [m["physnn, no file"] / m["reference"] for _, m, _ in rows]
    lines += [
        "",
        f"Median over seeds: physnn / reference {statistics.median(ratios):.2f}, without the run file "
        f"{statistics.median(nofile):.2f} (goal: <= 1.0 with the file).",
        f"Each cell: median of {args.reps} interleaved repetitions, {args.epochs} epochs; whole benchmark "
        f"{time.perf_counter() - t_start:.0f} s; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, 1 torch thread.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(
                "# physnn against the paper's recipe script (issue 22 item 5)\n\n"
                f"Command: `.venv/bin/python benchmarks/paper_recipe.py {' '.join(argv or sys.argv[1:])}`\n\n"
                + text
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
