"""The error bound holds on the worst-conditioned windows a targeted search can find.

Property 1 draws ill-conditioned windows among others; here Hypothesis is steered
(``hypothesis.target``) towards large window conditioning ``|mean|/std`` and towards
large error / bound ratios, for the norm that conditioning affects (``"pre"``), in
every dtype. This is where a folded or single-pass LayerNorm would lose precision.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, target
from hypothesis import strategies as st

import pm_core
from pm_core.bounds import window_conditioning
from pm_core.testing import (
    EPS,
    Values,
    cases,
    check_forward,
    device_params,
    dtype_params,
    examples,
    merge_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")

PRE_EXACT = [name for name, spec in pm_core.REGISTRY.items() if "pre" in spec.exact_for]


def _ill(v: Values) -> bool:
    return v.kind in ("offset", "near_constant", "ulp")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("impl", PRE_EXACT)
@examples(0.5)
@given(data=st.data())
def test_bound_holds_on_ill_conditioned_windows(
    impl: str, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    """On windows with a large mean offset against their spread, near-constant
    windows, or windows a few ulps of their mean wide, ``impl`` under ``norm="pre"`` stays within ``pm_core.error_bounds``, whose
    LayerNorm term grows like the conditioning (not its square, as E[x^2] - E[x]^2
    would)."""
    case = data.draw(cases(dtype).filter(lambda c: _ill(c.values)), label="case")
    inp = case.build("pre", device)
    kappa = window_conditioning(inp.x, hw=inp.hw, eps=EPS).max()
    target(math.log10(1 + float(kappa)), label="log10(1 + kappa)")
    ratio = check_forward(merge_for(impl), case, norm="pre", device=device)
    target(ratio, label="error / bound")
