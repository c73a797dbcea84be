"""Weight-layout converters: exact permutations, matching the index formulas and mmseg's converter."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Window
from pm_core.layouts import (
    conv_to_linear,
    conv_view,
    conv_weight_view,
    linear_to_conv,
    swin_index,
    swin_to_unfold,
    unfold_index,
    unfold_to_swin,
)
from pm_core.window_layouts import window_layout

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
