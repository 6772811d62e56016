"""Real instrument drivers (installed as ``physnn.devices``).

Every driver is a :class:`physnn.devices.bench.BenchSystem` (a
:class:`physnn.core.system.PhysicalSystem`): hardware limits are checked before any
byte is sent, and ``close()``, exceptions and Ctrl-C leave the outputs in a
safe state. The base owns the retry loop, reconnect, safe state, clip policy
and events, with one argument vocabulary (``low``/``high`` in volts,
``retries``, ``backoff``, ``max_backoff``, ``on_clip``, ``open``).
"""
