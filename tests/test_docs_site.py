"""The documentation site (guides + API reference from the docstrings) builds in strict mode.

A module that moved, a page that is not in the navigation, a snippet whose file is gone or a reference that
no longer resolves makes ``mkdocs build --strict`` fail, and so this test: the site cannot rot quietly.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict_without_warnings(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    api = (tmp_path / "site" / "api" / "core" / "index.html").read_text()
    assert "PhysicalSystem" in api and "SystemSpec" in api  # the reference is generated from the docstrings
    assert (tmp_path / "site" / "api" / "simulators" / "index.html").read_text().count("OpticalCavity") >= 1
    assert "Adding a physical system" in (tmp_path / "site" / "contributing" / "index.html").read_text()
