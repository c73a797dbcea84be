"""A TensorBoard server on loopback for the tests: started on a free port, stopped by PID."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

API = "/data/plugin/pytorch_profiler"
DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(base: str, route: str, **params: str) -> Any:
    """One call of the torch-tb-profiler plugin's JSON API."""
    url = f"{base}{API}{route}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":  # the plugin gzips big views
            body = gzip.decompress(body)
        return json.loads(body)


@contextmanager
def serve(logdir: Path, log: Path, expect_runs: int) -> Iterator[str]:
    """Serve ``logdir`` on 127.0.0.1 until the plugin lists ``expect_runs`` runs; yield
    the base URL; terminate the process (kill after 10 s) on the way out."""
    port = _free_port()
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
             "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + DEADLINE_S
            while True:
                try:
                    data = get(base, "/runs")
                    if not data["loading"] and len(data["runs"]) >= expect_runs:
                        break
                except OSError:
                    pass
                if proc.poll() is not None:
                    pytest.fail(f"tensorboard exited: {log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"tensorboard listed no {expect_runs} runs in {DEADLINE_S} s")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
