"""The property checks catch every planted bug, 2x2 and 3-D, and how many examples that took.

Each planted bug runs through the same ``check_*`` function the property tests use, in
a Hypothesis search with generation only (no shrinking, no database), until the check
first fails. The test asserts that it fails within the budget; the number of examples
it took goes to ``$PM_CORE_SELFTEST_RECORD`` (one JSON line per bug) when that is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pm_core import Norm, Window
from pm_core.testing import (
    Case,
    Subject,
    WindowCase,
    active_settings,
    cases,
    check_finite,
    check_forward,
    check_grads,
    edge_values,
    window_cases,
)
from tests.selftest.planted import (
    ORDER_NAMES,
    WINDOW_PLANTED,
    correct,
    front_door,
    planted,
    window_planted,
)

pytestmark = pytest.mark.usefixtures("single_thread")

#: the most examples a planted bug may need before the suite counts as blind to it
BUDGET = 200
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bugs are not implementations: keep them out of ``$PM_CORE_RECORD``."""
    monkeypatch.delenv("PM_CORE_RECORD", raising=False)


def first_failure(
    strategy: st.SearchStrategy[T], check: Callable[[T], object], budget: int
) -> tuple[int, str]:
    """Run ``check`` on examples of ``strategy`` (generation only, no shrinking) until it
    fails: (examples needed, error type); a test failure if it never does within ``budget``."""
    calls = 0
    first: tuple[int, str] | None = None

    @settings(
        max_examples=budget,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        derandomize=active_settings().derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def search(example: T) -> None:
        nonlocal calls, first
        calls += 1
        try:
            check(example)
        except Exception as exc:
            if first is None:
                first = (calls, type(exc).__name__)
            raise

    try:
        search()
    except Exception:
        if first is not None:
            return first
        raise
    pytest.fail(f"not caught in {budget} examples")


def examples_to_catch(
    check: Callable[[Case], object],
    *,
    grad: bool = False,
    budget: int = BUDGET,
    dtype: torch.dtype = torch.float64,
) -> tuple[int, str]:
    """Run ``check`` on drawn ``dtype`` cases until it fails: (examples needed, error type)."""
    return first_failure(cases(dtype, grad=grad), check, budget)


def _record(bug: str, found: tuple[int, str]) -> None:
    path = os.environ.get("PM_CORE_SELFTEST_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"bug": bug, "examples": found[0], "caught_by": found[1]}) + "\n")


FORWARD_BUGS = [
    *[(name, "pre") for name in ORDER_NAMES],
    ("swap_pad", "pre"),
    ("norm_after", "pre"),
    ("eps_10x", "pre"),
    ("conv_weight_transposed", "none"),
    ("contiguous_only", "pre"),
]


@pytest.mark.parametrize(("bug", "norm"), FORWARD_BUGS)
def test_forward_check_catches(bug: str, norm: Norm) -> None:
    """The forward property (``check_forward``) rejects the planted bug."""
    subject = planted(bug)
    found = examples_to_catch(lambda case: check_forward(subject, case, norm=norm))
    _record(bug, found)
    assert found[0] >= 1


@pytest.mark.parametrize("norm", ["pre", "none"])
def test_gradient_check_catches(norm: Norm) -> None:
    """The gradient property (``check_grads``) rejects a backward that is off by a
    relative 1e-3 at a single element, though its forward is exact."""
    subject = planted("wrong_gradient")
    found = examples_to_catch(lambda case: check_grads(subject, case, norm=norm), grad=True)
    _record(f"wrong_gradient[{norm}]", found)
    assert found[0] >= 1


@pytest.mark.parametrize("step", [0, None], ids=["edge", "below"])
def test_finite_check_catches_the_unscaled_fold(step: int | None) -> None:
    """The finite-in, finite-out property (``check_finite``, on the strategy the property
    uses) rejects the conv fold without its power-of-two scale in float16, both pinned at
    the edge of the range and drawn below it; and the correct merge passes the same search."""
    bug = planted("unscaled_fold")
    strategy = cases(torch.float16, grad=True, vals=edge_values(step))
    found = first_failure(strategy, lambda case: check_finite(bug, case, norm="pre"), BUDGET)
    _record(f"unscaled_fold[{'edge' if step == 0 else 'below'}]", found)
    assert found[0] >= 1
    control = Subject("correct", front_door(correct), "front_door(correct)")
    with pytest.raises(pytest.fail.Exception, match="not caught"):
        first_failure(strategy, lambda case: check_finite(control, case, norm="pre"), 50)


def test_correct_reference_passes() -> None:
    """Control: the same harness around a *correct* merge finds nothing, so the catches
    above come from the bugs, not from the harness."""
    subject = Subject("correct", front_door(correct), "front_door(correct)")
    with pytest.raises(pytest.fail.Exception, match="not caught"):
        examples_to_catch(lambda case: check_forward(subject, case, norm="pre"), budget=50)


# --- 3-D merges: each bug through check_forward (the property
# tests/properties/test_forward_oracle.py uses) over cases of MONAI's window, until the
# check first fails; the number it took is recorded like the 2x2 bugs'.

MONAI_WINDOW = Window((2, 2, 2), padding="corner")


def examples_to_catch_3d(
    check: Callable[[WindowCase], object], layout: str, *, budget: int = BUDGET
) -> tuple[int, str]:
    """Run ``check`` on drawn 3-D float64 cases until it fails: (examples needed, error)."""
    strategy = window_cases(torch.float64, window=MONAI_WINDOW, layout=layout)
    return first_failure(strategy, check, budget)


@pytest.mark.parametrize("norm", ["pre", "none"])
@pytest.mark.parametrize("bug", list(WINDOW_PLANTED))
def test_window_forward_check_catches(bug: str, norm: Norm) -> None:
    """``check_forward`` rejects the planted 3-D bug: two order bugs (MONAI <= 1.4's
    repeated slices; a swin checkpoint gathered row-major) and two padding bugs (pads
    applied to the dims in reverse; corner padding put in front)."""
    subject = window_planted(bug)
    layout = WINDOW_PLANTED[bug][1]
    found = examples_to_catch_3d(lambda case: check_forward(subject, case, norm=norm), layout)
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
        examples_to_catch_3d(
            lambda case: check_forward(subject, case, norm="pre"), layout, budget=50
        )
