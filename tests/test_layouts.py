"""Weight layouts: each named layout is its library's real order, and the converters
between them (Swin's 2x2 presets and the general ones) are exact permutations, matching
the index formulas and mmseg's converter.

The library gathers are reproduced in :mod:`tests.library_code` from their published
sources; each test feeds both sides a map whose every entry is distinct, so any
permutation error shows. Converter round trips are compared bit for bit, and a
converted weight is shown to give the same merge on integer-valued float64 data, where
every sum is exact in any order.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Window, space_to_depth, window_merge
from pm_core.layouts import (
    conv_to_linear,
    conv_to_window,
    conv_view,
    conv_weight_view,
    convert_window_layout,
    linear_to_conv,
    swin_index,
    swin_to_unfold,
    unfold_index,
    unfold_to_swin,
    window_to_conv,
)
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

channels = st.integers(1, 24)
outs = st.integers(1, 12)


def _distinct(o: int, c: int) -> torch.Tensor:
    """A weight whose every entry is distinct, so any permutation error shows."""
    return torch.arange(o * 4 * c, dtype=torch.float64).view(o, 4 * c)


@given(o=outs, c=channels)
def test_conv_layout_matches_index_formula(o: int, c: int) -> None:
    """linear_to_conv(w)[o, c, dh, dw] == w[o, (2*dw + dh)*C + c] for every entry."""
    w = _distinct(o, c)
    wc = linear_to_conv(w)
    assert wc.shape == (o, c, 2, 2)
    assert wc.is_contiguous()
    for ch in range(c):
        for dh in range(2):
            for dw in range(2):
                assert torch.equal(wc[:, ch, dh, dw], w[:, swin_index(dh, dw, ch, c)])


@given(o=outs, c=channels)
def test_conv_view_is_the_general_view_over_swins_window(o: int, c: int) -> None:
    """The fold's closed-form ``conv_view`` equals ``conv_weight_view`` over ``Window((2, 2))``
    in the swin layout, and both are views of ``w`` (no copy)."""
    w = _distinct(o, c)
    closed = conv_view(w, c)
    general = conv_weight_view(w, Window((2, 2)), window_layout("swin"))
    assert torch.equal(closed, general)
    assert closed.stride() == general.stride()
    assert closed.data_ptr() == w.data_ptr() == general.data_ptr()


@given(o=outs, c=channels)
def test_unfold_layout_matches_index_formula(o: int, c: int) -> None:
    """swin_to_unfold(w)[:, 4*c + 2*dh + dw] == w[:, (2*dw + dh)*C + c]."""
    w = _distinct(o, c)
    wu = swin_to_unfold(w)
    for ch in range(c):
        for dh in range(2):
            for dw in range(2):
                assert torch.equal(wu[:, unfold_index(dh, dw, ch)], w[:, swin_index(dh, dw, ch, c)])


@given(o=outs, c=channels)
def test_swin_to_unfold_matches_mmseg_converter(o: int, c: int) -> None:
    """Our permutation equals mmseg swin2mmseg's reshape(O, 4, C)[:, [0, 2, 1, 3]].transpose(1, 2)."""
    w = _distinct(o, c)
    mmseg = w.reshape(o, 4, c)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, 4 * c)
    assert torch.equal(swin_to_unfold(w), mmseg)
    v = w[0]
    assert torch.equal(
        swin_to_unfold(v), v.reshape(4, c)[[0, 2, 1, 3], :].transpose(0, 1).reshape(4 * c)
    )


@given(o=outs, c=channels, dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]))
def test_round_trips_are_bit_exact(o: int, c: int, dtype: torch.dtype) -> None:
    """Every converter pair is a pure permutation, so round trips reproduce the bits."""
    w = torch.randn(o, 4 * c).to(dtype)
    assert torch.equal(conv_to_linear(linear_to_conv(w)), w)
    assert torch.equal(unfold_to_swin(swin_to_unfold(w)), w)
    assert torch.equal(swin_to_unfold(unfold_to_swin(w)), w)
    assert torch.equal(unfold_to_swin(swin_to_unfold(w[0])), w[0])
    wc = torch.randn(o, c, 2, 2).to(dtype)
    assert torch.equal(linear_to_conv(conv_to_linear(wc)), wc)


@given(o=outs, c=st.integers(2, 24))
def test_converters_are_not_identities(o: int, c: int) -> None:
    """For C >= 2 the swin and unfold orders differ: an unconverted load would go unnoticed by shape alone."""
    w = _distinct(o, c)
    assert not torch.equal(swin_to_unfold(w), w)


@pytest.mark.parametrize(
    ("fn", "arg", "fragment"),
    [
        (linear_to_conv, torch.randn(8, 10), "4*C"),
        (linear_to_conv, torch.randn(12), r"\[O, 4C\]"),
        (conv_to_linear, torch.randn(8, 4, 3, 3), r"\[O, C, 2, 2\]"),
        (conv_to_linear, torch.randn(8, 16), r"\[O, C, 2, 2\]"),
        (swin_to_unfold, torch.randn(2, 3, 16), "shape"),
        (unfold_to_swin, torch.randn(0), "4\\*C"),
    ],
)
def test_converters_reject_bad_shapes(
    fn: Callable[[torch.Tensor], torch.Tensor], arg: torch.Tensor, fragment: str
) -> None:
    """A tensor that is not a [O, 4C] weight / [4C] vector / [O, C, 2, 2] kernel is named as such."""
    with pytest.raises(ValueError, match=fragment):
        fn(arg)


