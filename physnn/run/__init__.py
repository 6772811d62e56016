"""Running an experiment: above training, below analysis and the CLI.

* :mod:`~physnn.run.config` -- :class:`RunConfig` (one flat TOML file, every key checked);
* :mod:`~physnn.run.recipes` -- per-system defaults the CLI fills in;
* :mod:`~physnn.run.experiment` -- the runner (:func:`run_experiment`): data, systems, model, run file, train,
  finish;
* :mod:`~physnn.run.continual` -- training on while the device drifts;
* :mod:`~physnn.run.sinks` -- TensorBoard/MLflow metric sinks.
"""
