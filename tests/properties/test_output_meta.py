"""Property 5: output shape, dtype, device and layout agree across impls, meta included, for
Swin's 2x2 merge and every window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pm_core
from pm_core import Norm
from pm_core.testing import (
    DTYPES,
    EPS,
    NORMS,
    cases,
    check_output_meta,
    device_params,
    examples,
    general_impls,
    merge_for,
    window_cases,
    window_merge_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("device", device_params(meta=True))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
@examples(0.5)
@given(data=st.data())
def test_output_metadata(impl: str, norm: Norm, device: str, data: st.DataObject) -> None:
    """Every impl (exact for ``norm`` or not) returns ``(B, ceil(H/2), ceil(W/2), 2C)``, or
    ``(B, L', 2C)`` for (B, L, C) input, in the input's dtype, on its device, strided;
    on the meta device too, where nothing is computed."""
    case = data.draw(cases(data.draw(st.sampled_from(DTYPES), label="dtype")), label="case")
    check_output_meta(merge_for(impl), case, norm=norm, device=device)


@pytest.mark.parametrize("device", device_params(meta=True))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", general_impls())
@examples(0.25)
@given(data=st.data())
def test_window_output_metadata(impl: str, norm: Norm, device: str, data: st.DataObject) -> None:
    """``window_merge`` returns ``(B, *window.output_size(S), 2C)`` in the input's dtype, on
    its device, strided, for every drawn window; on the meta device too."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    check_output_meta(
        window_merge_for(impl), data.draw(window_cases(dtype)), norm=norm, device=device
    )


@pytest.mark.parametrize("device", device_params(meta=True))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
@examples(0.25)
@given(data=st.data())
def test_gradient_metadata(impl: str, norm: Norm, device: str, data: st.DataObject) -> None:
    """Backward through every impl gives each input a gradient of its own shape, dtype and
    device, meta included."""
    case = data.draw(
        cases(data.draw(st.sampled_from(DTYPES), label="dtype"), grad=True), label="case"
    )
    inp = case.build(norm, device)
    leaves = [t.requires_grad_() for t in inp[:4] if t is not None]
    x, w, nw, nb = inp[:4]
    y = pm_core.patch_merge(x, w, nw, nb, hw=inp.hw, norm=norm, eps=EPS, impl=impl)
    torch.autograd.backward(y, inp.grad_out)
    for t in leaves:
        assert t.grad is not None, f"{impl}: no gradient for a {tuple(t.shape)} input"
        got = (tuple(t.grad.shape), t.grad.dtype, t.grad.device)
        assert got == (tuple(t.shape), t.dtype, t.device), f"{impl} (norm={norm}): {got}"


@pytest.mark.parametrize("device", device_params(meta=True))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
@examples(0.25)
@given(data=st.data())
def test_module_metadata(impl: str, norm: Norm, device: str, data: st.DataObject) -> None:
    """``PatchMerging`` and ``ConvPatchMerging`` built on ``device`` give the functional
    form's output shape, dtype and device."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    case = data.draw(cases(dtype), label="case")
    inp = case.build(norm, device)
    c = case.shape[3]
    for cls in (pm_core.PatchMerging, pm_core.ConvPatchMerging):
        m = cls(c, norm=norm, impl=impl, device=device, dtype=dtype)
        y = m(inp.x, inp.hw)
        got = (tuple(y.shape), y.dtype, y.device)
        want = (case.output_shape(), dtype, inp.x.device)
        assert got == want, f"{cls.__name__}(impl={impl!r}, norm={norm!r}): {got} != {want}"
