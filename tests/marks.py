"""pytest marks shared by test modules."""

from __future__ import annotations

import pytest
import torch

#: ``FakeTensorMode`` makes ``device="cuda"`` tensors without a GPU, but only in a torch
#: built with CUDA: a CPU-only build (``+cpu``) refuses any CUDA device.
needs_cuda_build = pytest.mark.skipif(
    not torch.backends.cuda.is_built(),  # type: ignore[no-untyped-call]
    reason=f"fake CUDA tensors need a CUDA build of torch; this one ({torch.__version__}) is CPU-only",
)
