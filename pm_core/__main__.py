"""``python -m pm_core``: the ``pm-core`` command, which lives in the lab.

This is the module runner's entry point, a script that ``import pm_core`` never loads;
it is the one place the library's folder refers to the lab (``tests/project/test_architecture.py``
allows exactly this file).
"""

import sys

from pm_core.lab.cli import main

sys.exit(main())
