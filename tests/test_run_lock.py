"""One writer per run file (issue 23 item 2): an OS lock, the holder named, nothing stale after kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from physnn import runlog
from physnn.runlog import lock

pytestmark = pytest.mark.fault("resume")

HOLD = """
import sys, time
from physnn.runlog import lock
lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A child process holding the write lock of ``tmp_path / "r.h5"`` (killed with -9 at the end)."""
    path = tmp_path / "r.h5"
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    yield path, child
    if child.poll() is None:
        child.kill()
        child.wait()


def test_a_second_process_gets_one_line_naming_the_holder(holder):
    path, child = holder
    with pytest.raises(lock.RunFileLocked) as info:
        lock.acquire(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"is open for writing by process {child.pid} on host {socket.gethostname()!r} since 20" in message
    assert lock.holder(path)["pid"] == child.pid


def test_kill_9_leaves_no_stale_lock(holder):
    path, child = holder
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert lock.lock_path(path).exists()  # the sidecar stays behind, but the lock went with the process
    with lock.hold(path):
        assert lock.holder(path)["pid"] == os.getpid()
    assert not lock.lock_path(path).exists()


def test_the_lock_is_reentrant_in_one_process_and_its_sidecar_goes_with_the_last_release(tmp_path):
    path = tmp_path / "r.h5"
    with lock.hold(path):
        with lock.hold(path):
            pass
        assert lock.lock_path(path).exists()
        code = f"from physnn.runlog import lock; lock.acquire({str(path)!r})"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0 and "RunFileLocked" in other.stderr and str(os.getpid()) in other.stderr
    assert not lock.lock_path(path).exists()


def test_writers_resumes_and_recovery_respect_the_lock(holder):
    path, child = holder
    with pytest.raises(lock.RunFileLocked, match=f"process {child.pid}"):
        runlog.RunWriter(path, config={"epochs": 1}, seed=0)
    assert not path.exists()  # refused before anything was written
    child.kill()
    child.wait()
    with runlog.RunWriter(path, config={"epochs": 1}, seed=0) as w:
        w.log_epoch(1, {"loss": 0.5})
    script = path.parent / "hold.py"
    again = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert again.stdout.readline().strip() == "held"
        with pytest.raises(lock.RunFileLocked, match=f"process {again.pid}"):
            runlog.RunWriter.resume(path)
        with pytest.raises(lock.RunFileLocked, match=f"process {again.pid}"):
            runlog.recover(path)
    finally:
        again.kill()
        again.wait()
    with runlog.RunWriter.resume(path) as w:
        w.log_epoch(2, {"loss": 0.4})
    assert runlog.load(path).status == "completed" and not lock.lock_path(path).exists()


def test_train_resume_of_a_locked_file_is_one_line_before_any_system_is_built(holder, capsys, monkeypatch):
    from physnn.cli import main
    from physnn.run import experiment

    path, child = holder
    with runlog.RunWriter(path.with_name("done.h5"), config=experiment.RunConfig(epochs=1).to_dict(), seed=0):
        pass
    os.replace(path.with_name("done.h5"), path)  # a run file at the locked path

    def no_systems(*args, **kwargs):
        raise AssertionError("systems were built for a run file another process is writing")

    monkeypatch.setattr(experiment, "build_systems", no_systems)
    assert main(["train", "--resume", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"physnn train: error: run file {str(path)!r} is open for writing by process {child.pid}")
    assert "\n" not in err


@pytest.mark.slow
def test_two_resumes_at_once_never_both_write(tmp_path):
    """The campaign's race: two `physnn train --resume R --epochs 2` started together; one writes, one is refused
    (or, started after the first ended, finds nothing to do)."""
    path = tmp_path / "r.h5"
    args = ["--hidden", "8", "--blocks", "1", "--batch-size", "256", "--no-progress", "--system-option", "n_outputs=64"]
    first = subprocess.run(
        [sys.executable, "-m", "physnn.cli", "train", "--epochs", "1", *args, "--output", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "physnn.cli", "train", "--resume", str(path), "--epochs", "2", "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in both]
    run = runlog.load(path)
    assert sum(e["kind"] == "resumed" for e in run.events) == 1, results  # one writer, one segment
    assert run.status == "completed" and list(run.metrics["epoch"]) == [1, 2]
    for rc, out, err in results:
        assert rc == 0 or (rc == 2 and "is open for writing by process" in err), (rc, out, err)
    assert sorted(rc for rc, _, _ in results)[0] == 0


def test_a_file_system_without_locks_is_refused(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(runlog.RunFileError, match="cannot be locked for writing on this file system"):
        lock.acquire(tmp_path / "r.h5")
