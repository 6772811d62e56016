#!/usr/bin/env python
"""The fault matrix of docs/reliability.md, counted from the test suite.

Why a script and not a hand-kept table: a count typed into a document goes
stale the day someone adds a test. This collects the tests that inject a fault
and sorts them into the matrix's classes -- tests marked
``@pytest.mark.fault("kind")`` by their marker, the older fault tests of the
instrument and run-file suites by their file and name (``CLASSIFY``) -- then
prints one row per class: how many tests inject it and, with ``--run``, how
many pass.

Usage::

    python benchmarks/faults.py            # collect only (seconds): tests per fault class
    python benchmarks/faults.py --run      # run those tests too: passed / failed / skipped per class
    python benchmarks/faults.py --list     # every test and the class it counts in
    python benchmarks/faults.py --run tests/test_signals.py   # only some files
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The matrix's classes, in the order of docs/reliability.md.
CLASSES = [
    "serial",
    "visa",
    "remote",
    "run file",
    "signals",
    "unsafe",
    "disk full",
    "bad input",
    "combination",
    "resume",
]

#: Unmarked fault tests: (file, regex on the test name) -> class. First match wins, so put the narrow ones first.
CLASSIFY: list[tuple[str, str, str]] = [
    ("test_serial_daq.py", r"keyboard_interrupt", "signals"),
    (
        "test_serial_daq.py",
        r"stale|crc|timeouts?_|refus|busy|connection_lost|hangup|port_errors|cleanup_error|"
        r"gone_for_good|fault|late_reply|unrecoverable|completed_chunks|saturation|"
        r"above_full_scale|mismatch|limit_violation|validation",
        "serial",
    ),
    (
        "test_serial_protocol.py",
        r"recovers|garbage|skips|truncated|corrupt|impossible|too_short|not_json|"
        r"errors_name|rejects|validation",
        "serial",
    ),
    ("test_transport.py", r"serial_.*(short_read|rejects|clear)|pty", "serial"),
    (
        "test_transport.py",
        r"truncated|missing_terminator|giant_header|refused_connection|closed_transport|"
        r"dropped_reply|mismatch|exhausted|rejects_malformed|timeout_validation",
        "visa",
    ),
    ("test_awg_scope.py", r"keyboard_interrupt", "signals"),
    (
        "test_awg_scope.py",
        r"rejects|resync|lost_sync|truncated|instrument_error|clipped|wrong_instrument|"
        r"limit|out_of_range|too_long|reconnects|drains|parse_failure|refuses",
        "visa",
    ),
    ("test_scpi_bench.py", r"ctrl_c", "signals"),
    ("test_scpi_bench.py", r"fault|late_reply|permanent|failure_before|stays_down|clipping|error_queue", "visa"),
    ("test_lab_scripts.py", r"ctrl_c|sigint", "signals"),
    ("test_lab_scripts.py", r"instrument_fault|bench_events", "serial"),  # both benches: counted once, as serial
    ("test_lab_scripts.py", r"refuse_to_start|bad_training_flag", "bad input"),
    (
        "test_runlog.py",
        r"kill9|refuses_to_overwrite|status_on_exception|bad_files|damaged|resume_appends|"
        r"another_process|checksum|bit_rot|external",
        "run file",
    ),
    ("test_train_resume.py", r"kill9", "run file"),
    ("test_runfile_format.py", r"bit_rot|killed_writer|external|version_1", "run file"),
    ("test_remote.py", r"killing_the_actor|bad_options|remote_errors|limits_are_checked|public_bind", "remote"),
    ("test_train_resume.py", r"ctrl_c", "signals"),
    ("test_report.py", r"missing|bad_files|without", "run file"),
    ("test_system.py", r"bad_inputs|bad_outputs|refused|clipped|spec_validation|writes_into|overflow", "bad input"),
    ("test_config_cli.py", r"bad|missing|errors|unknown", "bad input"),
]


def classify(item: pytest.Item) -> str | None:
    """The matrix class of a collected test, or None when it injects no fault."""
    marker = item.get_closest_marker("fault")
    if marker is not None:
        return str(marker.args[0]) if marker.args else "unclassified"
    fname = Path(str(item.fspath)).name
    name = item.name.split("[")[0]
    for file, pattern, kind in CLASSIFY:
        if fname == file and re.search(pattern, name):
            return kind
    return None


class _Matrix:
    """A pytest plugin: keeps only the fault tests and records their class and outcome."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}
        self.outcome: dict[str, str] = {}

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep, drop = [], []
        for item in items:
            kind = classify(item)
            if kind is None:
                drop.append(item)
            else:
                self.kind[item.nodeid] = kind
                keep.append(item)
        items[:] = keep
        config.hook.pytest_deselected(items=drop)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcome[report.nodeid] = report.outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="store_true", help="run the fault tests, not only count them")
    p.add_argument("--list", action="store_true", help="print every fault test and its class")
    p.add_argument("paths", nargs="*", default=[str(ROOT / "tests")], help="test files or folders (default tests/)")
    args = p.parse_args(argv)
    matrix = _Matrix()
    pytest_args = [*args.paths, "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
    if not args.run:
        pytest_args.append("--collect-only")
    rc = pytest.main(pytest_args, plugins=[matrix])
    per_class: dict[str, Counter] = defaultdict(Counter)
    for nodeid, kind in matrix.kind.items():
        per_class[kind]["tests"] += 1
        if args.run:
            per_class[kind][matrix.outcome.get(nodeid, "not run")] += 1
    if args.list:
        for nodeid, kind in sorted(
            matrix.kind.items(), key=lambda kv: (CLASSES.index(kv[1]) if kv[1] in CLASSES else 99, kv[0])
        ):
            print(f"{kind:10}  {nodeid}")
    print()
    cols = ["tests"] + (["passed", "failed", "skipped"] if args.run else [])
    print(f"{'fault class':12}" + "".join(f"{c:>9}" for c in cols))
    for kind in CLASSES + sorted(set(per_class) - set(CLASSES)):
        print(f"{kind:12}" + "".join(f"{per_class[kind][c]:>9}" for c in cols))
    total = Counter()
    for c in per_class.values():
        total.update(c)
    print(f"{'total':12}" + "".join(f"{total[c]:>9}" for c in cols))
    return int(rc) if args.run else 0


if __name__ == "__main__":
    sys.exit(main())
