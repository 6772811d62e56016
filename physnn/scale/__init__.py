"""Scale-out with Ray (an optional extra, imported only inside these modules' functions).

* :mod:`~physnn.scale.cluster` -- joining Ray on loopback or a cluster, and the errors of the remote machinery;
* :mod:`~physnn.scale.bench_host` -- the actor on the bench node that hosts systems (and this process's hosts);
* :mod:`~physnn.scale.remote` -- a bench on another PC as a :class:`PhysicalSystem` (``system = "remote"``);
* :mod:`~physnn.scale.serving` -- ``physnn serve``'s side: offer a bench on this PC to a cluster;
* :mod:`~physnn.scale.sweep` -- a grid of configs x seeds (x benches) on a cluster.
"""
