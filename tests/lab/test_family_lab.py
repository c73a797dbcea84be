"""The family's measurements and the MONAI legacy-merge story: what the report's section claims.

The timing itself is only smoke-tested here (one quick run); speed is measured in
``benchmarks/test_family_bench.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pm_core.lab import report
from pm_core.lab.family import (
    FORMS,
    QUICK_FAMILY_SHAPES,
    YOLOV5S_FOCUS,
    FamilyShape,
    FamilyTiming,
    Form,
    conv_speedups,
    family_call,
    family_table,
    family_traffic,
    minimum_bytes,
    section_family,
)
from pm_core.lab.interleave import Interval
from pm_core.lab.monai_legacy import (
    SLICES_1_4,
    SLICES_1_5,
    legacy_merge_findings,
    slice_gather,
)
from pm_core.window_layouts import WINDOW_LAYOUTS
from tests import library_code as lib

MISSING_1_4 = ((0, 1, 1), (1, 1, 0))
DUPLICATED_1_4 = {(0, 1, 0): (2, 5), (0, 0, 1): (3, 6)}


@pytest.mark.parametrize("fs", QUICK_FAMILY_SHAPES, ids=lambda s: s.name)
def test_gather_and_conv_forms_are_the_same_function(fs: FamilyShape) -> None:
    """In float64 (rounding ~1e-16) the two forms of each layer agree to 1e-9 relative:
    the table compares two ways of computing one function, not two functions."""
    with torch.no_grad():
        y = {f: family_call(fs, f, torch.float64)() for f in FORMS}
    torch.testing.assert_close(y["conv"], y["gather"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("fs", QUICK_FAMILY_SHAPES, ids=lambda s: s.name)
def test_traffic_is_at_least_the_minimum(fs: FamilyShape, form: Form) -> None:
    """No form moves less than the analytic minimum; Focus's one conv moves exactly it
    (it reads NCHW x in place), and every gather form pays at least one copy of x."""
    nbytes, minimum = family_traffic(fs, form), minimum_bytes(fs)
    assert nbytes >= minimum, f"{form} on {fs.name}: {nbytes} < minimum {minimum}"
    x_bytes = 4 * torch.Size(fs.shape).numel()
    if form == "conv" and fs.focus_kernel is not None:
        assert nbytes == minimum
    if form == "gather":
        assert nbytes >= minimum + 2 * x_bytes, f"gather on {fs.name} copied less than x"


def test_minimum_bytes_counts_input_parameters_and_output_once() -> None:
    """YOLOv5s Focus at 640: x (1, 3, 640, 640), weight [32, 12, 3, 3], y (1, 32, 320, 320)."""
    want = 4 * (3 * 640 * 640 + 32 * 12 * 3 * 3 + 32 * 320 * 320)
    assert minimum_bytes(YOLOV5S_FOCUS) == want


def test_slice_lists_are_the_reproduced_forwards() -> None:
    """The lab's slice lists are tests/library_code.py's, and the gathers built from them
    are MONAI's forwards (<= 1.4 and >= 1.5) bit for bit, odd sizes included."""
    assert SLICES_1_4 == lib.MONAI_1_4_OFFSETS
    assert WINDOW_LAYOUTS["monai-legacy"].offsets == SLICES_1_5
    x = torch.randn(2, 3, 5, 4, 3)
    assert torch.equal(slice_gather(SLICES_1_4)(x), lib.monai_legacy_gather_1_4(x))
    assert torch.equal(slice_gather(SLICES_1_5)(x), lib.monai_legacy_gather(x))


