"""Every registered impl traces to one graph under ``torch.compile(fullgraph=True)``.

A Python branch on a tensor's values, or a call dynamo cannot trace, breaks the graph (and
fails ``fullgraph=True``), so a compiled Swin would fall back to eager around every patch
merging. ``backend="eager"`` runs the captured graph with the same kernels, so the
compiled result must equal the eager one bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import pm_core
from pm_core import Norm, auto, impls


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _args(norm: Norm, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 32, generator=g).to(dtype)
    w = (torch.randn(64, 128, generator=g) / 128**0.5).to(dtype)
    n = {"pre": 128, "post": 64, "none": 0}[norm]
    if not n:
        return x, w, None, None
    return x, w, (torch.rand(n, generator=g) + 0.5).to(dtype), torch.randn(n, generator=g).to(dtype)


def _compiled_equals_eager(impl: str, norm: Norm, dtype: torch.dtype) -> None:
    x, w, nw, nb = _args(norm, dtype)

    def merge(x: Tensor) -> Tensor:
        return pm_core.patch_merge(x, w, nw, nb, norm=norm, impl=impl)

    with torch.no_grad():
        y = torch.compile(merge, backend="eager", fullgraph=True)(x)
        expected = merge(x)
    assert y.dtype == dtype
    assert torch.equal(y, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("impl", pm_core.IMPLS)
def test_every_impl_compiles_to_one_graph(impl: str, norm: Norm, dtype: torch.dtype) -> None:
    """With this CPU's own capability probe, which dynamo cannot trace but calls once."""
    _compiled_equals_eager(impl, norm, dtype)


@pytest.mark.parametrize("units", [False, True], ids=["no-half-units", "half-units"])
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_conv_cw_compiles_on_either_kind_of_cpu(
    monkeypatch: pytest.MonkeyPatch, units: bool, norm: Norm
) -> None:
    """A bfloat16 call runs in float32 on a CPU without bf16 units, natively with them:
    both paths trace to one graph, whichever this CPU takes."""
    monkeypatch.setattr(impls, "_cpu_half_units", lambda dtype: units)
    _compiled_equals_eager("conv_cw", norm, torch.bfloat16)


def test_the_constant_mark_is_the_one_torch_sets() -> None:
    """pm_core marks its probes (the CPU's capabilities, auto's cache read) as
    ``torch.compiler.assume_constant_result`` does, without importing ``torch._dynamo``
    (3.5 s): if torch ever marks differently, this says so before the compile tests do."""

    def probe() -> None: ...

    torch.compiler.assume_constant_result(probe)  # type: ignore[no-untyped-call]
    assert vars(probe)
    assert vars(auto._cached_choice).items() >= vars(probe).items()
