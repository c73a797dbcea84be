"""The gather alone: ``space_to_depth`` is the oracle's gather bit for bit, for every window
and layout, and ``depth_to_space`` undoes it for every tiling window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core.testing import (
    check_depth_to_space_inverts,
    check_window_gather,
    dtype_params,
    examples,
    window_cases,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("dtype", dtype_params())
@examples(0.5)
@given(data=st.data())
def test_gather_is_the_oracle_gather(dtype: torch.dtype, data: st.DataObject) -> None:
    """``space_to_depth`` (``Tensor.unfold`` views, one copy) equals the oracle's
    index-formula gather bit for bit, in every dtype: it only moves data."""
    check_window_gather(data.draw(window_cases(dtype), label="case"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@examples(0.5)
@given(data=st.data())
def test_depth_to_space_inverts_space_to_depth(dtype: torch.dtype, data: st.DataObject) -> None:
    """For every tiling window (2-D / 3-D, any padding) and every layout, named or an
    explicit offset permutation, scatter . gather is the identity on the positions the
    windows cover (zero elsewhere), and the scatter is the oracle's index-formula one."""
    check_depth_to_space_inverts(data.draw(window_cases(dtype, tiling=True), label="case"))
