"""``python -m edgekit.remote ...``: the remote entry point run from an installed edgekit (the host does this)."""

import sys

from .runner import main

sys.exit(main())
