"""Gradients of the general merge against the float64 oracle's, within the bound.

Overlapping windows are drawn too: there an input's dL/dx sums over the windows that
hold it, and :func:`pm_core.window_error_bounds` adds that accumulation's rounding.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from pm_core.testing import (
    NORMS,
    check_window_grads,
    examples,
    general_impls,
    window_cases,
    window_merge_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.3)
@given(data=st.data())
def test_window_gradients_match_oracle(
    impl: str, norm: Norm, dtype: torch.dtype, data: st.DataObject
) -> None:
    """Backpropagating the same upstream gradient through ``window_merge`` and through
    ``reference_window_merge`` gives dL/dx, dL/dW, dL/dgamma and dL/dbeta within their
    ``window_error_bounds`` bounds, for every drawn window and layout."""
    case = data.draw(window_cases(dtype, grad=True), label="case")
    check_window_grads(window_merge_for(impl), case, norm=norm)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.2)
@given(data=st.data())
def test_window_gradients_with_overlapping_windows(
    impl: str, norm: Norm, data: st.DataObject
) -> None:
    """The same on windows that do not tile (stride != kernel or dilation > 1), where
    inputs are shared between windows, skipped, or both."""
    case = data.draw(window_cases(torch.float32, grad=True, tiling=False), label="case")
    check_window_grads(window_merge_for(impl), case, norm=norm)
