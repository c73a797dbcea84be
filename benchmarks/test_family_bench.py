"""pytest-benchmark: the space-to-depth family's gather form against its conv form, forward.

Layers and forms are :mod:`pm_core.lab.family`'s: MONAI SwinUNETR's four merges at a
96^3 input and YOLOv5's Focus at 640x640 (k=3 as in YOLOv5s, and k=1), each as
``gather`` and ``conv``. Ids read ``<form>-<dtype>-<layer>`` and groups are per layer and
dtype, so ``--benchmark-group-by=group`` puts the two forms side by side. ``extra_info``
records the bytes moved (counted at the aten dispatcher on the benchmark device) and
the analytic minimum. ``--quick``: three small shapes in float32; ``--report`` (the
report's subset) and the default: every layer in float32 and bfloat16 (and float16 on
CUDA by default), with 0.25 s (``--report``) or 0.5 s of rounds per case.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from pm_core.lab.family import (
    FAMILY_SHAPES,
    FORMS,
    QUICK_FAMILY_SHAPES,
    FamilyShape,
    Form,
    family_call,
    family_traffic,
    minimum_bytes,
)

from .conftest import bench_device


@dataclass(frozen=True)
class Case:
    form: Form
    dtype: torch.dtype
    shape: FamilyShape

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def id(self) -> str:
        return f"{self.form}-{self.dtype_name}-{self.shape.name}"


def build_cases(config: pytest.Config) -> list[Case]:
    if config.getoption("--quick"):
        return [Case(f, torch.float32, s) for s in QUICK_FAMILY_SHAPES for f in FORMS]
    dtypes = [torch.float32, torch.bfloat16]
    if bench_device(config).type == "cuda" and not config.getoption("--report"):
        dtypes.append(torch.float16)
    return [Case(f, dt, s) for s in FAMILY_SHAPES for dt in dtypes for f in FORMS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = build_cases(metafunc.config)
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@functools.cache
def _traffic(case: Case, device: torch.device) -> tuple[int, int]:
    """(bytes this form moves, the analytic minimum), counted on ``device``."""
    return (
        family_traffic(case.shape, case.form, case.dtype, device),
        minimum_bytes(case.shape, case.dtype),
    )


def _runner(case: Case, device: torch.device) -> Callable[[], object]:
    call = family_call(case.shape, case.form, case.dtype, device)
    cuda = device.type == "cuda"

    def fwd() -> object:
        with torch.no_grad():
            y = call()
        if cuda:
            torch.cuda.synchronize(device)
        return y

    return fwd


def test_family(
    benchmark: Any, request: pytest.FixtureRequest, case: Case, device: torch.device
) -> None:
    """Time one form of one layer, forward; record its bytes and the minimum."""
    if case.dtype == torch.float16 and device.type == "cpu":
        pytest.skip("float16 is benchmarked on GPU only")
    fn = _runner(case, device)
    benchmark.group = f"{case.shape.layer} {case.shape.label} {case.dtype_name}"
    fn()  # warm-up; the next call sizes the number of rounds to the time budget
    cfg = request.config
    quick = cfg.getoption("--quick") or cfg.getoption("benchmark_disable")
    budget = 0.05 if quick else 0.25 if cfg.getoption("--report") else 0.5
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    rounds = int(min(max(budget / once, 3), 200))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
    nbytes, minimum = _traffic(case, device)
    benchmark.extra_info.update(
        case=case.shape.name,
        layer=case.shape.layer,
        form=case.form,
        dtype=case.dtype_name,
        mode="fwd",
        shape=list(case.shape.shape),
        label=case.shape.label,
        bytes=nbytes,
        min_bytes=minimum,
        traffic_ratio=nbytes / minimum,
        device=str(device),
    )
