"""The paper's comparison: MF-FF against in-silico backprop, PAT, zeroth-order and digital controls.

For each (dataset, system) pair and each seed, every method trains on the same
split with the same epoch budget; the table reports test accuracy (mean ± std
over seeds), physical queries spent to learn (training + twin fit) and to
reach 95 % of the method's final accuracy, digital FLOPs to learn, training
wall time, and the queries one test sample costs at inference.

The lab scenario. The *device* every hardware-in-the-loop method trains on
(MF-FF, PAT, zeroth-order) is a perturbed instance of the simulator
(:func:`physnn.train.backprop.perturbed_system`, ``--perturb`` strength): the
bench never matches its model exactly. In-silico backprop trains on the
nominal simulator's differentiable model; it is reported twice: deployed on
the nominal simulator ("ideal": the device is the model) and deployed on the
perturbed device (what a lab would get). ``--perturb 0`` makes the device the
nominal simulator.

Controls: logistic regression and a 256-unit MLP on the raw features, Hinton's
FF on a digital stack, and the MF-FF stack with every system replaced by
identity (does the physics add anything?).

Every run is appended to ``<out>/compare_runs.jsonl`` (one JSON object per
run, keyed by pair, method, seed and settings; a run already there is not
repeated), and ``compare.md`` / ``compare.png`` are rebuilt from all stored
runs, so the comparison can be run in parts on a shared machine::

    python benchmarks/compare.py --pairs digits-optics --seeds 0 1 2 3 4
    python benchmarks/compare.py --pairs vowels-microwave --methods mfff pat --quick
    python benchmarks/compare.py --report-only

FLOPs: see :mod:`physnn.accounting` (matrix products forward and backward,
physics inside system queries excluded, simulators' differentiable models
included; counted once per step shape). MF-FF's per-epoch FLOPs are counted
on a copy of the model whose systems are stand-ins (no queries), so its timed
run carries no counting overhead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from physnn.accounting import Accountant, probe_flops, with_stand_ins
from physnn.data import Dataset, load_dataset
from physnn.model import PNN
from physnn.readout import fit_readout
from physnn.registry import build_system
from physnn.train.backprop import Backprop, perturbed_system
from physnn.train.e2e_model import E2ENet
from physnn.train.ff_digital import DigitalFF, FFDigital
from physnn.train.mfff import MFFF
from physnn.train.pat import PAT
from physnn.train.zeroth_order import ZerothOrder

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Pair:
    dataset: str
    system: str
    options: dict[str, Any] = field(default_factory=dict)
    hidden: int = 100
    fixed_width: bool = False  # the system has a fixed number of inputs (the acoustic twin: 20)
    epochs: int = 20  # default budget (vowels: 206 training samples, 4 batches an epoch, so more epochs)


PAIRS: dict[str, Pair] = {
    "vowels-acoustic": Pair("vowels", "acoustic-twin", hidden=20, fixed_width=True, epochs=100),
    "vowels-microwave": Pair("vowels", "microwave", hidden=40, epochs=100),
    "digits-optics": Pair("digits", "optics"),
    "mnist5k-optics": Pair("mnist5k", "optics"),
    "digits-neuromorphic": Pair("digits", "neuromorphic"),
}

METHODS = ("mfff", "backprop", "pat", "zo", "ff-digital", "mfff-identity", "logreg", "mlp")
LABELS = {
    "mfff": "MF-FF (goodness argmax)",
    "mfff-readout": "MF-FF + one-pass readout",
    "backprop-ideal": "backprop in silico, on the model (ideal)",
    "backprop-device": "backprop in silico, deployed on the device",
    "pat": "PAT (twin backward)",
    "zo": "zeroth-order (SPSA)",
    "ff-digital": "Hinton FF, digital stack (control)",
    "mfff-identity": "MF-FF, systems -> identity (control; its 'queries' cost nothing)",
    "logreg": "logistic regression, raw features (control)",
    "mlp": "MLP 256, raw features, backprop (control)",
}
ROW_ORDER = ["mfff", "mfff-readout", "pat", "zo", "backprop-ideal", "backprop-device", "ff-digital",
             "mfff-identity", "logreg", "mlp"]


def block_seed(seed: int, block: int) -> int:
    return seed * 1000 + block + 1  # as physnn.experiment: every seed is another device


# ------------------------------------------------------------------ building
def widths(pair: Pair, data: Dataset, blocks: int) -> list[int]:
    """Drive width of each block's system: block 0 takes labels + features (MF-FF), later blocks ``hidden``."""
    first = data.n_classes + data.n_features
    return [first] + [pair.hidden] * (blocks - 1)


