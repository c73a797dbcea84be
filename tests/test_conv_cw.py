"""``conv_cw``: ``conv`` with half dtypes computed in float32 on a CPU without half units.

The property suite checks ``conv_cw`` against the oracle through the registry like every
impl; these tests pin down which path a call takes: the float32 one exactly where the
CPU lacks dot-product units for the dtype, and ``conv`` itself everywhere else.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pm_core import fold, impls, patch_merge


def _call(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    c = shape[-1]
    w = torch.randn(2 * c, 4 * c, generator=g) / 8
    nw = 1 + torch.rand(4 * c, generator=g) / 4
    nb = torch.randn(4 * c, generator=g)
    return x, w, nw, nb


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
    """The dtype of every conv an impl runs (the fold's, and post / none's)."""
    seen: list[torch.dtype] = []
    inner = fold._conv

    def spy(x: Tensor, weight: Tensor) -> Tensor:
        seen.append(x.dtype)
        return inner(x, weight)

    monkeypatch.setattr(fold, "_conv", spy)
    monkeypatch.setattr(impls, "_conv", spy)
    return seen


@pytest.mark.usefixtures("half_units")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_with_half_units_it_is_conv(
    norm: str, dtype: torch.dtype, conv_dtypes: list[torch.dtype]
) -> None:
    """With units for the dtype (and in float32 / float64 on any CPU), the result is
    ``conv``'s bit for bit, its GEMM in the input's dtype."""
    args = _half_call(dtype, norm)
    with torch.no_grad():
        y = patch_merge(*args, norm=norm, impl="conv_cw")  # type: ignore[arg-type]
        conv = patch_merge(*args, norm=norm, impl="conv")  # type: ignore[arg-type]
    assert torch.equal(y, conv)
    assert conv_dtypes == [dtype, dtype]


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
