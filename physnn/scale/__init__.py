"""Scale-out with Ray (an optional extra, imported only inside these modules' functions).

* :mod:`~physnn.scale.remote` -- a bench on another PC as a :class:`PhysicalSystem` (``system = "remote"``),
  and ``physnn serve``'s side;
* :mod:`~physnn.scale.sweep` -- a grid of configs x seeds (x benches) on a cluster.
"""
