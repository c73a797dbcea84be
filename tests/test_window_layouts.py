"""Window layouts: each named layout is its library's real order, and the converters are exact.

The library gathers are reproduced in :mod:`tests.library_code` from their published
sources; each test feeds both sides a map whose every entry is distinct, so any
permutation error shows. Converter round trips are compared bit for bit, and a
converted weight is shown to give the same merge on integer-valued float64 data, where
every sum is exact in any order.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Window, space_to_depth, window_merge
from pm_core.layouts import conv_to_window, convert_window_layout, window_to_conv
from pm_core.oracle import gather_windows
from pm_core.testing import layouts_for, windows
from pm_core.window_layouts import (
    MONAI_LEGACY_OFFSETS,
    WINDOW_LAYOUTS,
    WindowOrderError,
    layout_from_offsets,
    window_layout,
)
from tests import library_code as lib

CORNER2 = Window((2, 2), padding="corner")
CORNER3 = Window((2, 2, 2), padding="corner")


def _distinct(*shape: int) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float64).view(shape)


@pytest.mark.parametrize("hw", [(4, 6), (5, 3), (1, 1)])
@pytest.mark.parametrize("name", ["swin", "focus"])
def test_swin_layout_is_swins_gather(name: str, hw: tuple[int, int]) -> None:
    """ "swin" (and "focus", its 2-D alias) is Swin's ``cat(x0, x1, x2, x3)`` with the
    bottom/right zero padding of odd sizes, and pm_core's 2x2 oracle formula."""
    x = _distinct(2, *hw, 3)
    padded = F.pad(x, (0, 0, 0, hw[1] % 2, 0, hw[0] % 2))
    got = space_to_depth(x, CORNER2, name)
    assert torch.equal(got, lib.swin_gather(padded))
    assert torch.equal(got, gather_windows(x))


