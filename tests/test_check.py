"""``pm_core.testing.check_merge`` and ``pm-core check``: the suite pointed at a user's merge.

The same checks pm-core's properties run on its registered impls (check_forward,
check_grads), on a user's function or module: a correct one passes in every cell, and
one with two window offsets swapped or its eps off by 10% fails with a counterexample.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import pm_core
from pm_core import Norm
from pm_core.lab.cli import main
from pm_core.testing import NotEquivalent, check_merge
from tests.interop.test_adopt_any import DetectionMerge, MsSwinV1Merge
from tests.selftest.planted import reduce_gathered

F32_64 = [torch.float32, torch.float64]


def good(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    v = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    return reduce_gathered(v, w, nw, nb, norm, eps)


def swapped(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    v = torch.cat([x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]], -1)
    return reduce_gathered(v, w, nw, nb, norm, eps)


def eps_off(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    return good(x, w, nw, nb, norm, 1.1 * eps)


def swin_v1() -> MsSwinV1Merge:
    return MsSwinV1Merge((8, 8), 4)


def test_a_correct_function_is_equivalent_in_every_cell() -> None:
    """Every norm x dtype, forward and gradients, within the bound."""
    v = check_merge(good, dtypes=F32_64, max_examples=5)
    assert v.passed
    assert len(v.cells) == 3 * 2 * 2
    assert all(c.examples == 5 and c.worst <= 1 for c in v.cells)
    assert "equivalent" in v.table().splitlines()[-1]


@pytest.mark.parametrize("bug", [swapped, eps_off], ids=["offsets-swapped", "eps-10pct"])
def test_a_wrong_function_fails_with_a_counterexample(bug: object) -> None:
    """A swapped pair of offsets, or eps 10% off, is caught, with the minimal case and a repro."""
    with pytest.raises(NotEquivalent, match=r"(?s)outside pm_core\.error_bounds.*repro: python -c"):
        check_merge(bug, norms=["pre"], dtypes=[torch.float64], max_examples=25)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "factory", [swin_v1, lambda: DetectionMerge(3)], ids=["ms-swin-v1", "detection"]
)
def test_a_vendored_module_or_its_factory_is_checked_by_its_code(factory: object) -> None:
    """A module (here through a zero-argument factory) is checked in its own norm only."""
    v = check_merge(factory, dtypes=F32_64, max_examples=5)  # type: ignore[arg-type]
    assert v.passed
    assert {c.norm for c in v.cells} == {"pre"}


def test_the_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """0 for an equivalent target, 1 with the counterexample for a wrong one, 2 for one
    that cannot be loaded."""
    args = ["--dtype", "float64", "--norm", "pre", "--examples", "5"]
    assert main(["check", "tests.test_check:good", *args]) == 0
    assert "equivalent" in capsys.readouterr().out
    assert main(["check", "tests.test_check:swapped", *args]) == 1
    assert "repro: python -c" in capsys.readouterr().out
    assert main(["check", "tests.test_check:nothing_here", *args]) == 2
    assert "AttributeError" in capsys.readouterr().err


@pytest.mark.parametrize(
    "impl",
    [
        n
        for n, s in pm_core.REGISTRY.items()
        if s.windows == "2x2" and s.exact_for == set(pm_core.NORMS)
    ],
)
def test_check_merge_passes_pm_cores_own_fast_paths(impl: str) -> None:
    """The user-facing check and the suite's properties are one path: check_merge on a
    registered 2x2 impl's function passes, as its properties do."""
    fn = pm_core.REGISTRY[impl].fn
    assert check_merge(fn, dtypes=[torch.float32], max_examples=3).passed
