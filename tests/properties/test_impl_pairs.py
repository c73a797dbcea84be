"""Property 2: every implementation agrees with the reference one (``slice``) in the same dtype.

The pairs are :func:`pm_core.testing.pair_combos`: each impl against the reference, not
every pair, since property 1 implies the rest (see its docstring)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from pm_core.testing import (
    cases,
    check_pair,
    device_params,
    dtype_params,
    examples,
    merge_for,
    pair_combos,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("device", device_params())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(("a", "b", "norm"), pair_combos())
@examples(0.5)
@given(data=st.data())
def test_pair_agrees(
    a: str, b: str, norm: Norm, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    """Two impls that both claim exactness for ``norm`` give outputs within the sum of
    their bounds against the oracle (2x ``pm_core.error_bounds``) of each other, in
    the input's own dtype."""
    case = data.draw(cases(dtype), label="case")
    check_pair(merge_for(a), merge_for(b), case, norm=norm, device=device)
