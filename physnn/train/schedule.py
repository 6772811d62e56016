"""Pipelined (wavefront) training schedule: keep every device busy while the trainer computes.

Why: on a bench each query costs milliseconds to seconds of instrument time,
and in the serial schedule a device waits while the digital layers of *every*
block update. In a layer-local method (MF-FF) block ``i`` only needs, for
batch ``b``, the output of block ``i - 1`` on that batch; it does not care what
block ``i - 1`` does to batch ``b + 1``. So at step ``t`` block ``i`` can work on
batch ``t - i`` (the wavefront), and each device measures its next batch while
the trainer updates the digital layers of the batches already measured.

How it keeps the serial schedule's result:

* every device has **one single-worker executor** (:class:`DeviceExecutors`),
  so a device still receives its batches in the serial order, one call at a
  time (a noisy simulator draws the same noise, an instrument sees the same
  sequence); blocks that share one system share its executor (the
  *shared-device* mode: still correct, just no overlap between those blocks);
* only the *measurements* run on the device threads; every update of a
  digital layer runs on the calling thread, in wavefront order, and each
  block's updates happen in batch order -- the same operations on the same
  inputs as in the serial schedule, so the weights are **bit-identical**
  (``tests/test_schedule.py`` checks it for MF-FF);
* nothing random is drawn inside the schedule: the trainer draws its
  shuffling and negative labels for the whole epoch before it starts.

Which methods and schedules give which weights (issue 22 item 2):

* MF-FF, ``"pipelined"`` against ``"serial"``: **bit-identical** weights, with
  or without block-0 grouping on both sides (``tests/test_schedule.py``);
  the next batch's queries are in flight while the current batch's digital
  layers update, with no staleness at all, because block ``i`` never needs
  block ``i + 1``'s weights.
* MF-FF, block-0 grouping on against off: bit-identical on a system whose
  rows do not interact and that draws no noise; a noisy simulator draws its
  noise per call, so grouping changes the draws (the same distribution, not
  the same numbers).
* ``local_ce`` is layer-local too and could use this schedule; it runs
  serially today. PAT (backprop through a twin of every block), zeroth-order
  (every query needs the weights just updated) and in-silico backprop have
  no overlap without changing the weights, so they are serial only. No
  method offers a one-step-stale pipeline: none is implemented, so none
  changes weights for speed.

Shutdown: whatever ends the epoch -- an exception in a measurement or an
update, Ctrl-C -- the pending measurements are cancelled and the call waits
for the one in flight on each device to return, so no thread is left querying
a device when the runner puts it in its safe state.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable, Sequence

from physnn.core import checks

__all__ = ["DeviceExecutors", "run_wavefront", "SCHEDULES"]

log = logging.getLogger(__name__)

#: The training schedules a method may offer (``schedule`` config key).
SCHEDULES = ("serial", "pipelined")


class DeviceExecutors:
    """One single-worker executor per distinct device key, shut down safely on exit (a context manager).

    Args:
        devices: one key per stage (block); equal keys (the same system object) share one worker.
    """

    def __init__(self, devices: Sequence[Hashable]):
        self.keys = list(devices)
        self._pools: dict[Hashable, ThreadPoolExecutor] = {}
        for i, k in enumerate(dict.fromkeys(self.keys)):
            self._pools[k] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"physnn-device{i}")

    @property
    def shared(self) -> bool:
        """True when some stages share a device (their measurements are serialised on one worker)."""
        return len(self._pools) < len(self.keys)

    def submit(self, stage: int, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on the worker of ``stage``'s device (after everything queued there before)."""
        return self._pools[self.keys[stage]].submit(fn, *args)

    def shutdown(self) -> None:
        """Cancel what has not started; wait for the call in flight on each device to return."""
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "DeviceExecutors":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def run_wavefront(
    n_items: int,
    n_stages: int,
    executors: DeviceExecutors,
    first: Sequence[Any],
    measure: Callable[[int, int, Any], Any],
    update: Callable[[int, int, Any], Any],
    on_item_done: Callable[[int], None] | None = None,
) -> None:
    """Drive ``n_items`` batches through ``n_stages`` blocks in wavefront order.

    Args:
        n_items: batches in the epoch.
        n_stages: blocks.
        executors: the devices' workers (one key per stage).
        first: per batch, a future (anything with ``result()``) of stage 0's measurement (submitted by the
            caller, e.g. grouped calls: stage 0 does not depend on any weight).
        measure: ``measure(stage, item, input)`` -> measurement; runs on the
            stage's device worker, for stages >= 1.
        update: ``update(stage, item, measurement)`` -> the next stage's input;
            runs on the calling thread, in wavefront order (each stage in item order).
        on_item_done: called with the item after its last stage (a progress bar).

    At step ``t`` stage ``i`` updates item ``t - i`` and submits the
    measurement of item ``t - i`` at stage ``i + 1``; the device of stage
    ``i + 1`` thus measures while the calling thread updates other stages.
    """
    n_items = checks.integer("n_items", n_items, low=0)
    n_stages = checks.integer("n_stages", n_stages, low=1)
    if len(first) != n_items:
        raise ValueError(f"first must hold one future per item ({n_items}), got {len(first)}")
    if len(executors.keys) != n_stages:
        raise ValueError(f"executors has {len(executors.keys)} stage(s), the schedule {n_stages}")
    pending: list[dict[int, Future]] = [dict(enumerate(first))] + [{} for _ in range(n_stages - 1)]
    for t in range(n_items + n_stages - 1):
        for i in range(n_stages):
            b = t - i
            if not 0 <= b < n_items:
                continue
            measured = pending[i].pop(b).result()  # re-raises a measurement's error here
            out = update(i, b, measured)
            if i + 1 < n_stages:
                pending[i + 1][b] = executors.submit(i + 1, measure, i + 1, b, out)
            elif on_item_done is not None:
                on_item_done(b)
