"""The GPU answer as a roofline **model, not a measurement**: predicted time per impl on
datasheet GPUs, from the deterministic byte and FLOP counts of every op.

On a GPU the GEMM of this layer is cheap next to the bytes it moves (an H200 does ~200
bf16 FLOP in the time it moves one byte, and a merge has ~4C/3 FLOP per byte of x and
y), so "slice+cat, permute+contiguous or conv?" becomes a question of bytes. The counts
come from :func:`pm_core.lab.traffic.measure_traffic`: the forward is counted on fake CUDA tensors
(the CUDA kernels' own output layouts, so the copies a GPU would make), the backward on
the meta device (the autograd engine cannot run fake CUDA tensors; ``tests/test_fake_cuda.py``).

Per op, ``max(bytes / bandwidth, flops / peak)``, with ``peak`` the datasheet's dense
rate for the precision that op's GEMM runs in under PyTorch's default flags
(:func:`pm_core.gemm_precision`: TF32 tensor cores for the conv forms' float32 GEMMs,
the CUDA-core float32 rate for the matmul forms'), summed over the ops. Kernel launch
overhead is listed apart (one launch per counted op, a lower bound). Nothing here has
run on a GPU; every figure below is cited and the predictions are labelled as a model
wherever they are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pm_core import NORMS, REGISTRY, Norm, gemm_precision, patch_merge

from .profiling import case_inputs
from .traffic import Traffic, measure_traffic, minimum_traffic

#: Exposed launch cost per kernel when launches are queued back to back: 3.8 us per
#: kernel launched in a stream against 2.9 us of kernel time, so ~0.9 us each (NVIDIA,
#: "Getting Started with CUDA Graphs", A. Gray, 2019, V100 and CUDA 10.1,
#: https://developer.nvidia.com/blog/cuda-graphs/). Eager PyTorch adds its own
#: host-side dispatch on top, which this leaves out.
LAUNCH_S = 0.9e-6
LAUNCH_SOURCE = "https://developer.nvidia.com/blog/cuda-graphs/"

T = 1e12


@dataclass(frozen=True)
class GPU:
    """Datasheet figures (dense, no sparsity): bytes/s and FLOP/s; ``tf32`` None = no TF32."""

    name: str
    bandwidth: float
    fp32: float
    tf32: float | None
    bf16: float
    fp16: float
    capability: str
    source: str
    note: str = ""

    def peak(self, mode: str) -> float:
        """The dense rate for a GEMM in ``mode`` (a :func:`pm_core.gemm_precision` value)."""
        if mode == "tf32":
            return self.tf32 if self.tf32 is not None else self.fp32
        if mode in ("bf16", "bfloat16"):
            return self.bf16
        if mode == "float16":
            return self.fp16
        return self.fp32  # "ieee" (CUDA cores); float64 is not modelled


GPUS: tuple[GPU, ...] = (
    GPU(
        "T4", 300e9, 8.1 * T, None, 65 * T, 65 * T, "7.5",
        "NVIDIA T4 datasheet: https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/"
        "tesla-t4/t4-tensor-core-datasheet-951643.pdf (300 GB/s; FP32 8.1 TFLOPS; mixed "
        "FP16/FP32 65 TFLOPS)",
        "Turing: no TF32 and no bf16 tensor cores; bf16 modelled at the FP16 tensor rate, "
        "a lower bound on its time",
    ),
    GPU(
        "L4", 300e9, 30.3 * T, 60 * T, 121 * T, 121 * T, "8.9",
        "NVIDIA L4 datasheet: https://resources.nvidia.com/en-us-l4/l4-datasheet (300 GB/s; "
        "FP32 30.3; TF32 120*, BF16 242*, FP16 242* TFLOPS, * = with sparsity, halved here)",
    ),
    GPU(
        "A10G", 600e9, 35 * T, 35 * T, 70 * T, 70 * T, "8.6",
        "NVIDIA A10G datasheet for AWS G5: https://d1.awsstatic.com/product-marketing/ec2/"
        "NVIDIA_AWS_A10G_DataSheet_FINAL_02_17_2022.pdf (600 GB/s; FP32 35; TF32 35; "
        "BF16/FP16 70 dense TFLOPS), as quoted by third parties: the PDF was not read here",
    ),
    GPU(
        "A100 80GB SXM", 2039e9, 19.5 * T, 156 * T, 312 * T, 312 * T, "8.0",
        "NVIDIA A100 datasheet: https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/"
        "a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (2,039 GB/s SXM; FP32 "
        "19.5; TF32 156; BF16 312; FP16 312 TFLOPS dense)",
    ),
    GPU(
        "H100 SXM", 3.35e12, 67 * T, 494.5 * T, 989.5 * T, 989.5 * T, "9.0",
        "NVIDIA H100 datasheet: https://resources.nvidia.com/en-us-tensor-core/"
        "nvidia-tensor-core-gpu-datasheet (3.35 TB/s; FP32 67; TF32 989*, BF16 1,979*, "
        "FP16 1,979* TFLOPS, * = with sparsity, halved here)",
    ),
    GPU(
        "H200", 4.8e12, 67 * T, 494.5 * T, 989.5 * T, 989.5 * T, "9.0",
        "NVIDIA H200 datasheet: https://nvdam.widen.net/s/nb5zzzsjdf/"
        "hpc-datasheet-sc23-h200-datasheet-3002446 (4.8 TB/s; FP32 67; TF32 989*, BF16 "
        "1,979*, FP16 1,979* TFLOPS, * = with sparsity, halved here)",
    ),
)  # fmt: skip

#: The merge inputs of Swin-T at 224, at a GPU batch of 64.
GPU_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (64, 56, 56, 96),
    (64, 28, 28, 192),
    (64, 14, 14, 384),
)


@dataclass(frozen=True)
class Prediction:
    """One modelled case. Times in seconds; ``launches`` kernels, ``launch_s`` apart."""

    gpu: str
    impl: str
    norm: str
    dtype: str
    mode: str
    shape: tuple[int, int, int, int]
    precision: str
    time_s: float
    bytes: int
    flops: int
    launches: int

    @property
    def launch_s(self) -> float:
        return self.launches * LAUNCH_S


def count(
    impl: str, norm: Norm, dtype: torch.dtype, shape: tuple[int, int, int, int], backward: bool
) -> Traffic:
    """The ops of one call as a GPU would run them: forward on fake CUDA tensors; with
    ``backward``, forward and backward on meta (fake CUDA cannot run backward)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    device = "meta" if backward else "cuda"
    with FakeTensorMode(allow_non_fake_inputs=True):
        args = case_inputs(shape, norm, dtype, device)
        return measure_traffic(patch_merge, *args, norm=norm, impl=impl, backward=backward)


