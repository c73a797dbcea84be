"""The traffic table: :func:`~pm_core.lab.traffic.measure_traffic` over every impl x norm,
one row per op, with each call's total against its analytic minimum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch

from pm_core import NORMS, REGISTRY, Norm, patch_merge

from .shapes import SWIN_T_STAGE1
from .traffic import COPY_OPS, Phase, measure_traffic


class TrafficRow(TypedDict):
    """One op of one impl x norm x phase (:func:`traffic_rows`); bytes throughout."""

    impl: str
    norm: Norm
    phase: Phase
    op: str
    calls: int
    read: int
    written: int
    total: int
    impl_total: int  # the whole call's bytes
    minimum: int | None  # the analytic minimum of the whole call
    ratio: float | None  # impl_total / minimum


def traffic_rows(
    shape: tuple[int, int, int, int] = SWIN_T_STAGE1,
    *,
    dtype: torch.dtype = torch.float32,
    backward: bool = False,
    impls: Sequence[str] | None = None,
    norms: Sequence[Norm] | None = None,
    device: torch.device | str = "cpu",
) -> list[TrafficRow]:
    """Traffic of every impl x norm on one shape, one row per (impl, norm, phase, op).

    Rows: ``{impl, norm, phase, op, calls, read, written, total, impl_total, minimum,
    ratio}`` (bytes), counted on ``device``.
    """
    b, h, w, c = shape
    rows: list[TrafficRow] = []
    x = torch.zeros(b, h, w, c, dtype=dtype, device=device)
    weight = torch.zeros(2 * c, 4 * c, dtype=dtype, device=device)
    for norm in norms or NORMS:
        n = 4 * c if norm == "pre" else 2 * c
        nw = None if norm == "none" else torch.ones(n, dtype=dtype, device=device)
        nb = None if norm == "none" else torch.zeros(n, dtype=dtype, device=device)
        for impl in impls or tuple(REGISTRY):
            t = measure_traffic(
                patch_merge, x, weight, nw, nb, norm=norm, impl=impl, backward=backward
            )
            rows.extend(
                {
                    "impl": impl,
                    "norm": norm,
                    "phase": s.phase,
                    "op": s.op,
                    "calls": s.calls,
                    "read": s.read,
                    "written": s.written,
                    "total": s.total,
                    "impl_total": t.total,
                    "minimum": t.minimum,
                    "ratio": t.ratio,
                }
                for s in t.by_op()
            )
    return rows


def traffic_table(
    shape: tuple[int, int, int, int] = SWIN_T_STAGE1,
    *,
    dtype: torch.dtype = torch.float32,
    backward: bool = False,
    impls: Sequence[str] | None = None,
    norms: Sequence[Norm] | None = None,
) -> str:
    """A markdown table of :func:`traffic_rows`: per impl and norm, MB per op and the ratio.

    Backward ops are marked ``*``; ``ratio`` is total / :func:`minimum_traffic`.
    """
    rows = traffic_rows(shape, dtype=dtype, backward=backward, impls=impls, norms=norms)
    return render_traffic(rows, shape, dtype=dtype, backward=backward)


def render_traffic(
    rows: Sequence[TrafficRow],
    shape: tuple[int, int, int, int],
    *,
    dtype: torch.dtype = torch.float32,
    backward: bool = False,
) -> str:
    """The markdown table of rows that :func:`traffic_rows` measured (with the same
    ``shape``, ``dtype`` and ``backward``)."""
    groups: dict[tuple[str, str], list[TrafficRow]] = {}
    for r in rows:
        groups.setdefault((r["norm"], r["impl"]), []).append(r)
    phase = "forward+backward" if backward else "forward"
    lines = [
        f"Traffic of patch_merge on {tuple(shape)} {str(dtype).removeprefix('torch.')}, "
        f"{phase} (MB = 1e6 bytes read + written; * = backward op)",
        "",
        "| norm | impl | total MB | ratio to minimum | copies | per op (MB) |",
        "|---|---|---:|---:|---|---|",
    ]
    for (norm, impl), rs in groups.items():
        ops = ", ".join(
            f"{r['op']}{'*' if r['phase'] == 'backward' else ''} {r['total'] / 1e6:.1f}"
            for r in rs
            if r["total"]
        )
        copies = ", ".join(
            dict.fromkeys(
                r["op"] + ("*" if r["phase"] == "backward" else "")
                for r in rs
                if r["op"] in COPY_OPS
            )
        )
        lines.append(
            f"| {norm} | {impl} | {rs[0]['impl_total'] / 1e6:.1f} | {rs[0]['ratio']:.2f} "
            f"| {copies or '-'} | {ops} |"
        )
    return "\n".join(lines)


__all__ = ["TrafficRow", "render_traffic", "traffic_rows", "traffic_table"]
