"""Property 1: every implementation matches the float64 oracle in the forward pass.

Over Swin's 2x2 merge (``patch_merge``, every registered impl, every calling convention)
and over every window (``window_merge``, the general impls): Hypothesis draws the dims,
kernel, stride, padding (ints, per-dim pairs, ``"corner"``, ``"same"``), dilation, batch,
spatial size, channels, memory layout, values and the channel layout (a named one or a
random permutation of the window's offsets). Both run the same check
(:func:`pm_core.testing.check_forward`); the case says which oracle and bound judge it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import (
    Norm,
    Window,
    error_bounds,
    patch_merge,
    reference_window_merge,
    space_to_depth,
    window_error_bounds,
    window_merge,
)
from pm_core.layouts import swin_to_unfold
from pm_core.oracle import gather_windows
from pm_core.testing import (
    NORMS,
    cases,
    check_forward,
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


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.4)
@given(data=st.data())
def test_window_merge_matches_oracle(
    impl: str, norm: Norm, dtype: torch.dtype, data: st.DataObject
) -> None:
    """``window_merge`` (gather and conv forms, the conv's pre-norm folded where windows
    tile) equals ``reference_window_merge`` within ``window_error_bounds``."""
    case = data.draw(window_cases(dtype), label="case")
    check_forward(window_merge_for(impl), case, norm=norm)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.2)
@given(data=st.data())
def test_window_merge_matches_oracle_on_tiling_3d_windows(
    impl: str, norm: Norm, data: st.DataObject
) -> None:
    """The same on tiling 3-D windows, where the conv form folds the pre-norm into
    ``F.conv3d`` (the draws above reach them only now and then)."""
    case = data.draw(window_cases(torch.float32, dims=3, tiling=True), label="case")
    check_forward(window_merge_for(impl), case, norm=norm)


#: the patch_merge impl the 2x2 window_merge must equal, and whether bit for bit: the conv
#: form runs the same registered 2x2 impl; the gather form gathers the same values, but the GEMM's
#: rounding may follow its input's strides (measured: 1 ulp on a 1-wide map)
SAME_AS = {("gather", "swin"): ("slice", False), ("gather", "unfold"): ("unfold", False),
           ("conv", "swin"): ("conv", True), ("conv", "unfold"): ("conv", True)}  # fmt: skip


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("impl", "layout"), list(SAME_AS))
@examples(0.2)
@given(data=st.data())
def test_swin_2x2_is_patch_merge(
    impl: str, layout: str, norm: Norm, dtype: torch.dtype, data: st.DataObject
) -> None:
    """``window_merge`` over ``Window((2, 2), padding="corner")`` in the swin or unfold
    layout is ``patch_merge``: its gather is pm_core's 2x2 oracle gather bit for bit, the
    conv form is ``patch_merge``'s conv impl bit for bit, and the gather form is within
    the sum of the two computations' ``error_bounds``."""
    case = data.draw(cases(dtype, grad=True), label="case")
    inp = case.build(norm)
    x = inp.x if inp.hw is None else inp.x.view(inp.x.shape[0], *inp.hw, inp.x.shape[-1])
    w, nw, nb = inp.weight, inp.norm_weight, inp.norm_bias
    win = Window((2, 2), padding="corner")
    assert torch.equal(space_to_depth(x, win, "swin"), gather_windows(x))
    if layout == "unfold":  # the same function with its weights in the unfold order
        w = swin_to_unfold(w)
        if norm == "pre":
            nw, nb = (None if t is None else swin_to_unfold(t) for t in (nw, nb))
    got = window_merge(x, w, nw, nb, window=win, layout=layout, norm=norm, impl=impl)
    other, exact = SAME_AS[impl, layout]
    args = (x, inp.weight, inp.norm_weight, inp.norm_bias)
    want = patch_merge(*args, norm=norm, impl=other)
    if exact:
        assert torch.equal(got, want), (got - want).abs().max()
    else:
        bound = 2 * error_bounds(*args, norm=norm).output
        assert bool(((got.double() - want.double()).abs() <= bound).all())


#: The windows and layouts the libraries ship (see pm_core.window_layouts' docstring).
LIBRARY_WINDOWS = {
    "swin": (Window((2, 2), padding="corner"), "swin"),
    "monai-v2-3d": (Window((2, 2, 2), padding="corner"), "monai-v2-3d"),
    "monai-legacy": (Window((2, 2, 2), padding="corner"), "monai-legacy"),
    "video-swin": (Window((1, 2, 2), padding="corner"), "swin"),
    "timm-s2d": (Window((4, 4)), "timm-s2d"),
    "mmcv-same": (Window((3, 3), stride=2, padding="same"), "unfold"),
    "mmcv-corner-dilated": (Window((2, 2), stride=1, padding="corner", dilation=2), "unfold"),
}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@pytest.mark.parametrize("name", list(LIBRARY_WINDOWS))
@examples(0.1)
@given(data=st.data())
def test_library_windows_match_oracle(
    name: str, impl: str, norm: Norm, data: st.DataObject
) -> None:
    """Each library's own window and layout (MONAI's 3-D merges, Video Swin's per-frame
    merge, TResNet's space-to-depth, mmcv's adaptive padding) matches the oracle."""
    window, layout = LIBRARY_WINDOWS[name]
    case = data.draw(window_cases(torch.float32, window=window, layout=layout), label="case")
    check_forward(window_merge_for(impl), case, norm=norm)


@pytest.mark.parametrize("layout", ["unfold", "row-major"])
def test_conv_form_with_one_channel_and_one_output_column(layout: str) -> None:
    """C == 1, B == 2 and an output width of 1: the channels-last view (and the weight
    view of a row-major layout) then has strides a contiguous tensor has too, and torch
    2.14.1's CPU float32 conv returns wrong values for it (errors of O(1); found by the
    property above). The conv form gives it plain strides and stays within the bound."""
    window = Window((3, 3), stride=(1, 2))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 4, 1, generator=gen)
    w = torch.randn(2, 9, generator=gen)
    y = window_merge(x, w, window=window, layout=layout, norm="none", impl="conv")
    want = reference_window_merge(x, w, window=window, layout=layout, norm="none")
    bound = window_error_bounds(x, w, window=window, layout=layout, norm="none").output
    assert bool(((y.double() - want).abs() <= bound).all())
