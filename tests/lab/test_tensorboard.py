"""TensorBoard serves our traces: a real server on loopback, checked through the
torch-tb-profiler plugin's HTTP data API (the page's charts need Google Charts from the
internet; the data behind them does not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pm_core.lab.profiling import MEASURED_STEPS, profile_configs, run_profiles, summarize_trace

from .tensorboard_server import get, serve

pytest.importorskip("tensorboard")
pytest.importorskip("torch_tb_profiler")


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("profiles")
    return run_profiles(
        out,
        impls=["slice", "conv"],
        norms=["pre"],
        dtypes=[torch.float32],
        shapes=[(1, 8, 8, 8)],
    )


def test_run_profiles_writes_one_run_per_config(traces: list[Path]) -> None:
    """One run folder per impl x norm x dtype x shape, each with one Chrome trace."""
    cfgs = profile_configs(impls=["slice", "conv"], norms=["pre"], dtypes=[torch.float32],
                           shapes=[(1, 8, 8, 8)])  # fmt: skip
    assert [p.name for p in traces] == [c.run_name for c in cfgs]
    for run in traces:
        assert len(list(run.glob("*.pt.trace.json"))) == 1


def test_offline_summary_has_what_the_charts_show(traces: list[Path]) -> None:
    """Top ops by self time, a memory curve and per-op allocations, from the trace alone."""
    for run in traces:
        s = summarize_trace(run)
        assert s.top_ops
        assert all(o.self_us >= 0 for o in s.top_ops)
        assert any("conv" in o.name or "mm" in o.name for o in s.top_ops), s.top_ops
        assert s.memory_curve.get("cpu"), "no memory events: profile_memory is off?"
        assert s.allocations
        assert s.peak_bytes["cpu"] > 0
        assert any(k.startswith("patch_merge/") for k in s.labels), s.labels


def test_traces_hold_the_measured_steps_only(traces: list[Path]) -> None:
    """The trace's ProfilerStep blocks are the active steps, after the wait and warm-up,
    and each holds one forward and one backward range."""
    for run in traces:
        s = summarize_trace(run)
        assert s.steps == MEASURED_STEPS, s.steps
        impl, norm = run.name.split("-")[:2]
        assert {f"patch_merge/{impl}/{norm}/forward", f"patch_merge/{impl}/{norm}/backward"} <= set(
            s.labels
        ), s.labels


def test_traces_carry_no_python_stacks_unless_asked(traces: list[Path], tmp_path: Path) -> None:
    """Without with_stack the trace holds no python_function events (no report, CLI or
    tqdm frames above the ops); with it, it does, and the ranges are still there."""

    def python_events(run: Path) -> int:
        data = json.loads(next(run.glob("*.pt.trace.json")).read_text())
        return sum(e.get("cat") == "python_function" for e in data["traceEvents"])

    assert all(python_events(run) == 0 for run in traces)
    (stacked,) = run_profiles(
        tmp_path, impls=["slice"], norms=["none"], dtypes=[torch.float32],
        shapes=[(1, 4, 4, 4)], with_stack=True,
    )  # fmt: skip
    assert python_events(stacked) > 0
    assert summarize_trace(stacked).steps == MEASURED_STEPS


def test_tensorboard_serves_every_run(traces: list[Path], tmp_path: Path) -> None:
    """Every run is listed, and its Overview, Operator and Memory views return data."""
    with serve(traces[0].parent, tmp_path / "tensorboard.log", len(traces)) as base:
        runs = get(base, "/runs")["runs"]
        assert sorted(runs) == sorted(p.name for p in traces)
        for run in runs:
            views = get(base, "/views", run=run)
            assert {"Overview", "Operator", "Memory"} <= set(views), views
            worker = get(base, "/workers", run=run, view="Overview")[0]
            span = get(base, "/spans", run=run, worker=worker)[0]
            q = {"run": run, "worker": worker, "span": span}
            overview = get(base, "/overview", **q)
            assert overview["steps"]["rows"], overview
            ops = get(base, "/operation/table", group_by="Operation", **q)
            assert ops["data"], ops
            assert all("name" in r for r in ops["data"]), ops
            memory = get(base, "/memory", **q)
            assert memory["rows"], memory
