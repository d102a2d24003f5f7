"""`python -m data.check [overrides]`; see `data/check/cli.py`."""

from .cli import main

raise SystemExit(main())
