#!/usr/bin/env bash
# The packaging check (issue 21): physnn as a user gets it. Builds the wheel, installs it into a fresh venv
# (the CPU build of torch first, as the Makefile does; pip's cache is reused), and runs, from a folder outside
# the checkout with no ../shared beside it, no PHYSNN_DATA/PHYSNN_SHARED_DATA and an empty physnn cache:
#   physnn systems
#   physnn train                                            (digits through optics, 1 epoch)
#   physnn train --dataset vowels --system acoustic-twin    (the measured data shipped in the wheel)
#   physnn train --dataset csv --data-path wine.csv --label-column cultivar   (a user's own CSV)
# and checks that each training run wrote a completed run file. Short epochs: this checks the package, not the
# accuracy. Usage: .ci/wheel_check.sh  (PYTHON=python3.12 to choose the interpreter; KEEP=1 keeps the folder;
# TORCH_INDEX=URL installs torch from that index). About 2.5 CPU-minutes plus the installs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/physnn-wheel-check.XXXXXX")"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

step "build the wheel"
# from a copy of the files git knows (tracked, or new and not ignored): what a clean clone builds, without the
# checkout's build/ folder (setuptools would pack stale modules from it) or anything else it ignores
"$PYTHON" - "$ROOT" "$WORK/src" <<'EOF'
import pathlib, shutil, subprocess, sys
root, dst = map(pathlib.Path, sys.argv[1:])
listed = subprocess.run(
    ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    capture_output=True, check=True,
).stdout.decode()
for rel in filter(None, listed.split("\0")):
    if (root / rel).is_file():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst / rel)
EOF
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/physnn-*.whl)"
"$PYTHON" - "$WHEEL" <<'EOF'
import sys, zipfile
names = {i.filename: i for i in zipfile.ZipFile(sys.argv[1]).infolist()}
shipped = [n for n in names if n.startswith("physnn/data/measured/")]
want = {"vowels.csv", "acoustic_x.csv.gz", "acoustic_y.csv.gz", "LICENSE-PhyLL.txt", "README.md"}
missing = want - {n.rsplit("/", 1)[1] for n in shipped}
assert not missing, f"the wheel lacks the measured data: {sorted(missing)}"
size = sum(names[n].file_size for n in shipped)
total = sum(i.compress_size for i in names.values())
print(f"wheel {sys.argv[1].rsplit('/', 1)[1]}: {total / 1e6:.2f} MB compressed; measured data {size / 1e6:.2f} MB installed")
assert size < 1.5e6, "the measured data grew past 1.5 MB"
EOF

step "a fresh venv: $TORCH, then the wheel"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
# TORCH_INDEX=https://download.pytorch.org/whl/cpu where the default index would give the multi-GB CUDA build
"$BIN/python" -m pip install --quiet ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH"
"$BIN/python" -m pip install --quiet "$WHEEL"

step "run from a folder outside the checkout"
HERE="$WORK/elsewhere/lab"  # its parent has no shared/ folder
mkdir -p "$HERE"
cd "$HERE"
unset PHYSNN_DATA PHYSNN_SHARED_DATA PYTHONPATH
export PHYSNN_CACHE="$WORK/cache"  # empty: the acoustic twin is fitted from the data in the wheel
"$BIN/python" - <<'EOF'
import physnn, sys
where = physnn.__file__
assert where.startswith(sys.prefix), f"physnn imported from {where}, not from the fresh venv"
print(f"physnn {physnn.__version__} from {where}")
EOF
"$BIN/physnn" systems
step "physnn train (digits through optics)"
"$BIN/physnn" train --epochs 1 --output runs --no-progress
step "physnn train --dataset vowels --system acoustic-twin"
"$BIN/physnn" train --dataset vowels --system acoustic-twin --epochs 5 --output runs --no-progress
step "physnn train --dataset csv --data-path wine.csv --label-column cultivar"
"$BIN/python" - <<'EOF'
import csv
from sklearn.datasets import load_wine
w = load_wine()  # 178 wines, 13 measurements, 3 cultivars; pandas is not installed, so the csv module writes it
with open("wine.csv", "w", newline="") as fh:
    out = csv.writer(fh)
    out.writerow([*w.feature_names, "cultivar"])
    out.writerows([*row, w.target_names[t]] for row, t in zip(w.data.tolist(), w.target))
EOF
"$BIN/physnn" train --dataset csv --data-path wine.csv --label-column cultivar --epochs 3 --output runs --no-progress

step "three completed run files"
"$BIN/physnn" ls runs
"$BIN/python" - <<'EOF'
from pathlib import Path
from physnn import runlog
runs = sorted(Path("runs").glob("*.h5"))
status = {p.name: runlog.load(p).status for p in runs}
assert len(runs) == 3 and set(status.values()) == {"completed"}, status
datasets = sorted(runlog.load(p).config["dataset"] for p in runs)
assert datasets == ["csv", "digits", "vowels"], datasets
print("wheel check passed:", ", ".join(f"{k}: {v}" for k, v in status.items()))
EOF
step "done"
