"""The black-box API and the network: the bottom layer, imported by everything above it.

* :mod:`~physnn.core.system` -- :class:`PhysicalSystem` (query-only contract), :class:`SystemSpec`, query stats;
* :mod:`~physnn.core.checks` -- the one set of argument validators (one-line errors naming value and limit);
* :mod:`~physnn.core.registry` -- systems by name (the ``physnn.systems`` entry-point group);
* :mod:`~physnn.core.safety` -- safe state on signals, tracked systems, safe output paths;
* :mod:`~physnn.core.encoding`, :mod:`~physnn.core.goodness` -- drives from activations, FF goodness and loss;
* :mod:`~physnn.core.model` (PNN, Block), :mod:`~physnn.core.local_model` (the ``local_ce`` network),
  :mod:`~physnn.core.e2e_model` (the end-to-end baselines' network), :mod:`~physnn.core.layer`
  (:class:`PhysicalLayer`), :mod:`~physnn.core.digital` (the digital controls), :mod:`~physnn.core.readout`;
* :mod:`~physnn.core.evaluation` -- an accuracy with its n and 95 % interval.

Nothing here imports training, running, analysis, scale-out or the CLI.
"""