def test_legacy_findings_name_the_offsets_and_measure_the_difference() -> None:
    """The probe refuses <= 1.4's list naming (0,1,0) and (0,0,1) read twice and (0,1,1),
    (1,1,0) never, and finds >= 1.5's to be "monai-legacy"; the two functions differ far
    beyond float64 rounding; without a norm fold_offsets converts (rounding only), with the
    pre-norm the folded weights still differ."""
    f = legacy_merge_findings((1, 4, 6, 4, 3))
    assert f.duplicated == DUPLICATED_1_4
    assert f.missing == MISSING_1_4
    assert "missing [(0, 1, 1), (1, 1, 0)]" in f.refusal
    assert f.fixed_layout == "monai-legacy"
    assert f.merge_rel_l2 > 0.1
    assert f.fold_no_norm_rel_l2 < 1e-13
    assert f.fold_pre_norm_rel_l2 > 1e-3


def _timing(case: str, form: str, median: float, nbytes: int) -> FamilyTiming:
    return FamilyTiming(
        case=case, layer="L", form=form, dtype="float32", shape=[1, 2, 2, 2, 1],
        label="1x2x2x2x1 BDHWC", bytes=nbytes, min_bytes=100, device="cpu", median=median,
    )  # fmt: skip


def test_family_table_shows_the_interleaved_speedup_not_a_ratio_of_medians() -> None:
    """The conv row carries the interleaved t_gather / t_conv with its interval; the
    medians of the two separate benchmark runs are not divided."""
    rows = [_timing("a", "gather", 2e-3, 300), _timing("a", "conv", 1e-3, 100)]
    table = family_table(rows, {("a", "float32"): Interval(1.4, 1.5, 1.6)})
    assert "| L | 1x2x2x2x1 BDHWC | gather | 2.00 | 0.0 | 0.0 | 3.00 |" in table
    assert "| L | 1x2x2x2x1 BDHWC | conv | 1.00 (1.50x [1.40, 1.60]) | 0.0 | 0.0 | 1.00 |" in table
    assert "2.00x" not in family_table(rows)


def test_conv_speedups_time_both_forms_of_each_case() -> None:
    fs = QUICK_FAMILY_SHAPES[0]
    rows = [
        FamilyTiming(
            case=fs.name,
            layer=fs.layer,
            form=form,
            dtype="float32",
            shape=list(fs.shape),
            label=fs.label,
            bytes=1,
            min_bytes=1,
            device="cpu",
            median=1.0,
        )
        for form in FORMS
    ]
    (iv,) = conv_speedups(rows, rounds=3).values()
    assert 0 < iv.low <= iv.estimate <= iv.high


def test_section_family_quick(tmp_path: Path) -> None:
    """The report step, quick: the quick benchmark runs (both forms of every quick layer,
    bytes >= minimum), its table and the MONAI story are added, the offsets named."""
    r = report.Report(tmp_path, quick=True)
    step = report.Step("family", section_family)
    step.run(r, lambda _line: None)
    table_section, monai_section = r.sections
    assert table_section.startswith("## The space-to-depth family")
    for fs in QUICK_FAMILY_SHAPES:
        for form in FORMS:
            assert f"| {fs.layer} | {fs.label} | {form} |" in table_section
    rows = [
        line.split(" | ")
        for line in table_section.splitlines()
        if " BDHWC | " in line or " NCHW | " in line
    ]
    assert len(rows) == 2 * len(QUICK_FAMILY_SHAPES)
    assert all(float(row[-1].rstrip(" |")) >= 1 for row in rows), rows
    # the conv rows carry the interleaved speedup with its interval, the gather rows none
    assert all(("x [" in row[3]) == (row[2] == "conv") for row in rows), rows
    assert (tmp_path / "family.json").is_file()
    assert monai_section.startswith("## MONAI's legacy 3-D merge")
    for part in ("(0, 1, 0) at positions 2, 5", "(0, 0, 1) at positions 3, 6",
                 "missing (0, 1, 1), (1, 1, 0)", "0.550", "0.0937"):  # fmt: skip
        assert part in monai_section
    (headline,) = r.headline
    assert "(0, 1, 0), (0, 0, 1) twice" in headline
