"""Property 4: ``gradcheck`` and ``gradgradcheck`` in float64 on small shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from tests.assertions import check_gradcheck, merge_for
from tests.strategies import (
    GRADCHECK_MAX_C,
    GRADCHECK_MAX_NUMEL,
    cases,
    device_params,
    exact_combos,
    examples,
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
