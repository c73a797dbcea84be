"""``pm_core.gemm_precision`` reads the backend flags the kernels read, and the bound
follows it: on a GPU under PyTorch's defaults the conv impl's float32 GEMM is TF32 and
the matmul impls' is IEEE. No GPU is needed: the flags are process state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import pm_core
from pm_core import Norm
from pm_core.precision import FP32_MODES
from pm_core.testing import EPS

CUDA = torch.device("cuda")
# torch replaces these two modules by objects whose classes carry the per-op settings
# (.conv, .matmul); mypy sees only the modules, which lack them.
CUDNN: Any = torch.backends.cudnn
MKLDNN: Any = torch.backends.mkldnn
CONV_IMPLS = [n for n, s in pm_core.REGISTRY.items() if s.gemm == "conv"]
MATMUL_IMPLS = [n for n, s in pm_core.REGISTRY.items() if s.gemm == "matmul"]
needs_no_gpu = pytest.mark.skipif(
    torch.cuda.is_available(), reason="a real GPU's capability may overrule the flags"
)


#: Every fp32 precision flag torch has: the generic one, each backend's, and each op's.
#: The legacy ``allow_tf32`` setters write several of them at once (``cudnn.allow_tf32``
#: sets cuDNN's conv *and* RNN flags), so restoring only the ones a test means to change
#: leaves them disagreeing, and a later ``torch.export`` refuses the mix.
_FLAGS = [
    ("", torch.backends),
    *((f"{m}.", getattr(torch.backends, m)) for m in ("cudnn", "mkldnn")),
    *(
        (f"{m}.{op}.", getattr(getattr(torch.backends, m), op))
        for m, ops in (
            ("cudnn", ("conv", "rnn")),
            ("mkldnn", ("conv", "rnn", "matmul")),
            ("cuda", ("matmul",)),
        )
        for op in ops
    ),
]


@pytest.fixture
def flags() -> Iterator[None]:
    """Restore every precision flag a test changes (they are process-wide)."""
    b = torch.backends
    matmul_precision = torch.get_float32_matmul_precision()
    saved = {name: obj.fp32_precision for name, obj in _FLAGS}
    # the legacy booleans are state of their own: cudnn.allow_tf32 = False leaves the
    # getter raising until it is set back, whatever the fp32_precision flags say
    legacy = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    cudnn_enabled = b.cudnn.enabled
    yield
    b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = legacy
    torch.set_float32_matmul_precision(matmul_precision)
    for name, obj in _FLAGS:
        obj.fp32_precision = saved[name]
    b.cudnn.enabled = cudnn_enabled


def test_a_mix_of_the_two_flag_apis_makes_the_getter_raise(flags: None) -> None:
    """A mix of the legacy and the new flag API makes ``torch.backends.cudnn.allow_tf32``
    raise until both are set back; the fixture restores both, so a later
    ``torch.export`` (tests/interop/test_onnx.py, which failed after this module in one
    process) can read it."""
    torch.backends.cudnn.allow_tf32 = False
    CUDNN.conv.fp32_precision = "tf32"
    with pytest.raises(RuntimeError, match="different TF32 flags"):
        _ = torch.backends.cudnn.allow_tf32


@pytest.mark.skipif(
    not torch.backends.cudnn.is_available(),  # type: ignore[no-untyped-call]
    reason="cuDNN's TF32 default needs a torch built with cuDNN; without it a CUDA conv is not cuDNN's",
)
def test_defaults_without_a_gpu(flags: None) -> None:
    """Under PyTorch's default flags, with no GPU present: cuDNN convs are TF32, cuBLAS
    matmuls IEEE, and every impl reports its own backend's mode."""
    assert pm_core.gemm_precision("conv", CUDA, torch.float32) == "tf32"
    assert pm_core.gemm_precision("slice", CUDA, torch.float32) == "ieee"
    for impl in CONV_IMPLS:
        assert pm_core.gemm_precision(impl, "cuda", torch.float32) == "tf32", impl
    for impl in MATMUL_IMPLS:
        assert pm_core.gemm_precision(impl, "cuda", torch.float32) == "ieee", impl
    for impl in pm_core.IMPLS:
        assert pm_core.gemm_precision(impl, "cpu", torch.float32) in FP32_MODES
        assert pm_core.gemm_precision(impl, "meta", torch.float32) == "ieee"


