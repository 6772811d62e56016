#!/usr/bin/env python
"""Train a PNN with MF-FF through a serial DAQ bench (DACs -> analog system -> ADCs).

Simulated (a pty fake firmware around the optical simulator, no hardware)::

    python lab_scripts/train_serial.py --simulate --dataset vowels --epochs 10 --output runs/

A real board running lab_scripts/firmware/physnn_daq (safe range 0..2.5 V,
12-bit DAC and ADC spanning 0..3.3 V)::

    python lab_scripts/train_serial.py --port /dev/ttyACM0 --serial DUE-0001 \\
        --low 0 --high 2.5 --dac-volts-per-code 0.000806 --adc-volts-per-code 0.000806 \\
        --dataset vowels --epochs 10 --output runs/serial-bench.h5

With one board, every block of the network time-multiplexes the same bench, so
the first block's input (classes + features) must fit the board's DAC count.
``--high`` has no default on a real bench: the safe range is yours to state.
Ctrl-C at any moment -- even in the middle of a frame, on a board without a
frame timeout -- leaves the DACs in their safe state: the driver ends the cut
frame, sends SAFE and waits for its reply, and the console says the bench is
safe only when that reply came (``--sim-no-frame-timeout`` simulates such a
board).

The run file (``--output``, HDF5) keeps the board's identity, limits and
calibration with the metrics, checkpoints and every fault or retry;
``physnn report RUN.h5`` plots it. Exit codes: see lab_scripts/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # for _bench_common, also when this file is loaded from elsewhere
    sys.path.insert(0, _HERE)

from _bench_common import Benches, add_training_arguments, bench_flags, train_main  # noqa: E402


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that select and configure a serial DAQ bench (shared with characterize.py)."""
    g = parser.add_argument_group("serial DAQ bench")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--simulate", action="store_true", help="use the pty fake firmware (no hardware)")
    src.add_argument("--port", help="serial port of the board, e.g. /dev/ttyACM0, COM3, or a pyserial URL")
    g.add_argument(
        "--backend", default="optics", help="--simulate: simulator behind the fake DACs/ADCs (default optics)"
    )
    g.add_argument(
        "--n-inputs", type=int, help="DAC channels (default: from the board's IDENT; simulated: the model's width)"
    )
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
    g.add_argument(
        "--on-clip",
        choices=("flag", "raise"),
        default="flag",
        help="ADC values at 0 or full scale: count and flag (default) or stop with an error",
    )
    g.add_argument("--baudrate", type=int, default=115200, help="UART speed (ignored by native USB boards)")
    g.add_argument(
        "--sim-no-frame-timeout",
        action="store_true",
        help="--simulate: the fake board never drops a half-received frame (like boards in the field without a "
        "frame timeout); the driver must still reach SAFE after a Ctrl-C at any byte",
    )


def simulated_options(args: argparse.Namespace) -> dict:
    """Keywords of the ``serial-daq-sim`` factory for --simulate (also recorded as the run's system_options)."""
    opts = dict(
        n_outputs=args.n_outputs or 48,
        backend=args.backend,
        low=args.low,
        high=args.high,
        on_clip=args.on_clip,
        timeout=args.timeout,
        retries=args.retries,
    )
    opts = {k: v for k, v in opts.items() if v is not None}  # high=None: the factory's default, the whole DAC span
    if getattr(args, "sim_no_frame_timeout", False):
        opts["frame_timeout"] = None  # a board that waits for ever for the rest of a frame
    return opts


def build_bench(args: argparse.Namespace, *, n_inputs: int | None = None, seed: int = 0):
    """A SerialDAQSystem from parsed options: the pty fake with --simulate, else the board on --port."""
    from physnn.devices.serial_daq import Calibration, SerialDAQSystem, probe_ident
    from physnn.devices.sim.fake_firmware import simulated_serial_daq
    from physnn.devices.transport import SerialTransport

    if args.simulate:
        return simulated_serial_daq(n_inputs=args.n_inputs or n_inputs, seed=seed, **simulated_options(args))
    if not args.port:
        raise SystemExit("error: give --simulate or --port PORT")
    missing = [
        f"--{k.replace('_', '-')}"
        for k in ("high", "dac_volts_per_code", "adc_volts_per_code")
        if getattr(args, k) is None
    ]
    if missing:
        raise SystemExit(
            f"error: a real bench needs {', '.join(missing)} (the safe range and calibration are yours to state)"
        )
    transport = SerialTransport(args.port, baudrate=args.baudrate, timeout=args.timeout)
    try:
        ident = probe_ident(transport, timeout=args.timeout)
        print(
            f"board: {ident.model} serial {ident.serial} firmware {ident.firmware}: {ident.n_in} DAC x "
            f"{ident.dac_bits} bit, {ident.n_out} ADC x {ident.adc_bits} bit, max_batch {ident.max_batch}"
        )
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
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See lab_scripts/firmware/README.md for the board side.",
    )
    add_bench_arguments(p)
    add_training_arguments(
        p, hidden_default=None, hidden_help="digital layer width (default: the bench's DAC count, at most 20)"
    )
    return p.parse_args(argv)


def open_benches(args: argparse.Namespace, width: int, stack: contextlib.ExitStack) -> Benches:
    """One simulated bench per block (separate devices), or the one board shared by every block."""
    from physnn.run.experiment import block_seed

    if args.simulate:
        hidden = args.hidden or 20
        systems = []
        for i in range(args.blocks):
            bench = build_bench(args, n_inputs=width if i == 0 else hidden, seed=block_seed(args.seed, i))
            stack.callback(bench.close)
            systems.append(bench)
        return Benches(systems, hidden, "serial-daq-sim", simulated_options(args))
    bench = build_bench(args, seed=args.seed)
    stack.callback(bench.close)
    hidden = args.hidden or min(bench.spec.n_inputs, 20)
    return Benches([bench] * args.blocks, hidden, "serial-daq", bench_flags(args))


def main(argv: list[str] | None = None) -> int:
    return train_main(parse_args(argv), open_benches)


if __name__ == "__main__":
    sys.exit(main())
