"""The report's data model: a :class:`Report` the steps add sections and headline lines
to, and a :class:`Step` (a name and what it runs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .bench import LayerTiming
from .noise import LoadMonitor
from .speed import SpeedGroup
from .traffic_table import TrafficRow
from .verify import Verification

README_START = "<!-- findings:start -->"


README_END = "<!-- findings:end -->"


#: A step's progress callback: called with each line of work it finishes.
Tick = Callable[[str], None]


@dataclass
class Report:
    """What the steps build up: sections and headline lines, and what later steps read."""

    out: Path
    quick: bool
    full: bool = False
    sections: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    ok: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    verification: Verification | None = None  # set by the verify step
    traffic: list[TrafficRow] | None = None  # set by the traffic step
    bench: list[LayerTiming] | None = None  # set by the benchmarks step
    auto_tuned: list[dict[str, object]] | None = None  # set by the auto tune step
    auto_cache: Path | None = None  # set by the auto tune step
    speed: list[SpeedGroup] | None = None  # set by the speed step
    monitor: LoadMonitor = field(default_factory=LoadMonitor)

    def add(self, title: str, *body: str) -> None:
        self.sections.append("\n\n".join([f"## {title}", *body]))


@dataclass(frozen=True)
class Step:
    """One step of the report: a name for progress and timings, what it runs, and whether
    only ``--full`` runs it."""

    name: str
    run: Callable[[Report, Tick], None]
    full_only: bool = False


__all__ = ["README_END", "README_START", "Report", "Step", "Tick"]
