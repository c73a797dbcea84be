"""The CUDA code paths, run in CPU CI on fake tensors.

``FakeTensorMode`` gives ``device="cuda"`` tensors without a GPU: every op runs its
CUDA meta function (shape, dtype, strides, the memory format a CUDA kernel would pick)
and computes nothing. So every public entry point runs here as it would on a GPU, up to
the arithmetic, which ``tests/selftest/test_emulated_precision.py`` covers.

What cannot run on fake CUDA tensors, and what covers it instead:

* **backward.** Any ``.backward()`` or ``torch.func.vjp`` fails inside the autograd
  engine ("hasPrimaryContext expects a valid device index"; torch 2.14.1), which
  :func:`test_fake_cuda_backward_is_still_unsupported` pins so that a torch release
  that lifts it tells us. The backward's shapes, dtypes and strides are checked on the
  ``meta`` device instead (:func:`test_backward_on_meta`).
* **values.** ``error_bounds`` returns its conditioning as a tensor, so it runs; the
  float64 probes that ``swap_patch_merging`` runs to verify a merge need values, so on
  fake (as on meta) parameters it skips them: the swap's verification is tested on real
  CPU models in ``tests/interop/test_models.py``.
* **autocast.** ``torch.autocast("cuda")`` is disabled without CUDA (it warns and does
  nothing), so it cannot be entered here. The autocast path of every impl is the same
  code on every device (``_autocasting(x.device)`` picks it); CPU autocast covers it in
  ``tests/test_modules.py`` and ``tests/test_errors.py``, and ``-m cuda`` on a GPU runs
  the CUDA half of those tests.
* **timing and traces.** CUDA events, the L2 flush and CUDA profiler activity need a
  device; the benchmark's case list for CUDA is collected (not run) below, and the
  profiler's inputs and activities are built on fake CUDA.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import pm_core
from pm_core import Norm
from pm_core.lab.profiling import case_inputs, profiler_activities
from pm_core.lab.traffic import measure_traffic
from pm_core.layouts import Layout
from pm_core.testing import DTYPES, EPS, NORMS, Case, cases, examples
from tests.marks import needs_cuda_build

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.device("cuda", 0)
pytestmark = [pytest.mark.usefixtures("single_thread"), needs_cuda_build]


def is_non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """Its elements fill one block of memory exactly: no gaps, no two sharing an address."""
    expected = 1
    dims = [(st, sz) for sz, st in zip(t.shape, t.stride(), strict=True) if sz != 1]
    for stride, size in sorted(dims):
        if stride != expected:
            return False
        expected *= size
    return True


def _strides(t: torch.Tensor) -> list[int | None]:
    """Strides, with those of size-1 dims (which address nothing) left out."""
    return [st if sz != 1 else None for sz, st in zip(t.shape, t.stride(), strict=True)]


@pytest.fixture
def fake() -> Iterator[FakeTensorMode]:
    with FakeTensorMode() as mode:
        yield mode


def _call(case: Case, norm: Norm, impl: str, device: str) -> torch.Tensor:
    inp = case.build(norm, device)
    return pm_core.patch_merge(*inp[:4], hw=inp.hw, norm=norm, eps=EPS, impl=impl)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
@examples(0.3)
@given(data=st.data())
def test_patch_merge_on_fake_cuda(impl: str, norm: Norm, data: st.DataObject) -> None:
    """Every impl, norm, dtype, odd size, input form and layout runs on fake CUDA and
    returns the right shape, dtype and device, dense (no gaps, no overlap); the matmul
    impls' outputs are contiguous for a contiguous input. The conv impls' need not be:
    found by this test, the CUDA conv's memory-format choice returns an NCHW-dense
    output (its BHWC view is dense, not contiguous) for float64 (cuDNN has no NHWC
    float64 path) and for small maps and channel counts, where NCHW and NHWC strides
    coincide on a side."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    case = data.draw(cases(dtype), label="case")
    with FakeTensorMode():
        y = _call(case, norm, impl, "cuda")
    assert (tuple(y.shape), y.dtype, y.device) == (case.output_shape(), dtype, CUDA)
    assert is_non_overlapping_and_dense(y), y.stride()
    if case.memory == "contiguous" and pm_core.REGISTRY[impl].gemm == "matmul":
        assert y.is_contiguous(), y.stride()


