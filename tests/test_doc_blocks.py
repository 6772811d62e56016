"""Every code block in README.md, CONTRIBUTING.md and docs/ is executed (or, for shell commands, parsed):

* ``python`` blocks run in a fresh interpreter in an empty folder (a block that imports an optional extra
  this environment lacks, such as QCoDeS, is skipped and says so); the README's training example and
  ``docs/run-format.md``'s recipes have their own tests (``tests/test_readme.py``,
  ``tests/test_runfile_docs.py``: the recipes need real run files);
* ``toml`` blocks that are run configurations (the others are pyproject snippets: parsed) go through the runner's pre-flight check
  (:func:`physnn.run.preflight.check_config`: every key, value and combination; no system is opened);
* every ``physnn ...`` command in a ``bash`` block is parsed by the real command-line parser, so a flag that
  was renamed or removed fails here.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
#: blocks with their own tests (see the module docstring)
OWN_TESTS = {("README.md", "python"), ("run-format.md", "python")}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(lang: str) -> list:
    found = []
    for path in FILES:
        if (path.name, lang) in OWN_TESTS:
            continue
        for i, m in enumerate(b for b in FENCE.finditer(path.read_text()) if b.group(1) == lang):
            found.append(pytest.param(m.group(2), id=f"{path.name}-{lang}-{i}"))
    return found


@pytest.mark.parametrize("code", _blocks("python"))
def test_python_block_runs(code, tmp_path):
    for module in re.findall(r"^\s*(?:from|import) (\w+)", code, re.M):
        if module not in ("physnn", "torch", "numpy") and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs the optional {module!r}, not installed here")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("text", _blocks("toml"))
def test_toml_block_is_a_valid_run_config(text):
    from physnn.run.config import RunConfig, tomllib
    from physnn.run.preflight import check_config
    from physnn.run.recipes import with_recipe

    data = tomllib.loads(text)
    if "project" in data:  # a pyproject.toml snippet (an entry point): valid TOML of the right table
        assert set(data["project"]) <= {"entry-points", "optional-dependencies", "dependencies"}
        return
    config = RunConfig.from_dict(with_recipe(data), source="documentation")
    check_config(config)


def _physnn_commands(text: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines
    commands = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        words = shlex.split(line) if line else []
        while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
            words = words[1:]
        if words and words[0] == "physnn":
            commands.append(words[1:])
    return commands


@pytest.mark.parametrize("text", _blocks("bash"))
def test_physnn_commands_in_shell_blocks_parse(text):
    from physnn.cli.main import build_parser

    parser = build_parser()
    for argv in _physnn_commands(text):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"`physnn {' '.join(argv)}` does not parse (exit {exc.code})")


def test_the_collector_sees_the_blocks():
    assert len(_blocks("python")) >= 4 and len(_blocks("toml")) >= 2 and len(_blocks("bash")) >= 5
    assert _physnn_commands("X=1 physnn train \\\n  --epochs 2  # note\nmake test") == [["train", "--epochs", "2"]]
