"""The general merge's module forms: what they compute, their state dicts, and lossless
linear <-> conv and layout conversion."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pm_core import (
    ConvWindowMerging,
    Norm,
    Window,
    WindowMerging,
    window_error_bounds,
    window_merge,
)

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
def test_to_conv_and_back_is_lossless(window: Window, norm: Norm) -> None:
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
