"""The module forms, Swin's presets and the general window modules: what they compute,
Swin-compatible state_dicts, and lossless linear <-> conv and layout conversion.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pm_core import (
    IMPLS,
    ConvPatchMerging,
    ConvWindowMerging,
    Norm,
    PatchMerging,
    UnfoldPatchMerging,
    Window,
    WindowMerging,
    reference_patch_merge,
    window_error_bounds,
    window_merge,
)
from pm_core.oracle import SWIN_WINDOW


@pytest.mark.parametrize(("norm", "keys"), [
    ("pre", {"norm.weight": (32,), "norm.bias": (32,), "reduction.weight": (16, 32)}),
    ("post", {"norm.weight": (16,), "norm.bias": (16,), "reduction.weight": (16, 32)}),
    ("none", {"reduction.weight": (16, 32)}),
])  # fmt: skip
def test_state_dict_has_swin_keys_and_shapes(norm: Norm, keys: dict[str, tuple[int, ...]]) -> None:
    """Keys and shapes are those of torchvision/timm/HF PatchMerging (v1 pre-norm, v2 post-norm)."""
    sd = PatchMerging(8, norm=norm).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == keys


def test_loads_torchvision_weights_unchanged() -> None:
    """A torchvision PatchMerging state_dict loads strictly and gives the same outputs."""
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    src = tv.PatchMerging(8).eval()
    m = PatchMerging(8, impl="conv")
    m.load_state_dict(src.state_dict())
    x = torch.randn(2, 7, 6, 8)
    # fp32 both ways, C=8: the two differ only by rounding (~1e-6 relative); a layout
    # mix-up would differ at O(1).
    torch.testing.assert_close(m(x), src(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("impl", IMPLS)
def test_to_conv_and_back_is_lossless(norm: Norm, impl: str) -> None:
    """PatchMerging -> ConvPatchMerging -> PatchMerging reproduces every parameter bit for bit."""
    m = PatchMerging(6, norm=norm, impl=impl)
    if isinstance(m.norm, nn.LayerNorm):
        nn.init.normal_(m.norm.weight)
        nn.init.normal_(m.norm.bias)
    conv = m.to_conv()
    assert conv.reduction.weight.shape == (12, 6, 2, 2)
    back = conv.to_linear()
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2
        assert torch.equal(a, b), k
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    m64, conv64 = m.double(), conv.double()
    # float64 and C=6: both forms round at ~1e-16; 1e-12 only tolerates rounding
    torch.testing.assert_close(conv64(x), m64(x), rtol=1e-12, atol=1e-12)


def test_flat_input_with_hw_matches_4d() -> None:
    """forward(x, hw) on (B, L, C) equals forward on (B, H, W, C), flattened."""
    m = PatchMerging(4, norm="pre").double()
    x = torch.randn(2, 5, 7, 4, dtype=torch.float64)
    flat = m(x.flatten(1, 2), hw=(5, 7))
    assert flat.shape == (2, 3 * 4, 8)
    torch.testing.assert_close(flat, m(x).flatten(1, 2), rtol=0, atol=0)
    assert isinstance(m.norm, nn.LayerNorm)
    ref = reference_patch_merge(x, m.reduction.weight, m.norm.weight, m.norm.bias)
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


def test_out_dim_and_eps_are_honoured() -> None:
    """out_dim sets O (timm allows out_dim != 2*dim), and the LayerNorm's eps reaches the merge."""
    m = PatchMerging(4, out_dim=6, norm="post", eps=0.5).double()
    assert m.reduction.weight.shape == (6, 16)
    assert isinstance(m.norm, nn.LayerNorm)
    assert m.norm.eps == 0.5
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    ref = reference_patch_merge(
        x, m.reduction.weight, m.norm.weight, m.norm.bias, norm="post", eps=0.5
    )
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"dim": 0}, ValueError, "dim"),
        ({"dim": 4, "norm": "layer"}, ValueError, "norm"),
        ({"dim": 4, "impl": "nope"}, ValueError, "unknown impl"),
        ({"dim": 4, "odd": "crop"}, ValueError, "odd"),
    ],
)
@pytest.mark.parametrize("cls", [PatchMerging, ConvPatchMerging])
def test_constructor_rejects_bad_options(
    cls: type[PatchMerging | ConvPatchMerging],
    kwargs: dict[str, Any],
    exc: type[Exception],
    fragment: str,
) -> None:
    """Bad constructor options fail at construction, not at the first forward."""
    with pytest.raises(exc, match=fragment):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("preset", "base", "layout"),
    [
        (PatchMerging, WindowMerging, "swin"),
        (ConvPatchMerging, ConvWindowMerging, "swin"),
        (UnfoldPatchMerging, WindowMerging, "unfold"),
    ],
)
def test_swin_modules_are_presets_of_the_window_modules(
    preset: Any, base: Any, layout: str
) -> None:
    """Each Swin module is its window module over SWIN_WINDOW in a fixed layout: the same
    state_dict keys and shapes, and the same function as the window module loaded from
    its state_dict, on an even and on an odd map."""
    torch.manual_seed(0)
    m = preset(6, dtype=torch.float64)
    assert isinstance(m, base)
    assert (m.window, m.layout.name) == (SWIN_WINDOW, layout)
    general = base(6, SWIN_WINDOW, layout=layout, impl=m.impl, dtype=torch.float64)
    general.load_state_dict(m.state_dict())  # strict: the same keys and shapes
    assert list(general.state_dict()) == list(m.state_dict())
    for hw in [(4, 6), (5, 3)]:
        x = torch.randn(2, *hw, 6, dtype=torch.float64)
        assert torch.equal(m(x), general(x))
        assert torch.equal(m(x.flatten(1, 2), hw), m(x).flatten(1, 2))


