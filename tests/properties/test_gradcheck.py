"""Property 4: ``gradcheck`` and ``gradgradcheck`` in float64 on small shapes, for Swin's 2x2
merge and every window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from pm_core.testing import (
    GRADCHECK_MAX_C,
    GRADCHECK_MAX_NUMEL,
    NORMS,
    Case,
    Values,
    cases,
    check_gradcheck,
    device_params,
    exact_combos,
    examples,
    general_impls,
    merge_for,
    window_cases,
    window_merge_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.2)
@given(data=st.data())
def test_gradcheck(impl: str, norm: Norm, device: str, data: st.DataObject) -> None:
    """``impl``'s analytic first and second derivatives w.r.t. every input agree with
    finite differences (torch.autograd.gradcheck / gradgradcheck, float64). Magnitudes
    stay within 1e2: a finite difference of step 1e-6 means nothing on 1e8."""
    case = data.draw(
        cases(
            torch.float64,
            grad=True,
            max_numel=GRADCHECK_MAX_NUMEL,
            max_decade=2,
            max_c=GRADCHECK_MAX_C,
        ),
        label="case",
    )
    check_gradcheck(merge_for(impl), case, norm=norm, device=device)


@pytest.mark.parametrize(("impl", "norm"), [c for c in exact_combos() if "pre" in c.id])
def test_gradcheck_of_windows_with_equal_values(impl: str, norm: Norm) -> None:
    """Second derivatives are finite where a window's values are equal (its centred values
    exactly zero), a point where a norm-based variance's gradient of gradient is NaN."""
    case = Case((1, 2, 2, 1), "float64", "contiguous", "bhwc", Values("ulp", 0, 0, 0))
    assert len(set(case.build(norm).x.flatten().tolist())) == 2, "one value a ulp off the rest"
    check_gradcheck(merge_for(impl), case, norm=norm)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.1)
@given(data=st.data())
def test_window_gradcheck(impl: str, norm: Norm, data: st.DataObject) -> None:
    """The same for ``window_merge`` over every drawn window, overlapping and 3-D ones
    included (the conv form's pre-norm fold where windows tile)."""
    case = data.draw(
        window_cases(torch.float64, grad=True, max_decade=2, max_numel=GRADCHECK_MAX_NUMEL),
        label="case",
    )
    check_gradcheck(window_merge_for(impl), case, norm=norm)
