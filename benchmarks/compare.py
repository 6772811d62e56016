"""The paper's comparison: MF-FF against in-silico backprop, PAT, zeroth-order and digital controls.

For each (dataset, system) pair and each seed, every method trains on the same
split with the same epoch budget; the table reports test accuracy (mean ± std
over seeds), physical queries spent to learn (training + twin fit) and to
reach 95 % of the method's final accuracy, digital FLOPs to learn, training
wall time, and the queries one test sample costs at inference.

The lab scenario. The *device* every hardware-in-the-loop method trains on
(MF-FF, PAT, zeroth-order) is a perturbed instance of the simulator
(the system wrapped as ``drifting`` with one event at t = 0, ``--perturb`` strength): the
bench never matches its model exactly. In-silico backprop trains on the
nominal simulator's differentiable model; it is reported twice: deployed on
the nominal simulator ("ideal": the device is the model) and deployed on the
perturbed device (what a lab would get). ``--perturb 0`` makes the device the
nominal simulator.

Controls: logistic regression and a 256-unit MLP on the raw features, Hinton's
FF on a digital stack, and the same stack (the method's trainable layers,
encoder, epochs, learning rate and seeds) with every system replaced by a
control system (physnn/simulators/controls.py), so that one thing changes at a
time:

* ``identity`` -- no physics at all (and the data's own width);
* ``random-linear`` -- a fixed random linear map of the physical system's output
  width and drive levels: what the physics adds over it is its nonlinearity;
* ``random-features`` -- a fixed random ReLU feature map of the same width,
  computed digitally, and on optical pairs ``speckle``: the optical simulator's
  own equations computed digitally without noise. What the physics adds over
  these is what a digital computer would not get for the FLOPs the map costs
  (the *map FLOPs/sample* column; for a physical row, what its queries replace).

The controls use exactly the method's budget; none is tuned better or worse than
the method it is compared with.

Every run is appended to ``<out>/compare_runs.jsonl`` (one JSON object per
run, keyed by pair, method, seed and settings; a run already there is not
repeated), and ``compare.md`` / ``compare.png`` are rebuilt from all stored
runs, so the comparison can be run in parts on a shared machine::

    python benchmarks/compare.py --pairs digits-optics --seeds 0 1 2 3 4
    python benchmarks/compare.py --pairs vowels-microwave --methods mfff pat --quick
    python benchmarks/compare.py --report-only

FLOPs: see :mod:`physnn.train.accounting` (matrix products forward and backward,
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
from typing import Any

import torch

from physnn.core.evaluation import Accuracy, difference_interval
from physnn.core.readout import fit_readout
from physnn.core.registry import build_system
from physnn.data.datasets import load_dataset
from physnn.run.config import RunConfig
from physnn.run.experiment import RunResult, build_systems, load_data, run_experiment
from physnn.run.recipes import with_recipe
from physnn.simulators.controls import matching, speckle_flops
from physnn.train import trainer_class
from physnn.train.accounting import count_flops, query_flops

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Pair:
    dataset: str
    system: str
    options: dict[str, Any] = field(default_factory=dict)
    hidden: int = 100
    epochs: int = 20  # default budget (vowels: 206 training samples, 4 batches an epoch, so more epochs)


PAIRS: dict[str, Pair] = {
    "vowels-acoustic": Pair("vowels", "acoustic-twin", hidden=20, epochs=100),
    "vowels-microwave": Pair("vowels", "microwave", hidden=40, epochs=100),
    "digits-optics": Pair("digits", "optics"),
    "mnist5k-optics": Pair("mnist5k", "optics"),
    "digits-neuromorphic": Pair("digits", "neuromorphic"),
}

METHODS = (
    "mfff",
    "local_ce",
    "backprop",
    "pat",
    "zo",
    "ff-digital",
    "mfff-identity",
    "local_ce-identity",
    "mfff-linear",
    "mfff-features",
    "local_ce-linear",
    "local_ce-features",
    "local_ce-speckle",
    "logreg",
    "mlp",
)
#: control method -> (its training method, control in physnn.simulators.controls.CONTROLS)
CONTROL_METHODS: dict[str, tuple[str, str]] = {
    "mfff-linear": ("mfff", "linear"),
    "mfff-features": ("mfff", "features"),
    "local_ce-linear": ("local_ce", "linear"),
    "local_ce-features": ("local_ce", "features"),
    "local_ce-speckle": ("local_ce", "speckle"),
}
LABELS = {
    "mfff": "MF-FF (goodness argmax)",
    "local_ce": "local cross-entropy (forward only)",
    "local_ce-identity": "local cross-entropy, systems -> identity (control)",
    "local_ce-linear": "local cross-entropy, systems -> random linear map, same width (control)",
    "local_ce-features": "local cross-entropy, systems -> random ReLU features, same width (control)",
    "local_ce-speckle": "local cross-entropy, systems -> digital speckle (the optics' equations, no noise; control)",
    "mfff-linear": "MF-FF, systems -> random linear map, same width (control)",
    "mfff-features": "MF-FF, systems -> random ReLU features, same width (control)",
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
ROW_ORDER = [
    "mfff",
    "mfff-readout",
    "local_ce",
    "pat",
    "zo",
    "backprop-ideal",
    "backprop-device",
    "ff-digital",
    "mfff-identity",
    "mfff-linear",
    "mfff-features",
    "local_ce-identity",
    "local_ce-linear",
    "local_ce-features",
    "local_ce-speckle",
    "logreg",
    "mlp",
]


#: Learning rates the digital controls are tuned over (on the validation split).
CONTROL_LRS = (1e-3, 3e-3, 1e-2, 3e-2)


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


# ------------------------------------------------------------------ configs
def base_config(pair: Pair, seed: int, settings: Settings) -> RunConfig:
    """The run every method shares: data set, split, seed, blocks, budget, on top of the system's recipe
    (physnn/run/recipes.py, as ``physnn train --system`` uses it); physnn's runner does the rest."""
    keys = dict(
        dataset=pair.dataset,
        system=pair.system,
        seed=seed,
        blocks=settings.blocks,
        hidden=pair.hidden,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        probes=0,
        log_samples=False,
        threads=0,
        eval_every=1,
        eval_samples=0,
    )  # a full validation curve every epoch: queries-to-95 %
    if pair.options:
        keys["system_options"] = dict(pair.options)
    return RunConfig.from_dict(with_recipe(keys))


