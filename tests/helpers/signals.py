"""Child processes that receive signals the way an interactive user's would.

A test suite started in the background (``cmd &`` in a non-interactive shell,
``nohup``, some CI runners) passes SIGINT/SIGHUP on to its children *ignored*,
and Python then never installs its Ctrl-C handler. The tests that send a
signal to a child ``physnn`` process reset these to their defaults in the
child before it starts, so they test physnn, not the shell that launched pytest.
"""

from __future__ import annotations

import signal


def default_signals() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: SIGINT, SIGTERM and SIGHUP back to their default actions."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
