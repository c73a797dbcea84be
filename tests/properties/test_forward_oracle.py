"""Property 1: every implementation matches the float64 oracle in the forward pass."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from pm_core.testing import (
    cases,
    check_forward,
    device_params,
    dtype_params,
    exact_combos,
    examples,
    merge_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@given(data=st.data())
def test_forward_matches_oracle(
    impl: str, norm: Norm, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    """For every norm mode it claims exactness for, ``impl`` equals the float64 oracle
    (fed the same rounded inputs) to within ``pm_core.error_bounds``, on every shape,
    memory layout, input form and value distribution the strategies draw, odd sizes
    zero-padded."""
    case = data.draw(cases(dtype), label="case")
    check_forward(merge_for(impl), case, norm=norm, device=device)


@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.2)
@given(data=st.data())
def test_forward_honours_eps(impl: str, norm: Norm, data: st.DataObject) -> None:
    """``eps`` reaches the LayerNorm: with an epsilon from 1e-6 to 1 (large ones matter on
    windows of small spread, which the value strategies draw), ``impl`` still equals the
    oracle taking the same ``eps``. Every other check runs at the default 1e-5, where an
    impl that dropped the argument would pass."""
    eps = data.draw(st.sampled_from([1e-6, 1e-3, 0.1, 1.0]), label="eps")
    case = data.draw(cases(torch.float64), label="case")
    check_forward(merge_for(impl), case, norm=norm, eps=eps)
