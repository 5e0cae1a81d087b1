"""``python -m hashexchange_client``: the same command line as ``hashexchange``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
