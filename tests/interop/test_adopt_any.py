"""Adoption by behaviour: merges no table lists, found by structure and confirmed by probing.

The merges here are written out from the structure of the public code research repos
vendor (Microsoft Swin v1 and v2, Swin for detection, Video Swin, a fork with another
channel order), plus a look-alike that is not a merge. Each adopted replacement must
be a drop-in: same call, same return shape, the same Parameters under the same keys,
and the same function within the float64 bound.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pm_core
from pm_core.adopt_any import NotAMerge, ProbedMerge, adopt_by_behaviour, probe


class MsSwinV1Merge(nn.Module):
    """Microsoft Swin v1: (B, H*W, C) with the resolution on the module; asserts even sizes."""

    def __init__(self, input_resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.input_resolution
        b, length, c = x.shape
        assert length == h * w, "input feature has wrong size"
        assert h % 2 == 0, f"x size ({h}*{w}) are not even."
        assert w % 2 == 0, f"x size ({h}*{w}) are not even."
        x = x.view(b, h, w, c)
        parts = [x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]]
        x = torch.cat(parts, -1).view(b, -1, 4 * c)
        y: Tensor = self.reduction(self.norm(x))
        return y


class MsSwinV2Merge(MsSwinV1Merge):
    """Microsoft Swin v2: the same gather, the Linear first, then LayerNorm(2C)."""

    def __init__(self, input_resolution: tuple[int, int], dim: int) -> None:
        super().__init__(input_resolution, dim)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.input_resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        parts = [x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]]
        y: Tensor = self.norm(self.reduction(torch.cat(parts, -1).view(b, -1, 4 * c)))
        return y


class DetectionMerge(nn.Module):
    """Swin for detection / segmentation: forward(x, H, W); odd sizes zero-padded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 == 1 or w % 2 == 1:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]]
        x = torch.cat(parts, -1).view(b, -1, 4 * c)
        y: Tensor = self.reduction(self.norm(x))
        return y


class VideoSwinMerge(nn.Module):
    """Video Swin: (B, D, H, W, C), merging H and W only; odd sizes zero-padded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w, _ = x.shape
        if h % 2 == 1 or w % 2 == 1:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [
            x[:, :, 0::2, 0::2, :], x[:, :, 1::2, 0::2, :],
            x[:, :, 0::2, 1::2, :], x[:, :, 1::2, 1::2, :],
        ]  # fmt: skip
        y: Tensor = self.reduction(self.norm(torch.cat(parts, -1)))
        return y


class RowMajorForkMerge(nn.Module):
    """A fork that concatenates the window row by row, with its own submodule names."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(4 * dim, eps=1e-6)
        self.proj = nn.Linear(4 * dim, 3 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]]
        y: Tensor = self.proj(self.ln(torch.cat(parts, -1)))
        return y


class MmcvStyleMerge(nn.Module):
    """mmcv's PatchMerging (mmdet / mmseg Swin): nn.Unfold after corner padding, channel-major
    vectors, forward(x, (H, W)) returning (y, output_size)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.sampler = nn.Unfold(kernel_size=2, dilation=1, padding=0, stride=2)
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = input_size
        x = x.view(b, h, w, c).permute([0, 3, 1, 2])
        x = F.pad(x, [0, w % 2, 0, h % 2])  # "corner" adaptive padding
        x = self.sampler(x).transpose(1, 2)  # (B, H'W', 4C), channel-major
        out_size = ((h + h % 2) // 2, (w + w % 2) // 2)
        return self.reduction(self.norm(x)), out_size


class LookAlike(nn.Module):
    """LayerNorm and a bias-free Linear on every token: a merge's parts, no merge."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.reduction(self.norm(x))
        return y


class DuplicatingMerge(RowMajorForkMerge):
    """Reads offset (0, 0) twice and (1, 1) never: a merge pm_core cannot compute."""

    def forward(self, x: Tensor) -> Tensor:
        parts = [x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 0::2, 0::2]]
        y: Tensor = self.proj(self.ln(torch.cat(parts, -1)))
        return y


