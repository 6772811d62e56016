#!/usr/bin/env python
"""Train a PNN with MF-FF through an AWG + oscilloscope bench over VISA.

Simulated (the in-process SCPI bench around the optical simulator, no hardware)::

    python lab_scripts/train_awg_scope.py --simulate --dataset vowels --epochs 10 --out runs/awg-sim

A real bench (Keysight 33500B/33600A channel 1 -> device under test -> InfiniiVision
channel 1, AWG trigger out -> scope EXT trigger; see lab_scripts/README.md)::

    python lab_scripts/train_awg_scope.py \\
        --awg "TCPIP0::192.168.1.10::inst0::INSTR" --scope "TCPIP0::192.168.1.11::inst0::INSTR" \\
        --vpp 0.5 --offset 0.25 --max-vpp 0.5 --max-offset 0.25 --max-voltage 0.5 \\
        --sample-rate 1e6 --channel-range 1.0 --channel-offset 0.25 \\
        --dataset vowels --epochs 10 --out runs/awg

Every setting is checked against the limits you give before any byte is sent;
``--vpp`` and the ``--max-*`` limits have no defaults on a real bench: they
are yours to state for your device under test. With one bench, every block of
the network time-multiplexes it, so its symbol count per sample is the widest
block input. Ctrl-C at any moment turns the AWG output off (the driver does it
mid-batch and again on exit). The accuracy, per-epoch history, bench events
and the bench description go to ``OUT/summary.json``, the trained digital
weights to ``OUT/model.pt``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that select and configure an AWG + scope bench."""
    g = parser.add_argument_group("AWG + oscilloscope bench")
    g.add_argument("--simulate", action="store_true", help="use the in-process SCPI bench (no hardware)")
    g.add_argument("--backend", default="optics", help="--simulate: simulator between the AWG and the scope (default optics)")
    g.add_argument("--awg", help="VISA address of the AWG, e.g. TCPIP0::192.168.1.10::inst0::INSTR")
    g.add_argument("--scope", help="VISA address of the oscilloscope")
    g.add_argument("--visa-backend", default="@py", help="pyvisa backend: @py (default), @ivi (vendor VISA)")
    g.add_argument("--expect-awg", help="text the AWG's *IDN? must contain (e.g. 33522B); refuse any other")
    g.add_argument("--expect-scope", help="text the scope's *IDN? must contain (e.g. DSOX3024T)")
    g.add_argument("--n-outputs", type=int, default=16, help="features per sample (default 16)")
    g.add_argument("--features", choices=("integrals", "fft"), default="integrals",
                   help="window integrals (default) or |FFT| bins of each sample's response")
    g.add_argument("--vpp", type=float, help="AWG amplitude, V peak-to-peak (required on a real bench)")
    g.add_argument("--offset", type=float, default=0.0, help="AWG offset, V (default 0)")
    g.add_argument("--sample-rate", type=float, default=1e6, help="AWG sample rate, Sa/s (default 1e6)")
    g.add_argument("--load", default="INF", help="AWG output load setting: INF (high-Z, default) or ohms")
    g.add_argument("--max-vpp", type=float, help="limit: largest Vpp the DUT tolerates (required on a real bench)")
    g.add_argument("--max-offset", type=float, help="limit: largest |offset|, V (required on a real bench)")
    g.add_argument("--max-voltage", type=float, help="limit: largest |offset| + Vpp/2, V (required on a real bench)")
    g.add_argument("--max-sample-rate", type=float, default=160e6, help="limit: AWG sample rate, Sa/s (default 160e6)")
    g.add_argument("--max-points", type=int, default=65536, help="limit: waveform points per upload (default 65536)")
    g.add_argument("--symbol-samples", type=int, default=4, help="AWG points per drive value (default 4)")
    g.add_argument("--guard-samples", type=int, default=8, help="AWG points between samples (default 8)")
    g.add_argument("--channel-range", type=float, default=2.0, help="scope channel 1 full-scale range, V (default 2)")
    g.add_argument("--channel-offset", type=float, default=0.0, help="scope channel 1 centre, V (default 0)")
    g.add_argument("--trigger-source", default="EXT", help="scope trigger: EXT (AWG trigger out, default) or CHAN2")
    g.add_argument("--trigger-level", type=float, default=1.0, help="scope trigger level, V (default 1)")
    g.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for one reply (default 5; 0.5 simulated)")
    g.add_argument("--retries", type=int, default=3, help="retries per waveform after a recoverable fault (default 3)")
    g.add_argument("--on-clip", choices=("flag", "raise"), default="flag",
                   help="scope at full scale: count and flag (default) or stop with an error")


