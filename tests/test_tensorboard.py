"""TensorBoard serves our traces: a real server on loopback, checked through the
torch-tb-profiler plugin's HTTP data API (the page's charts need Google Charts from the
internet; the data behind them does not)."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from pm_core.lab.profiling import profile_configs, run_profiles, summarize_trace

pytest.importorskip("tensorboard")
pytest.importorskip("torch_tb_profiler")

API = "/data/plugin/pytorch_profiler"
DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(base: str, route: str, **params: str) -> Any:
    url = f"{base}{API}{route}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":  # the plugin gzips big views
            body = gzip.decompress(body)
        return json.loads(body)


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


def test_tensorboard_serves_every_run(traces: list[Path], tmp_path: Path) -> None:
    """Every run is listed, and its Overview, Operator and Memory views return data."""
    root = traces[0].parent
    port = _free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(root),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE_S
        runs: list[str] = []
        while time.monotonic() < deadline:
            try:
                data = _get(base, "/runs")
                runs = data["runs"]
                if not data["loading"] and len(runs) >= len(traces):
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited: {(tmp_path / 'tensorboard.log').read_text()}")
            time.sleep(0.5)
        assert sorted(runs) == sorted(p.name for p in traces)
        for run in runs:
            views = _get(base, "/views", run=run)
            assert {"Overview", "Operator", "Memory"} <= set(views), views
            worker = _get(base, "/workers", run=run, view="Overview")[0]
            span = _get(base, "/spans", run=run, worker=worker)[0]
            q = {"run": run, "worker": worker, "span": span}
            overview = _get(base, "/overview", **q)
            assert overview["steps"]["rows"], overview
            ops = _get(base, "/operation/table", group_by="Operation", **q)
            assert ops["data"], ops
            assert all("name" in r for r in ops["data"]), ops
            memory = _get(base, "/memory", **q)
            assert memory["rows"], memory
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
