"""The GPU roofline model is built from the counts it claims and answers from its inputs."""

from __future__ import annotations

import torch

from pm_core.lab import gpu_model as gm
from pm_core.testing import as_norm


def test_prediction_is_the_sum_of_per_op_roofline_times() -> None:
    """A modelled time is ``sum(max(bytes / bandwidth, flops / peak))`` of the counted ops,
    never below the fused single-pass minimum, and the conv form's GEMM is modelled at
    TF32 and the slice form's at IEEE under the default flags."""
    shape = (4, 14, 14, 32)
    preds = gm.predict(shapes=[shape], dtypes=[torch.float32], impls=["conv", "slice"])
    assert {p.precision for p in preds if p.impl == "conv"} == {"tf32"}
    assert {p.precision for p in preds if p.impl == "slice"} == {"ieee"}
    h100 = next(g for g in gm.GPUS if g.name == "H100 SXM")
    for p in preds:
        if p.gpu != h100.name:
            continue
        norm = as_norm(p.norm)
        t = gm.count(p.impl, norm, torch.float32, shape, p.mode == "fwd+bwd")
        want = sum(
            max(e.total / h100.bandwidth, e.flops / h100.peak(p.precision)) for e in t.events
        )
        assert abs(p.time_s - want) <= 1e-12 * want
        fused = gm.fused_minimum(norm, torch.float32, shape, p.mode == "fwd+bwd", h100, p.precision)
        assert p.time_s >= fused * (1 - 1e-9)
        assert p.launches == len(t.events) >= 1


def test_every_gpu_cites_its_figures() -> None:
    """Each GPU's figures name the datasheet they come from; T4 has no TF32."""
    for g in gm.GPUS:
        assert "http" in g.source, g.name
        assert g.bandwidth > 0
        assert g.fp32 > 0
        assert g.bf16 > g.fp32
    t4 = next(g for g in gm.GPUS if g.name == "T4")
    assert t4.tf32 is None
    assert t4.peak("tf32") == t4.fp32