def on_device(config: RunConfig, settings: Settings) -> RunConfig:
    """The same run on the *perturbed* device: the system wrapped as ``drifting`` with one event at t = 0."""
    if settings.perturb == 0:
        return config
    return config.updated(
        system="drifting",
        system_options={
            "base": config.system,
            "base_options": dict(config.system_options),
            "events": [[0.0, settings.perturb]],
        },
    )


#: compare's method name -> (physnn method, method options, on the perturbed device?, system override)
def method_config(method: str, cfg: RunConfig, settings: Settings) -> RunConfig:
    if method == "mfff":
        return on_device(cfg.updated(method="mfff", eval_every=1), settings)
    if method == "mfff-identity":
        return cfg.updated(method="mfff", system="identity", system_options={})
    if method == "local_ce":
        return on_device(cfg.updated(method="local_ce"), settings)
    if method == "local_ce-identity":
        return cfg.updated(method="local_ce", system="identity", system_options={})
    if method in CONTROL_METHODS:
        trained_by, control = CONTROL_METHODS[method]
        return control_config(cfg.updated(method=trained_by), control)
    if method == "ff-digital":
        return cfg.updated(method="ff_digital", theta=100.0)
    if method == "pat":
        return on_device(
            cfg.updated(
                method="pat",
                method_options={"twin_samples": settings.twin_samples, "twin_epochs": settings.twin_epochs},
            ),
            settings,
        )
    if method == "zo":
        return on_device(
            cfg.updated(
                method="zeroth_order",
                method_options={"perturbation": settings.zo_perturbation, "directions": settings.zo_directions},
            ),
            settings,
        )
    if method == "backprop":
        return cfg.updated(method="backprop")
    if method in ("logreg", "mlp"):
        layers = [] if method == "logreg" else [256]
        return cfg.updated(
            method="digital",
            lr=0.01 if method == "logreg" else 1e-3,
            weight_decay=1e-4,
            method_options={"hidden_layers": layers, "lr_schedule": "cosine"},
        )
    raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")


