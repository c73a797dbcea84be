"""The suite judges reduced-precision GEMMs correctly, shown on the CPU by emulation.

Each variant runs a registered impl with its float32 GEMMs on operands rounded to TF32
or bfloat16 (:class:`~tests.selftest.emulated.EmulatedGemms`): the arithmetic a GPU's
tensor cores do under PyTorch's default cuDNN flags. Two claims, for outputs and every
gradient:

* the IEEE float32 bound **rejects** each variant: Hypothesis finds a float32 case
  outside it (small C, where the IEEE bound is tightest, within a few examples);
* the bound for the matching ``gemm_precision`` **accepts** it on every drawn case,
  whichever rounding (to nearest, or truncation) the hardware applies.

So when ``nox -s tests_gpu`` first runs on a GPU, a TF32 conv is neither failed for
being TF32 nor passed for being wrong.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm
from pm_core.testing import (
    Case,
    cases,
    check_forward,
    check_grads,
    exact_combos,
    examples,
    merge_for,
)
from tests.selftest.emulated import EmulatedGemms, round_operand
from tests.selftest.test_planted_bugs import examples_to_catch

pytestmark = pytest.mark.usefixtures("single_thread")

FORMATS = ("tf32", "bf16")


@pytest.fixture(autouse=True)
def _no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated variants are not implementations: keep them out of ``$PM_CORE_RECORD``."""
    monkeypatch.delenv("PM_CORE_RECORD", raising=False)


def test_rounding_is_to_the_format() -> None:
    """The emulation's operands are exactly representable in the format, off by at most
    half a unit in its last place (to nearest) or one (truncation), and ties go to even."""
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 1e3
    for fmt, bits in (("tf32", 10), ("bf16", 7)):
        for rounding, ulps in (("rne", 0.5), ("rz", 1.0)):
            r = round_operand(x, fmt, rounding)
            assert torch.equal(round_operand(r, fmt, rounding), r)  # idempotent
            rel = ((r - x).abs() / x.abs()).max().item()
            assert rel <= ulps * 2.0**-bits
            assert rel > 0.25 * ulps * 2.0**-bits  # it rounded something
    assert torch.equal(round_operand(x, "bf16"), x.bfloat16().float())  # torch's own RNE
    tie = torch.tensor([1 + 2.0**-11, 1 + 3 * 2.0**-11])  # halfway between TF32 neighbours
    assert round_operand(tie, "tf32").tolist() == [1.0, 1 + 4 * 2.0**-11]


@pytest.mark.parametrize("rounding", ["rne", "rz"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("impl", "kind"), [("conv", "forward"), ("slice", "forward"),
                                            ("conv", "grads"), ("slice", "grads")])  # fmt: skip
def test_ieee_bound_rejects_emulated(impl: str, kind: str, fmt: str, rounding: str) -> None:
    """Under the IEEE float32 bound, the emulated reduced-precision GEMM is caught."""
    subject = merge_for(impl)

    def check(case: Case) -> None:
        with EmulatedGemms(fmt, rounding):
            if kind == "forward":
                check_forward(subject, case, norm="none", gemm_precision="ieee")
            else:
                check_grads(subject, case, norm="none", gemm_precision="ieee")

    found = examples_to_catch(check, grad=kind == "grads", dtype=torch.float32, budget=50)
    assert found[1] == "AssertionError", found


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("impl", "norm"), exact_combos())
@examples(0.3)
@given(data=st.data())
def test_matching_bound_accepts_emulated(
    impl: str, norm: Norm, fmt: str, data: st.DataObject
) -> None:
    """With ``gemm_precision`` set to the emulated format, outputs and all gradients of
    every exact impl stay within ``pm_core.error_bounds``, for either rounding."""
    rounding = data.draw(st.sampled_from(["rne", "rz"]), label="rounding")
    case = data.draw(cases(torch.float32, grad=True), label="case")
    subject = merge_for(impl)
    with EmulatedGemms(fmt, rounding) as mode:
        check_forward(subject, case, norm=norm, gemm_precision=fmt)
        check_grads(subject, case, norm=norm, gemm_precision=fmt)
    if all(case.shape):
        assert mode.calls >= 2, "no GEMM was emulated: the mode was bypassed"
