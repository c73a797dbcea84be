"""Patch expanding: pm_core's is Swin-Unet's in the row-major layout, and Swin-Unet's order
does not invert Swin's gather (Swin-Unet #48).

Swin-Unet's ``PatchExpand`` is reproduced in :mod:`tests.library_code` from its
published code.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import PatchExpand, Window, depth_to_space, patch_expand, space_to_depth
from pm_core.oracle import reference_depth_to_space
from pm_core.window_layouts import WINDOW_LAYOUTS
from tests import library_code as lib


def _distinct(*shape: int) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float64).view(shape)


def _layer_norm(v: torch.Tensor, g: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
    """LayerNorm over the last dim by its two-pass definition, eps 1e-5."""
    d = v - v.mean(-1, keepdim=True)
    out = d / torch.sqrt((d * d).mean(-1, keepdim=True) + 1e-5)
    out = out if g is None else out * g
    return out if b is None else out + b


@pytest.mark.parametrize(("h", "w", "dim"), [(3, 4, 8), (1, 1, 4), (2, 5, 12)])
def test_row_major_expand_is_swin_unets(h: int, w: int, dim: int) -> None:
    """``PatchExpand(dim, layout="row-major")`` loads Swin-Unet's ``PatchExpand`` state
    dict strictly (same keys and shapes) and gives its output bit for bit."""
    torch.manual_seed(0)
    ref = lib.SwinUnetPatchExpand((h, w), dim)
    assert isinstance(ref.norm, torch.nn.LayerNorm)
    with torch.no_grad():
        ref.norm.weight.normal_()
        ref.norm.bias.normal_()
    ours = PatchExpand(dim, layout="row-major")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, h * w, dim)
    want = ref(x).view(2, 2 * h, 2 * w, dim // 2)
    assert torch.equal(ours(x.view(2, h, w, dim)), want)


def test_swin_unets_order_does_not_invert_swins_gather() -> None:
    """Swin-Unet's scatter ``(p1 p2 c)`` undoes a row-major gather, not Swin's: on Swin's
    merged tokens it swaps the (1, 0) and (0, 1) pixel of every 2x2 block, while
    pm_core's ``depth_to_space`` in the swin layout gives the map back."""
    x = _distinct(2, 4, 6, 3)
    c = x.shape[-1]
    tokens = space_to_depth(x, Window((2, 2)), "swin")
    theirs = lib.rearrange_b_h_w_p1p2c(tokens, p1=2, p2=2, c=c)
    assert not torch.equal(theirs, x)
    transposed = x.view(2, 2, 2, 3, 2, c).transpose(2, 4).reshape(x.shape)  # swap dh and dw
    assert torch.equal(theirs, transposed)
    assert torch.equal(depth_to_space(tokens, Window((2, 2)), "swin"), x)
    row_major = space_to_depth(x, Window((2, 2)), "row-major")
    assert torch.equal(lib.rearrange_b_h_w_p1p2c(row_major, p1=2, p2=2, c=c), x)


def test_swin_unet_module_with_swin_layout_differs() -> None:
    """The same weights read in the swin layout compute a different function: a Swin-Unet
    checkpoint needs ``layout="row-major"`` (or converting), or it silently mis-places
    pixels."""
    torch.manual_seed(1)
    ref = lib.SwinUnetPatchExpand((3, 3), 8)
    ours = PatchExpand(8, layout="swin")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 9, 8)
    assert not torch.allclose(ours(x.view(1, 3, 3, 8)), ref(x).view(1, 6, 6, 4))


@pytest.mark.parametrize("kernel", [(2, 2), (4, 4), (2, 2, 2), (1, 2, 3)], ids=str)
@pytest.mark.parametrize("norm", ["post", "pre", "none"])
@given(layout=st.sampled_from(list(WINDOW_LAYOUTS)), seed=st.integers(0, 2**16))
def test_patch_expand_is_project_then_scatter(
    kernel: tuple[int, ...], norm: str, layout: str, seed: int
) -> None:
    """``patch_expand`` equals its definition in float64: LayerNorm by its two-pass
    formula, the projection, and the oracle's index-formula scatter (for every layout
    that applies to the kernel)."""
    win = Window(kernel)
    if WINDOW_LAYOUTS[layout].dims not in (None, win.dims) or (
        WINDOW_LAYOUTS[layout].kernel not in (None, win.kernel)
    ):
        return
    gen = torch.Generator().manual_seed(seed)
    b, c_in, c_out = 2, 5, 3
    size = (2,) * win.dims
    x = torch.randn(b, *size, c_in, generator=gen, dtype=torch.float64)
    weight = torch.randn(win.size * c_out, c_in, generator=gen, dtype=torch.float64)
    width = c_out if norm == "post" else c_in
    nw, nb = (
        (torch.randn(width, generator=gen, dtype=torch.float64) for _ in range(2))
        if norm != "none"
        else (None, None)
    )
    got = patch_expand(x, weight, nw, nb, kernel=kernel, layout=layout, norm=norm)  # type: ignore[arg-type]
    v = _layer_norm(x, nw, nb) if norm == "pre" else x
    out_size = tuple(s * k for s, k in zip(size, kernel, strict=True))
    want = reference_depth_to_space(v @ weight.T, win, layout, out_size)
    if norm == "post":
        want = _layer_norm(want, nw, nb)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * float(want.abs().max() + 1))