def _set(setting: str) -> None:
    b = torch.backends
    if setting == "conv-ieee":
        CUDNN.conv.fp32_precision = "ieee"
    elif setting == "legacy-allow_tf32-off":
        b.cudnn.allow_tf32 = False
    elif setting == "matmul-tf32":
        b.cuda.matmul.fp32_precision = "tf32"
    elif setting == "matmul-precision-high":
        torch.set_float32_matmul_precision("high")
    elif setting == "cudnn-off":
        b.cudnn.enabled = False
    elif setting == "cudnn-off-matmul-tf32":
        b.cudnn.enabled = False
        b.cuda.matmul.fp32_precision = "tf32"
    else:
        raise AssertionError(setting)


@needs_no_gpu
@pytest.mark.parametrize(
    ("setting", "conv", "slice_"),
    [
        ("conv-ieee", "ieee", "ieee"),
        ("legacy-allow_tf32-off", "ieee", "ieee"),
        ("matmul-tf32", "tf32", "tf32"),
        ("matmul-precision-high", "tf32", "tf32"),
        ("cudnn-off", "ieee", "ieee"),  # the conv runs as im2col + cuBLAS
        ("cudnn-off-matmul-tf32", "tf32", "tf32"),
    ],
)
def test_flags_flip_the_answer(flags: None, setting: str, conv: str, slice_: str) -> None:
    """Each way of changing the flags (the new per-op API, the legacy switches,
    ``set_float32_matmul_precision``, cuDNN off) changes what the CUDA GEMMs report."""
    _set(setting)
    assert pm_core.gemm_precision("conv", CUDA, torch.float32) == conv
    assert pm_core.gemm_precision("slice", CUDA, torch.float32) == slice_


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("device", ["cpu", "cuda", "meta"])
def test_other_dtypes_report_their_own(flags: None, dtype: torch.dtype, device: str) -> None:
    """Only float32 GEMMs have a precision mode; the others run in their dtype, and the
    name is one ``error_bounds`` accepts as such."""
    torch.set_float32_matmul_precision("high")
    for impl in pm_core.IMPLS:
        name = pm_core.gemm_precision(impl, device, dtype)
        assert name == str(dtype).removeprefix("torch.")
        x, w = torch.randn(1, 2, 2, 2, dtype=dtype), torch.randn(4, 8, dtype=dtype)
        pm_core.error_bounds(x, w, norm="none", gemm_precision=name)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown impl 'convv'"):
        pm_core.gemm_precision("convv", "cpu", torch.float32)
    with pytest.raises(TypeError, match="dtype must be one of"):
        pm_core.gemm_precision("conv", "cpu", torch.int32)
    x32, w32 = torch.randn(1, 2, 2, 2), torch.randn(4, 8)
    with pytest.raises(ValueError, match="gemm_precision must be None or one of"):
        pm_core.error_bounds(x32, w32, norm="none", gemm_precision="fp8")
    xb, wb = x32.bfloat16(), w32.bfloat16()
    with pytest.raises(ValueError, match="rounds float32 GEMM operands, but the compute dtype"):
        pm_core.error_bounds(xb, wb, norm="none", gemm_precision="tf32")
    with pytest.raises(TypeError, match=r"dtype must be one of .*, got torch\.int32"):
        pm_core.error_bounds(x32, w32, norm="none", dtype=torch.int32)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_reduced_precision_bounds_contain_the_ieee_bound(norm: Norm) -> None:
    """Rounding the GEMM operands only adds error: every bound under ``"tf32"`` is at least
    the IEEE one, and ``"bf16"`` at least the TF32 one, for outputs and all gradients, and
    strictly larger wherever a GEMM is involved (everything but ``post``'s dL/dbeta, a
    plain sum of the output gradient)."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 5, 6, 8, generator=g), torch.randn(16, 32, generator=g)
    n = 32 if norm == "pre" else 16
    nw = None if norm == "none" else torch.randn(n, generator=g)
    nb = None if norm == "none" else torch.randn(n, generator=g)
    go = torch.randn(2, 3, 3, 16, generator=g)
    by = [
        pm_core.error_bounds(x, w, nw, nb, norm=norm, eps=EPS, grad_out=go, gemm_precision=m)
        for m in FP32_MODES
    ]
    for lo, hi in itertools.pairwise(by):
        for field, a, b in zip(lo._fields, lo[:5], hi[:5], strict=False):
            if a is not None:
                assert b is not None
                assert (b >= a).all(), field
                gemm_free = norm == "post" and field == "norm_bias"
                assert (b > a).all() != gemm_free, field


@pytest.mark.parametrize(
    ("flag", "unit"), [("bf16", "avx512_bf16"), ("bf16", "amx_bf16"), ("tf32", "amx_fp16")]
)
def test_a_cpu_flag_counts_only_with_units_that_act_on_it(
    flags: None, monkeypatch: pytest.MonkeyPatch, flag: str, unit: str
) -> None:
    """oneDNN rounds float32 GEMM inputs to bf16 only with bf16 units, and to TF32 only
    with AMX-FP16; on a CPU torch cannot describe, the flag is taken to act (the looser
    bound holds either way). Capabilities faked, so every CPU checks every branch."""
    caps = dict.fromkeys(("avx512_bf16", "amx_bf16", "amx_fp16"), False)
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: caps)
    MKLDNN.conv.fp32_precision = flag
    MKLDNN.matmul.fp32_precision = flag

    def modes() -> set[str]:
        return {pm_core.gemm_precision(i, "cpu", torch.float32) for i in pm_core.IMPLS}

    assert modes() == {"ieee"}
    caps[unit] = True
    assert modes() == {flag}
    caps.clear()
    assert modes() == {flag}
    MKLDNN.conv.fp32_precision = MKLDNN.matmul.fp32_precision = "ieee"
    assert modes() == {"ieee"}


def test_cpu_bf16_flag_matches_what_runs(flags: None) -> None:
    """On the CPU the oneDNN flag is permission, not an order: where ``gemm_precision``
    says the GEMMs stay IEEE under ``fp32_precision="bf16"`` (a CPU without bf16
    arithmetic), the outputs are bit-identical to the default flags'; where it says
    ``"bf16"``, they are within the bf16 bound, and, on a CPU with AMX-BF16, where oneDNN
    does round, not within the IEEE one. (With ``avx512_bf16`` alone, an AMD Zen 4 under
    torch 2.14.1 did not round: see :mod:`pm_core.precision`.)"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 28, 28, 32, generator=g)  # oneDNN paths need GEMMs over 16^3
    w = torch.randn(64, 128, generator=g) / 128**0.5
    before = {i: pm_core.patch_merge(x, w, norm="none", impl=i) for i in pm_core.IMPLS}
    MKLDNN.conv.fp32_precision = "bf16"
    MKLDNN.matmul.fp32_precision = "bf16"
    ref = pm_core.reference_patch_merge(x, w, norm="none")
    for impl in pm_core.IMPLS:
        mode = pm_core.gemm_precision(impl, "cpu", torch.float32)
        y = pm_core.patch_merge(x, w, norm="none", impl=impl)
        if mode == "ieee":
            assert torch.equal(y, before[impl]), f"{impl}: the flag changed the result"
        else:
            assert mode == "bf16"
            err = (y.double() - ref).abs()
            assert (
                err <= pm_core.error_bounds(x, w, norm="none", gemm_precision="bf16").output
            ).all()
            if torch._C._cpu._get_cpu_capability().get("amx_bf16", False):
                assert not (err <= pm_core.error_bounds(x, w, norm="none").output).all()


def test_the_flags_are_readable_after_the_tests_above() -> None:
    """Last in the module: every test above that changed a flag left both APIs agreeing
    (in one process, the order pytest runs this file in; xdist may split it)."""
    assert isinstance(torch.backends.cudnn.allow_tf32, bool)
    assert isinstance(torch.backends.cuda.matmul.allow_tf32, bool)
