"""No impl reads a value to the host.

A read (``.item()``, ``float(t)``, ``bool(t)``, ``torch.equal``, a data-dependent shape)
blocks a CUDA stream until the GPU catches up, and breaks a ``torch.compile`` graph. Each
reaches the dispatcher as one of :data:`HOST_READS`, so a dispatch mode sees it on any
device, the CPU included, for every impl x norm x dtype: forward without and with
autograd recording, and the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import pm_core
from pm_core import Norm
from pm_core.testing import general_impls

aten = torch.ops.aten
#: The ops that return a value to the host, or a shape that depends on values.
HOST_READS = {
    aten._local_scalar_dense.default,  # .item(), float(), int(), bool(), .tolist()
    aten.equal.default,
    aten.is_nonzero.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


class _Reads(TorchDispatchMode):  # type: ignore[no-untyped-call]
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in HOST_READS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _reads(call: Callable[[], Tensor], params: list[Tensor]) -> dict[str, list[str]]:
    """The host reads of ``call()`` without autograd, with it, and in its backward."""
    out = {}
    with torch.no_grad(), _Reads() as mode:
        call()
    out["forward, no grad"] = mode.seen
    for p in params:
        p.requires_grad_()
    with _Reads() as mode:
        y = call()
    out["forward, grad"] = mode.seen
    g = torch.ones_like(y)
    with _Reads() as mode:
        torch.autograd.grad(y, params, g)
    out["backward"] = mode.seen
    return {k: v for k, v in out.items() if v}


def _params(
    norm: Norm, n: int, o: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    size = {"pre": n, "post": o, "none": 0}[norm]
    w = torch.randn(o, n).to(dtype)
    if not size:
        return w, None, None
    return w, (1 + torch.rand(size)).to(dtype), torch.randn(size).to(dtype)


@pytest.fixture(params=[False, True], ids=["own-units", "half-units"])
def units(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``conv_cw`` chooses its path by the CPU's half-precision units: both paths run."""
    if request.param:
        monkeypatch.setattr(pm_core.impls, "_cpu_half_units", lambda dtype, unknown=False: True)


@pytest.mark.usefixtures("units")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("impl", list(pm_core.IMPLS))
def test_patch_merge_impls_make_no_host_read(impl: str, norm: Norm, dtype: torch.dtype) -> None:
    x = torch.randn(2, 6, 4, 8).to(dtype)
    w, nw, nb = _params(norm, 32, 16, dtype)
    params = [t for t in (x, w, nw, nb) if t is not None]

    def call() -> Tensor:
        return pm_core.patch_merge(x, w, nw, nb, norm=norm, impl=impl)

    assert _reads(call, params) == {}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("impl", general_impls())
@pytest.mark.parametrize(
    "window",
    [pm_core.Window((2, 2)), pm_core.Window((2, 2, 2)), pm_core.Window((3, 3), 2, "same")],
    ids=["2x2", "2x2x2", "3x3-s2-same"],
)
def test_window_merge_impls_make_no_host_read(
    impl: str, norm: Norm, dtype: torch.dtype, window: pm_core.Window
) -> None:
    x = torch.randn(2, *(4,) * window.dims, 3).to(dtype)
    n = window.size * 3
    w, nw, nb = _params(norm, n, 6, dtype)
    params = [t for t in (x, w, nw, nb) if t is not None]

    def call() -> Tensor:
        return pm_core.window_merge(x, w, nw, nb, window=window, norm=norm, impl=impl)

    assert _reads(call, params) == {}


def test_a_host_read_is_seen() -> None:
    """The mode sees each kind of read this test looks for."""
    t = torch.ones(3, requires_grad=True)

    def call() -> Tensor:
        _ = float(t.detach().sum()) + bool(t[0]) + torch.equal(t, t)
        return t[t > 0] * 2

    reads = _reads(call, [t])
    assert set(reads) == {"forward, no grad", "forward, grad"}
    for seen in reads.values():
        assert set(seen) >= {"aten._local_scalar_dense.default", "aten.equal.default"}
