"""Analysis of finished runs and of systems before training.

* :mod:`~physnn.analysis.report` -- ``physnn report`` and ``compare``: which figures a report holds, where files go;
* :mod:`~physnn.analysis.training_figures`, :mod:`~physnn.analysis.cost_figures`,
  :mod:`~physnn.analysis.drift_figures`, :mod:`~physnn.analysis.comparison` -- the figures (each returns a
  matplotlib ``Figure`` or the reason it has no data), on the canvas of :mod:`~physnn.analysis.plotting`;
* :mod:`~physnn.analysis.summary`, :mod:`~physnn.analysis.listing`, :mod:`~physnn.analysis.text` -- ``summary.md``,
  ``physnn ls`` and their table formatting;
* :mod:`~physnn.analysis.characterize` -- nonlinearity, effective rank and noise floor of a system.
"""
