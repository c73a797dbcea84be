"""The speed step: one real interleaved group on a tiny case, and how groups render."""

from __future__ import annotations

import pytest
import torch

from pm_core import NORMS
from pm_core.lab import speed
from pm_core.lab.report_answers import plot_rows, speed_table, verdicts
from pm_core.lab.roofline import Roofline
from pm_core.lab.speed import SpeedGroup, auto_runs, candidates, measure_group, merge_call
from tests.marks import needs_cuda_build

ROOF = Roofline("cpu", 1e10, {"float32": 1e11}, {"float32": "matmul"}, {})


def test_candidates_are_the_impls_exact_in_every_norm() -> None:
    names = candidates()
    assert "slice" in names
    assert "conv" in names
    assert "conv_channel_norm" not in names  # the foil: another function under pre


def test_a_measured_group_is_whole_and_consistent() -> None:
    g = measure_group(
        (1, 4, 4, 8), torch.float32, False, "pre", roof=ROOF, device=torch.device("cpu"),
        rounds=3, impls=["slice", "reshape"],
    )  # fmt: skip
    assert set(g["median_s"]) == {"slice", "reshape", "auto"}
    assert g["vs_slice"]["slice"] == [1.0, 1.0, 1.0]
    low, est, high = g["vs_slice"]["reshape"]
    assert low <= est <= high
    assert set(g["fastest"]) <= {"slice", "reshape"}
    assert g["auto_runs"] in candidates() or g["auto_runs"] == "?"
    assert all(f > 0 for f in g["roofline_fraction"].values())


def test_rounds_are_given_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """measure_speed takes one round count for every shape, or one per shape (the report
    gives its verdicts' shape more); a count list of another length is refused."""
    seen: list[tuple[tuple[int, ...], int]] = []

    def group(shape: tuple[int, ...], *args: object, rounds: int, **kw: object) -> SpeedGroup:
        seen.append((shape, rounds))
        return _group(str(args[2]), ["slice"])

    monkeypatch.setattr(speed, "measure_group", group)
    monkeypatch.setattr(speed, "measure_roofline", lambda *a, **kw: ROOF)
    shapes = [(1, 4, 4, 8), (1, 2, 2, 16)]
    speed.measure_speed(shapes, [torch.float32], rounds=[21, 11])
    per_shape = 2 * len(NORMS)  # fwd and fwd+bwd, each norm
    assert seen == [(shapes[0], 21)] * per_shape + [(shapes[1], 11)] * per_shape
    seen.clear()
    speed.measure_speed(shapes, [torch.float32], rounds=5)
    assert [n for _, n in seen] == [5] * 2 * per_shape
    with pytest.raises(ValueError, match="1 round counts for 2 shapes"):
        speed.measure_speed(shapes, [torch.float32], rounds=[21])


def _group(norm: str, fastest: list[str], shape: list[int] | None = None) -> SpeedGroup:
    return SpeedGroup(
        shape=shape or [8, 56, 56, 96], dtype="float32", mode="fwd", norm=norm, rounds=21,
        median_s={"slice": 2e-3, "reshape": 1e-3, "auto": 1.1e-3},
        vs_slice={"slice": [1.0, 1.0, 1.0], "reshape": [1.9, 2.0, 2.1]},
        fastest=fastest, runner_up=[1.9, 2.0, 2.1] if len(fastest) == 1 else [0.99, 1.0, 1.01],
        auto_runs="reshape", auto_vs_best=[1.05, 1.1, 1.2],
        roofline_fraction={"slice": 0.25, "reshape": 0.5},
    )  # fmt: skip


def test_table_bolds_the_declared_winner_and_names_ties() -> None:
    groups = [_group("pre", ["reshape"]), _group("post", ["reshape", "slice"])]
    table = speed_table(groups, [8, 56, 56, 96], "float32", "fwd")
    assert "| reshape | **1.00 ms, 2.00x [1.90, 2.10], 50%** | **1.00 ms, 2.00x" in table
    assert (
        "| fastest | **reshape** (runner-up 2.00x [1.90, 2.10] slower) | tie: `reshape`, `slice` |"
        in table
    )
    assert "ran `reshape`: 1.10 ms, 1.10x [1.05, 1.20] the fastest's time" in table


def test_verdicts_are_the_first_shape_only() -> None:
    groups = [_group(n, ["reshape"]) for n in NORMS] + [_group("pre", ["slice"], [8, 28, 28, 192])]
    out = verdicts(groups)
    assert [v["norm"] for v in out] == list(NORMS)
    assert {tuple(v) for v in out} == {("shape", "dtype", "mode", "norm", "fastest", "vs_slice")}
    assert out[0]["vs_slice"] == {"slice": [1.0, 1.0, 1.0], "reshape": [1.9, 2.0, 2.1]}


def test_plot_rows_carry_what_the_plot_reads() -> None:
    rows = plot_rows([_group("pre", ["reshape"])])
    assert {r["impl"] for r in rows} == {"slice", "reshape"}
    assert all(r["exact"] is True and isinstance(r["median"], float) for r in rows)


@needs_cuda_build
def test_the_timed_calls_run_on_a_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed step's calls on CUDA, without a GPU: fake CUDA tensors (forward only, as
    fake tensors have no backward), the device's name stood in for the auto cache key.
    Every impl and auto run with their inputs on the device."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_a: "stand-in GPU")
    cuda = torch.device("cuda", 0)
    with FakeTensorMode(allow_non_fake_inputs=True):
        call = merge_call((2, 8, 8, 16), torch.float32, "pre", False, cuda)
        for impl in (*candidates(), "auto"):
            call(impl)
        assert auto_runs((2, 8, 8, 16), torch.float32, "pre", False, cuda) in (*candidates(), "?")
