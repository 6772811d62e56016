"""Physics simulators that stand in for hardware (installed as ``physnn.simulators``).

Each module documents its equations, units and noise model in its docstring;
each system is a :class:`physnn.core.system.PhysicalSystem` registered under the
``physnn.systems`` entry-point group so the CLI and configs can name it.
"""
