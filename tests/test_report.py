"""Reports from run files: every plot from a tiny synthetic run, skipped plots, compare and ls tables."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from physnn import runlog
from physnn.analysis import report
from physnn.runlog import RunWriter

SYSTEMS = {
    f"block{i}": {
        "class": "sim.Optics",
        "spec": {
            "n_inputs": 6,
            "n_outputs": 4,
            "low": 0.0,
            "high": 2.0,
            "units": "pi rad",
            "output_units": "fraction of ADC full scale",
        },
    }
    for i in range(2)
}
ALL_PLOTS = [
    "learning_curves.png",
    "loss.png",
    "goodness.png",
    "goodness_means.png",
    "confusion.png",
    "cost.png",
    "drift.png",
    "accuracy_vs_queries.png",
]


def _full_run(path: Path, epochs: int = 5) -> Path:
    rng = np.random.default_rng(0)
    with RunWriter(
        path, config={"lr": 0.01, "epochs": epochs}, seed=3, systems=SYSTEMS, dataset={"name": "tiny", "n_classes": 3}
    ) as w:
        for b in SYSTEMS:
            w.set_probes(b, rng.random((4, 6)))
        for e in range(epochs):
            m = {
                "loss": 0.6 / (e + 1),
                "train_accuracy": 0.5 + 0.08 * e,
                "train_queries": 200,
                "device_seconds": 0.25,
                "wall_seconds": 1.0 + e,
                "digital_flops": 1e6,
            }
            for i, b in enumerate(SYSTEMS):
                m[f"loss/{b}"] = (0.5 + 0.2 * i) / (e + 1)
                m[f"g_pos/{b}"], m[f"g_neg/{b}"] = 0.5 + 0.05 * e, 0.5 - 0.05 * e
            if e % 2 == 0:
                m["test_accuracy"], m["eval_queries"] = 0.45 + 0.1 * e, 60
            w.log_epoch(e, m)
            for b in SYSTEMS:
                w.log_probe(b, 10 * e, 0.3 + 0.01 * e + 0.001 * rng.random((4, 4)))
        for b in SYSTEMS:
            w.log_goodness(b, rng.normal(0.8, 0.1, 300), rng.normal(0.3, 0.1, 300))
        w.log_confusion(np.array([[10, 1, 0], [2, 8, 1], [0, 0, 12]]), ["a", "b", "c"])
        w.log_summary({"test_accuracy": 0.875, "train_accuracy": 0.8125, "total_queries": 1360})
        w.event("retry", {"system": "optics", "reason": "timeout"})
    return path


def _check_png(path: Path) -> None:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= 500 and height >= 400, (path.name, width, height)
    assert len(raw) > 15_000, (path.name, len(raw))
    rgb = (imread(path)[..., :3] * 255).astype(np.uint32)
    colors = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert colors.size > 50, (path.name, colors.size)  # text, lines, fills: not a blank canvas


def test_main_report_makes_every_plot_and_a_summary(tmp_path):
    path = _full_run(tmp_path / "tiny.h5")
    files = report.main_report(path, tmp_path / "out")
    assert [f.name for f in files] == ALL_PLOTS + ["summary.md"]
    assert files.skipped == {}
    assert all(f.parent == tmp_path / "out" for f in files)
    for f in files[:-1]:
        _check_png(f)
    md = files[-1].read_text()
    assert md.startswith("# Run report: tiny\n")
    for line in (
        "| status | completed |",
        "| final test accuracy | 87.5 % |",
        "| best test accuracy | 85.0 % (epoch 4) |",
        "| final train accuracy | 81.2 % |",
        "| physical queries | 1,360 samples |",
        "| device time | 1.2 s |",
        "| epochs logged | 5 (checkpoints: 0) |",
        "| block0 | sim.Optics | 6 | 4 | 0.0 .. 2.0 pi rad | continuous |",
        "| retry | 1 |",
    ):
        assert line in md, line
    for name in ALL_PLOTS:
        assert f"]({name})" in md
    assert "Plots not made" not in md
    assert '"lr": 0.01' in md


def test_main_report_skips_plots_without_data_and_says_why(tmp_path):
    path = tmp_path / "sparse.h5"
    with RunWriter(path, config={}, seed=0) as w:
        for e in range(3):
            w.log_epoch(e, {"loss": 1.0 / (e + 1)})
    files = report.main_report(path)  # default folder: next to the run file
    assert [f.name for f in files] == ["loss.png", "summary.md"]
    assert files[0].parent == tmp_path / "sparse_report"
    _check_png(files[0])
    assert set(files.skipped) == set(ALL_PLOTS) - {"loss.png"}
    assert files.skipped["confusion.png"] == "no confusion matrix was logged (RunWriter.log_confusion)"
    assert files.skipped["drift.png"].startswith("fewer than two probe measurements")
    md = files[-1].read_text()
    assert "## Plots not made" in md and "- `goodness.png`: no goodness values were logged" in md
    assert "| final test accuracy | - |" in md


def test_report_of_a_missing_file_and_of_a_run_without_epochs(tmp_path):
    with pytest.raises(runlog.RunFileError, match="does not exist"):
        report.main_report(tmp_path / "missing.h5")
    assert not (tmp_path / "missing_report").exists()
    path = tmp_path / "one.h5"
    with RunWriter(path, config={}, seed=0, systems=SYSTEMS) as w:  # one probe measurement: no drift yet
        w.set_probes("block0", np.zeros((2, 6)))
        w.log_probe("block0", 0, np.zeros((2, 4)))
    files = report.main_report(path, tmp_path / "r")
    assert [f.name for f in files] == ["summary.md"] and len(files.skipped) == len(ALL_PLOTS)


def test_compare_prints_a_table_and_overlays_curves(tmp_path):
    a = _full_run(tmp_path / "x" / "run.h5", epochs=3)
    b = _full_run(tmp_path / "y" / "run.h5", epochs=5)
    table = report.compare([a, b], out=tmp_path / "cmp.png")
    lines = table.splitlines()
    assert lines[0].split() == [
        "run",
        "method:",
        "data/system",
        "status",
        "epochs",
        "train",
        "acc",
        "test",
        "acc",
        "best",
        "test",
        "queries",
        "device",
        "time",
        "wall",
        "time",
    ]
    # the synthetic runs have an empty config: method defaults to mfff, data/system unknown
    assert lines[2].split()[:15] == [
        "x/run",
        "mfff:",
        "?/?",
        "completed",
        "3",
        "81.2",
        "%",
        "87.5",
        "%",
        "65.0",
        "%",
        "@2",
        "1,360",
        "0.8",
        "s",
    ]
    assert float(lines[2].split()[15]) < 60 and lines[2].split()[16] == "s"  # wall time of the whole run: timing
    assert lines[3].split()[:5] == ["y/run", "mfff:", "?/?", "completed", "5"]
    assert lines[-1] == f"plot: {tmp_path / 'cmp.png'}"
    _check_png(tmp_path / "cmp.png")
    assert "plot:" not in report.compare([a])
    report.compare([a], out=tmp_path / "folder")
    _check_png(tmp_path / "folder" / "compare.png")
    with pytest.raises(ValueError, match="at least one run file"):
        report.compare([])


def test_ls_lists_runs_oldest_first_with_bad_files(tmp_path):
    _full_run(tmp_path / "b_first.h5", epochs=2)
    with RunWriter(tmp_path / "a_second.h5", config={"method": "pat"}, seed=0) as w:
        w.log_epoch(0, {"test_accuracy": 0.25, "train_queries": 10})
    live = RunWriter(tmp_path / "c_live.h5", config={}, seed=0)
    (tmp_path / "d_notes.h5").write_text("not a run")
    (tmp_path / "e.txt").write_text("ignored")
    try:
        rows = [line.split() for line in report.ls(tmp_path).splitlines()]
    finally:
        live.close()
    header = ["file", "method", "status", "started", "epochs", "test", "acc", "queries", "time", "elapsed", "size"]
    assert rows[0] == [*header, "note"]
    assert [r[0] for r in rows[2:]] == ["b_first.h5", "a_second.h5", "c_live.h5", "d_notes.h5"]
    assert rows[2][1:3] == ["mfff", "completed"] and rows[2][4:8] == ["2", "87.5", "%", "1,360"]
    assert rows[2][9] == rows[2][11] == "s" and rows[2][13] == "MiB"  # time, elapsed, size
    assert rows[3][1] == "pat" and rows[3][4:8] == ["1", "25.0", "%", "10"]
    assert (
        rows[4][2] == "running" and rows[4][4:7] == ["0", "-", "-"] and rows[4][-4:] == ["no", "epoch", "logged", "yet"]
    )
    assert (
        rows[5][:3] == ["d_notes.h5", "-", "unreadable"]
        and rows[5][7:11] == ["-", "-", "0.0", "MiB"]
        and " ".join(rows[5][11:]) == "is not an HDF5 file (no HDF5 signature)"
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.ls(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.ls(empty) == f"no run files (*.h5, *.hdf5) in {empty}"


def test_checkpoint_count_reaches_the_summary(tmp_path):
    path = tmp_path / "ck.h5"
    with RunWriter(path, config={}, seed=0) as w:
        w.log_epoch(0, {"loss": 1.0})
        w.checkpoint(0, {"w": torch.zeros(2)})
    md = report.main_report(path, tmp_path / "o")[-1].read_text()
    assert "| epochs logged | 1 (checkpoints: 1) |" in md


# ----------------------------------------------------------- figures by eye, pinned
LONG_NAME = "digits-optics-mfff-s0-20261201-160943-55fdaa"


def _capture(monkeypatch) -> dict:
    """Every figure report saves, by file name (the figure object, to inspect its artists)."""
    figures: dict = {}
    save = report._save

    def keep(fig, path):
        figures[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(report, "_save", keep)
    return figures


def _texts_inside(fig) -> list[str]:
    """The titles and axis labels of ``fig`` that stick out of its canvas (cut at the edges of the saved image)."""
    fig.canvas.draw()
    box = fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().get_texts())
    out = []
    for t in texts:
        if not t.get_visible() or not t.get_text().strip():
            continue
        e = t.get_window_extent()
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
            out.append(t.get_text())
    return out


def _labels(fig) -> list[str]:
    return [lab for ax in fig.axes for lab in (ax.get_xlabel(), ax.get_ylabel())]


def test_every_title_fits_and_no_axis_says_arbitrary_units(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    report.main_report(_full_run(tmp_path / f"{LONG_NAME}.h5"), tmp_path / "out")
    assert sorted(figures) == sorted(ALL_PLOTS)
    for name, fig in figures.items():
        assert _texts_inside(fig) == [], name
        assert not any("a.u." in lab for lab in _labels(fig)), (name, _labels(fig))
    # the long run name is on the figure, whole, on its own line
    title = figures["goodness_means.png"].axes[0].get_title()
    assert f"MF-FF, {LONG_NAME}" in title.splitlines()
    drift = figures["drift.png"].axes
    assert "fraction of ADC full scale" in drift[1].get_ylabel()
    assert "dimensionless" in figures["goodness_means.png"].axes[0].get_ylabel()


def test_wrap_breaks_long_titles_only():
    assert report._wrap("short", 7.0) == "short"
    wrapped = report._wrap("Mean goodness of positive (solid) and negative (dotted) data — MF-FF", 4.0)
    assert len(wrapped.splitlines()) >= 2 and max(map(len, wrapped.splitlines())) <= 4.0 * 72 / 7.2


def test_accuracy_against_queries(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    report.main_report(_full_run(tmp_path / "q.h5"), tmp_path / "out")
    ax = figures["accuracy_vs_queries.png"].axes[0]
    curve = ax.lines[0]
    # test_accuracy logged at epochs 0, 2, 4; 200 training queries per epoch, cumulative
    np.testing.assert_allclose(curve.get_xdata(), [200, 600, 1000])
    np.testing.assert_allclose(curve.get_ydata(), [45, 65, 85])
    assert "queries" in ax.get_xlabel() and "samples" in ax.get_xlabel() and ax.get_ylabel() == "accuracy (%)"
    final = [c for c in ax.containers if hasattr(c, "lines")][0]
    np.testing.assert_allclose(final.lines[0].get_xydata(), [[1000, 87.5]])


def test_accuracy_against_queries_prefers_learning_queries_and_the_ci(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    path = tmp_path / "v.h5"
    with RunWriter(path, config={}, seed=0) as w:
        for e in range(3):
            w.log_epoch(
                e,
                {
                    "val_accuracy": 0.5 + 0.1 * e,
                    "test_accuracy": 0.1,
                    "train_queries": 7,
                    "queries/learning": 100.0 * (e + 1),
                },
            )
        w.log_summary({"test_accuracy": 0.8, "test_ci95_low": 0.7, "test_ci95_high": 0.85, "train_queries": 300})
    report.main_report(path, tmp_path / "o")
    ax = figures["accuracy_vs_queries.png"].axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[100, 50], [200, 60], [300, 70]])
    bar = [c for c in ax.containers if hasattr(c, "lines")][0]
    segs = bar.lines[2][0].get_segments()[0]
    np.testing.assert_allclose(segs, [[300, 70], [300, 85]])


def _probe_run(path: Path, y: np.ndarray, steps: list[int]) -> Path:
    with RunWriter(path, config={}, seed=0, systems=SYSTEMS) as w:
        w.set_probes("block0", np.zeros((y.shape[1], 6)))
        for s, yi in zip(steps, y):
            w.log_probe("block0", s, yi)
    return path


def test_drift_is_relative_to_the_mean_of_the_pre_training_repeats(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    base = np.full((3, 4), 2.0)
    y = np.stack([base + 0.02, base - 0.02, base + 0.02, base + 0.2])  # two repeats at 0, then epochs 1, 2
    report.main_report(_probe_run(tmp_path / "d.h5", y, [0, 0, 1, 2]), tmp_path / "o")
    ax = figures["drift.png"].axes[0]
    # reference 2.0 (mean of the repeats): 1 % at each repeat and at epoch 1, 10 % at epoch 2 (not 0 then a jump)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1, 1, 1, 10], rtol=1e-6)
    floor = [ln for ln in ax.lines if ln.get_linestyle() == ":"][0]
    np.testing.assert_allclose(floor.get_ydata(), [np.sqrt(3) / 2 * 2.0] * 2, rtol=1e-6)  # RMS(y1-y0)=0.04=2 %
    assert ax.get_ylim()[0] == 0


def test_drift_of_a_noiseless_system_is_exactly_zero(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    rng = np.random.default_rng(1)
    base = rng.random((3, 4))
    y = np.stack([base, base, base * (1 + 1e-16), base])  # rounding only
    report.main_report(_probe_run(tmp_path / "n.h5", y, [0, 0, 1, 2]), tmp_path / "o")
    ax1, ax2 = figures["drift.png"].axes
    assert list(ax1.lines[0].get_ydata()) == [0.0, 0.0, 0.0, 0.0]
    assert ax1.get_ylim() == (0.0, 0.1)  # a % axis, not one magnifying 1e-17
    assert "noiseless" in " ".join(t.get_text() for t in ax1.get_legend().get_texts())
    lo, hi = ax2.get_ylim()
    assert hi - lo > 1e-3 * abs(base.mean())  # constant means get a readable window


def test_compare_labels_curves_by_method_and_what_differs(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    paths = []
    for name, cfg, seed in (
        ("a", {"method": "mfff", "system_options": {}}, 0),
        ("b", {"method": "mfff", "system_options": {"noise": False}}, 0),
        ("c", {"method": "pat"}, 0),
        ("d", {"method": "pat"}, 4),
    ):
        path = tmp_path / f"{name}-20261201-160943.h5"
        with RunWriter(path, config=cfg, seed=seed) as w:
            for e in range(2):
                w.log_epoch(e, {"val_accuracy": 0.5, "train_accuracy": 0.6})
        paths.append(path)
    report.compare(paths, out=tmp_path / "cmp.png")
    legend = [t.get_text() for t in figures["cmp.png"].axes[0].get_legend().get_texts()]
    assert legend[::2] == [
        "MF-FF, noise=(default) (validation)",
        "MF-FF, noise=False (validation)",
        "physics-aware training, seed=0 (validation)",
        "physics-aware training, seed=4 (validation)",
    ]
    assert "20261201" not in " ".join(legend) and legend[1] == "MF-FF, noise=(default) (training batches)"
    assert _texts_inside(figures["cmp.png"]) == []
    # identical settings: the run name is the last resort
    assert report._curve_labels([report.load(paths[2])] * 2, ["x", "y"]) == [
        "physics-aware training (x)",
        "physics-aware training (y)",
    ]


def test_formats_for_report_and_compare(tmp_path):
    path = _full_run(tmp_path / "f.h5", epochs=2)
    files = report.main_report(path, tmp_path / "pdf", fmt="pdf")
    assert [f.suffix for f in files[:-1]] == [".pdf"] * len(ALL_PLOTS)
    assert all(f.read_bytes()[:5] == b"%PDF-" for f in files[:-1])
    assert "](accuracy_vs_queries.pdf)" in files[-1].read_text()
    svg = report.main_report(path, tmp_path / "svg", fmt="svg")
    assert b"<svg" in svg[0].read_bytes()[:2000]
    with pytest.raises(ValueError, match="format"):
        report.main_report(path, tmp_path / "x", fmt="jpg")
    assert report.compare([path], out=tmp_path / "c", fmt="svg").endswith(str(tmp_path / "c" / "compare.svg"))
    assert report.compare([path], out=tmp_path / "one.pdf").endswith("one.pdf")
    assert (tmp_path / "one.pdf").read_bytes()[:5] == b"%PDF-"
    png = report.main_report(path, tmp_path / "png")[0]
    assert struct.unpack(">II", png.read_bytes()[16:24]) == (1050, 660)  # 7 x 4.4 in at 150 dpi


def test_cli_passes_the_format_through(tmp_path, capsys):
    from physnn.cli import build_parser

    path = _full_run(tmp_path / "c.h5", epochs=2)
    args = build_parser().parse_args(["report", str(path), "--out", str(tmp_path / "r"), "--format", "svg"])
    assert args.func(args) == 0
    assert (tmp_path / "r" / "loss.svg").exists()
    args = build_parser().parse_args(["compare", str(path), "--out", str(tmp_path / "k"), "--format", "pdf"])
    assert args.func(args) == 0 and (tmp_path / "k" / "compare.pdf").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", str(path), "--format", "gif"])


def test_learning_curves_span_every_epoch_trained_when_few_are_validated(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    path = tmp_path / "e.h5"
    with RunWriter(path, config={}, seed=0) as w:
        for e in range(1, 7):
            w.log_epoch(e, {"loss": 1.0 / e, "val_accuracy": 0.9 if e >= 5 else float("nan")})
    report.main_report(path, tmp_path / "o")
    lo, hi = figures["learning_curves.png"].axes[0].get_xlim()
    assert lo < 1 and 6 < hi < 7


# ------------------------------------------------- validation with its n (issue 19)
def _val_run(path: Path, columns: str) -> Path:
    """Three validated epochs on 143 samples; ``columns``: 'n+ci' (the trainer's), 'eval_samples' (older), 'none'."""
    from physnn.core.evaluation import Accuracy

    with RunWriter(path, config={}, seed=0) as w:
        for e, correct in enumerate((120, 131, 138)):
            m = {"val_accuracy": correct / 143, "train_accuracy": 0.9}
            if columns == "n+ci":
                lo, hi = Accuracy(correct, 143).interval
                m.update(val_n=143.0, val_ci_low=lo, val_ci_high=hi)
            elif columns == "eval_samples":
                m["eval_samples"] = 143.0
            w.log_epoch(e, m)
    return path


@pytest.mark.parametrize("columns", ["n+ci", "eval_samples"])
def test_learning_curves_draw_validation_with_its_95_interval(tmp_path, monkeypatch, columns):
    from physnn.core.evaluation import wilson_interval

    figures = _capture(monkeypatch)
    files = report.main_report(_val_run(tmp_path / "v.h5", columns), tmp_path / "o")
    ax = figures["learning_curves.png"].axes[0]
    bars = [c for c in ax.containers if hasattr(c, "lines") and c.lines[2]]
    assert len(bars) == 1  # the validation curve, not the training batches
    segments = bars[0].lines[2][0].get_segments()
    for e, (correct, seg) in enumerate(zip((120, 131, 138), segments)):
        lo, hi = wilson_interval(correct, 143)
        np.testing.assert_allclose(seg, [[e, 100 * lo], [e, 100 * hi]], rtol=1e-9)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "validation split (n=143, 95 % CI)" in legend
    md = files[-1].read_text()
    lo, hi = wilson_interval(138, 143)
    assert f"| last validation accuracy | 96.5 % (138/143, 95 % CI {100 * lo:.1f}-{100 * hi:.1f} %) (epoch 2) |" in md
    assert "| best validation accuracy | 96.5 % (138/143, " in md


def test_validation_without_its_n_is_drawn_and_printed_plainly(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    files = report.main_report(_val_run(tmp_path / "v.h5", "none"), tmp_path / "o")
    ax = figures["learning_curves.png"].axes[0]
    assert not [c for c in ax.containers if hasattr(c, "lines") and c.lines[2]]
    assert "validation split" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "| last validation accuracy | 96.5 % (epoch 2) |" in files[-1].read_text()


def test_accuracy_against_queries_bands_validation_with_its_interval(tmp_path, monkeypatch):
    from physnn.core.evaluation import Accuracy

    figures = _capture(monkeypatch)
    path = tmp_path / "q.h5"
    with RunWriter(path, config={}, seed=0) as w:
        for e, correct in enumerate((100, 130)):
            lo, hi = Accuracy(correct, 143).interval
            w.log_epoch(
                e,
                {
                    "val_accuracy": correct / 143,
                    "val_n": 143.0,
                    "val_ci_low": lo,
                    "val_ci_high": hi,
                    "train_queries": 50,
                },
            )
    report.main_report(path, tmp_path / "o")
    ax = figures["accuracy_vs_queries.png"].axes[0]
    assert "n=143, band: 95 % CI" in ax.lines[0].get_label()
    (band,) = ax.collections
    lo, hi = Accuracy(130, 143).interval
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(100 * Accuracy(100, 143).interval[0]) and ys.max() == pytest.approx(100 * hi)
