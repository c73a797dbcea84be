"""``conv_cw``: when the weight-centred pre-norm form runs, when it falls back, and why it must.

The property suite checks ``conv_cw`` against the oracle through the registry like every
impl; these tests pin down which of its paths a call takes, so both are known to be
exercised, and show that the conditioning limits are what keeps it inside the bound.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from pm_core import error_bounds, impls, patch_merge, reference_patch_merge


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per call of the weight-centred form, whether it ran (False: it fell back)."""
    seen: list[bool] = []
    inner = impls._weight_centred_pre

    def spy(*args: object) -> Tensor | None:
        y = inner(*args)  # type: ignore[arg-type]
        seen.append(y is not None)
        return y

    monkeypatch.setattr(impls, "_weight_centred_pre", spy)
    return seen


def _call(
    shape: tuple[int, int, int, int], mean: float = 0.0, common: float = 0.0, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    c = shape[-1]
    w = torch.randn(2 * c, 4 * c, generator=g) / 8 + common
    nw = 1 + torch.rand(4 * c, generator=g) / 4
    nb = torch.randn(4 * c, generator=g)
    return x + mean, w, nw, nb


def _ratio(y: Tensor, args: tuple[Tensor, ...]) -> float:
    bound = error_bounds(*args, norm="pre").output
    err = (y.double() - reference_patch_merge(*args, norm="pre")).abs()
    return float((err / bound).max())


def test_the_weight_centred_form_runs_on_a_well_conditioned_call(taken: list[bool]) -> None:
    """Swin's width: windows of 384 standard normals have ``|mean| / sigma`` near 0.05,
    and a random weight's common mode is near ``1 / sqrt(384)``. (Narrow windows fall
    back more often: at C = 16 a random weight's worst row reaches 0.4.)"""
    args = _call((2, 8, 6, 96))
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
    assert taken == [True]
    assert _ratio(y, args) <= 1


@pytest.mark.parametrize(
    ("mean", "common"),
    [(3.0, 0.0), (0.0, 1.0)],
    ids=["window mean over half its spread", "weight with a common mode"],
)
def test_it_falls_back_to_the_centred_fold(taken: list[bool], mean: float, common: float) -> None:
    args = _call((2, 8, 6, 16), mean=mean, common=common)
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
        fold = patch_merge(*args, norm="pre", impl="conv")
    assert taken == [False]
    assert torch.equal(y, fold)


def test_grad_mode_alone_does_not_take_the_fold(taken: list[bool]) -> None:
    """Inference outside ``torch.no_grad()``: grad mode is on but nothing requires a
    gradient, so no graph is recorded and the weight-centred form runs."""
    y = patch_merge(*_call((2, 8, 6, 96)), norm="pre", impl="conv_cw")
    assert taken == [True]
    assert not y.requires_grad


@pytest.mark.parametrize("needs_grad", range(4), ids=["x", "weight", "norm_weight", "norm_bias"])
def test_autograd_takes_the_fold(taken: list[bool], needs_grad: int) -> None:
    args = list(_call((2, 4, 4, 8)))
    leaf = args[needs_grad].requires_grad_()
    y = patch_merge(*args, norm="pre", impl="conv_cw")
    torch.autograd.backward(y.sum())
    assert taken == []
    assert leaf.grad is not None


def test_the_limits_are_what_keeps_it_within_the_bound(
    taken: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows of mean 1000 and spread 1 in float32: ``E[x^2] - mu^2`` cancels 6 of float32's
    7 digits. Without the limits the weight-centred form breaks the bound; with them
    the call falls back and holds it."""
    args = _call((2, 8, 8, 32), mean=1000.0)
    with torch.no_grad():
        held = patch_merge(*args, norm="pre", impl="conv_cw")
        monkeypatch.setattr(impls, "CW_MAX_MEAN_RATIO", math.inf)
        monkeypatch.setattr(impls, "CW_MAX_COMMON_MODE", math.inf)
        broken = patch_merge(*args, norm="pre", impl="conv_cw")
    assert taken == [False, True]
    assert _ratio(held, args) <= 1
    assert _ratio(broken, args) > 1


def _windows_at(t: float, shape: tuple[int, int, int, int] = (2, 8, 8, 32)) -> Tensor:
    """float32 ``x`` whose every 2x2 window has mean ``t`` and population spread 1."""
    g = torch.Generator().manual_seed(1)
    b, h, w, c = shape
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    win = x.view(b, h // 2, 2, w // 2, 2, c)
    win -= win.mean((2, 4, 5), keepdim=True)
    win /= win.std((2, 4, 5), correction=0, keepdim=True)
    return (x + t).float()


def _weight_with_common_mode(rho: float, c: int, scale: float = 1.0) -> Tensor:
    """A float32 ``(2C, 4C)`` weight whose largest ``|row sum| / row abs-sum`` is ``rho``."""
    w = torch.randn(2 * c, 4 * c, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w -= w.mean(1, keepdim=True)  # rows summing to zero, then a common mode m

    def common(m: float) -> float:
        return float(((4 * c * m) / (w + m).abs().sum(1)).max())

    lo, hi = 0.0, 1.0  # the common mode rises with m: bisect for rho
    for _ in range(60):
        lo, hi = ((lo + hi) / 2, hi) if common((lo + hi) / 2) < rho else (lo, (lo + hi) / 2)
    return ((w + lo) * scale).float()


def _pre_call(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    c = x.shape[-1]
    return x, w, torch.ones(4 * c), torch.zeros(4 * c)


def test_at_the_limits_it_holds_the_bound(taken: list[bool]) -> None:
    """Every window's mean just under half its spread, and a weight whose common mode
    brings ``rho (1 + t)`` just under 1/2: the form runs, and holds the bound."""
    args = _pre_call(_windows_at(0.49), _weight_with_common_mode(0.49 / 1.49, 32))
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
    assert taken == [True]
    assert _ratio(y, args) <= 1


@pytest.mark.parametrize(
    ("t", "rho", "runs"),
    [(0.45, 0.40, False), (0.45, 0.30, True), (0.0, 0.49, True), (0.0, 0.51, False)],
    ids=["rho (1 + t) over 1/2", "rho (1 + t) under 1/2", "rho under 1/2", "rho over 1/2"],
)
def test_the_common_mode_limit_grows_with_the_mean(
    taken: list[bool], t: float, rho: float, runs: bool
) -> None:
    """The weight's limit is on ``rho (1 + t)``: a common mode of 0.4 is allowed on centred
    windows and not on windows of mean 0.45 sigma."""
    args = _pre_call(_windows_at(t), _weight_with_common_mode(rho, 32))
    with torch.no_grad():
        patch_merge(*args, norm="pre", impl="conv_cw")
    assert taken == [runs]


def test_the_limits_do_not_depend_on_scale(taken: list[bool]) -> None:
    """``|mean| / sigma`` and ``rho`` are scale-free: the same call scaled by 1000 (and the
    weight by 1e-3) takes the same paths; a weight with a common mode falls back however
    small its entries."""
    x = _windows_at(0.3)
    with torch.no_grad():
        for scale in (1e-3, 1.0, 1e3):
            patch_merge(*_pre_call(x * scale, _weight_with_common_mode(0.2, 32)), impl="conv_cw")
        small_common = _weight_with_common_mode(0.9, 32, scale=1e-4)
        patch_merge(*_pre_call(x, small_common), impl="conv_cw")
    assert taken == [True, True, True, False]


def test_the_common_mode_is_per_row(taken: list[bool]) -> None:
    """Each row's ``|sum| / abs-sum`` is its own: one large row and one tiny row (and an
    all-zero row, whose ratio is taken as 0) do not make a common mode together."""
    w = _weight_with_common_mode(0.2, 32)
    w[0] *= 1e3
    w[1] *= 1e-3
    w[2] = 0
    with torch.no_grad():
        y = patch_merge(*_pre_call(_windows_at(0.1), w), impl="conv_cw")
    assert taken == [True]
    assert _ratio(y, _pre_call(_windows_at(0.1), w)) <= 1
    w[3] = _weight_with_common_mode(0.9, 32)[3]  # a zero row must not hide this one
    with torch.no_grad():
        patch_merge(*_pre_call(_windows_at(0.1), w), impl="conv_cw")
    assert taken == [True, False]


@pytest.mark.parametrize("fake", [False, True], ids=["meta", "fake"])
def test_meta_and_fake_tensors_take_the_fold(taken: list[bool], fake: bool) -> None:
    """No values to read the limits from: the fold runs, with the right shape and dtype."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w, nw, nb = _call((2, 8, 6, 96))
    if fake:
        with FakeTensorMode() as mode:
            args = [mode.from_tensor(t) for t in (x, w, nw, nb)]
            y = patch_merge(*args, norm="pre", impl="conv_cw")
    else:
        y = patch_merge(*(t.to("meta") for t in (x, w, nw, nb)), norm="pre", impl="conv_cw")
    assert taken == []
    assert y.shape == (2, 4, 3, 192)
    assert y.dtype == torch.float32


def test_tracing_takes_the_fold(taken: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """While torch.compile traces, the limits would be a branch on values, which breaks the
    graph: the fold runs (tests/test_compile.py compiles it; this checks the branch without
    dynamo, which cannot trace mutmut's trampolines)."""
    args = _call((2, 8, 6, 96))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
        assert torch.equal(y, patch_merge(*args, norm="pre", impl="conv"))
    assert taken == []


def _half_call(
    dtype: torch.dtype, norm: str, c: int = 8
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    x, w, nw, nb = (t.to(dtype) for t in _call((2, 6, 4, c)))
    if norm == "post":
        return x, w, nw[: 2 * c], nb[: 2 * c]
    return (x, w, nw, nb) if norm == "pre" else (x, w, None, None)


@pytest.fixture
def no_half_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impls, "_cpu_half_units", lambda dtype: False)


@pytest.fixture
def half_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impls, "_cpu_half_units", lambda dtype: True)


@pytest.mark.usefixtures("no_half_units")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_half_inputs_run_in_float32_on_a_cpu_without_half_units(
    dtype: torch.dtype, norm: str
) -> None:
    """The same float32 computation, rounded once: bit-equal to calling it on the upcast inputs."""
    x, w, nw, nb = _half_call(dtype, norm)
    f32 = [None if t is None else t.float() for t in (nw, nb)]
    with torch.no_grad():
        y = patch_merge(x, w, nw, nb, norm=norm, impl="conv_cw")  # type: ignore[arg-type]
        ref = patch_merge(x.float(), w.float(), *f32, norm=norm, impl="conv_cw")  # type: ignore[arg-type]
    assert y.dtype == dtype
    assert torch.equal(y, ref.to(dtype))


@pytest.fixture
def conv_dtypes(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """The dtype of every conv an impl runs."""
    seen: list[torch.dtype] = []
    inner = impls._conv

    def spy(x: Tensor, weight: Tensor) -> Tensor:
        seen.append(x.dtype)
        return inner(x, weight)

    monkeypatch.setattr(impls, "_conv", spy)
    return seen


@pytest.fixture
def stats_dtypes(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """The dtype of every per-pixel statistic the weight-centred form sums over a window."""
    seen: list[torch.dtype] = []
    inner = impls._sum_2x2

    def spy(t: Tensor) -> Tensor:
        seen.append(t.dtype)
        return inner(t)

    monkeypatch.setattr(impls, "_sum_2x2", spy)
    return seen


@pytest.mark.usefixtures("half_units")
@pytest.mark.parametrize("bias", [True, False], ids=["norm bias", "no norm bias"])
def test_float16_takes_the_scaled_fold_on_a_cpu_with_half_units(
    bias: bool, taken: list[bool], conv_dtypes: list[torch.dtype]
) -> None:
    """In float16 the weight-centred GEMM's output ``sigma * (Wg @ xhat)`` carries the
    input's scale and can leave float16's range where the LayerNorm's output is finite,
    so float16 takes the conv fold (scaled to unit spread), its conv in float16."""
    x, w, nw, nb = _half_call(torch.float16, "pre", c=96)
    args = (x * 4096, w, nw, nb if bias else None)  # windows of spread ~4096: z overflows
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
    assert (taken, conv_dtypes, y.dtype) == ([], [torch.float16], torch.float16)
    assert bool(torch.isfinite(y).all())
    assert _ratio(y, args) <= 1  # type: ignore[arg-type]


@pytest.mark.usefixtures("half_units")
@pytest.mark.parametrize("bias", [True, False], ids=["norm bias", "no norm bias"])
@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_half_inputs_keep_their_dtype_on_a_cpu_with_half_units(
    dtype: torch.dtype,
    bias: bool,
    taken: list[bool],
    conv_dtypes: list[torch.dtype],
    stats_dtypes: list[torch.dtype],
) -> None:
    """The weight-centred form runs its GEMM in the half dtype (statistics and epilogue in
    float32) and holds the half bound."""
    x, w, nw, nb = _half_call(dtype, "pre", c=96)  # Swin's width: it runs (narrow C falls back)
    args = (x, w, nw, nb if bias else None)
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
    assert (taken, conv_dtypes, y.dtype) == ([True], [dtype], dtype)
    assert stats_dtypes == [torch.float32, torch.float32]
    assert _ratio(y, args) <= 1  # type: ignore[arg-type]


@pytest.mark.usefixtures("half_units")
@pytest.mark.parametrize("norm", ["post", "none"])
def test_with_half_units_post_and_none_are_conv(norm: str) -> None:
    args = _half_call(torch.bfloat16, norm)
    with torch.no_grad():
        y = patch_merge(*args, norm=norm, impl="conv_cw")  # type: ignore[arg-type]
        conv = patch_merge(*args, norm=norm, impl="conv")  # type: ignore[arg-type]
    assert torch.equal(y, conv)


@pytest.mark.usefixtures("half_units")
def test_at_the_limits_the_native_bfloat16_form_holds_the_bound(taken: list[bool]) -> None:
    """:func:`test_at_the_limits_it_holds_the_bound` with the GEMM in bfloat16: the weight
    ``Wc`` is rounded to bfloat16 and its row sums are no longer zero, which the derivation
    charges to the mean's term."""
    f32 = _pre_call(_windows_at(0.49), _weight_with_common_mode(0.49 / 1.49, 32))
    args = tuple(t.bfloat16() for t in f32)
    with torch.no_grad():
        y = patch_merge(*args, norm="pre", impl="conv_cw")
    assert taken == [True]
    assert _ratio(y, args) <= 1


def test_the_half_units_probe_follows_the_cpu_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """bfloat16 needs AVX512-BF16 or AMX-BF16, float16 AMX-FP16; a CPU torch cannot
    describe is taken to have neither (the float32 path is exact either way)."""
    caps = {"avx512_bf16": False, "amx_bf16": True, "amx_fp16": False}
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: caps)
    bf16 = torch.zeros(1, dtype=torch.bfloat16)
    assert impls._cpu_half_units(torch.bfloat16)
    assert not impls._cpu_half_units(torch.float16)
    assert not impls._cpu_float32(bf16)
    assert impls._cpu_float32(bf16.half())
    caps.update(amx_bf16=False, amx_fp16=True)
    assert not impls._cpu_half_units(torch.bfloat16)
    assert impls._cpu_half_units(torch.float16)
    assert impls._cpu_float32(bf16)
    caps.update(avx512_bf16=True)
    assert impls._cpu_half_units(torch.bfloat16)
    assert not impls._cpu_float32(bf16)
    assert not impls._cpu_float32(bf16.float())
    caps.clear()  # a capability torch does not list
    assert not impls._cpu_half_units(torch.bfloat16)
    assert not impls._cpu_half_units(torch.float16)
    assert impls._cpu_half_units(torch.bfloat16, unknown=True)  # as gemm_precision asks
    assert impls._cpu_half_units(torch.float16, unknown=True)
    # each unit torch does not list is unknown on its own, whatever it says of the other
    for listed in ("avx512_bf16", "amx_bf16"):
        caps.clear()
        caps[listed] = False
        assert not impls._cpu_half_units(torch.bfloat16)
        assert impls._cpu_half_units(torch.bfloat16, unknown=True), listed

    def unknown() -> dict[str, bool]:
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", unknown)
    assert not impls._cpu_half_units(torch.bfloat16)
    assert not impls._cpu_half_units(torch.float16)
    assert impls._cpu_half_units(torch.bfloat16, unknown=True)