def control_config(cfg: RunConfig, control: str) -> RunConfig:
    """``cfg`` with its systems replaced by a control of the same output width and drive domain (levels included)
    as the nominal physical system's block 0, as the run would build it (physnn.simulators.controls.matching)."""
    if control == "speckle" and cfg.system != "optics":
        raise ValueError(f"the speckle control copies the optical simulator; pair system is {cfg.system!r}")
    system, options = matching(physical_spec(cfg), control)
    return cfg.updated(system=system, system_options=options)


def physical_spec(cfg: RunConfig):
    """Block 0's :class:`SystemSpec` of the physical system ``cfg`` builds (nominal, closed at once)."""
    systems = build_systems(cfg, load_data(cfg))
    try:
        return systems[0].spec
    finally:
        for s in systems:
            s.close()


def map_flops_per_sample(cfg: RunConfig) -> float:
    """Digital FLOPs of one sample through every block's feature map (all blocks): a control's own price, or
    for an optical run what its queries replace (the speckle count); NaN where nobody states a price."""
    if cfg.system in ("identity",) or not trainer_class(cfg.method).uses_systems:
        return 0.0
    base = cfg.system_options.get("base") if cfg.system == "drifting" else cfg.system
    systems = build_systems(cfg, load_data(cfg))
    try:
        total = 0
        for s in systems:
            n = query_flops(s)
            if n is None and base == "optics":
                n = speckle_flops(s.spec.n_inputs, s.spec.n_outputs)
            if n is None:
                return float("nan")
            total += n
        return float(total)
    finally:
        for s in systems:
            s.close()


# ------------------------------------------------------------------ one run
def curve_summary(curve: list[tuple[float, float]], final: float) -> float:
    """Learning queries at the first evaluation reaching 95 % of the final accuracy."""
    for q, acc in curve:
        if acc >= 0.95 * final:
            return q
    return curve[-1][0] if curve else float("nan")


def _record(result: RunResult) -> dict:
    """Test accuracy (measured once, at the end), validation curve and cost from the run's own accounting."""
    h = result.history
    last = h[-1] if h else {}
    curve = [(e.get("queries/learning", 0.0), e["val_accuracy"]) for e in h if "val_accuracy" in e]
    return {
        "test_accuracy": result.test_accuracy,
        "test_n": result.test_n,
        "curve": curve,
        "metrics": {k: v for k, v in last.items() if isinstance(v, float)},
    }


