"""The inverse: ``depth_to_space`` undoes ``space_to_depth`` for every layout of a tiling window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core.testing import check_depth_to_space_inverts, examples, window_cases

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@examples(0.5)
@given(data=st.data())
def test_depth_to_space_inverts_space_to_depth(dtype: torch.dtype, data: st.DataObject) -> None:
    """For every tiling window (2-D / 3-D, any padding) and every layout, named or an
    explicit offset permutation, scatter . gather is the identity on the positions the
    windows cover (zero elsewhere), and the scatter is the oracle's index-formula one."""
    check_depth_to_space_inverts(data.draw(window_cases(dtype, tiling=True), label="case"))
