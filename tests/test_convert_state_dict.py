"""Checkpoint conversion between the swin, unfold and conv layouts, and the wrong-layout check."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from pm_core import (
    PatchMerging,
    UnfoldPatchMerging,
    check_merge_layout,
    convert_state_dict,
    from_module,
)
from pm_core.checkpoints import merge_prefixes
from pm_core.layout_check import LayoutMismatchError
from pm_core.layouts import LAYOUTS, Layout, swin_to_unfold
from pm_core.testing import examples

tv = pytest.importorskip("torchvision.models")
pytestmark = pytest.mark.models


def _merge_sd(c: int, o: int, norm: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = 4 * c if norm == "pre" else o
    sd = {"layers.0.downsample.reduction.weight": torch.randn(o, 4 * c, generator=g)}
    if norm != "none":
        sd["layers.0.downsample.norm.weight"] = torch.randn(n, generator=g)
        sd["layers.0.downsample.norm.bias"] = torch.randn(n, generator=g)
    sd["layers.0.blocks.0.attn.qkv.weight"] = torch.randn(3, 3, generator=g)  # untouched
    return sd


@examples(1.0)
@given(
    c=st.integers(1, 16),
    extra=st.integers(0, 3),
    norm=st.sampled_from(["pre", "post", "none"]),
    path=st.permutations(LAYOUTS),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(c: int, extra: int, norm: str, path: list[Layout], seed: int) -> None:
    """swin -> a -> b -> swin (any order of the three layouts) gives back every bit."""
    assume(norm == "none" or 2 * c + extra != 4 * c)  # O == 4C is ambiguous: raises, tested below
    sd = _merge_sd(c, 2 * c + extra, norm, seed)
    start = [lay for lay in path if lay == "swin"] + [lay for lay in path if lay != "swin"]
    cur = sd
    for a, b in zip(start, [*start[1:], "swin"], strict=True):
        cur = convert_state_dict(cur, a, b)
    assert list(cur) == list(sd)
    for k in sd:
        assert torch.equal(cur[k], sd[k]), k


def test_unfold_matches_mmseg_and_post_norm_is_kept() -> None:
    """The reduction weight and 4C pre-norm follow mmseg's formula; a post norm is kept."""
    sd = _merge_sd(5, 10, "pre", 0)
    out = convert_state_dict(sd, "swin", "unfold")
    w = sd["layers.0.downsample.reduction.weight"]
    mmseg = w.reshape(10, 4, 5)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(10, 20)
    assert torch.equal(out["layers.0.downsample.reduction.weight"], mmseg)
    nw = sd["layers.0.downsample.norm.weight"]
    assert torch.equal(
        out["layers.0.downsample.norm.weight"],
        nw.reshape(4, 5)[[0, 2, 1, 3], :].transpose(0, 1).reshape(20),
    )
    post = _merge_sd(5, 10, "post", 0)
    conv = convert_state_dict(post, "swin", "unfold")
    assert conv["layers.0.downsample.norm.weight"] is post["layers.0.downsample.norm.weight"]
    assert conv["layers.0.blocks.0.attn.qkv.weight"] is post["layers.0.blocks.0.attn.qkv.weight"]


def test_ambiguous_norm_and_bad_layout_raise() -> None:
    """O == 4C makes pre and post norms indistinguishable: raise; unknown layouts are named."""
    sd = _merge_sd(2, 8, "pre", 0)
    with pytest.raises(ValueError, match="look the same"):
        convert_state_dict(sd, "swin", "unfold")
    with pytest.raises(ValueError, match="dst must be one of"):
        convert_state_dict(sd, "swin", "mmseg")
    with pytest.raises(TypeError, match="state dict"):
        convert_state_dict([1, 2], "swin", "unfold")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("swin_t", ["features.2.", "features.4.", "features.6."]), ("swin_v2_t", None)],
)
def test_merge_prefixes_of_real_models(name: str, expected: list[str] | None) -> None:
    """torchvision's swin_t / swin_v2_t key names: exactly the three merges are found."""
    sd = getattr(tv, name)().state_dict()
    found = merge_prefixes(sd)
    assert found == (expected or ["features.2.", "features.4.", "features.6."])
    out = convert_state_dict(sd, "swin", "unfold")
    changed = {k for k in sd if not torch.equal(sd[k], out[k])}
    # v1: reduction weight + 4C norm weight (LN init g=1, b=0: b permutes to itself)
    assert {k.rsplit(".", 2)[0] + "." for k in changed} == set(found)


def _swin_merge(c: int, seed: int) -> PatchMerging:
    m = PatchMerging(c, impl="slice")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) + (1 if p.dim() == 1 else 0))
    return m