@pytest.mark.parametrize("fn", [linear_to_conv, conv_to_linear, swin_to_unfold, unfold_to_swin])
@pytest.mark.parametrize(
    ("bad", "exc", "got"),
    [([[1.0] * 8], TypeError, "list"), (torch.randn(3, 5, 7, 2), ValueError, "(3, 5, 7, 2)")],
    ids=["not a tensor", "bad shape"],
)
def test_converter_errors_name_the_argument(
    fn: Callable[[torch.Tensor], torch.Tensor], bad: object, exc: type[Exception], got: str
) -> None:
    """A converter's error opens with its parameter's own name (what the caller can look
    up in the signature) and says what it was given: the type, or the shape."""
    (param,) = inspect.signature(fn).parameters
    with pytest.raises(exc) as info:
        fn(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{param} "), message
    assert got in message, message


CORNER2 = Window((2, 2), padding="corner")
CORNER3 = Window((2, 2, 2), padding="corner")


def _arange(*shape: int) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float64).view(shape)


@pytest.mark.parametrize("hw", [(4, 6), (5, 3), (1, 1)])
@pytest.mark.parametrize("name", ["swin", "focus"])
def test_swin_layout_is_swins_gather(name: str, hw: tuple[int, int]) -> None:
    """ "swin" (and "focus", its 2-D alias) is Swin's ``cat(x0, x1, x2, x3)`` with the
    bottom/right zero padding of odd sizes, and pm_core's 2x2 oracle formula."""
    x = _arange(2, *hw, 3)
    padded = F.pad(x, (0, 0, 0, hw[1] % 2, 0, hw[0] % 2))
    got = space_to_depth(x, CORNER2, name)
    assert torch.equal(got, lib.swin_gather(padded))
    assert torch.equal(got, gather_windows(x))