def test_patch_expand_inverts_a_merge_gather() -> None:
    """With the projection an identity, ``patch_expand`` of a merge's gathered tokens in
    the same layout is the map itself, for a 3-D window."""
    x = _distinct(1, 2, 4, 6, 2)
    win = Window((2, 2, 2))
    for layout in ("swin", "monai-v2-3d", "monai-legacy", "unfold"):
        tokens = space_to_depth(x, win, layout)
        eye = torch.eye(tokens.shape[-1], dtype=torch.float64)
        assert torch.equal(
            patch_expand(tokens, eye, kernel=(2, 2, 2), layout=layout, norm="none"), x
        )


def test_patch_expand_rejects() -> None:
    """Bad arguments fail naming the argument and the shapes it needs."""
    x = torch.zeros(1, 2, 2, 4)
    with pytest.raises(ValueError, match=r"weight must be \(prod\(kernel\)\*C_out, C_in\)"):
        patch_expand(x, torch.zeros(6, 4), kernel=(2, 2), norm="none")
    with pytest.raises(ValueError, match=r"x must be \(B, D, H, W, C_in\)"):
        patch_expand(x, torch.zeros(8, 4), kernel=(2, 2, 2), norm="none")
    with pytest.raises(ValueError, match="give the kernel alone"):
        patch_expand(x, torch.zeros(8, 4), kernel=Window((2, 2), stride=1), norm="none")
    with pytest.raises(ValueError, match=r"norm_weight must have shape \(2,\)"):
        patch_expand(x, torch.zeros(8, 4), torch.ones(4), kernel=(2, 2), norm="post")
    with pytest.raises(ValueError, match="norm must be one of"):
        patch_expand(x, torch.zeros(8, 4), kernel=(2, 2), norm="after")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_dim defaults to dim // 2"):
        PatchExpand(1)


def test_depth_to_space_rejects_windows_that_do_not_tile() -> None:
    with pytest.raises(ValueError, match="inverts windows that tile"):
        depth_to_space(torch.zeros(1, 2, 2, 4), Window((2, 2), stride=1), "swin")
    with pytest.raises(
        ValueError, match=r"gathers spatial size \(7, 7\) into \(3, 3\) windows, but v has \(2, 2\)"
    ):
        depth_to_space(torch.zeros(1, 2, 2, 4), Window((2, 2)), "swin", size=(7, 7))
    with pytest.raises(ValueError, match=r"gathers spatial size \(7,\) into \? windows"):
        depth_to_space(torch.zeros(1, 2, 2, 4), Window((2, 2)), "swin", size=(7,))


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (([1.0], Window((2, 2))), TypeError, r"^v must be a torch\.Tensor, got list$"),
        (
            (torch.zeros(1, 2, 4), Window((2, 2))),
            ValueError,
            r"2 spatial dims .* got shape \(1, 2, 4\)",
        ),
        ((torch.zeros(1, 2, 2, 6), Window((2, 2))), ValueError, r"prod\(kernel\) = 4, got shape"),
        ((torch.zeros(1, 2, 2, 0), Window((2, 2))), ValueError, r"prod\(kernel\) = 4, got shape"),
        ((torch.zeros(1, 2, 2, 8), (2, 2)), TypeError, "window must be a pm_core.Window"),
        (
            (torch.zeros(1, 2, 2, 8), Window((2, 2)), "monai-legacy"),
            ValueError,
            "is for 3-D windows",
        ),
    ],
)
def test_depth_to_space_rejects_bad_arguments(args: Any, exc: type, match: str) -> None:
    """Each bad argument fails naming itself and what was expected."""
    with pytest.raises(exc, match=match):
        depth_to_space(*args)


