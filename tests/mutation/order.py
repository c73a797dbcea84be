"""pytest plugin for mutation runs: a mutant's tests run fastest first.

mutmut runs each mutant's covering tests with ``-x``, so a killed mutant costs the time
up to its first failing test; running the quick tests first makes that short. The
durations are the ones mutmut measured in its first, unmutated run
(``mutants/mutmut-stats.json``). Outside a mutant run (no ``MUTANT_UNDER_TEST``, or
mutmut's own ``stats``/``fail`` runs) the order is left alone.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

#: mutmut's values of MUTANT_UNDER_TEST that are not a mutant.
NOT_A_MUTANT = ("", "stats", "fail")


def durations(rootdir: Path) -> dict[str, float]:
    """Seconds per test node id from mutmut's stats file, or ``{}`` when there is none."""
    try:
        data = json.loads((rootdir / "mutmut-stats.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    found = data.get("duration_by_test", {})
    return {str(k): float(v) for k, v in found.items()} if isinstance(found, dict) else {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MUTANT_UNDER_TEST", "") in NOT_A_MUTANT:
        return
    seconds = durations(config.rootpath)
    if seconds:
        # unknown tests last; sorted() is stable, so ties keep collection order
        items[:] = sorted(items, key=lambda item: seconds.get(item.nodeid, math.inf))
