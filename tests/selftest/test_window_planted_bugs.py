"""The general properties catch a planted order bug and a planted padding bug in a 3-D merge.

Each bug runs through ``check_window_forward`` (the property
``tests/properties/test_window_oracle.py`` uses) in a generation-only Hypothesis search
over 3-D cases of MONAI's window, ``Window((2, 2, 2), padding="corner")``, until the
check first fails; it must within :data:`BUDGET` examples. The number it took goes to
``$PM_CORE_SELFTEST_RECORD`` like the 2x2 planted bugs'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
import torch

from pm_core import Norm, Window
from pm_core.testing import WindowCase, check_window_forward, window_cases
from tests.selftest.test_planted_bugs import first_failure
from tests.selftest.window_planted import WINDOW_PLANTED, window_planted

pytestmark = pytest.mark.usefixtures("single_thread")

BUDGET = 200
MONAI_WINDOW = Window((2, 2, 2), padding="corner")


@pytest.fixture(autouse=True)
def _no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bugs are not implementations: keep them out of ``$PM_CORE_RECORD``."""
    monkeypatch.delenv("PM_CORE_RECORD", raising=False)


def examples_to_catch(
    check: Callable[[WindowCase], object], layout: str, *, budget: int = BUDGET
) -> tuple[int, str]:
    """Run ``check`` on drawn 3-D float64 cases until it fails: (examples needed, error)."""
    strategy = window_cases(torch.float64, window=MONAI_WINDOW, layout=layout)
    return first_failure(strategy, check, budget)


@pytest.mark.parametrize("norm", ["pre", "none"])
@pytest.mark.parametrize("bug", list(WINDOW_PLANTED))
def test_window_forward_check_catches(bug: str, norm: Norm) -> None:
    """``check_window_forward`` rejects the planted 3-D bug: two order bugs (MONAI <= 1.4's
    repeated slices; a swin checkpoint gathered row-major) and two padding bugs (pads
    applied to the dims in reverse; corner padding put in front)."""
    subject = window_planted(bug)
    layout = WINDOW_PLANTED[bug][1]
    found = examples_to_catch(lambda case: check_window_forward(subject, case, norm=norm), layout)
    path = os.environ.get("PM_CORE_SELFTEST_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            record = {"bug": f"3d_{bug}[{norm}]", "examples": found[0], "caught_by": found[1]}
            f.write(json.dumps(record) + "\n")
    assert found[1] == "AssertionError", f"{bug} crashed ({found[1]}) rather than being caught"


@pytest.mark.parametrize("layout", ["row-major", "swin", "monai-legacy"])
def test_correct_scaffolding_passes(layout: str) -> None:
    """Control: the padding bugs' scaffolding with the padding done right finds nothing,
    so the catches above come from the bugs."""
    subject = window_planted("correct")
    with pytest.raises(pytest.fail.Exception, match="not caught"):
        examples_to_catch(
            lambda case: check_window_forward(subject, case, norm="pre"), layout, budget=50
        )