def build(pair: Pair, data: Dataset, seed: int, blocks: int, *, perturb: float | None) -> list:
    """The systems of one run: nominal (``perturb=None``) or the perturbed device."""
    out = []
    for i, w in enumerate(widths(pair, data, blocks)):
        opts = dict(pair.options, n_inputs=None if pair.fixed_width else w, seed=block_seed(seed, i))
        if perturb is None:
            out.append(build_system(pair.system, **opts))
        else:
            out.append(perturbed_system(pair.system, strength=perturb, perturb_seed=block_seed(seed, i) + 7, **opts))
    return out


def pnn_hidden(pair: Pair, blocks: int) -> list[int]:
    return [pair.hidden] * (blocks - 1) + [100]


def device_perturbation(pair: Pair, data: Dataset, seed: int, settings: Settings) -> str:
    """What the perturbation of the device does for this pair (from the drift wrapper's own description)."""
    if settings.perturb == 0:
        return "none"
    d = build(pair, data, seed, 1, perturb=settings.perturb)[0].describe()["drift"]
    what = ", ".join(sorted(d["parameters"])) if d["target"] == "parameters" else "per-channel output gain and offset"
    return f"{d['target']}: {what}"


# ------------------------------------------------------------------ one run
@dataclass
class Settings:
    epochs: int
    batch_size: int
    lr: float
    blocks: int
    perturb: float
    twin_samples: int
    twin_epochs: int
    zo_perturbation: float
    zo_directions: int


def curve_summary(curve: list[tuple[float, float]], final: float) -> float:
    """Learning queries at the first evaluation reaching 95 % of the final accuracy."""
    for q, acc in curve:
        if acc >= 0.95 * final:
            return q
    return curve[-1][0] if curve else float("nan")


_PROBES: dict = {}


