"""The benchmark matrix's options and shared fixtures (see test_patch_merge_bench.py).

* ``--quick``: a tiny subset for the CI smoke run (whole run well under 2 minutes).
* ``--report``: the subset the report runs: for the layer, Swin-T 224 stages at B=8,
  float32 and bfloat16, forward and forward+backward, every impl and norm, 0.25 s of
  rounds each; for whole models, the full set (a warm-up and five rounds).
"""

from __future__ import annotations

import pytest
import torch

from pm_core.lab.roofline import Roofline, get_roofline
from pm_core.lab.user_impls import load_user_impls

# a user's impls ($PM_CORE_IMPLS, `pm-core bench --impl`), measured beside pm-core's
load_user_impls()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pm-core benchmarks")
    group.addoption("--quick", action="store_true", help="tiny smoke subset of the matrix")
    group.addoption(
        "--report", action="store_true", help="the report's subset: Swin-T 224 stages at B=8"
    )
    group.addoption(
        "--bench-device",
        default=None,
        help="device to benchmark on (default: cuda when available, else cpu)",
    )


def bench_device(config: pytest.Config) -> torch.device:
    name = config.getoption("--bench-device")
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    return bench_device(pytestconfig)


@pytest.fixture(scope="session")
def roofline(pytestconfig: pytest.Config, device: torch.device) -> Roofline | None:
    """This machine's roofline (cached on disk); None when timing is off (smoke runs)."""
    # not benchmark_skip: pyproject's addopts set it, and --benchmark-only overrides it
    if pytestconfig.getoption("benchmark_disable"):
        return None
    return get_roofline(device)