def test_depth_to_space_defaults_to_the_swin_layout_and_the_covered_size() -> None:
    """Without a layout or size it inverts the swin-layout gather of a map the windows
    cover exactly, and for a corner-padded odd map it returns the padded size less the
    explicit padding (none for adaptive padding: the whole padded grid)."""
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float64).view(2, 4, 6, 3)
    win = Window((2, 2))
    assert torch.equal(depth_to_space(space_to_depth(x, win), win), x)
    pad = Window((2, 2), padding=((0, 1), (0, 1)))
    odd = x[:, :3, :5]
    back = depth_to_space(space_to_depth(odd, pad), pad)
    assert back.shape == (2, 3, 5, 3)
    assert torch.equal(back, odd)
    before = Window((2, 2), padding=((1, 0), (0, 1)))  # padding before H: the size is less it
    back = depth_to_space(space_to_depth(odd, before), before)
    assert back.shape == (2, 3, 5, 3)
    assert torch.equal(back, odd)


def test_patch_expand_module_state_dict_keys() -> None:
    """Swin-Unet's keys: ``expand.weight`` ``(2*dim, dim)``, ``norm.*`` ``(dim // 2,)``;
    ``FinalPatchExpand_X4``: kernel 4, ``out_dim=dim``, ``expand.weight`` ``(16*dim, dim)``."""
    sd = PatchExpand(8).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "expand.weight": (16, 8), "norm.weight": (4,), "norm.bias": (4,),
    }  # fmt: skip
    x4 = PatchExpand(8, kernel=(4, 4), out_dim=8)
    assert tuple(x4.expand.weight.shape) == (128, 8)
    assert x4(torch.randn(1, 2, 3, 8)).shape == (1, 8, 12, 8)


@pytest.mark.parametrize(
    ("v", "match"),
    [
        ([1.0], r"^v must be \(B, \*S', n\) with 2 spatial dims$"),
        (torch.zeros(1, 2, 8), r"^v must be \(B, \*S', n\) with 2 spatial dims$"),
        (torch.zeros(1, 3, 2, 8), r"gathers \(B, 2, 2, prod\(kernel\)\*C\)$"),
        (torch.zeros(1, 2, 2, 6), r"^v has shape \(1, 2, 2, 6\), but Window\(kernel=\(2, 2\)"),
    ],
)
def test_the_oracles_scatter_names_the_shape_it_needs(v: Any, match: str) -> None:
    """The oracle's depth_to_space checks ``v`` against the window and size it is given."""
    from pm_core.oracle import reference_depth_to_space

    with pytest.raises(ValueError, match=match):
        reference_depth_to_space(v, Window((2, 2)), "swin", (4, 4))


@pytest.mark.parametrize(
    "padding", [((1, 0), (1, 0)), ((0, 1), (0, 1)), ((1, 1), (0, 0)), 1], ids=str
)
def test_space_to_depth_pads_like_the_oracle_when_every_dim_pads(padding: Any) -> None:
    """Explicit padding on every spatial dim (each the same pair, the case a shortcut for
    'nothing to pad' could mistake) gathers what the oracle gathers, bit for bit."""
    from pm_core.oracle import reference_space_to_depth

    x = torch.arange(2 * 4 * 5 * 3, dtype=torch.float64).view(2, 4, 5, 3) + 1
    win = Window((2, 2), padding=padding)
    assert torch.equal(space_to_depth(x, win, "swin"), reference_space_to_depth(x, win, "swin"))


@pytest.mark.parametrize("channel_major", [False, True], ids=["offset-major", "channel-major"])
def test_depth_to_space_inverts_an_explicit_order(channel_major: bool) -> None:
    """An explicit offset order (reversed row-major), offset- or channel-major, is undone
    exactly, as the oracle scatter does."""
    from pm_core.window_layouts import layout_from_offsets

    win = Window((2, 2, 2))
    lay = layout_from_offsets(win.offsets()[::-1], channel_major=channel_major)
    x = torch.arange(2 * 4 * 4 * 2 * 3, dtype=torch.float64).view(2, 4, 4, 2, 3)
    v = space_to_depth(x, win, lay)
    assert torch.equal(depth_to_space(v, win, lay), x)
    assert torch.equal(
        depth_to_space(v, win, lay), reference_depth_to_space(v, win, lay, (4, 4, 2))
    )