def _probe(key, fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn`` on stand-ins, counted once per key in this process (they depend on shapes only)."""
    if key not in _PROBES:
        _PROBES[key] = probe_flops(fn)
    return _PROBES[key]


def run_mfff_like(model, trainer, x, y, xt, yt, systems, settings: Settings, *, readout: bool) -> dict:
    """Train an MFFF-compatible model epoch by epoch; FLOPs per epoch from a stand-in probe."""
    acct = Accountant(systems)
    # model and trainer copied together, so the copied optimisers point at the copied weights
    probe_model, probe_trainer = with_stand_ins((model, trainer), systems)
    probe_trainer.epochs = 1
    shapes = (type(model).__name__, tuple(x.shape), tuple(xt.shape), trainer.batch_size, trainer.inner_steps,
              tuple((b.linear.in_features, b.linear.out_features) for b in model.blocks))
    key, eval_key, readout_key = ("mfff.epoch", shapes), ("mfff.eval", shapes), ("readout.fit", shapes)
    acct.prime(key, _probe(key, lambda: probe_trainer.fit(probe_model, x, y)))
    acct.prime(eval_key, _probe(eval_key, lambda: probe_model.score(xt, yt)))
    curve = []
    for epoch in range(settings.epochs):
        trainer.epochs = epoch + 1
        with acct.phase("train"), acct.flops(key):
            trainer.fit(model, x, y)
        with acct.phase("eval"), acct.flops(eval_key):
            acc = model.score(xt, yt)
        curve.append((acct.metrics()["queries/learning"], acc))
    m = acct.metrics()
    out = {"test_accuracy": curve[-1][1], "curve": curve, "metrics": m}
    if readout:
        acct.prime(readout_key, _probe(readout_key, lambda: fit_readout(probe_model, x, y, seed=trainer.seed)))
        with acct.phase("readout_fit"), acct.flops(readout_key):
            r = fit_readout(model, x, y, seed=trainer.seed)
        with acct.phase("inference"):
            acc_r = r.score(xt, yt)
        m2 = acct.metrics()
        out["readout"] = {"test_accuracy": acc_r, "readout_fit_queries": m2.get("queries/readout_fit", 0.0),
                          "readout_fit_seconds": m2.get("wall_seconds/readout_fit", 0.0),
                          "readout_fit_flops": m2.get("flops/readout_fit", 0.0),
                          "inference_queries_per_sample": m2.get("queries/inference", 0.0) / xt.shape[0]}
    return out


def run_e2e(trainer, model, x, y, xt, yt) -> dict:
    curve = []

    def cb(epoch, metrics):
        if "test_accuracy" in metrics:
            curve.append((metrics["queries/learning"], metrics["test_accuracy"]))

    hist = trainer.fit(model, x, y, xt, yt, on_epoch_end=cb)
    return {"test_accuracy": hist.epochs[-1]["test_accuracy"], "curve": curve, "metrics": trainer.accountant.metrics(),
            "last_epoch": {k: v for k, v in hist.epochs[-1].items() if isinstance(v, float)}}


def run_digital(kind: str, data: Dataset, seed: int, settings: Settings) -> dict:
    """Raw-feature controls, trained by backprop: softmax regression (full batch) or a 256-unit MLP."""
    g = torch.Generator().manual_seed(seed)
    F_, C = data.n_features, data.n_classes
    if kind == "logreg":
        net = torch.nn.Linear(F_, C)
        steps, bs, lr, wd = 500, data.x_train.shape[0], 0.05, 1e-4
    else:
        net = torch.nn.Sequential(torch.nn.Linear(F_, 256), torch.nn.ReLU(), torch.nn.Linear(256, C))
        steps, bs, lr, wd = None, settings.batch_size, 1e-3, 1e-4
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1 / math.sqrt(p.shape[-1]), 1 / math.sqrt(p.shape[-1]), generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    acct = Accountant([])
    x, y = data.x_train, data.y_train

    def step(xb, yb):
        with acct.flops(("step", tuple(xb.shape))):
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    with acct.phase("train"):
        if steps is not None:
            for _ in range(steps):
                step(x, y)
        else:
            for _ in range(settings.epochs):
                perm = torch.randperm(x.shape[0], generator=g)
                for s in range(0, x.shape[0], bs):
                    idx = perm[s : s + bs]
                    step(x[idx], y[idx])
    with torch.no_grad():
        acc = float((net(data.x_test).argmax(1) == data.y_test).float().mean())
    return {"test_accuracy": acc, "curve": [(0.0, acc)], "metrics": acct.metrics()}


def one_run(pair_name: str, method: str, seed: int, settings: Settings, command: str = "") -> list[dict]:
    """Run one method on one pair for one seed; returns one record per reported row."""
    torch.manual_seed(seed)
    pair = PAIRS[pair_name]
    data = load_dataset(pair.dataset, seed=seed)
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    C, F_ = data.n_classes, data.n_features
    L = settings.blocks
    common = dict(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=seed)
    t0 = time.perf_counter()
    rows: list[tuple[str, dict, int]] = []  # (row, result, inference queries per sample)
    if method in ("mfff", "mfff-identity", "ff-digital"):
        if method == "mfff":
            systems = build(pair, data, seed, L, perturb=settings.perturb)
            model = PNN(systems, F_, C, hidden=pnn_hidden(pair, L), seed=seed)
            trainer = MFFF(eval_every=0, **common)
        elif method == "mfff-identity":
            from physnn.simulators.identity import IdentitySystem

            systems = [IdentitySystem(w, seed=block_seed(seed, i)) for i, w in enumerate(widths(pair, data, L))]
            model = PNN(systems, F_, C, hidden=pnn_hidden(pair, L), seed=seed)
            trainer = MFFF(eval_every=0, **common)
        else:
            systems = []
            model = DigitalFF(F_, C, hidden=pnn_hidden(pair, L), seed=seed)
            trainer = FFDigital(eval_every=0, **common)
        res = run_mfff_like(model, trainer, x, y, xt, yt, systems, settings, readout=(method == "mfff"))
        rows.append((method, res, C * L if systems else 0))
        if "readout" in res:
            r = res["readout"]
            m = dict(res["metrics"])
            m["queries/learning"] += r["readout_fit_queries"]
            m["flops/learning"] += r["readout_fit_flops"]
            m["wall_seconds/train"] = m.get("wall_seconds/train", 0.0) + r["readout_fit_seconds"]
            # the readout exists only after training: its accuracy is known at the total learning cost
            rows.append(("mfff-readout", {"test_accuracy": r["test_accuracy"],
                                          "curve": [(m["queries/learning"], r["test_accuracy"])], "metrics": m},
                         round(r["inference_queries_per_sample"])))
    elif method == "backprop":
        nominal = build(pair, data, seed, L, perturb=None)
        model = E2ENet(nominal, F_, C, hidden=[pair.hidden] * (L - 1), seed=seed)
        res = run_e2e(Backprop(**common), model, x, y, xt, yt)
        rows.append(("backprop-ideal", res, L))
        device = build(pair, data, seed, L, perturb=settings.perturb)
        deployed = model.with_systems(device)
        acc = deployed.score(xt, yt)
        rows.append(("backprop-device", {"test_accuracy": acc, "curve": [(0.0, acc)], "metrics": res["metrics"],
                                         "insilico_accuracy": res["last_epoch"].get("insilico_accuracy")}, L))
    elif method in ("pat", "zo"):
        systems = build(pair, data, seed, L, perturb=settings.perturb)
        model = E2ENet(systems, F_, C, hidden=[pair.hidden] * (L - 1), seed=seed)
        if method == "pat":
            trainer = PAT(twin_samples=settings.twin_samples, twin_epochs=settings.twin_epochs, **common)
        else:
            trainer = ZerothOrder(perturbation=settings.zo_perturbation, directions=settings.zo_directions, **common)
        res = run_e2e(trainer, model, x, y, xt, yt)
        if method == "pat":
            res["twin_rel_error"] = res["last_epoch"].get("twin_rel_error/block1")
        rows.append((method, res, L))
    elif method in ("logreg", "mlp"):
        rows.append((method, run_digital(method, data, seed, settings), 0))
    else:
        raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    total = time.perf_counter() - t0
    perturbation = device_perturbation(pair, data, seed, settings) if method in ("mfff", "backprop", "pat", "zo") else None
    records = []
    for row, res, q_inf in rows:
        m = res["metrics"]
        records.append({
            "pair": pair_name, "method": row, "seed": seed, "settings": vars(settings), "command": command,
            "machine": machine(),
            "test_accuracy": res["test_accuracy"],
            "learning_queries": m.get("queries/learning", 0.0),
            "queries_to_95": curve_summary(res["curve"], res["test_accuracy"]),
            "learning_flops": m.get("flops/learning", float("nan")),
            "train_seconds": m.get("wall_seconds/train", 0.0) + m.get("wall_seconds/twin_fit", 0.0),
            "device_seconds": m.get("device_seconds/train", 0.0) + m.get("device_seconds/twin_fit", 0.0),
            "inference_queries_per_sample": q_inf,
            "run_seconds": total,
            "curve": res["curve"],
            **({"device_perturbation": perturbation} if perturbation else {}),
            **({"twin_rel_error": res["twin_rel_error"]} if res.get("twin_rel_error") is not None else {}),
            **({"insilico_accuracy": res["insilico_accuracy"]} if res.get("insilico_accuracy") is not None else {}),
            "metrics": m,
        })
    return records


# ------------------------------------------------------------------ storage
def settings_key(s: dict) -> str:
    return json.dumps(s, sort_keys=True)


def load_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    runs = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def append_runs(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------ report
def _fmt_sci(v: float) -> str:
    if v != v:
        return "n/a"
    if v == 0:
        return "0"
    e = int(math.floor(math.log10(abs(v))))
    return f"{v / 10**e:.2f}e{e}"


def _ms(vals: list[float], fmt: str = "{:.3f}") -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"


def machine() -> str:
    return (f"{platform.platform()}; {platform.machine()} {platform.processor() or ''}; {os.cpu_count()} logical CPUs "
            f"(shared with other jobs); torch {torch.__version__}, {torch.get_num_threads()} thread(s) per run; "
            f"Python {platform.python_version()}")


def write_report(runs: list[dict], out: Path, command: str, unavailable: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in runs:
        groups.setdefault((r["pair"], settings_key(r["settings"])), {}).setdefault(r["method"], []).append(r)
    lines = ["# MF-FF against hardware-aware training and digital controls", "",
             f"Report rebuilt by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the stored runs, "
             "which were produced by:", "",
             *[f"- `{c}`" for c in sorted({r.get("command", "?") for r in runs})], "",
             "Machine(s): " + "; ".join(sorted({r.get("machine", "?") for r in runs})) + ". Wall times are noisy: "
             "the machine was shared with other agents' jobs.", "",
             "Columns: test accuracy mean ± std over seeds; *learn queries*: physical samples queried to learn "
             "(training + twin fit + readout fit); *q to 95 %*: learning queries spent when the test accuracy first "
             "reached 95 % of its final value (per-epoch evaluation; 0 for methods that learn without the device); "
             "*learn FLOPs*: digital FLOPs to learn (matrix products, forward and backward; physics inside queries "
             "excluded; simulators' differentiable models included; see physnn/accounting.py); *train s*: wall "
             "seconds of training and twin fitting (evaluation excluded); *inf. q/sample*: queries to classify one "
             "test sample.", "",
             "Device: hardware-in-the-loop methods (MF-FF, PAT, zeroth-order) train on a *perturbed* instance of the "
             "simulator (physnn.train.backprop.perturbed_system: a Drifting wrapper with one event of size "
             "`perturb` at t = 0 -- drift parameters moved by `perturb` decorrelation scales where the simulator "
             "exposes them, else a per-channel gain/offset error of relative size `perturb`). In-silico backprop "
             "trains on the nominal simulator's differentiable model and is shown deployed on the nominal simulator "
             "(ideal) and on the perturbed device.", ""]
    for name, why in sorted(unavailable.items()):
        lines.append(f"- **{name}: not run** -- {why}")
    if unavailable:
        lines.append("")
    for (pair, skey), by_method in sorted(groups.items()):
        s = json.loads(skey)
        seeds = sorted({r["seed"] for rs in by_method.values() for r in rs})
        lines += [f"## {pair} ({s['epochs']} epochs)", "",
                  f"Settings: {s['blocks']} blocks, {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, "
                  f"device perturbation {s['perturb']}, PAT twin {s['twin_samples']} queries x {s['twin_epochs']} "
                  f"epochs, SPSA c = {s['zo_perturbation']}, {s['zo_directions']} direction(s); seeds {seeds}.", "",
                  "| method | n | test accuracy | learn queries | q to 95 % | learn FLOPs | train s | of which device s "
                  "| inf. q/sample |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in ROW_ORDER + sorted(set(by_method) - set(ROW_ORDER)):
            rs = by_method.get(m)
            if not rs:
                continue
            lines.append(
                f"| {LABELS.get(m, m)} | {len(rs)} | {_ms([r['test_accuracy'] for r in rs])} | "
                f"{_fmt_sci(statistics.mean(r['learning_queries'] for r in rs))} | "
                f"{_fmt_sci(statistics.mean(r['queries_to_95'] for r in rs))} | "
                f"{_fmt_sci(statistics.mean(r['learning_flops'] for r in rs))} | "
                f"{_ms([r['train_seconds'] for r in rs], '{:.1f}')} | "
                f"{statistics.mean(r['device_seconds'] for r in rs):.1f} | "
                f"{rs[0]['inference_queries_per_sample']} |")
        extra = []
        pert = sorted({r["device_perturbation"] for rs in by_method.values() for r in rs if "device_perturbation" in r})
        if pert:
            extra.append(f"Device perturbation mechanism: {'; '.join(pert)}.")
        if "pat" in by_method:
            errs = [r["twin_rel_error"] for r in by_method["pat"] if "twin_rel_error" in r]
            if errs:
                extra.append(f"PAT twin relative error on its training queries (last epoch, block 1): {_ms(errs)}.")
        if "backprop-device" in by_method:
            ins = [r["insilico_accuracy"] for r in by_method["backprop-device"] if r.get("insilico_accuracy") is not None]
            if ins:
                extra.append(f"Backprop's accuracy inside its own model (no device): {_ms(ins)}.")
        extra += reading(by_method)
        if extra:
            lines += [""] + extra
        lines.append("")
    lines += ["## Notes", "",
              "- Raw runs (one JSON object each, with per-epoch accuracy curves): `compare_runs.jsonl`.",
              "- PAT's digital FLOPs are dominated by fitting its twin (an MLP with two hidden layers of 256, "
              "`twin_samples` x `twin_epochs` plus 50 refinement steps per epoch); a smaller twin would cost less "
              "and may fit worse. MF-FF's FLOPs are those of its linear layers on positive and negative data.",
              "- On vowels the end-to-end network shared by backprop, PAT and zeroth-order (the PNN's blocks with "
              "the last linear layer as a cross-entropy classifier) fits the training set (~0.97) but reaches only "
              "~0.91 test accuracy even in silico (checked: lr 0.003-0.03, batch 16/64, 100 epochs), so on that "
              "data set their numbers reflect this architecture as much as the training method.",
              "- The neuromorphic chip runs in hardware mode (integer datapath, mismatch, noise) while its "
              "differentiable model is the nominal float network: in-silico backprop meets a model gap even on "
              "the unperturbed chip.",
              "- Wall times are single-thread and were taken while other jobs shared the 2 cores; differences "
              "below about a factor 1.5 are not meaningful."]
    if (out / "compare_runs_superseded.jsonl").is_file():
        lines.append("- `compare_runs_superseded.jsonl`: optics runs made before the optical simulator exposed "
                     "drift parameters (the device perturbation was then an output gain/offset error); kept for "
                     "the record, not shown.")
    lines.append("")
    (out / "compare.md").write_text("\n".join(lines))
    plot(groups, out / "compare.png")


def reading(by_method: dict[str, list[dict]]) -> list[str]:
    """Plain statements computed from the table (means over seeds; differences smaller than the std are ties)."""

    def stat(m: str, f: str) -> tuple[float, float] | None:
        rs = by_method.get(m)
        if not rs:
            return None
        v = [r[f] for r in rs]
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    out = []
    mf, pat, lr = stat("mfff", "test_accuracy"), stat("pat", "test_accuracy"), stat("logreg", "test_accuracy")

    def cmp(a, b) -> str:
        d = a[0] - b[0]
        tie = abs(d) <= max(a[1], b[1])
        return f"{d:+.3f} ({'within one std: a tie' if tie else ('better' if d > 0 else 'worse')})"

    if mf and pat:
        f_ratio = stat("pat", "learning_flops")[0] / stat("mfff", "learning_flops")[0]
        t_ratio = stat("pat", "train_seconds")[0] / stat("mfff", "train_seconds")[0]
        digital = [stat(m, "train_seconds")[0] - stat(m, "device_seconds")[0] for m in ("pat", "mfff")]
        out.append(f"MF-FF vs PAT: accuracy {cmp(mf, pat)}; PAT needs {f_ratio:.2g}x MF-FF's digital FLOPs, "
                   f"{t_ratio:.2g}x its training wall time, {digital[0] / max(digital[1], 1e-9):.2g}x excluding "
                   f"the time inside the simulated device ({stat('pat', 'learning_queries')[0] / stat('mfff', 'learning_queries')[0]:.2g}x "
                   f"its learning queries).")
    if mf and lr:
        out.append(f"MF-FF vs logistic regression on the raw features: {cmp(mf, lr)}.")
    ideal, dev = stat("backprop-ideal", "test_accuracy"), stat("backprop-device", "test_accuracy")
    if ideal and dev:
        txt = f"In-silico backprop: {ideal[0]:.3f} on its model, {dev[0]:.3f} deployed on the perturbed device"
        hil = [f"{n} {v[0]:.3f}" for n, v in (("MF-FF", mf), ("PAT", pat)) if v]
        out.append(txt + ("; trained on that device, " + ", ".join(hil) if hil else "") + ".")
    return out


def plot(groups, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(groups)
    if not keys:
        return
    fig, axes = plt.subplots(len(keys), 2, figsize=(12, 3.6 * len(keys)), squeeze=False)
    markers = dict(zip(ROW_ORDER, "osD^v<>ph*"))
    for row, key in enumerate(keys):
        by_method = groups[key]
        for col, (field_, xlabel) in enumerate((("learning_flops", "digital FLOPs to learn"),
                                                ("train_seconds", "training wall time (s)"))):
            ax = axes[row][col]
            for m in ROW_ORDER:
                rs = by_method.get(m)
                if not rs:
                    continue
                xs = [r[field_] for r in rs if r[field_] == r[field_] and r[field_] > 0]
                if not xs:
                    continue
                accs = [r["test_accuracy"] for r in rs]
                ax.errorbar(statistics.mean(xs), statistics.mean(accs),
                            yerr=statistics.stdev(accs) if len(accs) > 1 else 0,
                            marker=markers.get(m, "o"), linestyle="none", capsize=3, label=LABELS.get(m, m))
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy")
            ax.set_title(f"{key[0]} ({json.loads(key[1])['epochs']} epochs)")
            ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / (3.6 * len(keys)), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ main
def check_available(pair: Pair) -> str | None:
    """None if the pair can run here, else why not (a missing simulator or data set)."""
    try:
        load_dataset(pair.dataset, seed=0)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        return f"data set {pair.dataset!r} unavailable: {exc}"
    try:
        build_system(pair.system, n_inputs=None if pair.fixed_width else 8, seed=0)
    except (ImportError, FileNotFoundError, ValueError, TypeError) as exc:
        return f"system {pair.system!r} unavailable: {exc}"
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--quick", action="store_true", help="3 epochs, small twins: a smoke test, not a result")
    ap.add_argument("--epochs", type=int, default=None, help="epochs for every method (default: per pair, 20; vowels 100)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--perturb", type=float, default=0.5, help="device perturbation strength (0: device = model)")
    ap.add_argument("--twin-samples", type=int, default=2000)
    ap.add_argument("--twin-epochs", type=int, default=30)
    ap.add_argument("--zo-perturbation", type=float, default=0.02)
    ap.add_argument("--zo-directions", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: a shared machine)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true", help="rebuild compare.md/png from stored runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.twin_samples, args.twin_epochs = 3, 300, 5

    def settings_for(pair_name: str) -> Settings:
        epochs = args.epochs if args.epochs is not None else PAIRS[pair_name].epochs
        return Settings(epochs, args.batch_size, args.lr, args.blocks, args.perturb, args.twin_samples,
                        args.twin_epochs, args.zo_perturbation, args.zo_directions)
    runs_path = args.out / "compare_runs.jsonl"
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    unavailable: dict[str, str] = {}
    if not args.report_only:
        done = {(r["pair"], r["method"], r["seed"], settings_key(r["settings"])) for r in load_runs(runs_path)}
        for pair_name in args.pairs:
            why = check_available(PAIRS[pair_name])
            if why:
                unavailable[pair_name] = why
                print(f"[skip] {pair_name}: {why}", flush=True)
                continue
            settings = settings_for(pair_name)
            for method in args.methods:
                row = {"backprop": "backprop-ideal"}.get(method, method)
                for seed in args.seeds:
                    if (pair_name, row, seed, settings_key(vars(settings))) in done:
                        continue
                    t = time.perf_counter()
                    try:
                        records = one_run(pair_name, method, seed, settings, command)
                    except Exception as exc:  # one failing method must not lose the others' results
                        traceback.print_exc()
                        print(f"[fail] {pair_name} {method} seed {seed}: {exc}", flush=True)
                        continue
                    append_runs(runs_path, records)
                    accs = ", ".join(f"{r['method']} {r['test_accuracy']:.3f}" for r in records)
                    print(f"[done] {pair_name} seed {seed}: {accs} ({time.perf_counter() - t:.1f} s)", flush=True)
    write_report(load_runs(runs_path), args.out, command, unavailable)
    print(f"wrote {args.out / 'compare.md'} and {args.out / 'compare.png'}")


if __name__ == "__main__":
    main()
