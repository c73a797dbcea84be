"""The arithmetic an implementation's GEMMs run in, read from PyTorch's backend flags.

A float32 ``patch_merge`` is not always a float32 GEMM. PyTorch lets each backend round
float32 GEMM *inputs* to a shorter format and accumulate in float32:

* **CUDA** (Ampere, compute capability 8.0, and newer): cuDNN convolutions follow
  ``torch.backends.cudnn.conv.fp32_precision``, **"tf32" by default**; cuBLAS matmuls
  follow ``torch.backends.cuda.matmul.fp32_precision``, "ieee" by default (``"tf32"``
  after ``torch.set_float32_matmul_precision("high")``). So under the defaults the
  ``conv`` impl rounds to TF32 and ``slice`` does not: on a GPU they are not the same
  float32 function. With ``torch.backends.cudnn.enabled = False`` a CUDA convolution
  runs as im2col + cuBLAS and follows the matmul flag instead.
* **CPU**: oneDNN convolutions and matmuls follow ``torch.backends.mkldnn.conv`` /
  ``.matmul.fp32_precision`` (``"bf16"`` after ``set_float32_matmul_precision("medium")``).
  oneDNN treats the request as permission, not an order: it may round to bf16 only on a
  CPU with bf16 arithmetic (``avx512_bf16`` or AMX-BF16) and to TF32 only with
  AMX-FP16; elsewhere the GEMM stays IEEE (on a CPU without bf16 units the flag
  changes no bit of the output, which ``tests/test_precision.py`` checks).
  Having the units is not a promise that they are used: oneDNN may keep a conv
  bit-identical under the flag and move a matmul to another float32 kernel. So on such
  a CPU ``"bf16"`` is what the GEMMs are *allowed* to do, and the bound built on it
  holds either way; calling it IEEE would make the bound too tight wherever oneDNN
  does round.

Which flag wins. The legacy switches (``torch.backends.cudnn.allow_tf32``,
``torch.backends.cuda.matmul.allow_tf32``) write the same per-backend, per-op settings
that ``fp32_precision`` exposes, so the last assignment wins; an op left at ``"none"``
inherits from its backend's ``fp32_precision``, then from
``torch.backends.fp32_precision`` (ATen ``Context::float32Precision``). The
``fp32_precision`` getters return that resolved value, which is what the kernels read;
the legacy getters raise once the two APIs were mixed, so nothing here reads them.

:func:`~pm_core.gemm_precision` needs no GPU: it reads flags (and, for a CUDA device that is
present, its compute capability; for the CPU, its instruction set).
"""

from __future__ import annotations

from typing import Literal, cast, get_args

import torch

from ._checks import FLOAT_DTYPES
from .impls import _cpu_half_units, get_impl

#: Float32 GEMM modes: exact IEEE float32 products, or inputs rounded to TF32 / bfloat16
#: with float32 accumulation. Other dtypes report their own name ("float64", "bfloat16",
#: "float16").
Fp32Mode = Literal["ieee", "tf32", "bf16"]
FP32_MODES: tuple[Fp32Mode, ...] = get_args(Fp32Mode)

#: Unit roundoff of the rounded GEMM inputs, one full ulp of the format: round to
#: nearest gives half an ulp, but NVIDIA does not document whether cuBLAS / cuDNN round
#: or truncate float32 operands to TF32, and truncation loses up to one ulp. One ulp
#: holds either way (see :mod:`pm_core.bounds`).
INPUT_ROUNDOFF: dict[str, float] = {"ieee": 0.0, "tf32": 2.0**-10, "bf16": 2.0**-7}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _cuda_has_tf32(device: torch.device) -> bool:
    """TF32 tensor cores exist from compute capability 8.0; without a GPU, assume they do."""
    if not torch.cuda.is_available():
        return True
    index: int | None = device.index  # None for a bare 'cuda'
    if index is None:
        index = torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def _flag(module: object, op: str) -> str:
    """``<module>.<op>.fp32_precision``: the resolved setting the kernels read."""
    return str(getattr(module, op).fp32_precision)


