#!/usr/bin/env python
"""MF-FF accuracy for label-embedding and encoder variants (issue 10), plus how far the label moves the speckle.

The runner's config has no ``label_repeat`` / ``encoder_bits`` keys yet, so this builds the PNN directly the way
the runner does (block seeds ``seed * 1000 + i + 1``, hidden 100, 2 blocks, Adam lr 0.01, batch 64) and trains it
with the MF-FF trainer, then scores the test split once. Examples::

    python benchmarks/label_encoder_probe.py --dataset mnist5k --system optics --label-repeat 10 --seeds 0,1
    python benchmarks/label_encoder_probe.py --dataset vowels --system microwave --encoder thermometer --bits 1 \\
        --seeds 0,1,2
    python benchmarks/label_encoder_probe.py --dataset digits --label-shift 1,5,20   # speckle change only

Prints one RESULT line (mean, sd over seeds) per run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from physnn.core.encoding import Encoder, drive_width, embed_label, label_width
from physnn.core.model import PNN
from physnn.core.registry import build_system
from physnn.core.system import SystemSpec
from physnn.data.datasets import load_dataset
from physnn.train import trainer_class


def label_shift(dataset: str, repeats: list[int], system: str = "optics") -> None:
    """|y(x, 0) - y(x, 1)|^2 / |y(x, 0) - y(x', 0)|^2 at block 0, noise off: label-induced over image-induced change."""
    data = load_dataset(dataset, seed=0)
    x = data.x_train[:256]
    for k in repeats:
        width = label_width(data.n_classes, k) + data.n_features
        s = build_system(system, n_inputs=width, seed=1, noise=False)
        enc = Encoder(s.spec, "minmax")

        def out(c: int) -> torch.Tensor:
            return s(enc(embed_label(x, torch.full((x.shape[0],), c), data.n_classes, label_repeat=k)))  # noqa: B023

        ya, yb = out(0), out(1)
        ratio = (ya - yb).pow(2).sum(1).mean() / (ya - ya.roll(1, 0)).pow(2).sum(1).mean()
        print(
            f"{dataset}/{system} label_repeat={k}: label slots {data.n_classes * k}/{width}; "
            f"label change / image change = {float(ratio):.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--system", default="optics")
    p.add_argument("--encoder", default="minmax")
    p.add_argument("--bits", type=int, default=None, help="thermometer bits per feature")
    p.add_argument("--label-repeat", type=int, default=1)
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--opt", action="append", default=[], metavar="KEY=JSON", help="system option, e.g. dash_mem=2")
    p.add_argument(
        "--label-shift",
        default=None,
        metavar="K1,K2,..",
        help="only measure the speckle change between labels for these label_repeat values",
    )
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.label_shift:
        label_shift(a.dataset, [int(k) for k in a.label_shift.split(",")], a.system)
        return
    opts = {k: json.loads(v) for k, v in (o.split("=", 1) for o in a.opt)}
    accs = []
    for seed in map(int, a.seeds.split(",")):
        torch.manual_seed(seed)
        data = load_dataset(a.dataset, seed=seed)
        bits = Encoder(SystemSpec(1, 1), a.encoder, bits=a.bits).bits
        widths = (
            drive_width(a.encoder, label_width(data.n_classes, a.label_repeat) + data.n_features, bits=bits),
            drive_width(a.encoder, a.hidden, bits=bits),
        )
        systems = [build_system(a.system, n_inputs=w, seed=seed * 1000 + i + 1, **opts) for i, w in enumerate(widths)]
        pnn = PNN(
            systems,
            data.n_features,
            data.n_classes,
            hidden=a.hidden,
            encoder=a.encoder,
            seed=seed,
            label_repeat=a.label_repeat,
            encoder_bits=a.bits,
        )
        trainer = trainer_class("mfff")(epochs=a.epochs, batch_size=64, lr=0.01, seed=seed, eval_every=0)
        t0 = time.time()
        trainer.fit(pnn, data.x_train, data.y_train)
        accs.append(pnn.score(data.x_test, data.y_test))
        print(f"seed {seed}: test {accs[-1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
    t = torch.tensor(accs)
    sd = float(t.std()) if len(t) > 1 else 0.0
    print(
        f"RESULT {a.dataset}/{a.system} encoder={a.encoder} bits={a.bits} label_repeat={a.label_repeat} "
        f"hidden={a.hidden} options={opts} epochs={a.epochs}: mean {float(t.mean()):.4f} sd {sd:.4f} "
        f"n_seeds={len(t)}"
    )


if __name__ == "__main__":
    main()