@pytest.mark.parametrize("norm", NORMS)
def test_modules_on_fake_cuda(fake: FakeTensorMode, norm: Norm) -> None:
    """Both module forms are built on, run on, and convert between each other on CUDA."""
    x = torch.randn(2, 7, 6, 8, device="cuda")
    for m in (
        pm_core.PatchMerging(8, norm=norm, impl="conv", device="cuda"),
        pm_core.ConvPatchMerging(8, norm=norm, device="cuda"),
    ):
        other = m.to_conv() if isinstance(m, pm_core.PatchMerging) else m.to_linear()
        for mod in (m, other):
            y = mod(x)
            assert (tuple(y.shape), y.device) == ((2, 4, 3, 16), CUDA)
            assert all(p.device == CUDA for p in mod.parameters())


@pytest.mark.parametrize(("src", "dst"), [("swin", "monai-legacy"), ("monai-legacy", "unfold")])
def test_layout_conversions_on_fake_cuda(fake: FakeTensorMode, src: str, dst: str) -> None:
    """Converting to or from an explicit offset list (an ``index_select``) builds its
    index on the weight's device: a CPU index is a device mismatch on CUDA."""
    from pm_core.layouts import convert_window_layout, window_to_conv

    window = pm_core.Window((2, 2, 2))
    w = torch.randn(6, 8 * 3, device="cuda")
    assert convert_window_layout(w, window, src, dst).device == CUDA
    assert convert_window_layout(w.T, window, src, dst, dim=0).device == CUDA
    assert window_to_conv(w, window, src).shape == (6, 3, 2, 2, 2)


def test_depth_to_space_in_an_explicit_order_on_fake_cuda(fake: FakeTensorMode) -> None:
    """depth_to_space in an explicit offset order (an ``index_select``) builds its index on
    the input's device."""
    window = pm_core.Window((2, 2, 2))
    v = torch.randn(1, 2, 2, 2, 8 * 3, device="cuda")
    assert pm_core.depth_to_space(v, window, "monai-legacy").shape == (1, 4, 4, 4, 3)


def test_fake_cuda_backward_is_still_unsupported(fake: FakeTensorMode) -> None:
    """Pins the torch limitation the meta backward test works around: when a release
    lifts it, this fails, and the backward checks should move to fake CUDA."""
    x = torch.randn(2, 4, 4, 8, device="cuda", requires_grad=True)
    w = torch.randn(16, 32, device="cuda", requires_grad=True)
    y = pm_core.patch_merge(x, w, norm="none", impl="conv")
    with pytest.raises(RuntimeError, match="hasPrimaryContext"):
        torch.autograd.backward(y.sum())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
@examples(0.2)
@given(data=st.data())
def test_backward_on_meta(impl: str, norm: Norm, data: st.DataObject) -> None:
    """Backward on the meta device (fake CUDA cannot run it): every gradient has its
    input's shape, dtype and device, and follows autograd's layout contract: a dense
    input gets a gradient with its own strides, any other a contiguous one."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    case = data.draw(cases(dtype, grad=True), label="case")
    inp = case.build(norm, "meta")
    leaves = [t.requires_grad_() for t in inp[:4] if t is not None]
    y = pm_core.patch_merge(*inp[:4], hw=inp.hw, norm=norm, eps=EPS, impl=impl)
    torch.autograd.backward(y, inp.grad_out)
    for t in leaves:
        g = t.grad
        assert g is not None
        assert (g.shape, g.dtype, g.device) == (t.shape, t.dtype, t.device)
        want = t if is_non_overlapping_and_dense(t) else g.contiguous()
        assert _strides(g) == _strides(want), (impl, tuple(t.shape), t.stride(), g.stride())


@pytest.mark.models
def test_swap_in_torchvision_swin_t_on_fake_cuda() -> None:
    """A torchvision swin_t on CUDA has its three merges swapped for the conv form and
    runs forward (its probes need values, so on fake parameters they are skipped). It is
    built on meta and moved with ``to_empty``: its initialisers read values."""
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.swin_t().eval()
    with FakeTensorMode(allow_non_fake_inputs=True):  # the meta parameters go in
        model.to_empty(device="cuda")
        _swap_and_run(model)


def _swap_and_run(model: torch.nn.Module) -> None:
    assert pm_core.swap_patch_merging(model, impl="conv") == 3
    merges = [m for m in model.modules() if isinstance(m, pm_core.PatchMerging)]
    assert [m.impl for m in merges] == ["conv"] * 3
    y = model(torch.randn(2, 3, 224, 224, device="cuda"))
    assert (tuple(y.shape), y.device) == ((2, 1000), CUDA)


@pytest.mark.parametrize(("src", "dst"), [("swin", "unfold"), ("swin", "conv"), ("conv", "swin")])
def test_convert_state_dict_on_fake_cuda(fake: FakeTensorMode, src: Layout, dst: Layout) -> None:
    """Checkpoint conversion keeps every tensor on CUDA with the target layout's shape."""
    m = pm_core.PatchMerging(8, device="cuda") if src != "conv" else None
    sd = (
        m.state_dict() if m is not None else pm_core.ConvPatchMerging(8, device="cuda").state_dict()
    )
    out = pm_core.convert_state_dict(sd, src, dst)
    want = (16, 8, 2, 2) if dst == "conv" else (16, 32)
    assert tuple(out["reduction.weight"].shape) == want
    assert all(t.device == CUDA for t in out.values())


