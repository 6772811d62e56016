"""Real instrument drivers (installed as ``physnn.devices``).

Every driver is a :class:`physnn.system.PhysicalSystem`: hardware limits are
checked before any byte is sent, and ``close()``, exceptions and Ctrl-C leave
the outputs in a safe state.
"""
