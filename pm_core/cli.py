"""``pm-core`` / ``python -m pm_core``: verify, bench, traffic, profile and report.

Exit codes: 0 when everything holds, 1 when an equivalence that should hold does not
(or a step failed), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

import torch

from ._checks import NORMS
from .impls import IMPLS

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(p) for p in text.lower().replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"shape must be B,H,W,C with positive ints, e.g. 8,56,56,96; got {text!r}"
        )
    return parts[0], parts[1], parts[2], parts[3]


def _progress(total: int | None, desc: str):  # type: ignore[no-untyped-def]
    """A tqdm bar on stderr (a no-op stand-in when tqdm is missing or output is not a terminal)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the report group
        return _NullBar()
    # disable=None: no bar when stderr is not a terminal (CI logs, pipes)
    return tqdm(
        total=total,
        desc=desc,
        unit="step",
        file=terminal(),
        leave=False,
        dynamic_ncols=True,
        disable=None,
    )


class _NullBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_table, run_verify

    profile = "dev" if args.quick else args.profile
    bar = _progress(None, f"verify ({profile})")

    def tick(line: str) -> None:
        bar.update(1)
        bar.set_postfix_str(line.split("::")[-1][:40])

    result = run_verify(profile, pytest_args=args.pytest_args, progress=tick)
    bar.close()
    print(format_table(result.rows))
    print(f"\n{result.summary}  ({result.seconds:.0f} s, Hypothesis profile {profile!r})")
    if not result.ok:
        print(result.extra.get("log_tail", ""), file=sys.stderr)
    return 0 if result.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    cmd = [
        sys.executable, "-m", "pytest", "benchmarks", "--benchmark-only", "--benchmark-enable",
        "--benchmark-autosave", "--benchmark-storage=profiles/bench", "--benchmark-group-by=group",
        "-p", "no:cacheprovider",
    ]  # fmt: skip
    if args.quick:
        cmd.append("--quick")
    return subprocess.call([*cmd, *args.pytest_args])


def cmd_traffic(args: argparse.Namespace) -> int:
    from .traffic import traffic_table

    print(traffic_table(args.shape, dtype=DTYPES[args.dtype], backward=args.backward))
    return 0


@functools.cache
def terminal() -> TextIO:
    """A stream on the terminal's stderr that survives :func:`without_kineto_chatter`'s redirect."""
    stream = os.fdopen(os.dup(2), "w", buffering=1)
    atexit.register(stream.close)
    return stream


def _flush_c_streams() -> None:
    import ctypes

    with suppress(OSError, AttributeError):  # no libc symbol table: nothing to flush
        ctypes.CDLL(None).fflush(None)


_KINETO_NOISE = ("USDT:", "gpuGetDeviceCount failed", "Memory block of unknown size")


@contextmanager
def without_kineto_chatter() -> Iterator[None]:
    """Drop the ``USDT: ... profiler_start/stop`` lines libkineto writes to fd 2 on every profile.

    They are unconditional (no log level silences them) and scramble a progress bar;
    every other stderr line is replayed afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            _flush_c_streams()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if not any(noise in line for noise in _KINETO_NOISE):
                    print(line, file=sys.stderr)


def cmd_profile(args: argparse.Namespace) -> int:
    from .profiling import run_profiles

    bar = _progress(None, "profile")
    with without_kineto_chatter():
        runs = run_profiles(Path(args.out), quick=args.quick, progress=lambda _name: bar.update(1))
    bar.close()
    print(f"wrote {len(runs)} TensorBoard runs under {args.out}/; view with: nox -s tensorboard")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    ok = build_report(Path(args.out), quick=args.quick, update_readme_file=args.update_readme)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pm-core",
        description="Swin PatchMerging vs Conv2d(k=2, s=2): verify equivalence, measure speed and traffic.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("verify", help="Hypothesis sweep of every impl against the float64 oracle")
    v.add_argument(
        "--profile",
        choices=["dev", "ci", "thorough"],
        default="ci",
        help="Hypothesis profile (default: ci)",
    )
    v.add_argument("--quick", action="store_true", help="shorthand for --profile dev")
    v.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    v.set_defaults(func=cmd_verify)

    b = sub.add_parser("bench", help="the pytest-benchmark matrix (JSON under profiles/bench/)")
    b.add_argument("--quick", action="store_true", help="a small smoke subset")
    b.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("traffic", help="bytes read and written per aten op, per impl and norm")
    t.add_argument(
        "--shape",
        type=_shape,
        default=(8, 56, 56, 96),
        help="B,H,W,C (default: Swin-T stage 1, 8,56,56,96)",
    )
    t.add_argument("--dtype", choices=list(DTYPES), default="float32")
    t.add_argument("--backward", action="store_true", help="count forward + backward")
    t.set_defaults(func=cmd_traffic)

    f = sub.add_parser(
        "profile", help="torch.profiler traces, one TensorBoard run per configuration"
    )
    f.add_argument("--quick", action="store_true", help="fewer configurations")
    f.add_argument("--out", default="profiles", help="trace root (default: profiles)")
    f.set_defaults(func=cmd_profile)

    r = sub.add_parser("report", help="everything above into profiles/report/report.md plus plots")
    r.add_argument("--quick", action="store_true", help="about one minute instead of about five")
    r.add_argument(
        "--out", default="profiles/report", help="report folder (default: profiles/report)"
    )
    r.add_argument(
        "--update-readme", action="store_true", help="also refresh README.md's findings section"
    )
    r.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


__all__ = ["IMPLS", "NORMS", "build_parser", "main"]