@pytest.mark.parametrize("norm", NORMS)
def test_traffic_on_fake_cuda_equals_meta(norm: Norm) -> None:
    """Forward byte counts on fake CUDA (the CUDA kernels' output layouts) equal those on
    meta for every impl: the GPU model's counts, taken on meta so backward counts too,
    are the CUDA ones for the forward. Every GEMM op carries its FLOPs."""
    shape = (2, 14, 10, 8)
    for impl in pm_core.IMPLS:
        counts = {}
        for device in ("cuda", "meta"):
            with FakeTensorMode(allow_non_fake_inputs=device == "meta"):
                args = case_inputs(shape, norm, torch.float32, device)
                t = measure_traffic(pm_core.patch_merge, *args, norm=norm, impl=impl)
            counts[device] = [(e.op, e.total, e.flops) for e in t.events]
        assert counts["cuda"] == counts["meta"], impl
        gemms = [f for _, _, f in counts["cuda"] if f]
        assert sum(gemms) == 2 * 2 * 7 * 5 * 32 * 16, impl  # 2 * windows * 4C * O


def test_error_bounds_on_fake_cuda(fake: FakeTensorMode) -> None:
    """``error_bounds`` runs on fake CUDA (no host read): every bound shaped like what it
    bounds, on the device, and the conditioning a 0-dim tensor there."""
    x = torch.randn(2, 7, 6, 8, device="cuda")
    w, g, b = (torch.randn(*s, device="cuda") for s in ((16, 32), (32,), (32,)))
    go = torch.randn(2, 4, 3, 16, device="cuda")
    eb = pm_core.error_bounds(x, w, g, b, grad_out=go, gemm_precision="tf32")
    for bound, like in zip(eb[:5], (go, x, w, g, b), strict=True):
        assert bound is not None
        assert (bound.shape, bound.device, bound.dtype) == (like.shape, CUDA, torch.float64)
    assert eb.kappa.shape == ()
    assert eb.kappa.device == CUDA


def test_oracles_run_on_fake_cuda(fake: FakeTensorMode) -> None:
    """The float64 oracles keep every index and constant on the input's device: the
    depth-to-space adjoint (its scatter's batch index) and the general merge."""
    from pm_core.oracle import reference_depth_to_space, reference_space_to_depth

    win = pm_core.Window((2, 2), padding="corner")
    x = torch.randn(2, 5, 6, 3, device="cuda")
    v = reference_space_to_depth(x, win, "swin")
    back = reference_depth_to_space(v, win, "swin", (5, 6))
    assert (back.shape, back.device) == ((2, 5, 6, 3), CUDA)
    w = torch.randn(6, 12, device="cuda")
    y = pm_core.reference_window_merge(x, w, window=win, norm="none")
    assert (y.shape, y.device) == ((2, 3, 3, 6), CUDA)


def test_profiler_setup_on_fake_cuda(fake: FakeTensorMode) -> None:
    """The profiler's inputs are built on CUDA, it records CUDA kernels there, and the
    profiled step (forward) runs."""
    assert torch.profiler.ProfilerActivity.CUDA in profiler_activities(CUDA)
    x, w, nw, nb = case_inputs((2, 28, 28, 96), "pre", torch.bfloat16, "cuda")
    assert all(t is not None and t.device == CUDA for t in (x, w, nw, nb))
    y = pm_core.patch_merge(x, w, nw, nb, impl="conv")
    assert (tuple(y.shape), y.dtype) == ((2, 14, 14, 192), torch.bfloat16)


def test_benchmark_cases_for_cuda_are_collected() -> None:
    """With a CUDA bench device the matrix adds float16 and the GPU batch sizes (64 at
    224, 32 at 384); collecting it needs no GPU."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q",
         "--bench-device", "cuda", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ids = proc.stdout
    for impl in pm_core.IMPLS:
        assert f"test_patch_merge[{impl}-pre-float16-fwd-swin_ts_224_s1]" in ids, impl
    assert "float16" in ids