def test_focus_layout_is_yolos_focus() -> None:
    """ "focus" is ultralytics' ``Focus`` on NCHW, channel index ``pos*C + c``."""
    x = _distinct(2, 6, 4, 3)
    want = lib.focus_gather(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.equal(space_to_depth(x, Window((2, 2)), "focus"), want)


@pytest.mark.parametrize("dhw", [(4, 6, 2), (3, 5, 1)])
def test_video_swin_is_the_swin_layout_per_frame(dhw: tuple[int, int, int]) -> None:
    """Video Swin merges each frame's 2x2 window: ``Window((1, 2, 2), padding="corner")``
    in the swin layout (first axis fastest; with kd = 1 that is Swin's 2-D order)."""
    x = _distinct(2, *dhw, 3)
    got = space_to_depth(x, Window((1, 2, 2), padding="corner"), "swin")
    assert torch.equal(got, lib.video_swin_gather(x))


@pytest.mark.parametrize("dhw", [(4, 4, 4), (3, 5, 2), (1, 1, 1)])
@pytest.mark.parametrize("name", ["monai-v2-3d", "row-major"])
def test_monai_v2_3d_is_row_major(name: str, dhw: tuple[int, int, int]) -> None:
    """MONAI ``PatchMergingV2`` 3-D (``itertools.product`` over (d, h, w)) is row-major."""
    x = _distinct(2, *dhw, 2)
    assert torch.equal(space_to_depth(x, CORNER3, name), lib.monai_v2_gather(x))


def test_monai_v2_2d_is_swin_not_row_major() -> None:
    """MONAI ``PatchMergingV2`` 2-D is Swin's order, unlike its 3-D one."""
    x = _distinct(2, 5, 4, 2)
    assert torch.equal(space_to_depth(x, CORNER2, "swin"), lib.monai_v2_gather(x))
    assert not torch.equal(space_to_depth(x, CORNER2, "row-major"), lib.monai_v2_gather(x))


@pytest.mark.parametrize("dhw", [(4, 4, 4), (3, 5, 2)])
def test_monai_legacy_layout_is_monai_1_5(dhw: tuple[int, int, int]) -> None:
    """ "monai-legacy" is MONAI ``PatchMerging`` 3-D from 1.5.0: x0 .. x7 as listed."""
    x = _distinct(1, *dhw, 2)
    assert torch.equal(space_to_depth(x, CORNER3, "monai-legacy"), lib.monai_legacy_gather(x))


def test_monai_1_4_slices_are_not_a_permutation() -> None:
    """MONAI <= 1.4's legacy slice list reads (0, 1, 0) and (0, 0, 1) twice and never
    (1, 1, 0) or (0, 1, 1): ``layout_from_offsets`` refuses it, naming both."""
    with pytest.raises(WindowOrderError) as info:
        layout_from_offsets(lib.MONAI_1_4_OFFSETS)
    err = info.value
    assert err.duplicated == {(0, 1, 0): (2, 5), (0, 0, 1): (3, 6)}
    assert err.missing == ((0, 1, 1), (1, 1, 0))
    msg = str(err)
    assert "(0, 1, 0) appears at positions [2, 5]" in msg
    assert "(0, 0, 1) appears at positions [3, 6]" in msg
    assert "missing [(0, 1, 1), (1, 1, 0)]" in msg
    # and its gather really does repeat those slices
    x = _distinct(1, 2, 2, 2, 1)
    v = lib.monai_legacy_gather_1_4(x).flatten()
    assert len(set(v.tolist())) == 6


def test_monai_legacy_offsets_are_a_permutation() -> None:
    """The >= 1.5 list is accepted as an explicit layout and equals the named one."""
    lay = layout_from_offsets(MONAI_LEGACY_OFFSETS)
    x = _distinct(1, 4, 2, 2, 3)
    assert torch.equal(space_to_depth(x, CORNER3, lay), space_to_depth(x, CORNER3, "monai-legacy"))


@pytest.mark.parametrize("name", ["timm-s2d", "row-major"])
def test_timm_s2d_layout_is_timms_space_to_depth(name: str) -> None:
    """ "timm-s2d" is timm's ``SpaceToDepth`` (block 4): ``(dh*4 + dw)*C + c``."""
    x = _distinct(2, 8, 12, 3)
    want = lib.timm_space_to_depth(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.equal(space_to_depth(x, Window((4, 4)), name), want)


@pytest.mark.models
def test_timm_s2d_layout_is_installed_timms() -> None:
    """The same against the installed timm's ``SpaceToDepth`` itself."""
    s2d = pytest.importorskip("timm.layers.space_to_depth")
    x = _distinct(2, 8, 4, 3)
    want = s2d.SpaceToDepth(4)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.equal(space_to_depth(x, Window((4, 4)), "timm-s2d"), want)


@pytest.mark.parametrize(
    "window",
    [Window((2, 2)), Window((3, 3), stride=2, padding=1), Window((3, 2), stride=1, dilation=2)],
    ids=repr,
)
def test_unfold_layout_is_nn_unfold(window: Window) -> None:
    """ "unfold" is ``F.unfold``'s column order (channel major, offsets row-major) for
    any kernel, stride, padding and dilation, and ``F.pixel_unshuffle``'s for k = s."""
    x = _distinct(2, 7, 6, 3)
    _, h, w, _ = x.shape
    pads = window.padding
    assert not isinstance(pads, str)
    cols = F.unfold(
        x.permute(0, 3, 1, 2), window.kernel, dilation=window.dilation,
        padding=tuple(p for p, _ in pads), stride=window.stride,
    )  # fmt: skip
    got = space_to_depth(x, window, "unfold")
    assert torch.equal(got, cols.transpose(1, 2).reshape(got.shape))
    if window.tiles and window.kernel[0] == window.kernel[1]:
        even = x[:, : h - h % 2, : w - w % 2]
        unshuffled = F.pixel_unshuffle(even.permute(0, 3, 1, 2), window.kernel[0])
        assert torch.equal(space_to_depth(even, window, "unfold"), unshuffled.permute(0, 2, 3, 1))


def test_named_layouts_have_the_orders_their_docs_say() -> None:
    """The aliases are the orders they alias, restricted to their dims."""
    k2, k3 = Window((2, 3)), Window((2, 3, 2))
    for a, b in [("focus", "swin"), ("timm-s2d", "row-major")]:
        assert window_layout(a).order(k2) == window_layout(b).order(k2)
    assert window_layout("monai-v2-3d").order(k3) == window_layout("row-major").order(k3)
    assert window_layout("row-major").order(k2) == k2.offsets()
    assert window_layout("swin").order(Window((2, 2))) == ((0, 0), (1, 0), (0, 1), (1, 1))
    for name, dims in [("focus", 2), ("timm-s2d", 2), ("monai-v2-3d", 3), ("monai-legacy", 3)]:
        assert WINDOW_LAYOUTS[name].dims == dims
        other = k3 if dims == 2 else k2
        with pytest.raises(ValueError, match=f"layout '{name}' is for {dims}-D windows"):
            window_layout(name, other)


def test_explicit_layout_checks_its_kernel() -> None:
    """An explicit order applies to its own kernel only."""
    lay = layout_from_offsets(MONAI_LEGACY_OFFSETS)
    with pytest.raises(ValueError, match="lists the offsets of a 2x2x2 window"):
        space_to_depth(torch.zeros(1, 3, 3, 3, 1), Window((3, 3, 3)), lay)


@pytest.mark.parametrize(
    ("offsets", "kernel", "match"),
    [
        ([(0, 0), (0, 1), (1, 0)], None, r"missing \[\(1, 1\)\]"),
        ([(0, 0), (0, 0), (1, 0), (1, 1)], None, r"\(0, 0\) appears at positions \[0, 1\]"),
        ([(0, 0), (1, 0), (0, 1), (2, 1)], (2, 2), "lie outside the 2x2 window"),
        ([(0, 0, 0), (0, 1)], None, r"must all be \(dh, dw\) or all \(dd, dh, dw\)"),
        ([], None, "non-empty sequence"),
        ([(0, -1)], None, "non-negative ints"),
    ],
)
def test_layout_from_offsets_rejects(
    offsets: list[tuple[int, ...]], kernel: tuple[int, ...] | None, match: str
) -> None:
    """Lists that are not a permutation of a window's offsets fail, naming what is wrong."""
    with pytest.raises((ValueError, TypeError), match=match):
        layout_from_offsets(offsets, kernel=kernel)


def test_unknown_layout_names_the_choices() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown window layout 'swin-v3'; choose one of \('swin', 'focus', 'row-major'",
    ):
        window_layout("swin-v3")


channels = st.integers(1, 4)
outs = st.integers(1, 3)


@given(window=windows(), data=st.data(), c=channels, o=outs)
def test_conversions_round_trip_bit_exact(
    window: Window, data: st.DataObject, c: int, o: int
) -> None:
    """Between any two layouts of a window, weights ``[O, n]``, norm vectors ``[n]`` and
    expand weights ``[n, C_in]`` (``dim=0``) convert and convert back bit for bit, and
    through the conv weight ``[O, C, *kernel]`` too."""
    (a, cm_a), (b, cm_b) = data.draw(layouts_for(window)), data.draw(layouts_for(window))
    la, lb = (
        lay if isinstance(lay, str) else layout_from_offsets(lay, channel_major=cm)
        for lay, cm in ((a, cm_a), (b, cm_b))
    )
    n = window.size * c
    w = torch.randn(o, n, dtype=torch.float32)
    there = convert_window_layout(w, window, la, lb)
    assert torch.equal(convert_window_layout(there, window, lb, la), w)
    v = w[0].clone()
    assert torch.equal(
        convert_window_layout(convert_window_layout(v, window, la, lb), window, lb, la), v
    )
    e = w.T.contiguous()
    back = convert_window_layout(
        convert_window_layout(e, window, la, lb, dim=0), window, lb, la, dim=0
    )
    assert torch.equal(back, e)
    wc = window_to_conv(w, window, la)
    assert wc.shape == (o, c, *window.kernel)
    assert torch.equal(conv_to_window(wc, window, la), w)
    assert torch.equal(window_to_conv(there, window, lb), wc)


@given(window=windows(), data=st.data(), c=channels)
def test_conversion_moves_each_column_where_the_layouts_say(
    window: Window, data: st.DataObject, c: int
) -> None:
    """``convert_window_layout`` puts the entry of (offset, channel) from its column in
    ``src`` to its column in ``dst`` (``WindowLayout.columns``), on the last dim or on
    ``dim=0``, as a new contiguous tensor: between two axis-order layouts by a permuted
    view and one copy, otherwise by an ``index_select``."""
    la, lb = (
        window_layout(lay) if isinstance(lay, str) else layout_from_offsets(lay, channel_major=cm)
        for lay, cm in (data.draw(layouts_for(window)), data.draw(layouts_for(window)))
    )
    n = window.size * c
    w = torch.arange(3 * n, dtype=torch.float64).view(3, n)
    want = torch.empty_like(w)
    for src_row, dst_row in zip(la.columns(window, c), lb.columns(window, c), strict=True):
        for s, d in zip(src_row, dst_row, strict=True):
            want[:, d] = w[:, s]
    for t, dim, expect in ((w, -1, want), (w.T, 0, want.T)):
        out = convert_window_layout(t, window, la, lb, dim=dim)
        assert torch.equal(out, expect)
        assert out.is_contiguous()
        assert out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()


@given(window=windows(), data=st.data(), c=channels)
def test_conv_weight_matches_the_layout_formula(
    window: Window, data: st.DataObject, c: int
) -> None:
    """``window_to_conv(w)[o, c, *off] == w[o, column of (off, c)]``, the column being
    ``i*C + c`` (offset major) or ``c*K + i`` (channel major), ``i`` the offset's rank."""
    lay_arg, cm = data.draw(layouts_for(window))
    lay = (
        window_layout(lay_arg)
        if isinstance(lay_arg, str)
        else layout_from_offsets(lay_arg, channel_major=cm)
    )
    n, k = window.size * c, window.size
    w = torch.arange(2 * n, dtype=torch.float64).view(2, n)
    wc = window_to_conv(w, window, lay)
    for i, off in enumerate(lay.order(window)):
        for ch in range(c):
            col = ch * k + i if lay.channel_major else i * c + ch
            at: tuple[Any, ...] = (slice(None), ch, *off)
            assert torch.equal(wc[at], w[:, col])


@given(window=windows(), data=st.data(), c=channels)
def test_converted_weights_give_the_same_merge(window: Window, data: st.DataObject, c: int) -> None:
    """A weight converted to another layout computes the same merge in that layout, and
    its conv form the same as ``F.conv{2,3}d``, exactly (integer-valued float64: every
    sum is exact whatever its order)."""
    (a, cm_a), (b, cm_b) = data.draw(layouts_for(window)), data.draw(layouts_for(window))
    la, lb = (
        lay if isinstance(lay, str) else layout_from_offsets(lay, channel_major=cm)
        for lay, cm in ((a, cm_a), (b, cm_b))
    )
    size = tuple(s + 1 for s in window.span)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-8, 9, (2, *size, c), generator=gen).double()
    w = torch.randint(-8, 9, (3, window.size * c), generator=gen).double()
    y = window_merge(x, w, window=window, layout=la, norm="none")
    wb = convert_window_layout(w, window, la, lb)
    for impl in ("gather", "conv"):
        assert torch.equal(window_merge(x, wb, window=window, layout=lb, norm="none", impl=impl), y)