@pytest.mark.parametrize(
    "make",
    [
        lambda: PatchMerging(6),
        lambda: ConvPatchMerging(6),
        lambda: UnfoldPatchMerging(6),
        lambda: WindowMerging(6, Window((2, 2, 2))),
        lambda: ConvWindowMerging(6, Window((3, 3), stride=2)),
    ],
)
def test_every_module_names_a_channel_mismatch(make: Any) -> None:
    """A module called on an input with the wrong channel count says which two disagree."""
    m = make()
    x = torch.randn(1, *([4] * m.window.dims), 5)
    with pytest.raises(ValueError, match=r"x has C=5 channels but this merge has dim=6"):
        m(x)


def test_conversions_keep_the_preset() -> None:
    """to_conv / to_linear of a Swin preset give the other Swin preset, with its options;
    the unfold preset's conv form is the general conv module in its layout."""
    m = PatchMerging(4, norm="post", impl="reshape", odd="error")
    c = m.to_conv()
    assert type(c) is ConvPatchMerging
    assert (c.norm_mode, c.impl, c.odd) == ("post", "reshape", "error")
    assert type(c.to_linear()) is PatchMerging
    u = UnfoldPatchMerging(4).double()
    uc = u.to_conv()
    assert type(uc) is ConvWindowMerging
    assert uc.layout.name == "unfold"
    x = torch.randn(1, 6, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(uc(x), u(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("cls", "default"), [(PatchMerging, "slice"), (ConvPatchMerging, "conv")])
def test_presets_default_impl_and_options(cls: Any, default: str) -> None:
    """Each preset runs its own default impl when none is given, any impl given instead, and
    takes the odd-size policy and options through the one preset constructor."""
    m = cls(8)
    assert (m.impl, m.odd, m.out_dim, m.norm_mode) == (default, "pad", 16, "pre")
    other = "reshape" if default == "slice" else "slice"
    n = cls(8, impl=other, odd="error", out_dim=12, norm="post", eps=1e-3)
    assert (n.impl, n.odd, n.out_dim, n.norm_mode) == (other, "error", 12, "post")
    assert n.norm.eps == 1e-3
    with pytest.raises(ValueError, match="odd='error'"):
        n(torch.randn(1, 3, 4, 8))


def test_unfold_preset_defaults() -> None:
    """UnfoldPatchMerging runs mmcv's own gather in mmcv's layout unless told otherwise
    (its refusal of a post-norm: tests/test_convert_state_dict.py)."""
    m = UnfoldPatchMerging(8)
    assert (m.impl, m.layout.name, m.odd) == ("unfold", "unfold", "pad")
    assert UnfoldPatchMerging(8, norm="none", impl="slice").impl == "slice"


F64 = torch.float64
WINDOWS = [
    Window((2, 2, 2), padding="corner"),
    Window((3, 3), stride=2, padding=1),
    Window((2, 3), stride=1, padding=((0, 1), (1, 0)), dilation=(1, 2)),
]
M = TypeVar("M", bound=nn.Module)


def _randomise(m: M, seed: int = 0) -> M:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return m


def _input(window: Window, c: int, *, integer: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    shape = (2, *(s + 2 for s in window.span), c)
    if integer:
        return torch.randint(-8, 9, shape, generator=gen).double()
    return torch.randn(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("window", WINDOWS, ids=repr)
def test_module_is_the_functional(window: Window, norm: Norm) -> None:
    """``WindowMerging`` computes ``window_merge`` with its parameters, and has the keys and
    shapes of a merge: ``norm.*`` ``(prod(k)*C,)`` or ``(O,)``, ``reduction.weight`` ``(O, n)``."""
    m = _randomise(WindowMerging(3, window, norm=norm, layout="row-major", dtype=F64))
    n = window.size * 3
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    want: dict[str, tuple[int, ...]] = {"reduction.weight": (6, n)}
    if norm != "none":
        width = n if norm == "pre" else 6
        want |= {"norm.weight": (width,), "norm.bias": (width,)}
    assert shapes == want
    x = _input(window, 3)
    ln = m.norm if isinstance(m.norm, nn.LayerNorm) else None
    y = window_merge(
        x, m.reduction.weight, None if ln is None else ln.weight, None if ln is None else ln.bias,
        window=window, layout="row-major", norm=norm,
    )  # fmt: skip
    assert torch.equal(m(x), y)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("window", WINDOWS, ids=repr)
def test_window_to_conv_and_back_is_lossless(window: Window, norm: Norm) -> None:
    """WindowMerging -> ConvWindowMerging -> WindowMerging reproduces every parameter bit
    for bit, and the conv module computes the same function."""
    m = _randomise(WindowMerging(2, window, norm=norm, layout="swin", dtype=F64))
    conv = m.to_conv()
    assert tuple(conv.reduction.weight.shape) == (4, 2, *window.kernel)
    back = conv.to_linear()
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2
        assert torch.equal(a, b), k
    x = _input(window, 2)
    assert torch.equal(conv(x), m(x))  # same impl ("gather"), same weights


@pytest.mark.parametrize("window", WINDOWS, ids=repr)
def test_conv_module_reduction_alone_is_the_norm_free_merge(window: Window) -> None:
    """The conv module's ``.reduction`` has the window's kernel, stride, dilation and (where
    symmetric) padding: on integer data it alone computes the norm-free merge exactly."""
    m = _randomise(ConvWindowMerging(2, window, norm="none", layout="unfold", dtype=F64))
    with torch.no_grad():
        m.reduction.weight.copy_(m.reduction.weight.round())
    x = _input(window, 2, integer=True)
    pads = window.pads(x.shape[1:-1])
    if any(b != a for b, a in pads):
        flat = [p for pair in reversed(pads) for p in pair]
        direct = m.reduction(F.pad(x.movedim(-1, 1), flat)).movedim(1, -1)
    else:
        direct = m.reduction(x.movedim(-1, 1)).movedim(1, -1)
    assert torch.equal(m(x), direct)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_with_layout_is_the_same_function(norm: Norm) -> None:
    """Reordering a module's weights (and pre-norm vectors) to another layout keeps its
    function: within the sum of the two computations' bounds against the oracle."""
    window = Window((2, 2, 2), padding="corner")
    m = _randomise(WindowMerging(2, window, norm=norm, layout="monai-v2-3d", dtype=F64))
    other = m.with_layout("monai-legacy")
    assert other.layout.name == "monai-legacy"
    x = _input(window, 2).float()
    m32, o32 = m.float(), other.float()
    ln = m32.norm if isinstance(m32.norm, nn.LayerNorm) else None
    eb = window_error_bounds(
        x, m32.reduction.weight.detach(), None if ln is None else ln.weight.detach(),
        None if ln is None else ln.bias.detach(), window=window, layout="monai-v2-3d", norm=norm,
    )  # fmt: skip
    err = (m32(x).double() - o32(x).double()).abs()
    assert bool((err <= 2 * eb.output).all())
    # offset (0, 0, 0) comes first in both orders; the others move
    assert torch.equal(other.reduction.weight[:, :2], m.reduction.weight[:, :2])
    assert not torch.equal(other.reduction.weight, m.reduction.weight)


def test_module_rejects() -> None:
    with pytest.raises(TypeError, match=r"window must be a pm_core.Window"):
        WindowMerging(2, (2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        WindowMerging(2, Window((2, 2)), impl="fast")
    with pytest.raises(ValueError, match="layout 'monai-legacy' is for 3-D windows"):
        WindowMerging(2, Window((2, 2)), layout="monai-legacy")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        ConvWindowMerging(0, Window((2, 2)))


@pytest.mark.parametrize(
    ("cls", "default"), [(WindowMerging, "gather"), (ConvWindowMerging, "conv")]
)
def test_window_modules_default_impl(cls: Any, default: str) -> None:
    """Each general module runs its own default impl when none is given, any impl given
    instead, and registers the norm before the reduction (the state_dict's key order)."""
    win = Window((2, 2, 2), padding="corner")
    m = cls(4, win, layout="monai-v2-3d")
    assert m.impl == default
    assert list(m.state_dict()) == ["norm.weight", "norm.bias", "reduction.weight"]
    other = "conv" if default == "gather" else "gather"
    assert cls(4, win, impl=other).impl == other
