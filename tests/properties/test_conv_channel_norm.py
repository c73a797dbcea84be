"""Property 7: an impl registered as inexact for a norm mode is shown to differ.

In the registry that is ``conv_channel_norm`` under ``norm="pre"``: a LayerNorm over the
C channels of each pixel is not the LayerNorm over the 4C window that Swin applies.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import find, settings

import pm_core
from pm_core import Norm
from tests.assertions import check_differs, merge_for, record
from tests.strategies import active_settings, cases, inexact_combos

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(("impl", "norm"), inexact_combos())
def test_inexact_impl_differs(
    impl: str, norm: Norm, record_property: Callable[[str, object], None]
) -> None:
    """Hypothesis finds an input on which ``impl`` is outside the oracle's error bound,
    and shrinks it to a minimal counterexample (attached to the junit report as the
    ``counterexample`` property, with the error/bound ratio on it)."""
    subject = merge_for(impl)
    budget = settings(database=None, max_examples=max(50, active_settings().max_examples))
    case = find(
        cases(torch.float64, layout="contiguous", max_numel=64),
        lambda c: check_differs(subject, c, norm=norm) > 1,
        settings=budget,
    )
    ratio = check_differs(subject, case, norm=norm)
    record_property("counterexample", repr(case))
    record_property("bound_ratio", ratio)
    record(
        impl=impl, norm=norm, dtype=case.dtype, device="cpu",
        gemm_precision=pm_core.gemm_precision(impl, "cpu", case.torch_dtype), kind="forward",
        shape=list(case.shape), max_abs_err=None, bound_ratio=ratio, kappa=None,
        passed=True, expect="differ",
    )  # fmt: skip
    assert ratio > 1
    # shrunk: one image (the difference needs no batch)
    assert case.shape[0] == 1, case
