"""Analysis of finished runs and of systems before training.

* :mod:`~physnn.analysis.report` -- figures and text summaries of run files (``physnn report/compare/ls``);
* :mod:`~physnn.analysis.characterize` -- nonlinearity, effective rank and noise floor of a system.
"""
