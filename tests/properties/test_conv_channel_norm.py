"""Property 7: an impl registered as inexact for a norm mode is shown to differ.

In the registry that is ``conv_channel_norm`` under ``norm="pre"``: a LayerNorm over the
C channels of each pixel is not the LayerNorm over the 4C window that Swin applies.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import pm_core
from pm_core import Norm
from pm_core.testing import active_settings, cases, check_differs, inexact_combos, merge_for, record

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(("impl", "norm"), inexact_combos())
def test_inexact_impl_differs(
    impl: str, norm: Norm, record_property: Callable[[str, object], None]
) -> None:
    """Hypothesis finds an input on which ``impl`` is outside the oracle's error bound,
    and shrinks it to a minimal counterexample (attached to the junit report as the
    ``counterexample`` property, with the error/bound ratio on it)."""
    subject = merge_for(impl)
    budget = settings(database=None, max_examples=max(50, active_settings().max_examples))
    case = find(
        cases(torch.float64, memory="contiguous", max_numel=64),
        lambda c: check_differs(subject, c, norm=norm) > 1,
        settings=budget,
    )
    ratio = check_differs(subject, case, norm=norm)
    record_property("counterexample", repr(case))
    record_property("bound_ratio", ratio)
    record(
        impl=impl, norm=norm, dtype=case.dtype, device="cpu",
        gemm_precision=pm_core.gemm_precision(impl, "cpu", case.torch_dtype), kind="forward",
        shape=list(case.shape), max_abs_err=None, bound_ratio=ratio, kappa=None,
        passed=True, expect="differ",
    )  # fmt: skip
    assert ratio > 1
    # shrunk: one image (the difference needs no batch)
    assert case.shape[0] == 1, case


@settings(max_examples=max(5, active_settings().max_examples // 5), deadline=None)
@given(
    b=st.integers(1, 2),
    hw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    half_c=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_channel_norm_equals_window_norm_when_pixels_share_statistics(
    b: int, hw: tuple[int, int], half_c: int, dtype: torch.dtype, seed: int
) -> None:
    """Where every pixel of a window holds a permutation of the same zero-sum values, each
    pixel's mean and variance over C are its window's over 4C, so the naive "LN over C,
    then conv" is the Swin pre-norm layer there, within that layer's bound. This pins the
    naive layer's own definition, which the report measures against the real one: its
    affine (4C,) vectors apply by window position, in the swin layout."""
    g = torch.Generator().manual_seed(seed)
    h, w, c = 2 * hw[0], 2 * hw[1], 2 * half_c
    vals = torch.randn(b, hw[0], hw[1], half_c, generator=g, dtype=torch.float64)
    base = torch.cat([vals, -vals], -1)  # exactly zero sum in every window and pixel
    perms = torch.rand(b, hw[0], hw[1], 4, c, generator=g).argsort(-1)
    pixels = base[..., None, :].expand(-1, -1, -1, 4, -1).gather(-1, perms)  # (b, h', w', 4, c)
    # pixel k of a window sits at (dh, dw) = (k % 2, k // 2)
    x = pixels.view(b, hw[0], hw[1], 2, 2, c).permute(0, 1, 4, 2, 3, 5).reshape(b, h, w, c)
    x = x.to(dtype)
    weight = torch.randn(2 * c, 4 * c, generator=g, dtype=dtype)
    nw = torch.randn(4 * c, generator=g, dtype=dtype)
    nb = torch.randn(4 * c, generator=g, dtype=dtype)
    got = pm_core.patch_merge(x, weight, nw, nb, norm="pre", impl="conv_channel_norm")
    f64 = [t.to(torch.float64) for t in (x, weight, nw, nb)]
    want = pm_core.reference_patch_merge(*f64, norm="pre")
    bound = pm_core.error_bounds(x, weight, nw, nb, norm="pre").output
    err = (got.to(torch.float64) - want).abs()
    worst = float((err / bound).max())
    assert (err <= bound).all(), f"naive layer off its definition: error/bound {worst:.3g}"
