"""The module forms: Swin-compatible state_dicts, and lossless linear <-> conv parameterisation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pm_core import IMPLS, ConvPatchMerging, Norm, PatchMerging, reference_patch_merge


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
