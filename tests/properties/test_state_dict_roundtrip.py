"""Property 6: state_dicts round-trip between the linear and conv parameterisations, and
between the swin and unfold layouts."""

from __future__ import annotations

from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import pm_core
from pm_core import ConvPatchMerging, Norm, PatchMerging, error_bounds, reference_patch_merge
from pm_core.layouts import linear_to_conv, swin_to_unfold, unfold_to_swin
from pm_core.testing import DTYPES, EPS, NORMS

pytestmark = pytest.mark.usefixtures("single_thread")

M = TypeVar("M", bound=nn.Module)

dims = st.integers(1, 12)
seeds = st.integers(0, 2**16)


def _randomise(m: M, seed: int) -> M:
    """Fill every parameter from ``seed`` (default inits hide swaps: LN starts as 1 and 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return m


def _assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    __tracebackhide__ = True
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].shape, a[k].dtype) == (b[k].shape, b[k].dtype), k
        assert torch.equal(a[k], b[k]), f"{k} changed in the round trip"


def _is_4c(key: str, norm: Norm) -> bool:
    return key == "reduction.weight" or (norm == "pre" and key.startswith("norm."))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
@given(dim=dims, dtype=st.sampled_from(DTYPES), seed=seeds, hw=st.tuples(dims, dims))
def test_linear_conv_roundtrip(
    impl: str, norm: Norm, dim: int, dtype: torch.dtype, seed: int, hw: tuple[int, int]
) -> None:
    """``PatchMerging -> to_conv -> to_linear`` restores the state_dict bit for bit; the
    conv module stores ``linear_to_conv`` of the weight, a fresh ``ConvPatchMerging``
    loads that state_dict strictly, and it computes the same function bit for bit."""
    m = _randomise(PatchMerging(dim, norm=norm, impl=impl, dtype=dtype), seed)
    conv = m.to_conv()
    _assert_same_state(conv.to_linear().state_dict(), m.state_dict())
    sd = m.state_dict()
    converted = {k: linear_to_conv(v) if k == "reduction.weight" else v for k, v in sd.items()}
    _assert_same_state(conv.state_dict(), converted)
    fresh = ConvPatchMerging(dim, norm=norm, impl=impl, dtype=dtype)
    fresh.load_state_dict(converted)
    x = torch.randn(2, *hw, dim, generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))


def _unfold_merge(x: Tensor, sd: dict[str, Tensor], norm: Norm) -> Tensor:
    """mmcv's PatchMerging on (B, H, W, C), reading an unfold-layout state_dict."""
    x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
    b, h, w, _ = x.shape
    v = F.unfold(x.permute(0, 3, 1, 2), 2, stride=2).transpose(1, 2)  # (B, L', 4C)
    if norm == "pre":
        v = F.layer_norm(v, v.shape[-1:], sd["norm.weight"], sd["norm.bias"], EPS)
    y = F.linear(v, sd["reduction.weight"])
    if norm == "post":
        y = F.layer_norm(y, y.shape[-1:], sd["norm.weight"], sd["norm.bias"], EPS)
    return y.view(b, h // 2, w // 2, -1)


@pytest.mark.parametrize("norm", NORMS)
@given(dim=dims, seed=seeds, hw=st.tuples(dims, dims))
def test_swin_unfold_roundtrip(norm: Norm, dim: int, seed: int, hw: tuple[int, int]) -> None:
    """Converting every 4C-sized tensor of a Swin state_dict with ``swin_to_unfold`` and
    back with ``unfold_to_swin`` is the identity, and the unfold-layout state_dict
    drives an nn.Unfold (mmcv) merge to the oracle's result on the swin one."""
    m = _randomise(PatchMerging(dim, norm=norm, dtype=torch.float64), seed)
    sd = m.state_dict()
    unf = {k: swin_to_unfold(v) if _is_4c(k, norm) else v for k, v in sd.items()}
    back = {k: unfold_to_swin(v) if _is_4c(k, norm) else v for k, v in unf.items()}
    _assert_same_state(back, sd)
    x = torch.randn(2, *hw, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    nw, nb = (sd.get("norm.weight"), sd.get("norm.bias"))
    args = (x, sd["reduction.weight"], nw, nb)
    ref = reference_patch_merge(*args, norm=norm, eps=EPS)
    err = (_unfold_merge(x, unf, norm) - ref).abs()
    assert (err <= error_bounds(*args, norm=norm, eps=EPS).output).all()
