"""Property 1: every implementation matches the float64 oracle in the forward pass."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pm_core
from pm_core import Norm
from tests.assertions import check_forward, merge_for
from tests.strategies import cases, device_params, dtype_params, exact_combos, examples

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


@pytest.mark.parametrize(("impl", "norm"), [c for c in exact_combos() if c.values[1] == "pre"])
@examples(0.2)
@given(
    b=st.integers(1, 2),
    hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    c=st.integers(8, 24),
    scale=st.sampled_from([2.0**10, 2.0**12, 2.0**13]),
    seed=st.integers(0, 2**31 - 1),
)
def test_pre_norm_of_large_float16_windows(
    impl: str, norm: Norm, b: int, hw: tuple[int, int], c: int, scale: float, seed: int
) -> None:
    """LayerNorm is scale-invariant, so a float16 window whose entries fit float16 but
    whose sum (4C of them, up to 24 * 2^15) does not is still normalised within the bound:
    the statistics accumulate in float32, as the bound's derivation assumes for the half
    types (PyTorch's opmath), not in float16, where they would overflow to inf."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, 2 * hw[0], 2 * hw[1], c, generator=g, dtype=torch.float64) + 1) * scale
    x = x.to(torch.float16)
    weight = torch.randn(2 * c, 4 * c, generator=g, dtype=torch.float64).to(torch.float16)
    nw, nb = (torch.randn(4 * c, generator=g, dtype=torch.float64).to(torch.float16) for _ in "wb")
    got = pm_core.patch_merge(x, weight, nw, nb, norm=norm, impl=impl)
    want = pm_core.reference_patch_merge(x, weight, nw, nb, norm=norm)
    bound = pm_core.error_bounds(x, weight, nw, nb, norm=norm).output
    err = (got.to(torch.float64) - want).abs()
    assert torch.isfinite(got).all(), (
        f"{impl}: non-finite output for float16 input of scale {scale}"
    )
    assert (err <= bound).all(), f"{impl}: error/bound {float((err / bound).max()):.3g}"