def build_bench(args: argparse.Namespace, *, n_inputs: int, seed: int = 0):
    """An AWGScopeSystem from parsed options: the SCPI bench with --simulate, else the instruments."""
    from physnn.devices.awg_scope import AWGScopeSystem, BenchLimits
    from physnn.devices.scpi import SCPIAWG, SCPIScope
    from physnn.devices.sim.scpi_bench import simulated_awg_scope
    from physnn.devices.transport import VisaTransport

    if args.simulate:
        return simulated_awg_scope(n_inputs=n_inputs, n_outputs=args.n_outputs, backend=args.backend, seed=seed,
                                   features=args.features, on_clip=args.on_clip, max_retries=args.retries,
                                   timeout=min(args.timeout, 0.5))
    if not (args.awg and args.scope):
        raise SystemExit("error: give --simulate, or both --awg and --scope VISA addresses")
    missing = [f"--{k.replace('_', '-')}" for k in ("vpp", "max_vpp", "max_offset", "max_voltage")
               if getattr(args, k) is None]
    if missing:
        raise SystemExit(f"error: a real bench needs {', '.join(missing)} (the drive and its limits are yours to state)")
    limits = BenchLimits(max_vpp=args.max_vpp, max_abs_offset=args.max_offset, max_abs_voltage=args.max_voltage,
                         max_sample_rate=args.max_sample_rate, max_points=args.max_points)
    # Limits first: nothing is opened, let alone written, for a drive outside them.
    limits.check(vpp=args.vpp, offset=args.offset, sample_rate=args.sample_rate)
    transports = []
    try:
        awg_t = VisaTransport(args.awg, backend=args.visa_backend, timeout=args.timeout)
        transports.append(awg_t)
        scope_t = VisaTransport(args.scope, backend=args.visa_backend, timeout=args.timeout)
        transports.append(scope_t)
        system = AWGScopeSystem(
            SCPIAWG(awg_t, name="awg"), SCPIScope(scope_t, name="scope"),
            n_inputs=n_inputs, n_outputs=args.n_outputs, limits=limits, vpp=args.vpp, offset=args.offset,
            sample_rate=args.sample_rate, features=args.features, symbol_samples=args.symbol_samples,
            guard_samples=args.guard_samples, load=args.load, trigger_source=args.trigger_source,
            trigger_level=args.trigger_level, channel_range=args.channel_range, channel_offset=args.channel_offset,
            on_clip=args.on_clip, max_retries=args.retries, expect_awg_idn=args.expect_awg,
            expect_scope_idn=args.expect_scope,
        )
    except BaseException:
        for t in transports:
            with contextlib.suppress(Exception):
                t.close()
        raise
    print(f"AWG: {system.awg_idn}\nscope: {system.scope_idn}\n"
          f"{system.max_per_waveform} samples per waveform, {system.record_points} scope points per capture")
    return system


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See lab_scripts/README.md for wiring and choosing limits.")
    add_bench_arguments(p)
    t = p.add_argument_group("training")
    t.add_argument("--dataset", default="vowels", help="vowels (default), digits, mnist5k")
    t.add_argument("--data-path", help="data file or folder (default: the shared data folder)")
    t.add_argument("--blocks", type=int, default=2, help="PNN blocks (default 2)")
    t.add_argument("--hidden", type=int, default=20, help="digital layer width (default 20)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.02)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, help="folder for summary.json and model.pt")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from physnn.data import load_dataset

    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset, path=args.data_path, seed=args.seed)
    width = data.n_classes + data.n_features
    events: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    def hook(kind: str, fields: dict) -> None:
        events.append({"time": time.time(), "kind": kind, **{k: str(v) for k, v in fields.items()}})
        seen[kind] = seen.get(kind, 0) + 1
        n = seen[kind]
        if n <= 3 or n in (10, 100, 1000, 10000):  # every event goes to the summary; the console gets a sample
            print(f"  bench event #{n} {kind}: {fields}", file=sys.stderr)

    from physnn.devices.errors import InstrumentError

    result: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            _train(args, data, width, hook, stack, result)
    except InstrumentError as exc:  # limits, identity, a fault that outlived its retries
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["events"] = events
    status = result.get("status", "failed")
    # written after the benches are closed (output off), whatever happened above
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.out / 'summary.json'}")
    if result.get("test_accuracy") is not None:
        print(f"{status}: test accuracy {result['test_accuracy']:.3f} after {len(result['history'])} epoch(s), "
              f"{len(events)} bench event(s)")
    return {"completed": 0, "interrupted": 130}.get(status, 2)


def _train(args, data, width, hook, stack, result) -> None:
    """Build the benches (closed by ``stack``), train, and fill ``result``."""
    from physnn.model import PNN
    from physnn.train.mfff import MFFF

    if args.simulate:  # one simulated bench per block, as separate devices
        benches = []
        for i in range(args.blocks):
            bench = build_bench(args, n_inputs=width if i == 0 else args.hidden, seed=args.seed * 1000 + i + 1)
            stack.callback(bench.close)
            benches.append(bench)
    else:  # one bench, time-multiplexed by every block
        bench = build_bench(args, n_inputs=max(width, args.hidden), seed=args.seed)
        stack.callback(bench.close)
        benches = [bench] * args.blocks
    for b in dict.fromkeys(benches):
        b.event_hook = hook
    pnn = PNN(benches, data.n_features, data.n_classes, hidden=args.hidden, seed=args.seed)
    trainer = MFFF(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_every=1)
    result["history"] = trainer.history.epochs
    result["benches"] = [b.describe() for b in dict.fromkeys(benches)]
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    t0 = time.perf_counter()
    try:
        trainer.fit(pnn, data.x_train, data.y_train, data.x_test, data.y_test,
                    on_epoch_end=lambda e, m: print(f"epoch {e + 1}/{args.epochs}: loss {m['loss']:.4f} "
                                                    f"test accuracy {m.get('test_accuracy', float('nan')):.3f}"))
        result["status"] = "completed"
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        print("interrupted: the AWG output is being turned off", file=sys.stderr)
    finally:
        result["wall_seconds"] = time.perf_counter() - t0
        result["test_accuracy"] = trainer.history.epochs[-1].get("test_accuracy") if trainer.history.epochs else None
        result["benches"] = [b.describe() for b in dict.fromkeys(benches)]
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(pnn.state_dict(), args.out / "model.pt")
            print(f"wrote {args.out / 'model.pt'}")
            print(f"wrote {args.out / 'model.pt'}")


if __name__ == "__main__":
    sys.exit(main())
