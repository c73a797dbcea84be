"""``python -m pm_core.lab``: the ``pm-core`` command."""

import sys

from .cli import main

sys.exit(main())
