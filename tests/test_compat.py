"""The layer library's workarounds of PyTorch behaviour (``pm_core/_compat.py``) hold."""

from __future__ import annotations

import pytest
import torch

import pm_core
from pm_core import Norm


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("impl", ["conv", "conv_cw"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bfloat16", "float32"])
@pytest.mark.parametrize("shape", [(1, 10, 2, 5), (2, 12, 2, 7), (1, 2, 10, 3)])
def test_conv_one_column_wide(
    impl: str, norm: Norm, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    """A conv whose output is one column wide (or one row) is within the bound: oneDNN
    returns NaN or garbage for some such shapes on an AMX CPU, so ``_compat.conv`` runs
    them one column wider."""
    g = torch.Generator().manual_seed(0)
    c = shape[-1]
    x = torch.randn(shape, generator=g).to(dtype)
    wt = (torch.randn(2 * c, 4 * c, generator=g) / (4 * c) ** 0.5).to(dtype)
    size = 4 * c if norm == "pre" else 2 * c
    nw, nb = (None, None) if norm == "none" else (torch.ones(size).to(dtype), None)
    y = pm_core.patch_merge(x, wt, nw, nb, norm=norm, impl=impl)
    err = (y.double() - pm_core.reference_patch_merge(x, wt, nw, nb, norm=norm)).abs()
    assert bool((err <= pm_core.error_bounds(x, wt, nw, nb, norm=norm).output).all())


def test_window_conv_one_column_wide() -> None:
    """The float32 3-D conv the thorough profile found returning 4.9e19 (kernel 2, stride
    3 along W, C = 1 sliced out of 4 channels, output one column wide) is right."""
    win = pm_core.Window((2, 2, 2), stride=(1, 1, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 3, 2, 4, generator=g)[..., 1:2]
    w = torch.randn(2, 8, generator=g)
    y = pm_core.window_merge(x, w, window=win, norm="none", impl="conv")
    ref = pm_core.reference_window_merge(x, w, window=win, norm="none")
    bound = pm_core.window_error_bounds(x, w, window=win, norm="none").output
    assert bool(((y.double() - ref).abs() <= bound).all())


def test_only_one_column_cpu_convs_run_wider(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_compat.conv`` pads the input by one stride for CPU outputs one column wide (2-D
    and 3-D, every dtype), a half conv that is 3-D or dilated in float32, and every other
    conv as it is."""
    seen: list[tuple[torch.dtype, int]] = []
    for name in ("conv2d", "conv3d"):
        inner = getattr(torch.nn.functional, name)

        def spy(x: torch.Tensor, *a: object, _inner: object = inner, **k: object) -> torch.Tensor:
            seen.append((x.dtype, x.shape[-1]))
            return _inner(x, *a, **k)  # type: ignore[operator,no-any-return]

        monkeypatch.setattr(torch.nn.functional, name, spy)
    conv = pm_core._compat.conv
    bf, f32 = torch.bfloat16, torch.float32
    calls = [
        ((1, 5, 10, 2), (10, 5, 2, 2), bf, {}, 4, (1, 10, 5, 1)),  # one column: padded
        ((1, 5, 10, 2), (10, 5, 2, 2), f32, {}, 4, (1, 10, 5, 1)),  # every dtype
        ((1, 5, 10, 4), (10, 5, 2, 2), bf, {}, 4, (1, 10, 5, 2)),  # two columns: as is
        ((1, 5, 10, 3), (10, 5, 3, 3), bf, {"padding": 1}, 3, (1, 10, 5, 2)),  # padded: two
        ((1, 3, 4, 10, 2), (6, 3, 2, 2, 2), f32, {}, 4, (1, 6, 2, 5, 1)),  # 3-D, one column
        # half and 3-D, or half and dilated: in float32 (and padded, one column wide)
        ((1, 3, 4, 10, 2), (6, 3, 2, 2, 2), bf, {}, 4, (1, 6, 2, 5, 1)),
        ((1, 5, 10, 6), (10, 5, 2, 2), bf, {"dilation": 2}, 6, (1, 10, 4, 2)),
    ]
    for xs, ws, dt, kw, width, out in calls:
        seen.clear()
        y = conv(torch.randn(xs).to(dt), torch.randn(ws).to(dt), stride=2, **kw)
        half = dt == bf and (len(xs) == 5 or "dilation" in kw)
        ran = torch.float32 if half else dt
        assert (seen, tuple(y.shape), y.dtype) == ([(ran, width)], out, dt), (xs, dt)


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


def test_dilation_along_a_kernel_of_one_is_dropped() -> None:
    """A dilation along a dim whose kernel is 1 changes nothing, and is passed as 1: the
    float16 3-D conv below segfaulted in oneDNN with it (the test's process would die)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 3, 1, generator=g).half()
    w = torch.randn(4, 2, 2, 2, 1, generator=g).half()
    y = pm_core._compat.conv(x, w, stride=(2, 1, 2), padding=(0, 0, 1), dilation=(2, 1, 2))
    same = torch.nn.functional.conv3d(
        x.float(), w.float(), stride=(2, 1, 2), padding=(0, 0, 1), dilation=(2, 1, 1)
    )  # a half 3-D conv runs in float32
    assert torch.equal(y, same.half())
