"""Whole-model forward: each library's Swin as shipped vs with its merges swapped to the conv form.

Ids read ``<library>-<model>-<impl>-<dtype>``; groups are per model and dtype, so
``--benchmark-group-by=group`` puts the original and the swapped model side by side.
With ``--quick``: batch 1 and one model. ``--report`` (the report's subset) is the full set:
a warm-up and five rounds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from pm_core import swap_patch_merging

pytestmark = pytest.mark.models


@dataclass(frozen=True)
class ModelCase:
    library: str
    model: str
    build: Callable[[], nn.Module]
    size: int

    @property
    def name(self) -> str:
        return f"{self.library}-{self.model}"


def _tv(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(pytest.importorskip("torchvision.models"), name)()


def _timm(name: str) -> Callable[[], nn.Module]:
    return lambda: pytest.importorskip("timm").create_model(name)


def _hf(model: str, config: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        tr = pytest.importorskip("transformers")
        built: nn.Module = getattr(tr, model)(getattr(tr, config)())
        return built

    return build


CASES = [
    ModelCase("torchvision", "swin_t", _tv("swin_t"), 224),
    ModelCase("torchvision", "swin_v2_t", _tv("swin_v2_t"), 256),
    ModelCase("timm", "swin_tiny_patch4_window7_224", _timm("swin_tiny_patch4_window7_224"), 224),
    ModelCase("timm", "swinv2_tiny_window8_256", _timm("swinv2_tiny_window8_256"), 256),
    ModelCase("transformers", "SwinModel", _hf("SwinModel", "SwinConfig"), 224),
    ModelCase("transformers", "Swinv2Model", _hf("Swinv2Model", "Swinv2Config"), 224),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    quick = metafunc.config.getoption("--quick", default=False)
    cases = CASES[:1] if quick else CASES
    metafunc.parametrize("case", cases, ids=[c.name for c in cases], scope="module")


_BUILT: dict[str, nn.Module] = {}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("impl", ["original", "conv"])
def test_model_forward(
    benchmark: Any, request: pytest.FixtureRequest, case: ModelCase, impl: str, dtype: str
) -> None:
    """Forward time of one whole model, batch 8 at its native resolution (1 with --quick)."""
    quick = request.config.getoption("--quick", default=False)
    if case.name not in _BUILT:
        _BUILT.clear()  # one model alive at a time
        torch.manual_seed(0)
        _BUILT[case.name] = case.build().eval()
    model = copy.deepcopy(_BUILT[case.name])
    if impl != "original":
        assert swap_patch_merging(model, impl=impl) == 3
    model = model.to(DTYPES[dtype])
    x = torch.randn(1 if quick else 8, 3, case.size, case.size, dtype=DTYPES[dtype])
    benchmark.group = f"{case.name}-{dtype}"
    benchmark.extra_info.update(library=case.library, model=case.model, impl=impl, dtype=dtype)
    with torch.inference_mode():
        model(x)  # warm-up: oneDNN primitive creation, allocator
        benchmark.pedantic(model, args=(x,), rounds=3 if quick else 5, iterations=1)
