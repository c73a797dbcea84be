"""Property 3: gradients w.r.t. x, the reduction weight and the norm parameters match the oracle's.

Over Swin's 2x2 merge and over every window, overlapping ones included: there an input's
dL/dx sums over the windows that hold it, and :func:`pm_core.window_error_bounds` adds
that accumulation's rounding.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from pm_core.testing import (
    GRAD_INPUTS,
    GRAD_NAMES,
    NORMS,
    cases,
    check_grads,
    device_params,
    dtype_params,
    exact_combos,
    examples,
    general_impls,
    merge_for,
    window_cases,
    window_merge_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.5)
@given(data=st.data())
def test_gradients_match_oracle(
    impl: str, norm: Norm, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    """Backpropagating the same upstream gradient through ``impl`` and through the
    float64 oracle gives the same dL/dx, dL/dW, dL/dgamma and dL/dbeta, each within its
    ``pm_core.error_bounds`` bound (stride-0 inputs excluded: their gradients sum)."""
    case = data.draw(cases(dtype, grad=True), label="case")
    check_grads(merge_for(impl), case, norm=norm, device=device)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.25)
@given(data=st.data())
def test_conv_parameterised_weight_gradient(
    impl: str, norm: Norm, device: str, data: st.DataObject
) -> None:
    """With the weight held as a ``[O, C, 2, 2]`` conv kernel (``ConvPatchMerging``'s
    parameter), its gradient mapped back through ``conv_to_linear`` equals the
    oracle's dL/dW in the swin layout."""
    case = data.draw(cases(torch.float64, grad=True), label="case")
    check_grads(merge_for(impl), case, norm=norm, device=device, weight_param="conv")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.1)
@given(data=st.data())
def test_gradients_for_a_second_derivative_match_oracle(
    impl: str, norm: Norm, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    """Gradients taken with ``create_graph=True``, the first half of a second derivative,
    are the same gradients: an impl may backpropagate differently when its backward must
    itself be differentiable, and gradgradcheck alone would not notice a consistently
    wrong one (it checks the derivative *of* the backward, not the backward). In every
    dtype: a half-precision double backward takes code paths of its own."""
    case = data.draw(cases(dtype, grad=True), label="case")
    check_grads(merge_for(impl), case, norm=norm, device=device, create_graph=True)


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@pytest.mark.parametrize("frozen", GRAD_NAMES)
@examples(0.1)
@given(data=st.data())
def test_gradients_with_a_frozen_input_match_oracle(
    impl: str, norm: Norm, frozen: str, device: str, data: st.DataObject
) -> None:
    """With one input frozen (a norm parameter or the projection, as in fine-tuning, or no
    dL/dx for a first layer), the other gradients are still the oracle's: a backward that
    skips work by ``needs_input_grad`` must not skip a term the others share."""
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    case = replace(data.draw(cases(dtype, grad=True), label="case"), affine=True)
    check_grads(merge_for(impl), case, norm=norm, device=device, wrt=GRAD_INPUTS - {frozen})


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
    check_grads(window_merge_for(impl), case, norm=norm)


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
    check_grads(window_merge_for(impl), case, norm=norm)
