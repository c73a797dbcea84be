"""This machine's roofline: peak copy bandwidth and GEMM throughput per dtype, cached on disk.

A kernel that moves ``bytes`` and does ``flops`` cannot finish faster than
``max(bytes / bandwidth, flops / peak)``. :func:`roofline_time` gives that bound and
:func:`roofline_fraction` how close a measured time comes to it (1.0 = at the roof).

* **Bandwidth** is a large ``copy_`` (read + write bytes per second): what an
  elementwise pass or a layout copy can reach.
* **GEMM peak** is the best rate over every backend torch offers on the device, not
  the first one measured: MKL/cuBLAS ``matmul`` and oneDNN/cuDNN ``conv2d`` (a k=2 s=2
  conv on a channels-last input, the patch-merge shape), each at a few sizes. On CPU
  they differ markedly, so taking the first would misplace the roof.

Measurements are cached in ``profiles/.cache/roofline.json`` keyed by machine, torch
version and device, so a benchmark run measures once.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_CACHE = Path("profiles/.cache/roofline.json")


@dataclass(frozen=True)
class Roofline:
    """Peak rates of one device: bytes/s for copies, FLOP/s per dtype (best backend named)."""

    device: str
    bandwidth: float
    peak_flops: dict[str, float]
    best_backend: dict[str, str]
    per_backend: dict[str, dict[str, float]]

    def time(self, nbytes: float, flops: float, dtype: torch.dtype) -> float:
        """Roofline time in seconds: ``max(bytes / bandwidth, flops / peak[dtype])``."""
        return roofline_time(nbytes, flops, self.bandwidth, self.peak_flops[_name(dtype)])


def roofline_time(nbytes: float, flops: float, bandwidth: float, peak: float) -> float:
    return max(nbytes / bandwidth, flops / peak)


def roofline_fraction(measured_s: float, roof_s: float) -> float:
    """``roof_s / measured_s``: 1.0 at the roofline, 0.5 at twice its time."""
    return roof_s / measured_s if measured_s > 0 else float("nan")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn: Callable[[], object], device: torch.device, min_time: float) -> float:
    """Best of repeated calls (after one warm-up) over at least ``min_time`` seconds."""
    fn()
    _sync(device)
    best = float("inf")
    start = time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - start < min_time:
        if device.type == "cuda":
            t0 = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            t1 = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            t0.record()
            fn()
            t1.record()
            t1.synchronize()
            dt = t0.elapsed_time(t1) / 1e3
        else:
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
        best = min(best, dt)
        reps += 1
    return best


def measure_bandwidth(
    device: torch.device, *, nbytes: int = 1 << 27, min_time: float = 0.3
) -> float:
    """Bytes/s (read + written) of a large ``copy_``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return 2 * nbytes / _best_time(lambda: dst.copy_(src), device, min_time)


def measure_gemm(
    device: torch.device, dtype: torch.dtype, *, min_time: float = 0.3
) -> dict[str, float]:
    """FLOP/s of each GEMM backend on patch-merge-like shapes: ``{"matmul": ..., "conv2d": ...}``."""
    rates: dict[str, float] = {}
    # (M, K, N): a merge at Swin-T stage 1 / 2 as a GEMM, and a square one
    for m, k, n in ((6272, 384, 192), (1568, 768, 384), (2048, 2048, 2048)):
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        t = _best_time(partial(torch.matmul, a, b), device, min_time)
        rates["matmul"] = max(rates.get("matmul", 0.0), 2 * m * k * n / t)
    for batch, hw, c in ((8, 56, 96), (8, 28, 192)):
        x = torch.randn(batch, hw, hw, c, device=device).to(dtype).permute(0, 3, 1, 2)
        w = torch.randn(2 * c, c, 2, 2, device=device).to(dtype)
        t = _best_time(partial(F.conv2d, x, w, stride=2), device, min_time)
        flops = 2 * batch * (hw // 2) ** 2 * 4 * c * 2 * c
        rates["conv2d"] = max(rates.get("conv2d", 0.0), flops / t)
    return rates


def _dtypes(device: torch.device) -> tuple[torch.dtype, ...]:
    if device.type == "cuda":
        return (torch.float32, torch.bfloat16, torch.float16)
    return (torch.float32, torch.bfloat16)


def _key(device: torch.device) -> str:
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return f"{platform.node()}|{name}|{os.cpu_count()}cpu|torch {torch.__version__}|{device.type}|{torch.get_num_threads()}threads"


def measure_roofline(device: torch.device | str = "cpu", *, min_time: float = 0.3) -> Roofline:
    """Measure bandwidth and the per-dtype GEMM peak over all backends (no cache)."""
    device = torch.device(device)
    per_backend = {_name(dt): measure_gemm(device, dt, min_time=min_time) for dt in _dtypes(device)}
    peak = {d: max(r.values()) for d, r in per_backend.items()}
    best = {d: max(r, key=r.__getitem__) for d, r in per_backend.items()}
    bw = measure_bandwidth(device, min_time=min_time)
    return Roofline(str(device.type), bw, peak, best, per_backend)


def get_roofline(
    device: torch.device | str = "cpu", *, cache: Path | None = DEFAULT_CACHE, refresh: bool = False
) -> Roofline:
    """The cached :class:`Roofline` for this machine, torch version and device (measured once)."""
    device = torch.device(device)
    key = _key(device)
    data: dict[str, dict[str, object]] = {}
    if cache is not None and cache.exists():
        try:
            data = json.loads(cache.read_text())
        except (OSError, ValueError):
            data = {}
    if not refresh and key in data:
        entry = data[key]
        return Roofline(**entry)  # type: ignore[arg-type]
    roof = measure_roofline(device)
    if cache is not None:
        data[key] = asdict(roof)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(cache)
    return roof


def merge_flops(b: int, h: int, w: int, c: int, out: int, *, backward: bool = False) -> int:
    """GEMM FLOPs of one merge on ``(B, H, W, C)`` -> ``(B, H', W', out)``; x3 with backward."""
    windows = b * -(-h // 2) * -(-w // 2)
    f = 2 * windows * 4 * c * out
    return 3 * f if backward else f


__all__ = [
    "Roofline",
    "get_roofline",
    "measure_bandwidth",
    "measure_gemm",
    "measure_roofline",
    "merge_flops",
    "roofline_fraction",
    "roofline_time",
]
