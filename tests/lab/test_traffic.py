"""Byte accounting: structural facts about where each implementation's bytes go.

Facts are stated as ratios to the analytic minimum and as op names, never as byte
literals, so they hold on any torch version that keeps the ops' semantics. Counting
runs on the meta device: it needs shapes, not data.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pm_core import IMPLS, Norm, patch_merge
from pm_core.lab.traffic import COPY_OPS, distinct_bytes, measure_traffic, minimum_traffic
from pm_core.layouts import conv_view

SHAPE = (2, 8, 6, 4)  # B, H, W, C: small and non-square; bytes scale exactly with size
#: ``(x, weight, norm_weight, norm_bias)``
Args = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def _args(norm: Norm, device: str = "meta", dtype: torch.dtype = torch.float32) -> Args:
    b, h, w, c = SHAPE
    x = torch.empty(b, h, w, c, device=device, dtype=dtype)
    weight = torch.empty(2 * c, 4 * c, device=device, dtype=dtype)
    n = 4 * c if norm == "pre" else 2 * c
    nw = None if norm == "none" else torch.empty(n, device=device, dtype=dtype)
    nb = None if norm == "none" else torch.empty(n, device=device, dtype=dtype)
    return x, weight, nw, nb


def test_views_cost_zero() -> None:
    """view, permute, slicing, expand, as_strided and transpose move no bytes."""
    x = torch.empty(4, 6, 8, device="meta")

    def views(t: torch.Tensor) -> torch.Tensor:
        v = t.view(4, 48).t().reshape(48, 4)[::2]
        return v.unsqueeze(0).expand(3, -1, -1).as_strided((2, 2), (1, 1)).permute(1, 0)

    t = measure_traffic(views, x)
    assert t.total == 0, f"views moved {t.total} bytes: {t.by_op()}"


def test_expanded_input_counts_distinct_elements() -> None:
    """An expanded (stride-0) operand is read once, not once per broadcast copy."""
    a = torch.empty(1, 64, device="meta").expand(32, 64)
    assert distinct_bytes(a) == 64 * 4
    b = torch.empty(32, 64, device="meta")
    t = measure_traffic(torch.add, b, a)
    assert t.read == distinct_bytes(b) + 64 * 4
    assert t.written == distinct_bytes(b)


@pytest.mark.parametrize("norm", ["none", "post"])
def test_channels_last_conv_reads_x_once_without_copy(norm: Norm) -> None:
    """The conv path on the channels-last view copies nothing; for norm="none" it moves
    exactly the minimum, and for "post" the only extra is the LayerNorm's own pass."""
    args = _args(norm)
    t = measure_traffic(patch_merge, *args, norm=norm, impl="conv")
    assert not t.copies(), f"conv/{norm} made copies: {t.copies()}"
    assert t.ops().count("convolution") == 1
    conv = next(e for e in t.events if e.op == "convolution")
    # the convolution alone is the whole minimum of the un-normalised merge
    assert conv.total == minimum_traffic(*_args("none"), norm="none")
    if norm == "none":
        assert t.ratio == 1.0
    else:
        y_bytes = conv.written
        extra = t.total - conv.total
        # LN reads y (+ its params) and writes y (+ two per-row stats)
        assert y_bytes * 2 <= extra < y_bytes * 3, t.by_op()


@pytest.mark.parametrize("impl", ["slice", "reshape"])
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_slice_and_reshape_pay_one_full_copy_of_x(impl: str, norm: Norm) -> None:
    """slice (cat) and reshape (clone) each write exactly one x-sized copy in forward."""
    args = _args(norm)
    t = measure_traffic(patch_merge, *args, norm=norm, impl=impl)
    copies = t.copies("forward")
    assert len(copies) == 1, f"{impl}/{norm} copies: {copies}"
    assert copies[0].op == ("cat" if impl == "slice" else "clone")
    assert copies[0].written == distinct_bytes(args[0])
    assert t.ratio is not None
    assert t.ratio > 1.5


def test_contiguous_nchw_conv_pays_one_copy_of_x() -> None:
    """Calling .contiguous() on the NCHW view before the conv costs one full copy of x."""
    x, weight, _, _ = _args("none")

    def nchw_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.permute(0, 3, 1, 2).contiguous(), conv_view(w, x.shape[-1]), stride=2)
        return y.permute(0, 2, 3, 1)

    t = measure_traffic(nchw_conv, x, weight)
    copies = t.copies()
    assert [e.op for e in copies] == ["clone"]
    assert copies[0].written == distinct_bytes(x)
    assert t.total == minimum_traffic(x, weight, norm="none") + 2 * distinct_bytes(x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_every_impl_is_at_least_the_minimum(impl: str, norm: Norm) -> None:
    """No impl moves less than the analytic minimum, forward or forward+backward."""
    args = _args(norm)
    for backward in (False, True):
        t = measure_traffic(patch_merge, *args, norm=norm, impl=impl, backward=backward)
        assert t.minimum == minimum_traffic(*args, norm=norm, backward=backward)
        assert t.ratio is not None
        assert t.ratio >= 1.0, (impl, norm, backward, t.by_op())
        assert t.forward_total + t.backward_total == t.total
        assert (t.backward_total > 0) == backward


def test_backward_minimum_counts_grad_reads_and_writes() -> None:
    """fwd+bwd minimum = forward + (read grad_y, x, params; write grad_x, grad params)."""
    x, w, nw, nb = _args("pre")
    assert nw is not None
    assert nb is not None
    fwd = minimum_traffic(x, w, nw, nb, norm="pre")
    both = minimum_traffic(x, w, nw, nb, norm="pre", backward=True)
    params = distinct_bytes(w) + distinct_bytes(nw) + distinct_bytes(nb)
    y = fwd - distinct_bytes(x) - params
    assert both - fwd == y + 2 * distinct_bytes(x) + 2 * params


def _cpu_args(norm: Norm) -> tuple[torch.Tensor | None, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(None if t is None else torch.randn(t.shape, generator=gen) for t in _args(norm))


def test_counts_are_deterministic() -> None:
    """Two runs of the same call give the same per-op table."""
    a, b = (
        measure_traffic(patch_merge, *_cpu_args("pre"), norm="pre", impl="conv", backward=True)
        for _ in range(2)
    )
    assert a.events == b.events


@pytest.mark.parametrize("impl", ["slice", "reshape"])
def test_counts_match_between_meta_and_cpu(impl: str) -> None:
    """Counting needs no data: where kernels choose the same output layouts on meta and
    cpu, the tables are equal (conv kernels may pick other layouts, so count those on
    the device you run)."""
    meta = measure_traffic(patch_merge, *_args("pre"), norm="pre", impl=impl, backward=True)
    cpu = measure_traffic(patch_merge, *_cpu_args("pre"), norm="pre", impl=impl, backward=True)
    assert meta.by_op() == cpu.by_op()


def test_copy_ops_are_named() -> None:
    """The copy-op set names the ops the issue is about."""
    assert {"cat", "clone", "copy_", "im2col", "pixel_unshuffle"} <= COPY_OPS
