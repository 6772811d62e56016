"""The ``physnn`` command line: the top layer, and the only code that prints.

One module per command group: :mod:`~physnn.cli.main` (train, systems, report, compare, ls, and the parser),
:mod:`~physnn.cli.characterize`, :mod:`~physnn.cli.serve`, :mod:`~physnn.cli.sweep`. Each imports the
feature it runs only when that command runs, so ``physnn --help`` stays fast.
"""

from physnn.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
