"""``python -m physnn.cli ...``: the same as ``physnn ...``."""

from physnn.cli.main import main

raise SystemExit(main())