def _randomise(m: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    return m.double()


CASES: dict[str, tuple[Any, tuple[int, ...], Any]] = {
    # name: (module, input shape, how it is called)
    "ms-swin-v1": (lambda: MsSwinV1Merge((4, 6), 3), (2, 24, 3), lambda m, x: m(x)),
    "resolution-as-list": (lambda: MsSwinV1Merge([4, 6], 3), (2, 24, 3), lambda m, x: m(x)),  # type: ignore[arg-type]
    "ms-swin-v2": (lambda: MsSwinV2Merge((4, 6), 3), (2, 24, 3), lambda m, x: m(x)),
    "detection": (lambda: DetectionMerge(3), (2, 15, 3), lambda m, x: m(x, 3, 5)),
    "video-swin": (lambda: VideoSwinMerge(3), (2, 2, 3, 5, 3), lambda m, x: m(x)),
    "row-major-fork": (lambda: RowMajorForkMerge(3), (2, 4, 6, 3), lambda m, x: m(x)),
    "mmcv": (lambda: MmcvStyleMerge(3, 6), (2, 15, 3), lambda m, x: m(x, (3, 5))),
}
EXPECT = {  # convention, window kernel, layout, norm, odd policy
    "ms-swin-v1": ("tokens@resolution", (2, 2), "swin", "pre", "error"),
    "resolution-as-list": ("tokens@resolution", (2, 2), "swin", "pre", "error"),
    "ms-swin-v2": ("tokens@resolution", (2, 2), "swin", "post", "error"),
    "detection": ("tokens+h+w", (2, 2), "swin", "pre", "pad"),
    "video-swin": ("bdhwc", (1, 2, 2), None, "pre", "pad"),
    "row-major-fork": ("bhwc", (2, 2), "row-major", "pre", "error"),
    "mmcv": ("tokens+hw", (2, 2), "unfold", "pre", "pad"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_probing_reads_what_each_vendored_merge_computes(case: str) -> None:
    """Convention, window, gather order, norm placement and odd-size policy are read from
    behaviour alone."""
    make, _, _ = CASES[case]
    p = probe(make())
    conv, kernel, layout, norm, odd = EXPECT[case]
    assert (p.convention, p.window.kernel, p.norm, p.odd) == (conv, kernel, norm, odd)
    if layout is not None:
        assert p.layout.name == layout


@pytest.mark.parametrize("impl", ["gather", "conv"])
@pytest.mark.parametrize("case", list(CASES))
def test_an_adopted_merge_is_a_drop_in(case: str, impl: str) -> None:
    """The replacement takes the same call, returns the same shape and values (float64,
    within the oracle's bound, checked at adoption and here to 1e-9), and shares the
    source's Parameters under the same state_dict keys."""
    make, shape, call = CASES[case]
    src = _randomise(make())
    new = pm_core.from_module(src, impl=impl)
    assert isinstance(new, ProbedMerge)
    assert list(new.state_dict()) == list(src.state_dict())
    assert {id(p) for p in new.parameters()} == {id(p) for p in src.parameters()}
    x = torch.randn(shape, dtype=torch.float64) + 3.0
    got, want = call(new, x), call(src, x)
    assert type(got) is type(want)
    if isinstance(want, tuple):  # mmcv's (y, output_size)
        assert got[1] == want[1]
        got, want = got[0], want[0]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for attr in ("dim", "input_resolution"):
        if hasattr(src, attr):
            assert getattr(new, attr) == getattr(src, attr)


def test_swap_replaces_vendored_merges_and_leaves_look_alikes() -> None:
    """swap_patch_merging adopts the vendored merges inside a model, leaves a look-alike
    alone, and warns, naming the module and the reason, about a merge it cannot adopt."""
    model = nn.ModuleDict(
        {
            "down1": MsSwinV1Merge((4, 4), 2),
            "down2": DetectionMerge(4),
            "proj": LookAlike(2),
            "odd_one": DuplicatingMerge(2),
        }
    )
    with pytest.warns(pm_core.adopt.UnswappedMergeWarning, match=r"odd_one .*reads the offsets"):
        n = pm_core.swap_patch_merging(model)
    assert n == 2
    assert isinstance(model["down1"], ProbedMerge)
    assert isinstance(model["down2"], ProbedMerge)
    assert isinstance(model["proj"], LookAlike)
    assert isinstance(model["odd_one"], DuplicatingMerge)


def test_a_look_alike_and_a_duplicating_merge_are_refused_by_name() -> None:
    """from_module says why: not a merge at all, or a merge no pm_core merge computes."""
    with pytest.raises(NotAMerge, match="gathers no windows"):
        adopt_by_behaviour(LookAlike(2))
    with pytest.raises(pm_core.window_layouts.WindowOrderError, match="reads the offsets"):
        adopt_by_behaviour(DuplicatingMerge(2))
    with pytest.raises(NotAMerge, match="no merge by structure"):
        adopt_by_behaviour(nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2)))


def test_odd_policy_error_is_kept() -> None:
    """A source that asserts even sizes gives a replacement that raises on odd sizes."""
    new = pm_core.from_module(_randomise(MsSwinV1Merge((4, 6), 3)))
    new.input_resolution = (3, 6)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="needs even H and W"):
        new(torch.randn(1, 18, 3, dtype=torch.float64))