def one_run(pair_name: str, method: str, seed: int, settings: Settings, command: str = "") -> list[dict]:
    """Run one method on one pair for one seed through physnn's runner; one record per reported row."""
    pair = PAIRS[pair_name]
    cfg = method_config(method, base_config(pair, seed, settings), settings)
    t0 = time.perf_counter()
    if method in ("logreg", "mlp"):
        # the digital controls are tuned on the validation split (never the test split): the learning rate
        # with the best final validation accuracy wins, so a control is never tuned worse than the method
        trials = [
            run_experiment(cfg.updated(lr=lr), write_file=False, progress=False, echo=lambda line: None)
            for lr in CONTROL_LRS
        ]
        result = max(trials, key=lambda r: (r.history[-1].get("val_accuracy", 0.0), -trials.index(r)))
    else:
        result = run_experiment(cfg, write_file=False, progress=False, echo=lambda line: None)
    data = load_data(cfg)
    C, L = data.n_classes, settings.blocks
    rows: list[tuple[str, dict, int]] = []
    res = _record(result)
    if method == "mfff":
        rows.append(("mfff", res, C * L))
        rows.append(("mfff-readout", readout_row(result, data, seed, res), L))
    elif method in ("mfff-identity", "local_ce-identity", "ff-digital", "logreg", "mlp", *CONTROL_METHODS):
        rows.append((method, res, 0))
    elif method == "backprop":
        rows.append(("backprop-ideal", res, L))
        device = build_systems(on_device(cfg, settings), data)
        try:
            acc = result.model.with_systems(device).score(data.x_test, data.y_test)
        finally:
            for s in device:
                s.close()
        rows.append(
            (
                "backprop-device",
                {
                    "test_accuracy": acc,
                    "curve": [(0.0, acc)],
                    "metrics": res["metrics"],
                    "insilico_accuracy": res["metrics"].get("insilico_accuracy"),
                },
                L,
            )
        )
    else:
        if method == "pat":
            res["twin_rel_error"] = res["metrics"].get("twin_rel_error/block1")
        rows.append((method, res, L))
    total = time.perf_counter() - t0
    perturbation = device_perturbation(cfg) if method in ("mfff", "local_ce", "pat", "zo") else None
    map_flops = map_flops_per_sample(cfg)
    records = []
    for row, r, q_inf in rows:
        m = r["metrics"]
        records.append(
            {
                "pair": pair_name,
                "method": row,
                "seed": seed,
                "settings": vars(settings),
                "command": command,
                "machine": machine(),
                "test_accuracy": r["test_accuracy"],
                "test_n": r.get("test_n", res.get("test_n")),
                "learning_queries": m.get("queries/learning", 0.0),
                "queries_to_95": curve_summary(r["curve"], r["curve"][-1][1] if r["curve"] else r["test_accuracy"]),
                "learning_flops": m.get("flops/learning", float("nan")),
                "train_seconds": m.get("wall_seconds/train", 0.0) + m.get("wall_seconds/twin_fit", 0.0),
                "device_seconds": m.get("device_seconds/train", 0.0) + m.get("device_seconds/twin_fit", 0.0),
                "inference_queries_per_sample": q_inf,
                "map_flops_per_sample": map_flops,
                "run_seconds": total,
                "curve": r["curve"],
                **({"device_perturbation": perturbation} if perturbation else {}),
                **({"twin_rel_error": r["twin_rel_error"]} if r.get("twin_rel_error") is not None else {}),
                **({"insilico_accuracy": r["insilico_accuracy"]} if r.get("insilico_accuracy") is not None else {}),
                "metrics": m,
            }
        )
    return records


def readout_row(result: RunResult, data, seed: int, res: dict) -> dict:
    """The one-pass readout fitted on the trained MF-FF network (L queries per test sample)."""
    model = result.model
    systems = list(dict.fromkeys(model.systems))
    for s in systems:  # the runner closed them at the end of the run; the readout queries them again
        s.open()
    try:
        q0 = sum(s.stats.samples for s in systems)
        t0 = time.perf_counter()
        readout, fit_flops = count_flops(fit_readout, model, data.x_train, data.y_train, seed=seed)
        fit_s = time.perf_counter() - t0
        q1 = sum(s.stats.samples for s in systems)
        acc = readout.score(data.x_test, data.y_test)
    finally:
        for s in systems:
            s.close()
    m = dict(res["metrics"])
    m["queries/learning"] = m.get("queries/learning", 0.0) + (q1 - q0)
    m["wall_seconds/train"] = m.get("wall_seconds/train", 0.0) + fit_s
    m["flops/learning"] = m.get("flops/learning", 0.0) + fit_flops
    # the readout exists only after training: its accuracy is known at the total learning cost
    return {"test_accuracy": acc, "curve": [(m["queries/learning"], acc)], "metrics": m}


def device_perturbation(cfg: RunConfig) -> str:
    """What the perturbation of the device does (from the drift wrapper's own description)."""
    if cfg.system != "drifting":
        return "none"
    opts = dict(cfg.system_options)
    s = build_system("drifting", n_inputs=None if opts["base"] == "acoustic-twin" else 8, seed=0, **opts)
    try:
        d = s.describe()["drift"]
    finally:
        s.close()
    what = ", ".join(sorted(d["parameters"])) if d["target"] == "parameters" else "per-channel output gain and offset"
    return f"{d['target']}: {what}"


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


def pooled(rs: list[dict]) -> Accuracy:
    """The seeds' test predictions pooled: correct answers over test samples (each seed's test split counted)."""
    return Accuracy(
        sum(round(r["test_accuracy"] * r["test_n"]) for r in rs if r.get("test_n")),
        sum(r["test_n"] for r in rs if r.get("test_n")),
    )


def _pooled(rs: list[dict]) -> str:
    a = pooled(rs)
    if not a.n:
        return "n/a"
    lo, hi = a.interval
    return f"{a.value:.3f} ({a.correct}/{a.n}, {lo:.3f}-{hi:.3f})"