def test_converted_checkpoint_in_unfold_module_reproduces_swin() -> None:
    """convert_state_dict(swin -> unfold) loaded into an Unfold-ordered merge gives the
    Swin merge's outputs (float64: both round at ~1e-15; a layout error is O(1))."""
    tvm = tv.swin_transformer.PatchMerging(12)
    src = _swin_merge(12, 0)
    tvm.load_state_dict(src.state_dict())
    unf = UnfoldPatchMerging(12)
    unf.load_state_dict(convert_state_dict(tvm.state_dict(), "swin", "unfold"))
    x = torch.randn(2, 7, 10, 12, dtype=torch.float64)
    torch.testing.assert_close(unf.double()(x), tvm.double()(x), rtol=1e-10, atol=1e-10)
    # the mmseg #2350 failure: the unconverted checkpoint loads strictly and is wrong
    bad = UnfoldPatchMerging(12).double()
    bad.load_state_dict(tvm.state_dict())
    assert (bad(x) - tvm(x)).abs().max() > 0.1


def test_check_flags_unconverted_load_against_reference() -> None:
    """With the source merge as reference, an unconverted load is named; a converted one passes."""
    src = tv.swin_transformer.PatchMerging(12)
    src.load_state_dict(_swin_merge(12, 1).state_dict())
    bad = UnfoldPatchMerging(12)
    bad.load_state_dict(src.state_dict())  # strict load: passes silently
    with pytest.raises(LayoutMismatchError, match="swin layout, loaded without conversion"):
        check_merge_layout(bad, reference=src)
    good = UnfoldPatchMerging(12)
    good.load_state_dict(convert_state_dict(src.state_dict(), "swin", "unfold"))
    assert check_merge_layout(good, reference=src).verdict == "ok"
    other = UnfoldPatchMerging(12)  # unrelated weights: a mismatch, but not a layout one
    with pytest.raises(LayoutMismatchError, match="not the reference's in either layout"):
        check_merge_layout(other, reference=src)


def _channel_structured(c: int, o: int, seed: int) -> dict[str, torch.Tensor]:
    """Swin-layout weights with trained-like per-input-channel structure (synthetic).

    Input channel c has its own scale s_c (log-normal, as activations' channel scales
    are), shared by its 4 window positions; the rest is i.i.d. noise.
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(c, generator=g).exp()
    w = torch.randn(o, 4, c, generator=g) * s
    gain = 1 + 0.5 * torch.randn(c, generator=g)
    nw = gain.repeat(4) + 0.05 * torch.randn(4 * c, generator=g)
    return {
        "norm.weight": nw,
        "norm.bias": torch.zeros(4 * c),
        "reduction.weight": w.reshape(o, -1),
    }


@pytest.mark.parametrize("c", [24, 96])
def test_check_statistics_flag_unconverted_load(c: int) -> None:
    """Without a reference, channel-structured swin weights in an Unfold merge are flagged,
    their converted form passes, and the same holds the other way round."""
    sd = _channel_structured(c, 2 * c, 0)
    bad = UnfoldPatchMerging(c)
    bad.load_state_dict(sd)
    with pytest.raises(LayoutMismatchError, match="unconverted swin checkpoint"):
        check_merge_layout(bad)
    good = UnfoldPatchMerging(c)
    good.load_state_dict(convert_state_dict(sd, "swin", "unfold"))
    assert check_merge_layout(good).verdict == "ok"
    swin = PatchMerging(c)
    swin.load_state_dict(sd)
    assert check_merge_layout(swin).verdict == "ok"
    swin.load_state_dict(convert_state_dict(sd, "swin", "unfold"))
    with pytest.raises(LayoutMismatchError, match="unfold-layout"):
        check_merge_layout(swin)


@pytest.mark.parametrize("seed", range(5))
def test_check_statistics_undetermined_on_fresh_weights(seed: int) -> None:
    """Fresh i.i.d. weights carry no layout: the check says so instead of guessing."""
    torch.manual_seed(seed)
    m = UnfoldPatchMerging(96)
    assert isinstance(m.norm, nn.LayerNorm)
    nn.init.normal_(m.norm.weight)
    assert check_merge_layout(m).verdict == "undetermined"
    assert (
        check_merge_layout(copy.deepcopy(from_module(tv.swin_transformer.PatchMerging(96)))).verdict
        == "undetermined"
    )
    assert check_merge_layout(UnfoldPatchMerging(4)).verdict == "undetermined"


def test_unfold_module_from_swin_and_errors() -> None:
    """UnfoldPatchMerging.from_swin reproduces the source; bad arguments are named."""
    src = _swin_merge(6, 3).double()
    unf = UnfoldPatchMerging.from_swin(src)
    assert torch.equal(unf.reduction.weight, swin_to_unfold(src.reduction.weight))
    x = torch.randn(1, 5, 3, 6, dtype=torch.float64)
    torch.testing.assert_close(unf(x), src(x), rtol=1e-10, atol=1e-10)
    flat = unf(x.flatten(1, 2), (5, 3))
    torch.testing.assert_close(flat, src(x).flatten(1, 2), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="norm='pre' or 'none'"):
        UnfoldPatchMerging(4, norm="post")
    with pytest.raises(ValueError, match="x has C=5 channels but this merge has dim=6"):
        unf(torch.randn(1, 4, 4, 5, dtype=torch.float64))
