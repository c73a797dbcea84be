"""A user's impl, as a user would write it: registered on import (``PM_CORE_IMPLS``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import pm_core
from pm_core import Norm


def my_slice(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """Swin's gather and reduction, written out."""
    v = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    if norm == "pre":
        v = F.layer_norm(v, v.shape[-1:], nw, nb, eps)
    v = F.linear(v, w)
    return F.layer_norm(v, v.shape[-1:], nw, nb, eps) if norm == "post" else v


if "my_registered_slice" not in pm_core.REGISTRY:
    pm_core.register("my_registered_slice", layout="swin", summary="a user's slice")(my_slice)