def _cuda_mode(backend: str, device: torch.device) -> Fp32Mode:
    cudnn = torch.backends.cudnn
    if backend == "conv" and cudnn.enabled and cudnn.is_available():  # type: ignore[no-untyped-call]
        flag = _flag(cudnn, "conv")
    else:  # cuBLAS: matmuls, and convolutions when cuDNN is off
        flag = _flag(torch.backends.cuda, "matmul")
    return "tf32" if flag == "tf32" and _cuda_has_tf32(device) else "ieee"


def _cpu_mode(backend: str) -> Fp32Mode:
    mk = torch.backends.mkldnn
    enabled = cast(bool, mk.enabled)  # a module property; its stub says ContextProp
    if not (enabled and mk.is_available()):  # type: ignore[no-untyped-call]
        return "ieee"
    flag = _flag(mk, "conv" if backend == "conv" else "matmul")
    # oneDNN rounds float32 GEMM inputs to bf16 with bf16 units, and to TF32 with AMX-FP16
    if flag == "bf16" and _cpu_half_units(torch.bfloat16, unknown=True):
        return "bf16"
    if flag == "tf32" and _cpu_half_units(torch.float16, unknown=True):
        return "tf32"
    return "ieee"


def gemm_precision(impl: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The input precision of ``impl``'s GEMMs on ``device`` under the flags in force now.

    Returns ``"ieee"``, ``"tf32"`` or ``"bf16"`` for ``torch.float32`` (see the module
    docstring), and the dtype's own name (``"float64"``, ``"bfloat16"``, ``"float16"``)
    for the others. Pass it to :func:`pm_core.error_bounds` as ``gemm_precision``.
    Devices other than CUDA and the CPU (``meta``, ``mps``) report ``"ieee"``.

    >>> import torch
    >>> gemm_precision("conv", torch.device("cuda"), torch.float32)  # doctest: +SKIP
    'tf32'
    >>> gemm_precision("slice", "cpu", torch.bfloat16)
    'bfloat16'
    """
    spec = get_impl(impl)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    if dtype != torch.float32:
        return _dtype_name(dtype)
    dev = torch.device(device)
    if dev.type == "cuda":
        return _cuda_mode(spec.gemm, dev)
    if dev.type == "cpu":
        return _cpu_mode(spec.gemm)
    return "ieee"


def gemm_accumulation(impl: str, device: torch.device | str, dtype: torch.dtype) -> torch.dtype:
    """The dtype ``impl``'s GEMM sums accumulate in on ``device`` under the flags in force.

    PyTorch's "opmath" type (float32 for float16 / bfloat16, else the dtype), except for
    cuBLAS half GEMMs that may reduce in the dtype itself
    (``torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction``,
    ``allow_bf16_reduced_precision_reduction``, both on by default, and
    ``allow_fp16_accumulation``). Those flags are cuBLAS's; ATen's cuDNN descriptors
    ask for float32 math on half convolutions (read in the source, not measured here),
    so for the conv impls this may be a dtype too pessimistic. Every impl is judged by
    the cuBLAS flags all the same: a bound too loose, never too tight, until a GPU run
    shows otherwise. Pass it to :func:`pm_core.error_bounds` as ``accumulate``.
    """
    get_impl(impl)
    opmath = torch.promote_types(dtype, torch.float32)
    if torch.device(device).type != "cuda":
        return opmath
    m = torch.backends.cuda.matmul
    if dtype == torch.float16 and (
        m.allow_fp16_reduced_precision_reduction or m.allow_fp16_accumulation
    ):
        return dtype
    if dtype == torch.bfloat16 and m.allow_bf16_reduced_precision_reduction:
        return dtype
    return opmath


__all__ = ["FP32_MODES", "INPUT_ROUNDOFF", "Fp32Mode", "gemm_accumulation", "gemm_precision"]
