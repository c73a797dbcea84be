"""Reduced-precision GEMMs emulated on the CPU: what a GPU's TF32 (or a bf16 fp32-math
mode) does to a float32 merge, without the GPU.

:class:`EmulatedGemms` is a dispatch mode. While it is active, every float32 GEMM op
(``mm``, ``addmm``, ``bmm``, ``convolution``, ``convolution_backward``; the set is
chosen by backend) rounds its float32 operands to TF32 or bfloat16, computes in
float64 (every product of two rounded operands is exact there, and the sum nearly so)
and rounds the result to float32: the model of a tensor-core GEMM that
:mod:`pm_core.bounds` bounds. Everything else, the impl's slicing, LayerNorm and
elementwise passes included, runs as it is. Float64 ops (the oracle, the bounds) are
untouched, so a whole check can run under the mode.

Two roundings of the operands: ``"rne"`` (round to nearest, ties to even) and ``"rz"``
(truncation: drop the low bits), since which one cuBLAS / cuDNN apply is not documented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from pm_core.lab.traffic import GEMM_OPS

#: float32 significand bits dropped by each format (23 stored: TF32 keeps 10, bf16 7)
DROPPED_BITS = {"tf32": 13, "bf16": 16}


def round_operand(t: Tensor, fmt: str, rounding: str = "rne") -> Tensor:
    """``t`` (float32) rounded to ``fmt`` ("tf32" or "bf16"), still stored as float32.

    ``"rne"`` rounds to nearest, ties to even; ``"rz"`` truncates toward zero. NaN and
    inf pass through; a finite value may round up to inf, as the hardware's would.
    """
    assert t.dtype == torch.float32, t.dtype
    drop = DROPPED_BITS[fmt]
    bits = t.contiguous().view(torch.int32)
    low = (1 << drop) - 1
    if rounding == "rne":
        bits = bits + (((bits >> drop) & 1) + (low >> 1))
    elif rounding != "rz":
        raise ValueError(f"rounding must be 'rne' or 'rz', got {rounding!r}")
    out = (bits & ~low).view(torch.float32).view(t.shape)
    return torch.where(torch.isfinite(t), out, t)


# torch leaves TorchDispatchMode's __init_subclass__ and __init__ unannotated
class EmulatedGemms(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Run float32 GEMMs of the chosen backends on operands rounded to ``fmt``.

    ``backends``: which GEMM ops to emulate, by :data:`pm_core.lab.traffic.GEMM_OPS`'s
    backend names (``"conv"``, ``"matmul"``); both by default. ``self.calls`` counts
    the ops emulated, so a test can assert the mode was not silently bypassed.
    """

    def __init__(
        self, fmt: str, rounding: str = "rne", backends: Sequence[str] = ("conv", "matmul")
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if fmt not in DROPPED_BITS:
            raise ValueError(f"fmt must be one of {tuple(DROPPED_BITS)}, got {fmt!r}")
        self.fmt, self.rounding, self.backends = fmt, rounding, tuple(backends)
        self.calls = 0

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        fp32 = [a for a in args if isinstance(a, Tensor) and a.dtype == torch.float32]
        if GEMM_OPS.get(name) not in self.backends or not fp32:
            return func(*args, **kwargs)
        self.calls += 1
        # addmm's first argument is the added term, not a GEMM operand
        operands = args[1:] if name in ("addmm", "baddbmm", "addmv") else args
        ids = {id(a) for a in operands if isinstance(a, Tensor)}

        def lift(a: Any) -> Any:
            if not isinstance(a, Tensor) or a.dtype != torch.float32:
                return a
            if id(a) in ids:
                a = round_operand(a, self.fmt, self.rounding)
            return a.double()

        out = func(*tree_map(lift, tuple(args)), **tree_map(lift, kwargs))
        return tree_map(lambda t: t.float() if isinstance(t, Tensor) else t, out)
