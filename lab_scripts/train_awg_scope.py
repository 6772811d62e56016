#!/usr/bin/env python
"""Train a PNN with MF-FF through an AWG + oscilloscope bench over VISA.

Simulated (the in-process SCPI bench around the optical simulator, no hardware)::

    python lab_scripts/train_awg_scope.py --simulate --dataset vowels --epochs 10 --output runs/

A real bench (Keysight 33500B/33600A channel 1 -> device under test -> InfiniiVision
channel 1, AWG trigger out -> scope EXT trigger; see lab_scripts/README.md)::

    python lab_scripts/train_awg_scope.py \\
        --awg "TCPIP0::192.168.1.10::inst0::INSTR" --scope "TCPIP0::192.168.1.11::inst0::INSTR" \\
        --vpp 0.5 --offset 0.25 --max-vpp 0.5 --max-offset 0.25 --max-voltage 0.5 \\
        --sample-rate 1e6 --channel-range 1.0 --channel-offset 0.25 \\
        --dataset vowels --epochs 10 --output runs/awg-bench.h5

Every setting is checked against the limits you give before any byte is sent;
``--vpp`` and the ``--max-*`` limits have no defaults on a real bench: they
are yours to state for your device under test. With one bench, every block of
the network time-multiplexes it, so its symbol count per sample is the widest
block input. Ctrl-C at any moment turns the AWG output off (the driver does it
mid-batch and again on exit).

Everything goes to one HDF5 run file (``--output``): the AWG's and scope's
identities, limits and settings, per-epoch metrics, checkpoints, every fault
and retry. Look at it with ``physnn report RUN.h5``; lab_scripts/README.md
says what the exit codes and the run file's status mean.
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
    """Options that select and configure an AWG + scope bench."""
    g = parser.add_argument_group("AWG + oscilloscope bench")
    g.add_argument("--simulate", action="store_true", help="use the in-process SCPI bench (no hardware)")
    g.add_argument(
        "--backend", default="optics", help="--simulate: simulator between the AWG and the scope (default optics)"
    )
    g.add_argument("--awg", help="VISA address of the AWG, e.g. TCPIP0::192.168.1.10::inst0::INSTR")
    g.add_argument("--scope", help="VISA address of the oscilloscope")
    g.add_argument("--visa-backend", default="@py", help="pyvisa backend: @py (default), @ivi (vendor VISA)")
    g.add_argument("--expect-awg", help="text the AWG's *IDN? must contain (e.g. 33522B); refuse any other")
    g.add_argument("--expect-scope", help="text the scope's *IDN? must contain (e.g. DSOX3024T)")
    g.add_argument("--n-outputs", type=int, default=16, help="features per sample (default 16)")
    g.add_argument(
        "--features",
        choices=("integrals", "fft"),
        default="integrals",
        help="window integrals (default) or |FFT| bins of each sample's response",
    )
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
    g.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for one reply (default 5; 0.5 simulated)"
    )
    g.add_argument("--retries", type=int, default=3, help="retries per waveform after a recoverable fault (default 3)")
    g.add_argument(
        "--on-clip",
        choices=("flag", "raise"),
        default="flag",
        help="scope at full scale: count and flag (default) or stop with an error",
    )


def simulated_options(args: argparse.Namespace) -> dict:
    """Keywords of the ``awg-scope-sim`` factory for --simulate (also recorded as the run's system_options)."""
    return dict(
        n_outputs=args.n_outputs,
        backend=args.backend,
        features=args.features,
        on_clip=args.on_clip,
        retries=args.retries,
        timeout=min(args.timeout, 0.5),
    )


def build_bench(args: argparse.Namespace, *, n_inputs: int, seed: int = 0):
    """An AWGScopeSystem from parsed options: the SCPI bench with --simulate, else the instruments."""
    from physnn.devices.awg_scope import AWGScopeSystem, BenchLimits
    from physnn.devices.scpi import SCPIAWG, SCPIScope
    from physnn.devices.sim.scpi_bench import simulated_awg_scope
    from physnn.devices.transport import VisaTransport

    if args.simulate:
        return simulated_awg_scope(n_inputs=n_inputs, seed=seed, **simulated_options(args))
    if not (args.awg and args.scope):
        raise SystemExit("error: give --simulate, or both --awg and --scope VISA addresses")
    missing = [
        f"--{k.replace('_', '-')}" for k in ("vpp", "max_vpp", "max_offset", "max_voltage") if getattr(args, k) is None
    ]
    if missing:
        raise SystemExit(
            f"error: a real bench needs {', '.join(missing)} (the drive and its limits are yours to state)"
        )
    limits = BenchLimits(
        max_vpp=args.max_vpp,
        max_abs_offset=args.max_offset,
        max_abs_voltage=args.max_voltage,
        max_sample_rate=args.max_sample_rate,
        max_points=args.max_points,
    )
    # Limits first: nothing is opened, let alone written, for a drive outside them.
    limits.check(vpp=args.vpp, offset=args.offset, sample_rate=args.sample_rate)
    transports = []
    try:
        awg_t = VisaTransport(args.awg, backend=args.visa_backend, timeout=args.timeout)
        transports.append(awg_t)
        scope_t = VisaTransport(args.scope, backend=args.visa_backend, timeout=args.timeout)
        transports.append(scope_t)
        system = AWGScopeSystem(
            SCPIAWG(awg_t, name="awg"),
            SCPIScope(scope_t, name="scope"),
            n_inputs=n_inputs,
            n_outputs=args.n_outputs,
            limits=limits,
            vpp=args.vpp,
            offset=args.offset,
            sample_rate=args.sample_rate,
            features=args.features,
            symbol_samples=args.symbol_samples,
            guard_samples=args.guard_samples,
            load=args.load,
            trigger_source=args.trigger_source,
            trigger_level=args.trigger_level,
            channel_range=args.channel_range,
            channel_offset=args.channel_offset,
            on_clip=args.on_clip,
            retries=args.retries,
            expect_awg_idn=args.expect_awg,
            expect_scope_idn=args.expect_scope,
        )
    except BaseException:
        for t in transports:
            with contextlib.suppress(Exception):
                t.close()
        raise
    print(
        f"AWG: {system.awg_idn}\nscope: {system.scope_idn}\n"
        f"{system.max_per_waveform} samples per waveform, {system.record_points} scope points per capture"
    )
    return system


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See lab_scripts/README.md for wiring and choosing limits.",
    )
    add_bench_arguments(p)
    add_training_arguments(p, hidden_default=20, hidden_help="digital layer width (default 20)")
    return p.parse_args(argv)


def open_benches(args: argparse.Namespace, width: int, stack: contextlib.ExitStack) -> Benches:
    """One simulated bench per block (separate devices), or the one real bench shared by every block."""
    from physnn.run.experiment import block_seed

    if args.simulate:
        systems = []
        for i in range(args.blocks):
            bench = build_bench(args, n_inputs=width if i == 0 else args.hidden, seed=block_seed(args.seed, i))
            stack.callback(bench.close)
            systems.append(bench)
        return Benches(systems, args.hidden, "awg-scope-sim", simulated_options(args))
    bench = build_bench(args, n_inputs=max(width, args.hidden), seed=args.seed)
    stack.callback(bench.close)
    return Benches([bench] * args.blocks, args.hidden, "awg-scope", bench_flags(args))


def main(argv: list[str] | None = None) -> int:
    return train_main(parse_args(argv), open_benches)


if __name__ == "__main__":
    sys.exit(main())