def predict_time(traffic: Traffic, gpu: GPU, precision: str) -> float:
    """Sum over ops of ``max(bytes / bandwidth, flops / peak[precision])``."""
    return sum(
        max(e.total / gpu.bandwidth, e.flops / gpu.peak(precision) if e.flops else 0.0)
        for e in traffic.events
    )


def fused_minimum(
    norm: Norm, dtype: torch.dtype, shape: tuple[int, int, int, int], backward: bool, gpu: GPU,
    precision: str,
) -> float:  # fmt: skip
    """A single-pass kernel: read x and the parameters once, write y once (and the
    backward's minimum), at the GEMM's rate: ``max(min bytes / bandwidth, flops / peak)``."""
    b, h, w, c = shape
    x = torch.empty(shape, dtype=dtype, device="meta")
    weight = torch.empty(2 * c, 4 * c, dtype=dtype, device="meta")
    n = 4 * c if norm == "pre" else 2 * c
    nw = None if norm == "none" else torch.empty(n, dtype=dtype, device="meta")
    minimum = minimum_traffic(x, weight, nw, nw, norm=norm, backward=backward)
    flops = 2 * b * -(-h // 2) * -(-w // 2) * 4 * c * 2 * c * (3 if backward else 1)
    return max(minimum / gpu.bandwidth, flops / gpu.peak(precision))


def predict(
    gpus: Sequence[GPU] = GPUS,
    shapes: Sequence[tuple[int, int, int, int]] = GPU_STAGES,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    impls: Sequence[str] | None = None,
    norms: Sequence[Norm] = NORMS,
) -> list[Prediction]:
    """Predictions for every GPU x shape x dtype x fwd / fwd+bwd x norm x exact impl, each
    at the GEMM precision :func:`pm_core.gemm_precision` gives under the current flags."""
    names = impls or [n for n, s in REGISTRY.items() if len(s.exact_for) == len(NORMS)]
    out: list[Prediction] = []
    for shape in shapes:
        for dtype in dtypes:
            dt = str(dtype).removeprefix("torch.")
            for backward in (False, True):
                mode = "fwd+bwd" if backward else "fwd"
                for norm in norms:
                    for impl in names:
                        t = count(impl, norm, dtype, shape, backward)
                        flops = sum(e.flops for e in t.events)
                        prec = gemm_precision(impl, "cuda", dtype)
                        out.extend(
                            Prediction(
                                g.name,
                                impl,
                                norm,
                                dt,
                                mode,
                                shape,
                                prec,
                                predict_time(t, g, prec),
                                t.total,
                                flops,
                                len(t.events),
                            )
                            for g in gpus
                        )
    return out


__all__ = [
    "GPU",
    "GPUS",
    "GPU_STAGES",
    "LAUNCH_S",
    "Prediction",
    "count",
    "fused_minimum",
    "predict",
    "predict_time",
]
