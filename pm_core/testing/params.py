"""The small finite axes the suite parametrizes over (dtypes, devices, impl x norm
combinations from the registry), and example counts scaled to the active Hypothesis
profile."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import settings

import pm_core

from .strategies import DTYPES, NORMS, dtype_name


def dtype_params() -> list[Any]:
    return [pytest.param(d, id=dtype_name(d)) for d in DTYPES]


def device_params(*, meta: bool = False) -> list[Any]:
    """cpu always; meta on request; cuda marked ``cuda`` and skipped cleanly without a GPU
    (so ``-m cuda`` always collects); mps only where present."""
    cuda = torch.cuda.is_available()
    params = [pytest.param("cpu", id="cpu")]
    if meta:
        params.append(pytest.param("meta", id="meta"))
    params.append(
        pytest.param(
            "cuda",
            id="cuda",
            marks=[pytest.mark.cuda, pytest.mark.skipif(not cuda, reason="no CUDA device")],
        )
    )
    if torch.backends.mps.is_available():
        params.append(pytest.param("mps", id="mps"))
    return params


def active_settings() -> settings:
    """The active profile's settings (a suite's ``conftest.py`` loads one before any
    test module is imported; Hypothesis's default is one too)."""
    current = settings.default
    assert current is not None, "no Hypothesis settings profile is loaded"
    return current


def examples(fraction: float) -> settings:
    """Settings with ``fraction`` of the active profile's ``max_examples`` (at least 1).

    Test modules are imported after ``--hypothesis-profile`` is loaded, so this scales
    with dev/ci/thorough alike.
    """
    return settings(max_examples=max(1, round(active_settings().max_examples * fraction)))


def exact_combos() -> list[Any]:
    """``(impl, norm)`` for every registered impl and every norm it claims to be exact for."""
    return [
        pytest.param(name, norm, id=f"{name}-{norm}")
        for name, spec in pm_core.REGISTRY.items()
        for norm in NORMS
        if norm in spec.exact_for
    ]


def inexact_combos() -> list[Any]:
    """``(impl, norm)`` for every norm mode an impl is registered as *not* exact for."""
    return [
        pytest.param(name, norm, id=f"{name}-{norm}")
        for name, spec in pm_core.REGISTRY.items()
        for norm in NORMS
        if norm not in spec.exact_for
    ]


def general_impls() -> list[str]:
    """The registered impls that compute every window (``Impl.windows == "any"``)."""
    return [name for name, spec in pm_core.REGISTRY.items() if spec.windows == "any"]


def pair_combos() -> list[Any]:
    """``(reference, impl, norm)``: every impl against the first registered impl that is
    exact for the same norm mode (``slice`` for pm-core's own).

    Pairs between two non-reference impls add nothing: ``|a - b| <= |a - o| + |o - b|``
    on every input, so a pair outside the sum of its oracle bounds is an impl outside its
    own bound (property 1) on that input. Each impl is paired once, so that every impl's
    agreement with the reference path is checked on inputs of its own.
    """
    out = []
    for norm in NORMS:
        exact = [n for n, spec in pm_core.REGISTRY.items() if norm in spec.exact_for]
        out += [pytest.param(exact[0], b, norm, id=f"{exact[0]}-{b}-{norm}") for b in exact[1:]]
    return out
