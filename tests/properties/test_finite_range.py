"""Property 8: finite in, finite out, up to the edge of each dtype's range.

Wherever the layer's own values are finite in the dtype (the inputs within
:func:`pm_core.bounds.finite_range`, and the float64 oracle's output and gradients within
the dtype's range), every impl's output and gradients are finite, and within the bound.
The ``edge`` values (:func:`pm_core.testing.edge_values`) draw magnitudes a power of two
below the edge; one parametrization pins the edge itself, so the derandomised ``ci``
profile always meets it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import pm_core
from pm_core import Norm, fold
from pm_core.testing import (
    NORMS,
    cases,
    check_finite,
    check_forward,
    check_grads,
    device_params,
    dtype_params,
    edge_values,
    exact_combos,
    examples,
    general_impls,
    inexact_combos,
    merge_for,
    window_cases,
    window_merge_for,
    windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")

#: ``0``: the edge of the range itself; ``None``: any power of two below it.
STEPS = [pytest.param(0, id="edge"), pytest.param(None, id="below")]


@pytest.fixture(params=[False, True], ids=["own-units", "half-units"])
def half_units(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """``conv_cw`` keeps a half dtype on a CPU with half units (and on CUDA), else computes
    in float32: ``half-units`` forces the first, so both paths meet the edge on any CPU."""
    if request.param:
        monkeypatch.setattr(pm_core.impls, "_cpu_half_units", lambda dtype, unknown=False: True)
    return bool(request.param)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.1)
@given(data=st.data())
def test_finite_and_bounded_up_to_the_edge(
    impl: str, norm: Norm, dtype: torch.dtype, step: int | None, data: st.DataObject
) -> None:
    """``patch_merge(impl=...)``: where the oracle's output and gradients are finite in the
    dtype, so are the impl's, and within ``pm_core.error_bounds``."""
    case = data.draw(cases(dtype, grad=True, vals=edge_values(step)), label="case")
    subject = merge_for(impl)
    check_finite(subject, case, norm=norm)
    check_forward(subject, case, norm=norm)
    check_grads(subject, case, norm=norm)


@pytest.mark.usefixtures("half_units")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("norm", NORMS)
@examples(0.1)
@given(data=st.data())
def test_conv_cw_half_paths_finite_at_the_edge(
    norm: Norm, dtype: torch.dtype, data: st.DataObject
) -> None:
    """``conv_cw`` in both of its half paths (native, and float32 on a CPU without half
    units) at the edge itself, without autograd (where it runs its own pre-norm form)."""
    case = data.draw(cases(dtype, vals=edge_values(0)), label="case")
    with torch.no_grad():
        check_forward(merge_for("conv_cw"), case, norm=norm)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(("impl", "norm"), inexact_combos())
@examples(0.1)
@given(data=st.data())
def test_inexact_impls_are_finite_too(
    impl: str, norm: Norm, dtype: torch.dtype, step: int | None, data: st.DataObject
) -> None:
    """An impl that computes another function (the naive conv's per-pixel norm) is still
    finite wherever the layer is."""
    case = data.draw(cases(dtype, grad=True, vals=edge_values(step)), label="case")
    check_finite(merge_for(impl), case, norm=norm)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.1)
@given(data=st.data())
def test_window_merge_finite_and_bounded_up_to_the_edge(
    impl: str, norm: Norm, dtype: torch.dtype, step: int | None, data: st.DataObject
) -> None:
    """``window_merge(impl=...)`` over 2-D and 3-D windows, tiling (the conv's fold) or not:
    finite where the oracle is, and within ``pm_core.window_error_bounds``."""
    win = data.draw(windows(tiling=data.draw(st.booleans(), label="tiling") or None))
    case = data.draw(
        window_cases(dtype, grad=True, window=win, vals=edge_values(step)), label="case"
    )
    subject = window_merge_for(impl)
    check_finite(subject, case, norm=norm)
    check_forward(subject, case, norm=norm)
    check_grads(subject, case, norm=norm)


@pytest.mark.parametrize(("impl", "norm"), [c for c in exact_combos() if c.values[1] == "pre"])
@example(b=1, hw=(1, 3), c=21, scale=8192.0, seed=0)
@examples(0.2)
@given(
    b=st.integers(1, 2),
    hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    c=st.integers(8, 24),
    scale=st.sampled_from([2.0**12, 2.0**13, 2.0**14]),
    seed=st.integers(0, 2**31 - 1),
)
def test_large_one_signed_float16_windows(
    impl: str, norm: Norm, b: int, hw: tuple[int, int], c: int, scale: float, seed: int
) -> None:
    """float16 windows uniform in ``[scale, 2 scale]`` (the explicit example is the case
    that made the conv fold return -inf): finite, and within the bound."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, 2 * hw[0], 2 * hw[1], c, generator=g, dtype=torch.float64) + 1) * scale
    x = x.to(torch.float16)
    weight = torch.randn(2 * c, 4 * c, generator=g, dtype=torch.float64).to(torch.float16)
    nw, nb = (torch.randn(4 * c, generator=g, dtype=torch.float64).to(torch.float16) for _ in "wb")
    got = pm_core.patch_merge(x, weight, nw, nb, norm=norm, impl=impl)
    want = pm_core.reference_patch_merge(x, weight, nw, nb, norm=norm)
    bound = pm_core.error_bounds(x, weight, nw, nb, norm=norm).output
    assert torch.isfinite(got).all(), f"{impl}: non-finite output for float16 of scale {scale}"
    err = (got.to(torch.float64) - want).abs()
    assert (err <= bound).all(), f"{impl}: error/bound {float((err / bound).max()):.3g}"


@pytest.mark.parametrize("device", device_params())
def test_the_fold_scale_is_a_power_of_two(device: str) -> None:
    """``_unit_scale``'s ``p`` is exactly a power of two over float32's and float64's whole
    normal range (so scaling by it is exact), and ``rstd / p`` lies in ``[1, 2)`` but
    where ``log2`` rounds a value just below a power of two up to it: on every device,
    since ``exp2`` and ``log2`` are the device's own."""
    for dt in (torch.float32, torch.float64):
        info = torch.finfo(dt)
        lo, hi = torch.log2(torch.tensor([info.smallest_normal, info.max], dtype=dt))
        grid = torch.linspace(float(lo) + 1, float(hi) - 1, 4001, dtype=dt, device=device)
        rstd = torch.exp2(grid)
        rstd = torch.cat([rstd, rstd.nextafter(torch.zeros_like(rstd)), rstd * 1.5])
        p, rs = fold._unit_scale(rstd)
        mantissa, _ = torch.frexp(p)
        assert bool((mantissa == 0.5).all()), dt
        assert bool(((rs >= 1 - info.eps) & (rs < 2)).all()), dt
        assert torch.equal(p * rs, rstd), dt
