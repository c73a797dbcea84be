"""Which exact impl is fastest here, answered with interleaved ratios and their intervals.

For each shape x dtype x mode x norm, every candidate impl (and ``impl="auto"``) is timed
in one process, alternating, by :func:`~pm_core.lab.interleave.time_interleaved`; each
impl's speed against ``slice`` is the per-round ratio ``t_slice / t_impl`` with its 95%
bootstrap interval, and the fastest is named only when
:func:`~pm_core.lab.interleave.fastest` can tell it from the runner-up.

Candidates are the registered impls exact in every norm mode: ``conv_channel_norm`` is a
different function under ``pre`` (the foil) and *is* ``conv`` under ``post`` and
``none``. The roofline fractions use a roofline measured at the start of the same
measurement, not a cached one, so a load that slows the machine slows both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import torch

from pm_core import NORMS, REGISTRY, Norm, patch_merge

from .interleave import ROUNDS, fastest, ratio_interval, time_interleaved
from .profiling import case_inputs
from .roofline import Roofline, measure_roofline, merge_flops, roofline_fraction
from .traffic import minimum_traffic

Shape = tuple[int, int, int, int]


class SpeedGroup(TypedDict):
    """One shape x dtype x mode x norm, timed interleaved."""

    shape: list[int]
    dtype: str
    mode: str  # "fwd" or "fwd+bwd"
    norm: str
    rounds: int
    median_s: dict[str, float]  # per impl (and "auto"), the median over rounds
    vs_slice: dict[str, list[float]]  # impl -> [low, estimate, high] of t_slice / t_impl
    fastest: list[str]  # one name: declared; several: they tie
    runner_up: list[float] | None  # [low, estimate, high] of t_runner_up / t_fastest
    auto_runs: str  # the impl impl="auto" ran
    auto_vs_best: list[float]  # [low, estimate, high] of t_auto / t_fastest[0]
    roofline_fraction: dict[str, float]  # per impl: roofline time / median time


def candidates() -> list[str]:
    """Registered impls exact in every norm mode (a user's impls registered too)."""
    return [n for n, impl in REGISTRY.items() if impl.exact_for >= frozenset(NORMS)]


def merge_call(
    shape: Shape, dtype: torch.dtype, norm: Norm, grad: bool, device: torch.device
) -> Callable[[str | Callable[..., torch.Tensor]], None]:
    """``call(impl)``: one forward (and backward) of ``patch_merge`` on the benchmark's
    inputs for the case (:func:`~pm_core.lab.profiling.case_inputs`). ``impl`` is a
    registered name, or a function called as ``impl(x, weight, norm_weight, norm_bias)``
    (a compiled peer)."""
    x, wt, nw, nb = (
        None if t is None else t.requires_grad_(grad)
        for t in case_inputs(shape, norm, dtype, device)
    )
    assert x is not None
    assert wt is not None
    params = [t for t in (x, wt, nw, nb) if t is not None]

    def call(impl: str | Callable[..., torch.Tensor]) -> None:
        for t in params:  # no accumulation into .grad between calls
            t.grad = None
        with torch.set_grad_enabled(grad):
            y = (
                impl(x, wt, nw, nb)
                if callable(impl)
                else patch_merge(x, wt, nw, nb, norm=norm, impl=impl)
            )
            if grad:
                torch.autograd.backward(y, torch.ones_like(y))

    return call


def auto_runs(
    shape: Shape, dtype: torch.dtype, norm: Norm, grad: bool, device: torch.device
) -> str:
    from pm_core.auto import cached_choices, class_key

    """The impl ``impl="auto"`` runs for this class, read from its cache ("?" if none)."""
    x = torch.empty(shape, dtype=dtype, device=device)
    return str(cached_choices().get(class_key(x, norm, grad), {}).get("impl", "?"))


def measure_group(
    shape: Shape,
    dtype: torch.dtype,
    grad: bool,
    norm: Norm,
    *,
    roof: Roofline,
    device: torch.device,
    rounds: int = ROUNDS,
    impls: Sequence[str] | None = None,
) -> SpeedGroup:
    """Time every candidate (and ``auto``) interleaved on one case; ratios and verdict."""
    names = list(impls if impls is not None else candidates())
    if "slice" not in names:
        names.insert(0, "slice")
    call = merge_call(shape, dtype, norm, grad, device)
    timed = {name: (lambda n=name: call(n)) for name in [*names, "auto"]}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = time_interleaved(timed, rounds=rounds, sync=sync)
    verdict = fastest({k: v for k, v in times.items() if k != "auto"})
    best = verdict.fastest[0]
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    x, wt, nw, nb = case_inputs(shape, norm, dtype, "meta")
    nbytes = minimum_traffic(x, wt, nw, nb, norm=norm, backward=grad)
    b, h, w, c = shape
    roof_s = roof.time(nbytes, merge_flops(b, h, w, c, 2 * c, backward=grad), dtype)
    return SpeedGroup(
        shape=list(shape),
        dtype=str(dtype).removeprefix("torch."),
        mode="fwd+bwd" if grad else "fwd",
        norm=norm,
        rounds=rounds,
        median_s=median,
        vs_slice={k: ratio_interval(times["slice"], times[k]).as_list() for k in names},
        fastest=verdict.fastest,
        runner_up=None if verdict.margin is None else verdict.margin.as_list(),
        auto_runs=auto_runs(shape, dtype, norm, grad, device),
        auto_vs_best=ratio_interval(times["auto"], times[best]).as_list(),
        roofline_fraction={k: roofline_fraction(median[k], roof_s) for k in names},
    )


def measure_speed(
    shapes: Sequence[Shape],
    dtypes: Sequence[torch.dtype],
    *,
    device: torch.device | str = "cpu",
    rounds: int | Sequence[int] = ROUNDS,
    tick: Callable[[str], None] = lambda _m: None,
) -> tuple[list[SpeedGroup], Roofline]:
    """Every shape x dtype x mode x norm on ``device``; returns the groups and the
    roofline measured beside them. ``rounds``: one count for every shape, or one per shape."""
    device = torch.device(device)
    per_shape = [rounds] * len(shapes) if isinstance(rounds, int) else list(rounds)
    if len(per_shape) != len(shapes):
        raise ValueError(
            f"{len(per_shape)} round counts for {len(shapes)} shapes: "
            "pass one count, or one per shape"
        )
    roof = measure_roofline(device, min_time=0.1)
    groups = []
    for shape, n in zip(shapes, per_shape, strict=True):
        for dtype in dtypes:
            for grad in (False, True):
                for norm in NORMS:
                    groups.append(
                        measure_group(shape, dtype, grad, norm, roof=roof, device=device, rounds=n)
                    )
                    g = groups[-1]
                    tick(f"{','.join(map(str, shape))} {g['dtype']} {g['mode']} {norm}")
    return groups, roof


__all__ = ["SpeedGroup", "auto_runs", "candidates", "measure_group", "measure_speed", "merge_call"]
