"""``pm-core report``: the answer to "are they the same, and which is faster here?" in one folder.

The report is a table of steps (:data:`STEPS`), each a function that measures one thing
and adds its section and headline lines to a :class:`Report`; :func:`build_report` runs
them in order. The steps live by concern: the evidence (machine, equivalence, mutation,
traffic, GPU model) in :mod:`~pm_core.lab.report_evidence`, the speed (benchmarks,
``auto``, peers, models, traces, plots) in :mod:`~pm_core.lab.report_speed`, and the
data model in :mod:`~pm_core.lab.report_base`. It is rebuilt from scratch on every run
into a sibling ``<out>.partial/`` folder and swapped in only when complete, so a crash
mid-run leaves the previous report whole.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from .family import section_family
from .report_answers import section_speed, verdicts
from .report_base import README_END, README_START, Report, Step
from .report_evidence import (
    machine_identity,
    machine_summary,
    section_channel_norm,
    section_environment,
    section_gpu_model,
    section_mutation,
    section_traffic,
    section_verify,
)
from .report_speed import (
    SCREENSHOTS,
    section_bench,
    section_models,
    section_peers,
    section_plots,
    section_profiles,
    section_screenshots,
    section_tune,
)
from .terminal import Progress
from .user_impls import load_user_impls

#: The report, in order. A step reads only what the steps before it set on the Report.
#: The default run answers the three questions (verification, traffic, speed with
#: intervals, the GPU model); ``--full`` adds the pytest-benchmark matrix, the compile
#: peers, whole models and the space-to-depth family.
STEPS: tuple[Step, ...] = (
    Step("environment", section_environment),
    Step("verify", section_verify),
    Step("mutation score", section_mutation),
    Step("channel norm", section_channel_norm),
    Step("traffic", section_traffic),
    Step("gpu model", section_gpu_model),
    Step("auto tune", section_tune),
    Step("speed", section_speed),
    Step("benchmarks", section_bench, full_only=True),
    Step("compile peers", section_peers, full_only=True),
    Step("whole models", section_models, full_only=True),
    Step("family", section_family, full_only=True),
    Step("profiles", section_profiles),
    Step("screenshots", section_screenshots),
    Step("plots", section_plots),
)
#: The machine is probed (:class:`~pm_core.lab.noise.LoadMonitor`) at the start, at the end
#: and after each step that took at least this long: a shorter step lies inside the
#: interval between two probes, and probing after it would only lengthen the run.
PROBE_AFTER_S = 5.0


def _flags(quick: bool, full: bool) -> str:
    return " ".join(f for f, on in (("--quick", quick), ("--full", full)) if on)


def _command(quick: bool, full: bool) -> str:
    return " ".join(("pm-core report", _flags(quick, full))).strip()


def _noise_line(r: Report) -> str:
    m = r.monitor
    reasons = m.reasons()
    if reasons:
        why = "; ".join(reasons)
        return (
            f"- **Noisy run: the speed figures may not hold.** {why[0].upper()}{why[1:]}. "
            "Rerun on a quiet machine."
        )
    spread = ", ".join(f"{k.split('_')[0]} {v:.0%}" for k, v in m.spread().items())
    share = m.others_share()
    others = (
        "other processes' CPU time was not measured (no /proc/stat)"
        if share is None
        else f"other processes used {share:.0%} of the CPU"
    )
    return (
        f"- **Quiet machine:** reference GEMM and copy rates, probed {len(m.probes)} times "
        f"(start, after each step of {PROBE_AFTER_S:.0f} s or more, end), moved {spread}; "
        f"{others}."
    )


def build_report(
    out: Path, *, quick: bool = False, full: bool = False, update_readme_file: bool = False
) -> bool:
    """Build the report into ``out``; returns False when an expected equivalence failed.

    A user's impls named by ``$PM_CORE_IMPLS`` (``--impl``) are loaded first, so every
    table that enumerates the registry has them beside pm-core's own."""
    load_user_impls()
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if (out / SCREENSHOTS).is_dir():  # the browser test's, not the report's: keep them
        shutil.copytree(out / SCREENSHOTS, tmp / SCREENSHOTS)
    r = Report(tmp, quick, full)
    steps = [s for s in STEPS if full or not s.full_only]
    progress = Progress("report", total=len(steps))
    r.monitor.start()
    try:
        for step in steps:
            progress.step(step.name)
            start = time.perf_counter()
            try:
                step.run(r, progress.tick)
            finally:
                r.timings[step.name] = time.perf_counter() - start
            if r.timings[step.name] >= PROBE_AFTER_S:
                r.monitor.probe(f"after {step.name}")
    finally:
        progress.close()
    r.monitor.stop()
    r.headline.insert(0, _noise_line(r))
    total = sum(r.timings.values())
    skipped = [s.name for s in STEPS if s.full_only and not full]
    body = [
        "# pm-core report",
        "Are Swin's PatchMerging implementations and the Conv2d(k=2, s=2) form the same function, "
        "which is fastest on this machine, and where do the bytes go? Regenerate with "
        f"`{_command(quick, full)}` (or `nox -s report"
        + (f" -- {_flags(quick, full)}" if quick or full else "")
        + "`)."
        + (f" Steps left to `--full`: {', '.join(skipped)}." if skipped else ""),
        "## Headline\n\n" + "\n".join(r.headline),
        *r.sections,
        "## How long each step took\n\n"
        + "\n".join(f"- {k}: {v:.0f} s" for k, v in r.timings.items())
        + f"\n- total: {total:.0f} s",
    ]
    (tmp / "report.md").write_text("\n\n".join(body) + "\n")
    (tmp / "headline.md").write_text(
        f"## pm-core report\n\nMeasured on {machine_summary()}:\n\n" + "\n".join(r.headline) + "\n"
    )
    summary = {
        "command": _command(quick, full),
        "machine": machine_identity(),
        "noisy": bool(r.monitor.reasons()),
        "noise": r.monitor.as_dict(),
        "ok": r.ok,
        "verdicts": verdicts(r.speed or []),
        "speed": r.speed or [],
        "headline": r.headline,
        "timings": r.timings,
    }
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    _swap_in(tmp, out)
    if update_readme_file:
        picture = out / "time_vs_shape.png"
        if picture.is_file():  # the README's picture comes from the run its findings do
            README_PICTURE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, README_PICTURE)
        update_readme(findings_block(r.headline, picture.is_file()))
    print(f"wrote {out / 'report.md'} ({total:.0f} s){'' if r.ok else ' -- with FAILURES'}")
    if summary["noisy"]:
        print("the machine was busy: " + "; ".join(r.monitor.reasons()), file=sys.stderr)
    return r.ok


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


#: The README's picture: the time-vs-shape plot of the run that wrote its findings,
#: committed beside the docs (the report folder itself is not committed).
README_PICTURE = Path("docs/images/time_vs_shape.png")


def findings_block(headline: list[str], picture: bool) -> str:
    """The README's findings block: the machine, the picture and its caption, the headline."""
    shown = (
        f"![Median time per call against shape, per impl]({README_PICTURE.as_posix()})\n\n"
        "*Median time per call of each exact impl at Swin-T's three merge inputs (batch 8), "
        "float32, forward and forward+backward: the Speed section of the same run.*\n\n"
        if picture
        else ""
    )
    return f"Measured on {machine_summary()} by `pm-core report`:\n\n{shown}" + "\n".join(headline)


def update_readme(findings: str, readme: Path = Path("README.md")) -> bool:
    """Replace the block between the findings markers in README.md; False if there is none."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{findings.strip()}\n{README_END}{tail}")
    return True


__all__ = [
    "README_PICTURE",
    "STEPS",
    "Report",
    "Step",
    "build_report",
    "findings_block",
    "machine_summary",
    "update_readme",
]
