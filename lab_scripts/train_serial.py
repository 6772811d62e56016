#!/usr/bin/env python
"""Train a PNN with MF-FF through a serial DAQ bench (DACs -> analog system -> ADCs).

Simulated (a pty fake firmware around the optical simulator, no hardware)::

    python lab_scripts/train_serial.py --simulate --dataset vowels --epochs 10 --out runs/serial-sim

A real board running lab_scripts/firmware/physnn_daq (safe range 0..2.5 V,
12-bit DAC and ADC spanning 0..3.3 V)::

    python lab_scripts/train_serial.py --port /dev/ttyACM0 --serial DUE-0001 \\
        --low 0 --high 2.5 --dac-volts-per-code 0.000806 --adc-volts-per-code 0.000806 \\
        --dataset vowels --epochs 10 --out runs/serial

With one board, every block of the network time-multiplexes the same bench, so
the first block's input (classes + features) must fit the board's DAC count.
``--high`` has no default on a real bench: the safe range is yours to state.
Ctrl-C at any moment leaves the DACs in their safe state (SAFE is sent by the
driver and again on exit). The run's accuracy, per-epoch history, bench
events and the bench description go to ``OUT/summary.json``, the trained
digital weights to ``OUT/model.pt``.
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
    """Options that select and configure a serial DAQ bench (shared with characterize.py)."""
    g = parser.add_argument_group("serial DAQ bench")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--simulate", action="store_true", help="use the pty fake firmware (no hardware)")
    src.add_argument("--port", help="serial port of the board, e.g. /dev/ttyACM0, COM3, or a pyserial URL")
    g.add_argument("--backend", default="optics", help="--simulate: simulator behind the fake DACs/ADCs (default optics)")
    g.add_argument("--n-inputs", type=int, help="DAC channels (default: from the board's IDENT; simulated: the model's width)")
    g.add_argument("--n-outputs", type=int, help="ADC channels (default: from IDENT; simulated: 48)")
    g.add_argument("--low", type=float, default=0.0, help="lowest safe drive voltage, V (default 0)")
    g.add_argument("--high", type=float, help="highest safe drive voltage, V (required with --port)")
    g.add_argument("--dac-volts-per-code", type=float, help="DAC calibration: volts per code (required with --port)")
    g.add_argument("--dac-offset", type=float, default=0.0, help="DAC calibration: volts at code 0 (default 0)")
    g.add_argument("--adc-volts-per-code", type=float, help="ADC calibration: volts per code (required with --port)")
    g.add_argument("--adc-offset", type=float, default=0.0, help="ADC calibration: volts at code 0 (default 0)")
    g.add_argument("--dac-bits", type=int, help="DAC width (default: from IDENT)")
    g.add_argument("--adc-bits", type=int, help="ADC width (default: from IDENT)")
    g.add_argument("--serial", help="expected board serial number (refuse any other board)")
    g.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for one reply (default 1)")
    g.add_argument("--retries", type=int, default=3, help="retries per request after a recoverable fault (default 3)")
    g.add_argument("--on-clip", choices=("flag", "raise"), default="flag",
                   help="ADC values at 0 or full scale: count and flag (default) or stop with an error")
    g.add_argument("--baudrate", type=int, default=115200, help="UART speed (ignored by native USB boards)")


def build_bench(args: argparse.Namespace, *, n_inputs: int | None = None, seed: int = 0):
    """A SerialDAQSystem from parsed options: the pty fake with --simulate, else the board on --port."""
    from physnn.devices.serial_daq import Calibration, SerialDAQSystem, probe_ident
    from physnn.devices.sim.fake_firmware import simulated_serial_daq
    from physnn.devices.transport import SerialTransport

    if args.simulate:
        return simulated_serial_daq(
            n_inputs=args.n_inputs or n_inputs, n_outputs=args.n_outputs or 48, backend=args.backend, seed=seed,
            low=args.low, high=args.high, on_clip=args.on_clip, timeout=args.timeout, retries=args.retries,
        )
    if not args.port:
        raise SystemExit("error: give --simulate or --port PORT")
    missing = [f"--{k.replace('_', '-')}" for k in ("high", "dac_volts_per_code", "adc_volts_per_code")
               if getattr(args, k) is None]
    if missing:
        raise SystemExit(f"error: a real bench needs {', '.join(missing)} (the safe range and calibration are yours to state)")
    transport = SerialTransport(args.port, baudrate=args.baudrate, timeout=args.timeout)
    try:
        ident = probe_ident(transport, timeout=args.timeout)
        print(f"board: {ident.model} serial {ident.serial} firmware {ident.firmware}: {ident.n_in} DAC x "
              f"{ident.dac_bits} bit, {ident.n_out} ADC x {ident.adc_bits} bit, max_batch {ident.max_batch}")
        return SerialDAQSystem(
            transport,
            n_inputs=args.n_inputs or ident.n_in,
            n_outputs=args.n_outputs or ident.n_out,
            low=args.low,
            high=args.high,
            dac=Calibration(args.dac_volts_per_code, args.dac_offset),
            adc=Calibration(args.adc_volts_per_code, args.adc_offset),
            dac_bits=args.dac_bits or ident.dac_bits,
            adc_bits=args.adc_bits or ident.adc_bits,
            serial=args.serial,
            on_clip=args.on_clip,
            timeout=args.timeout,
            retries=args.retries,
        )
    except BaseException:
        transport.close()
        raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See lab_scripts/firmware/README.md for the board side.")
    add_bench_arguments(p)
    t = p.add_argument_group("training")
    t.add_argument("--dataset", default="vowels", help="vowels (default), digits, mnist5k")
    t.add_argument("--data-path", help="data file or folder (default: the shared data folder)")
    t.add_argument("--blocks", type=int, default=2, help="PNN blocks (default 2)")
    t.add_argument("--hidden", type=int, help="digital layer width (default: the bench's DAC count, at most 20)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.02)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, help="folder for summary.json and model.pt")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from physnn.data import load_dataset
    from physnn.model import PNN
    from physnn.train.mfff import MFFF

    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset, path=args.data_path, seed=args.seed)
    width = data.n_classes + data.n_features
    events: list[dict[str, Any]] = []

    seen: dict[str, int] = {}

    def hook(kind: str, fields: dict) -> None:
        events.append({"time": time.time(), "kind": kind, **{k: str(v) for k, v in fields.items()}})
        seen[kind] = seen.get(kind, 0) + 1
        n = seen[kind]
        if n <= 3 or n in (10, 100, 1000, 10000):  # every event is in the summary; the console gets a sample
            print(f"  bench event #{n} {kind}: {fields}", file=sys.stderr)

    status = "failed"
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if args.simulate:  # one simulated bench per block, as separate devices
            hidden = args.hidden or 20
            benches = []
            for i in range(args.blocks):
                bench = build_bench(args, n_inputs=width if i == 0 else hidden, seed=args.seed * 1000 + i + 1)
                stack.callback(bench.close)
                benches.append(bench)
        else:  # one board, time-multiplexed by every block
            bench = build_bench(args, seed=args.seed)
            stack.callback(bench.close)
            benches = [bench] * args.blocks
            hidden = args.hidden or min(bench.spec.n_inputs, 20)
        for b in set(benches):
            b.event_hook = hook
        pnn = PNN(benches, data.n_features, data.n_classes, hidden=hidden, seed=args.seed)
        trainer = MFFF(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_every=1)
        t0 = time.perf_counter()
        try:
            trainer.fit(pnn, data.x_train, data.y_train, data.x_test, data.y_test,
                        on_epoch_end=lambda e, m: print(f"epoch {e + 1}/{args.epochs}: loss {m['loss']:.4f} "
                                                        f"test accuracy {m.get('test_accuracy', float('nan')):.3f}"))
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            print("interrupted: the bench is being put in its safe state", file=sys.stderr)
        result = {
            "status": status,
            "test_accuracy": trainer.history.epochs[-1].get("test_accuracy") if trainer.history.epochs else None,
            "wall_seconds": time.perf_counter() - t0,
            "history": trainer.history.epochs,
            "events": events,
            "benches": [b.describe() for b in dict.fromkeys(benches)],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(pnn.state_dict(), args.out / "model.pt")
    # the summary is written after the benches are closed (SAFE sent), whatever happened above
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.out / 'summary.json'} and {args.out / 'model.pt'}")
    if result.get("test_accuracy") is not None:
        print(f"{status}: test accuracy {result['test_accuracy']:.3f} after {len(result['history'])} epoch(s), "
              f"{len(events)} bench event(s)")
    return 0 if status == "completed" else 130


if __name__ == "__main__":
    sys.exit(main())