def _ms(vals: list[float], fmt: str = "{:.3f}") -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"


def machine() -> str:
    return (
        f"{platform.platform()}; {platform.machine()} {platform.processor() or ''}; {os.cpu_count()} logical CPUs "
        f"(shared with other jobs); torch {torch.__version__}, {torch.get_num_threads()} thread(s) per run; "
        f"Python {platform.python_version()}"
    )


def write_report(runs: list[dict], out: Path, command: str, unavailable: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in runs:
        groups.setdefault((r["pair"], settings_key(r["settings"])), {}).setdefault(r["method"], []).append(r)
    lines = [
        "# MF-FF against hardware-aware training and digital controls",
        "",
        f"Report rebuilt by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the stored runs, "
        "which were produced by:",
        "",
        *[f"- `{c}`" for c in sorted({r.get("command", "?") for r in runs})],
        "",
        "Machine(s): " + "; ".join(sorted({r.get("machine", "?") for r in runs})) + ". Wall times are noisy: "
        "the machine was shared with other agents' jobs.",
        "",
        "Columns: test accuracy mean ± std over seeds, the test split measured once at the end of each run, and "
        "the seeds' test answers pooled (correct/n with its 95 % Wilson interval) "
        "(n = 359 on digits, 1000 on MNIST-5k, 49 on vowels per seed; a 10 % validation split of the training "
        "data carries every evaluation during training, and the controls' learning rate is chosen on it); "
        "*learn queries*: physical samples queried to learn "
        "(training + twin fit + readout fit); *q to 95 %*: learning queries spent when the validation accuracy "
        "first reached 95 % of its final value (evaluated every epoch; 0 for methods that learn without the "
        "device); "
        "*learn FLOPs*: digital FLOPs to learn (matrix products, forward and backward; physics inside queries "
        "excluded; simulators' differentiable models included; see physnn/train/accounting.py); *train s*: wall "
        "seconds of training and twin fitting (evaluation excluded); *inf. q/sample*: queries to classify one "
        "test sample; *map FLOPs/sample*: digital FLOPs of one sample through every block's feature map -- a "
        "control's price (physnn/simulators/controls.py) or, for an optical row, what its queries replace (a "
        "complex matrix-vector product and |.|^2 per block); n/a where no price is stated. The claims under each "
        "table compare pooled accuracies with the 95 % interval of the difference (Newcombe); an interval "
        "holding 0 shows no difference.",
        "",
        "Device: hardware-in-the-loop methods (MF-FF, PAT, zeroth-order) train on a *perturbed* instance of the "
        'simulator (system = "drifting" around it: a Drifting wrapper with one event of size '
        "`perturb` at t = 0 -- drift parameters moved by `perturb` decorrelation scales where the simulator "
        "exposes them, else a per-channel gain/offset error of relative size `perturb`). In-silico backprop "
        "trains on the nominal simulator's differentiable model and is shown deployed on the nominal simulator "
        "(ideal) and on the perturbed device.",
        "",
    ]
    for name, why in sorted(unavailable.items()):
        lines.append(f"- **{name}: not run** -- {why}")
    if unavailable:
        lines.append("")
    for (pair, skey), by_method in sorted(groups.items()):
        s = json.loads(skey)
        seeds = sorted({r["seed"] for rs in by_method.values() for r in rs})
        lines += [
            f"## {pair} ({s['epochs']} epochs)",
            "",
            f"Settings: {s['blocks']} blocks, {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, "
            f"device perturbation {s['perturb']}, PAT twin {s['twin_samples']} queries x {s['twin_epochs']} "
            f"epochs, SPSA c = {s['zo_perturbation']}, {s['zo_directions']} direction(s); seeds {seeds}.",
            "",
            "| method | seeds | test accuracy | pooled over seeds (95 % CI) | learn queries | q to 95 % | learn FLOPs "
            "| train s | of which device s | inf. q/sample | map FLOPs/sample |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in ROW_ORDER + sorted(set(by_method) - set(ROW_ORDER)):
            rs = by_method.get(m)
            if not rs:
                continue
            lines.append(
                f"| {LABELS.get(m, m)} | {len(rs)} | {_ms([r['test_accuracy'] for r in rs])} | {_pooled(rs)} | "
                f"{_fmt_sci(statistics.mean(r['learning_queries'] for r in rs))} | "
                f"{_fmt_sci(statistics.mean(r['queries_to_95'] for r in rs))} | "
                f"{_fmt_sci(statistics.mean(r['learning_flops'] for r in rs))} | "
                f"{_ms([r['train_seconds'] for r in rs], '{:.1f}')} | "
                f"{statistics.mean(r['device_seconds'] for r in rs):.1f} | "
                f"{rs[0]['inference_queries_per_sample']} | {_fmt_sci(rs[0].get('map_flops_per_sample', math.nan))} |"
            )
        extra = []
        pert = sorted({r["device_perturbation"] for rs in by_method.values() for r in rs if "device_perturbation" in r})
        if pert:
            extra.append(f"Device perturbation mechanism: {'; '.join(pert)}.")
        if "pat" in by_method:
            errs = [r["twin_rel_error"] for r in by_method["pat"] if "twin_rel_error" in r]
            if errs:
                extra.append(f"PAT twin relative error on its training queries (last epoch, block 1): {_ms(errs)}.")
        if "backprop-device" in by_method:
            ins = [
                r["insilico_accuracy"] for r in by_method["backprop-device"] if r.get("insilico_accuracy") is not None
            ]
            if ins:
                extra.append(f"Backprop's accuracy inside its own model (no device): {_ms(ins)}.")
        extra += reading(by_method)
        if extra:
            lines += [""] + extra
        lines.append("")
    lines += [
        "## Notes",
        "",
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
        "below about a factor 1.5 are not meaningful.",
    ]
    lines.append(
        "- Code of the stored rows: the local_ce rows, every control row and MF-FF on digits-optics were run on "
        "2026-12-07 with the round-3 local_ce and the optical simulator's shared light budget (commit 6e2fb4e); "
        "the other rows (MF-FF elsewhere, PAT, zeroth-order, backprop, the digital controls) on 2026-12-01, on "
        "optical pairs with the earlier per-pixel light."
    )
    if (out / "compare_runs_superseded.jsonl").is_file():
        lines.append(
            "- `compare_runs_superseded.jsonl`: runs kept for the record, not shown: optics runs made before "
            "the optical simulator exposed drift parameters (the device perturbation was then an output "
            "gain/offset error), and local_ce runs made before its skip path kept the data whole (each "
            "record says why in its `superseded` field)."
        )
    lines.append("")
    (out / "compare.md").write_text("\n".join(lines))
    plot(groups, out / "compare.png")
    plot_curves(groups, out / "compare_queries.png")


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
        out.append(
            f"MF-FF vs PAT: accuracy {cmp(mf, pat)}; PAT needs {f_ratio:.2g}x MF-FF's digital FLOPs, "
            f"{t_ratio:.2g}x its training wall time, {digital[0] / max(digital[1], 1e-9):.2g}x excluding "
            f"the time inside the simulated device ({stat('pat', 'learning_queries')[0] / stat('mfff', 'learning_queries')[0]:.2g}x "
            f"its learning queries)."
        )
    if mf and lr:
        out.append(f"MF-FF vs logistic regression on the raw features: {cmp(mf, lr)}.")
    for method in ("local_ce", "mfff"):
        out += fair_claim(method, by_method)
    ideal, dev = stat("backprop-ideal", "test_accuracy"), stat("backprop-device", "test_accuracy")
    if ideal and dev:
        txt = f"In-silico backprop: {ideal[0]:.3f} on its model, {dev[0]:.3f} deployed on the perturbed device"
        hil = [f"{n} {v[0]:.3f}" for n, v in (("MF-FF", mf), ("PAT", pat)) if v]
        out.append(txt + ("; trained on that device, " + ", ".join(hil) if hil else "") + ".")
    return out


def fair_claim(method: str, by_method: dict[str, list[dict]]) -> list[str]:
    """The method through the physics against its controls, in points, pooled over seeds, with the 95 % interval
    of the difference (physnn.core.evaluation.difference_interval); an interval that holds 0 shows no difference."""
    phys = by_method.get(method)
    controls = [(c, by_method.get(f"{method}-{c}")) for c in ("identity", "linear", "features", "speckle")]
    controls = [(c, rs) for c, rs in controls if rs]
    if not phys or not controls:
        return []
    a = pooled(phys)
    lo, hi = a.interval
    name = {"local_ce": "local_ce", "mfff": "MF-FF"}[method]
    words = {
        "identity": "identity (no physics, the data's width)",
        "linear": "a random linear map of the same width",
        "features": "random ReLU features of the same width",
        "speckle": "the optics' equations computed digitally (no noise)",
    }
    parts = []
    for c, rs in controls:
        b = pooled(rs)
        dlo, dhi = difference_interval(a, b)
        verdict = (
            "no difference shown"
            if dlo <= 0 <= dhi
            else ("the physics is better" if dlo > 0 else "the physics is worse")
        )
        cost = rs[0].get("map_flops_per_sample", math.nan)
        price = f", {_fmt_sci(cost)} FLOPs/sample" if c in ("features", "speckle") and cost == cost else ""
        parts.append(
            f"{100 * (a.value - b.value):+.1f} points (95 % CI {100 * dlo:+.1f} to {100 * dhi:+.1f}) over {words[c]} "
            f"({b.value:.3f}{price}): {verdict}"
        )
    return [
        f"Against its fair controls, {name} through the physics ({a.value:.3f}, {a.correct}/{a.n}, 95 % CI "
        f"{lo:.3f}-{hi:.3f}, seeds pooled): " + "; ".join(parts) + "."
    ]


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
        for col, (field_, xlabel) in enumerate(
            (("learning_flops", "digital FLOPs to learn"), ("train_seconds", "training wall time (s)"))
        ):
            ax = axes[row][col]
            for m in ROW_ORDER:
                rs = by_method.get(m)
                if not rs:
                    continue
                xs = [r[field_] for r in rs if r[field_] == r[field_] and r[field_] > 0]
                if not xs:
                    continue
                accs = [r["test_accuracy"] for r in rs]
                ax.errorbar(
                    statistics.mean(xs),
                    statistics.mean(accs),
                    yerr=statistics.stdev(accs) if len(accs) > 1 else 0,
                    marker=markers.get(m, "o"),
                    linestyle="none",
                    capsize=3,
                    label=LABELS.get(m, m),
                )
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


def plot_curves(groups, path: Path) -> None:
    """Accuracy versus physical queries: one curve per method (validation accuracy after each epoch, mean over
    seeds), with the final test accuracy (mean, n seeds) as a marker at the method's total learning queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(groups)
    if not keys:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        ax = axes[row][0]
        for m in ROW_ORDER:
            rs = [r for r in groups[key].get(m, []) if r.get("curve") and r["learning_queries"] > 0]
            if not rs:
                continue
            n = min(len(r["curve"]) for r in rs)
            qs = [statistics.mean(r["curve"][i][0] for r in rs) for i in range(n)]
            accs = [statistics.mean(r["curve"][i][1] for r in rs) for i in range(n)]
            (line,) = ax.plot(qs, accs, marker=".", label=f"{LABELS.get(m, m)} (n={len(rs)} seeds)")
            ax.plot(
                [statistics.mean(r["learning_queries"] for r in rs)],
                [statistics.mean(r["test_accuracy"] for r in rs)],
                "*",
                color=line.get_color(),
                markersize=11,
            )
        ax.set_xscale("log")
        ax.set(
            xlabel="physical queries spent to learn (samples)",
            ylabel="accuracy",
            title=f"{key[0]}\nvalidation accuracy per epoch (lines), test accuracy at the end (stars)",
        )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
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
        build_system(pair.system, seed=0).close()
    except (ImportError, FileNotFoundError, ValueError, TypeError) as exc:
        return f"system {pair.system!r} unavailable: {exc}"
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--quick", action="store_true", help="3 epochs, small twins: a smoke test, not a result")
    ap.add_argument(
        "--epochs", type=int, default=None, help="epochs for every method (default: per pair, 20; vowels 100)"
    )
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
        return Settings(
            epochs,
            args.batch_size,
            args.lr,
            args.blocks,
            args.perturb,
            args.twin_samples,
            args.twin_epochs,
            args.zo_perturbation,
            args.zo_directions,
        )

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