def test_focus_layout_is_yolos_focus() -> None:
    """ "focus" is ultralytics' ``Focus`` on NCHW, channel index ``pos*C + c``."""
    x = _arange(2, 6, 4, 3)
    want = lib.focus_gather(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.equal(space_to_depth(x, Window((2, 2)), "focus"), want)


@pytest.mark.parametrize("dhw", [(4, 6, 2), (3, 5, 1)])
def test_video_swin_is_the_swin_layout_per_frame(dhw: tuple[int, int, int]) -> None:
    """Video Swin merges each frame's 2x2 window: ``Window((1, 2, 2), padding="corner")``
    in the swin layout (first axis fastest; with kd = 1 that is Swin's 2-D order)."""
    x = _arange(2, *dhw, 3)
    got = space_to_depth(x, Window((1, 2, 2), padding="corner"), "swin")
    assert torch.equal(got, lib.video_swin_gather(x))


@pytest.mark.parametrize("dhw", [(4, 4, 4), (3, 5, 2), (1, 1, 1)])
@pytest.mark.parametrize("name", ["monai-v2-3d", "row-major"])
def test_monai_v2_3d_is_row_major(name: str, dhw: tuple[int, int, int]) -> None:
    """MONAI ``PatchMergingV2`` 3-D (``itertools.product`` over (d, h, w)) is row-major."""
    x = _arange(2, *dhw, 2)
    assert torch.equal(space_to_depth(x, CORNER3, name), lib.monai_v2_gather(x))


def test_monai_v2_2d_is_swin_not_row_major() -> None:
    """MONAI ``PatchMergingV2`` 2-D is Swin's order, unlike its 3-D one."""
    x = _arange(2, 5, 4, 2)
    assert torch.equal(space_to_depth(x, CORNER2, "swin"), lib.monai_v2_gather(x))
    assert not torch.equal(space_to_depth(x, CORNER2, "row-major"), lib.monai_v2_gather(x))


@pytest.mark.parametrize("dhw", [(4, 4, 4), (3, 5, 2)])
def test_monai_legacy_layout_is_monai_1_5(dhw: tuple[int, int, int]) -> None:
    """ "monai-legacy" is MONAI ``PatchMerging`` 3-D from 1.5.0: x0 .. x7 as listed."""
    x = _arange(1, *dhw, 2)
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
    x = _arange(1, 2, 2, 2, 1)
    v = lib.monai_legacy_gather_1_4(x).flatten()
    assert len(set(v.tolist())) == 6


def test_monai_legacy_offsets_are_a_permutation() -> None:
    """The >= 1.5 list is accepted as an explicit layout and equals the named one."""
    lay = layout_from_offsets(MONAI_LEGACY_OFFSETS)
    x = _arange(1, 4, 2, 2, 3)
    assert torch.equal(space_to_depth(x, CORNER3, lay), space_to_depth(x, CORNER3, "monai-legacy"))


@pytest.mark.parametrize("name", ["timm-s2d", "row-major"])
def test_timm_s2d_layout_is_timms_space_to_depth(name: str) -> None:
    """ "timm-s2d" is timm's ``SpaceToDepth`` (block 4): ``(dh*4 + dw)*C + c``."""
    x = _arange(2, 8, 12, 3)
    want = lib.timm_space_to_depth(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.equal(space_to_depth(x, Window((4, 4)), name), want)


@pytest.mark.models
def test_timm_s2d_layout_is_installed_timms() -> None:
    """The same against the installed timm's ``SpaceToDepth`` itself."""
    s2d = pytest.importorskip("timm.layers.space_to_depth")
    x = _arange(2, 8, 4, 3)
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
    x = _arange(2, 7, 6, 3)
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


window_channels = st.integers(1, 4)
window_outs = st.integers(1, 3)


@given(window=windows(), data=st.data(), c=window_channels, o=window_outs)
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


@given(window=windows(), data=st.data(), c=window_channels)
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


@given(window=windows(), data=st.data(), c=window_channels)
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


@given(window=windows(), data=st.data(), c=window_channels)
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


_2x2 = Window((2, 2))
_3D = Window((2, 2, 2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: convert_window_layout(torch.tensor(1.0), _2x2, "swin", "unfold"),
            "t must have at least one dim, got a 0-dim tensor",
        ),
        (
            lambda: convert_window_layout(torch.zeros(3, 10), _2x2, "swin", "unfold"),
            "t has 10 entries on its layout dim, not prod(kernel) * C = 4 * C with C >= 1 "
            "for the 2x2 window",
        ),
        (
            lambda: convert_window_layout(torch.zeros(3, 0), _2x2, "swin", "unfold"),
            "t has 0 entries on its layout dim, not prod(kernel) * C = 4 * C with C >= 1 "
            "for the 2x2 window",
        ),
        (
            lambda: convert_window_layout(torch.zeros(9, 3), _3D, "swin", "monai-legacy", dim=0),
            "t has 9 entries on its layout dim, not prod(kernel) * C = 8 * C with C >= 1 "
            "for the 2x2x2 window",
        ),
        (
            lambda: window_to_conv(torch.zeros(8), _2x2),
            "w must be a reduction weight [O, prod(kernel)*C], got shape (8,)",
        ),
        (
            lambda: window_to_conv(torch.zeros(3, 12), _3D),
            "w has 12 entries on its layout dim, not prod(kernel) * C = 8 * C with C >= 1 "
            "for the 2x2x2 window",
        ),
        (
            lambda: conv_to_window(torch.zeros(3, 2, 2), _2x2),
            "wc must be a conv weight [O, C, 2, 2] for the 2x2 window, got shape (3, 2, 2)",
        ),
        (
            lambda: conv_to_window(torch.zeros(3, 2, 2, 3), _2x2),
            "wc must be a conv weight [O, C, 2, 2] for the 2x2 window, got shape (3, 2, 2, 3)",
        ),
        (
            lambda: conv_to_window(torch.zeros(3, 0, 2, 2, 2), _3D),
            "wc must be a conv weight [O, C, 2, 2, 2] for the 2x2x2 window, got shape "
            "(3, 0, 2, 2, 2)",
        ),
        (
            lambda: convert_window_layout(torch.zeros(3, 8), _2x2, "swin", "monai-legacy"),
            f"layout 'monai-legacy' is for 3-D windows, got the 2-D {_2x2!r}",
        ),
        (  # an axis order too: its fast path must not skip the check
            lambda: convert_window_layout(torch.zeros(3, 8), _2x2, "monai-v2-3d", "swin"),
            f"layout 'monai-v2-3d' is for 3-D windows, got the 2-D {_2x2!r}",
        ),
        (
            lambda: convert_window_layout(torch.zeros(3, 16), _3D, "swin", "focus"),
            f"layout 'focus' is for 2-D windows, got the 3-D {_3D!r}",
        ),
        (
            lambda: convert_window_layout(torch.zeros(3, 8), _2x2, "monai-legacy", "swin"),
            f"layout 'monai-legacy' is for 3-D windows, got the 2-D {_2x2!r}",
        ),
    ],
)
def test_general_converters_say_what_shape_they_want(call: Any, message: str) -> None:
    """Each converter's error, whole: the argument, the shape it must have for this window
    (spelt with the window's kernel), and what it got."""
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


@pytest.mark.parametrize("window", [_2x2, _3D], ids=["2x2", "2x2x2"])
def test_general_converters_default_to_the_swin_layout(window: Window) -> None:
    """``window_to_conv`` and ``conv_to_window`` read and write the swin order when no
    layout is given (the order of Swin's gather, and of pm-core's modules)."""
    w = _arange(3, window.size * 2)
    assert torch.equal(window_to_conv(w, window), window_to_conv(w, window, "swin"))
    assert not torch.equal(window_to_conv(w, window), window_to_conv(w, window, "unfold"))
    wc = window_to_conv(w, window, "unfold")
    assert torch.equal(conv_to_window(wc, window), conv_to_window(wc, window, "swin"))
    assert not torch.equal(conv_to_window(wc, window), w)
