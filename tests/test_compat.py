"""The layer library's workarounds of PyTorch behaviour (``pm_core/_compat.py``) hold."""

from __future__ import annotations

import pytest
import torch

import pm_core
from pm_core import Norm


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("impl", ["conv", "conv_cw"])
@pytest.mark.parametrize("shape", [(1, 10, 2, 5), (2, 12, 2, 7), (1, 2, 10, 3)])
def test_bfloat16_conv_one_column_wide(impl: str, norm: Norm, shape: tuple[int, ...]) -> None:
    """A bfloat16 conv whose output is one column wide (or one row) is within the bound:
    oneDNN's native bfloat16 kernel returns NaN or garbage for such shapes on an AMX-BF16
    CPU, so ``_compat.conv`` runs them in float32."""
    g = torch.Generator().manual_seed(0)
    c = shape[-1]
    x = torch.randn(shape, generator=g).bfloat16()
    wt = (torch.randn(2 * c, 4 * c, generator=g) / (4 * c) ** 0.5).bfloat16()
    size = 4 * c if norm == "pre" else 2 * c
    nw, nb = (None, None) if norm == "none" else (torch.ones(size).bfloat16(), None)
    y = pm_core.patch_merge(x, wt, nw, nb, norm=norm, impl=impl)
    err = (y.double() - pm_core.reference_patch_merge(x, wt, nw, nb, norm=norm)).abs()
    assert bool((err <= pm_core.error_bounds(x, wt, nw, nb, norm=norm).output).all())


def test_only_one_column_bfloat16_cpu_convs_change_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_compat.conv`` calls the float32 conv for bfloat16 CPU outputs one column wide
    (2-D and 3-D), and the dtype's own conv for every other call."""
    seen: list[torch.dtype] = []
    for name in ("conv2d", "conv3d"):
        inner = getattr(torch.nn.functional, name)

        def spy(x: torch.Tensor, *a: object, _inner: object = inner, **k: object) -> torch.Tensor:
            seen.append(x.dtype)
            return _inner(x, *a, **k)  # type: ignore[operator,no-any-return]

        monkeypatch.setattr(torch.nn.functional, name, spy)
    conv = pm_core._compat.conv
    bf, f16 = torch.bfloat16, torch.float16
    calls = [
        ((1, 5, 10, 2), (10, 5, 2, 2), bf, {}, torch.float32),  # one column
        ((1, 5, 10, 4), (10, 5, 2, 2), bf, {}, bf),  # two columns
        ((1, 5, 10, 2), (10, 5, 2, 2), f16, {}, f16),  # not bfloat16
        ((1, 5, 10, 3), (10, 5, 3, 3), bf, {"padding": 1}, bf),  # padded: two columns
        ((1, 3, 4, 10, 2), (6, 3, 2, 2, 2), bf, {}, torch.float32),  # 3-D, one column
    ]
    for xs, ws, dt, kw, want in calls:
        seen.clear()
        y = conv(torch.randn(xs).to(dt), torch.randn(ws).to(dt), stride=2, **kw)
        assert (seen, y.dtype) == ([want], dt), (xs, dt)


def test_cpu_capabilities_fall_back_to_the_public_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch's private probe, the public ``get_cpu_capability`` still gives the
    vector width, and every other feature is unknown (absent)."""

    def gone() -> None:
        raise AttributeError("no private probe")

    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", gone)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert pm_core._compat.cpu_capabilities() == {"avx512_f": True, "avx2": True}
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert pm_core._compat.cpu_capabilities() == {"avx512_f": False, "avx2": True}
    assert pm_core.impls._cpu_half_units(torch.bfloat16) is False  # unknown: assume none


@pytest.mark.parametrize("private", [True, False], ids=["is_fake", "fallback"])
def test_has_values(private: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real tensors hold values; meta and fake tensors do not, with or without torch's
    private ``is_fake``."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not private:
        monkeypatch.delattr("torch._subclasses.fake_tensor.is_fake")
    has_values = pm_core._compat.has_values
    assert has_values(torch.zeros(2))
    assert not has_values(torch.zeros(2, device="meta"))
    with FakeTensorMode():
        fake = torch.zeros(2)
    assert not has_values(fake)
