"""``pm-core`` / ``python -m pm_core``: check, verify, bench, traffic, profile, view and report.

Exit codes: 0 when everything holds, 1 when an equivalence that should hold does not
(or a step failed), 2 for usage errors. Each command imports what it needs when it runs,
so ``pm-core check`` works from a plain install with the ``testing`` extra.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path

import torch

from .shapes import SWIN_T_STAGE1, SWIN_T_STAGES
from .trace_viewer import DEFAULT_CACHE

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


def cmd_check(args: argparse.Namespace) -> int:
    try:
        from pm_core.testing import NotEquivalent, check_merge
    except ImportError as e:
        raise SystemExit(
            f"pm-core check needs Hypothesis and pytest ({e}): pip install 'pm-core[testing]'"
        ) from e
    sys.path.insert(
        0, ""
    )  # import the user's package from the working directory, as python -m does
    dtypes = [DTYPES[d] for d in args.dtype] if args.dtype else list(DTYPES.values())
    try:
        verdict = check_merge(
            args.target, norms=args.norm, dtypes=dtypes, devices=args.device or ["cpu"],
            max_examples=args.examples, grads=not args.no_grads,
        )  # fmt: skip
    except NotEquivalent as e:
        print(e)
        return 1
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        print(f"pm-core check: {args.target}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(verdict.table())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .terminal import Progress
    from .verify import format_table, run_verify

    profile = "dev" if args.quick else args.profile
    progress = Progress(f"verify ({profile})")
    progress.step("property suite")
    try:
        result = run_verify(
            profile,
            pytest_args=args.pytest_args,
            progress=lambda line: progress.tick(line) if "::" in line else None,
        )
    finally:
        progress.close()
    print(format_table(result.rows))
    print(f"\n{result.summary}  ({result.seconds:.0f} s, Hypothesis profile {profile!r})")
    if not result.ok:
        print(result.log_tail, file=sys.stderr)
    return 0 if result.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .checkout import benchmark_command, checkout_root

    cmd = benchmark_command("benchmarks", subset="--quick" if args.quick else None)
    return subprocess.call([*cmd, *args.pytest_args], cwd=checkout_root())


def cmd_traffic(args: argparse.Namespace) -> int:
    from .traffic_table import traffic_table

    print(traffic_table(args.shape, dtype=DTYPES[args.dtype], backward=args.backward))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .profiling import run_profiles
    from .terminal import Progress, without_kineto_chatter

    progress = Progress("profile")
    progress.step("traces")
    try:
        with without_kineto_chatter():
            runs = run_profiles(
                Path(args.out), quick=args.quick, with_stack=args.with_stack, progress=progress.tick
            )
    finally:
        progress.close()
    print(
        f"wrote {len(runs)} TensorBoard runs under {args.out}/; view with: nox -s tensorboard "
        "(needs the internet for its charts) or, offline: nox -s view -- <run folder>"
    )
    return 0


def _newest_trace(root: Path) -> Path:
    traces = sorted(root.glob("*/*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise SystemExit(f"no *.pt.trace.json under {root}/*/: run `nox -s profile` first")
    return traces[-1]


def cmd_view(args: argparse.Namespace) -> int:
    from .trace_viewer import SPEEDSCOPE_VERSION, ViewerUnavailable, fetch_speedscope, viewer_url

    trace = Path(args.trace) if args.trace else _newest_trace(Path("profiles"))
    if not trace.exists():
        raise SystemExit(f"{trace}: no such trace file or run folder")
    try:
        speedscope = fetch_speedscope(args.cache)
    except ViewerUnavailable as e:
        print(f"pm-core view: {e}", file=sys.stderr)
        return 1
    url = viewer_url(trace, speedscope)
    print(f"speedscope {SPEEDSCOPE_VERSION} (offline) on {trace}:\n{url}")
    if not args.no_open and not webbrowser.open(url):
        print("no browser could be started here: open the URL above in one", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pm_core.auto import cache_path

    from .peers import choices_table, run_tune
    from .terminal import Progress

    shapes = args.shape or list(SWIN_T_STAGES)
    dtypes = tuple(DTYPES[d] for d in args.dtype or ["float32", "bfloat16"])
    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"pm-core tune: --device {args.device} but torch sees no CUDA device")
    progress = Progress("tune impl='auto'", total=len(shapes) * len(dtypes) * 6)
    try:
        run_tune(shapes, dtypes, device=args.device, tick=progress.tick)
    finally:
        progress.close()
    print(f"impl='auto' choices ({cache_path()}), median ms per exact candidate:")
    print(choices_table(args.device))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.merge:
        from .merge_runs import main as merge_main

        if args.quick or args.full or args.update_readme:
            raise SystemExit("pm-core report --merge combines finished runs: it takes no "
                             "--quick, --full or --update-readme")  # fmt: skip
        out = ["--out", args.merge_out] if args.merge_out else []
        return merge_main([*args.merge, *out])
    if args.quick and args.full:
        raise SystemExit("pm-core report: --quick and --full contradict each other; pass one")
    from .report import build_report

    ok = build_report(
        Path(args.out), quick=args.quick, full=args.full, update_readme_file=args.update_readme
    )
    return 0 if ok else 1


def _impl_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--impl",
        action="append",
        default=[],
        metavar="SPEC",
        help="also run a user's impls: package.module (registers on import) or "
        "package.module:function (repeatable; adds to $PM_CORE_IMPLS)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pm-core",
        description="Swin PatchMerging vs Conv2d(k=2, s=2): verify equivalence, measure speed and traffic.",
        epilog=(
            "verify, bench and report run the test suite and the benchmarks of a source "
            "checkout ($PM_CORE_CHECKOUT, else the checkout this package sits in); the "
            "other commands need only the installed package."
        ),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "check",
        help="check your own merge (a function, a module, or a factory) against the oracle",
        description=(
            "Run pm-core's equivalence properties on TARGET: the output and the gradients "
            "against the float64 oracle within the derived bound, per norm x dtype x "
            "device. Exit 0: equivalent; 1: not, with the minimal counterexample and a "
            "repro; 2: TARGET could not be loaded or checked."
        ),
    )
    c.add_argument(
        "target",
        help="package.module:attr: a function with pm_core.register's impl signature, an "
        "nn.Module computing a 2x2 merge, or a zero-argument callable returning one",
    )
    c.add_argument("--norm", choices=["pre", "post", "none"], action="append",
                   help="repeatable (default: every norm the target computes)")  # fmt: skip
    c.add_argument("--dtype", choices=list(DTYPES), action="append",
                   help="repeatable (default: all four)")  # fmt: skip
    c.add_argument("--device", action="append", help="repeatable (default: cpu)")
    c.add_argument("--examples", type=int, default=25,
                   help="Hypothesis examples per cell (default: 25)")  # fmt: skip
    c.add_argument("--no-grads", action="store_true", help="check the outputs only")
    c.set_defaults(func=cmd_check)

    v = sub.add_parser(
        "verify",
        help="Hypothesis sweep of every impl against the float64 oracle (needs a checkout)",
    )
    v.add_argument(
        "--profile",
        choices=["dev", "ci", "thorough"],
        default="ci",
        help="Hypothesis profile (default: ci)",
    )
    v.add_argument("--quick", action="store_true", help="shorthand for --profile dev")
    _impl_option(v)
    v.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    v.set_defaults(func=cmd_verify)

    b = sub.add_parser(
        "bench", help="the pytest-benchmark matrix, JSON under profiles/bench/ (needs a checkout)"
    )
    b.add_argument("--quick", action="store_true", help="a small smoke subset")
    b.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    _impl_option(b)
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("traffic", help="bytes read and written per aten op, per impl and norm")
    t.add_argument(
        "--shape",
        type=_shape,
        default=SWIN_T_STAGE1,
        help=f"B,H,W,C (default: Swin-T stage 1, {','.join(map(str, SWIN_T_STAGE1))})",
    )
    t.add_argument("--dtype", choices=list(DTYPES), default="float32")
    t.add_argument("--backward", action="store_true", help="count forward + backward")
    t.set_defaults(func=cmd_traffic)

    f = sub.add_parser(
        "profile", help="torch.profiler traces, one TensorBoard run per configuration"
    )
    f.add_argument("--quick", action="store_true", help="fewer configurations")
    f.add_argument("--out", default="profiles", help="trace root (default: profiles)")
    f.add_argument(
        "--with-stack",
        action="store_true",
        help="record Python stacks (off: the range names already say which impl and phase ran)",
    )
    f.set_defaults(func=cmd_profile)

    w = sub.add_parser("view", help="open a trace in speedscope, offline (fetched once with npm)")
    w.add_argument(
        "trace", nargs="?", help="a *.pt.trace.json or a run folder (default: the newest)"
    )
    w.add_argument("--no-open", action="store_true", help="print the file:// URL only")
    w.add_argument("--cache", default=str(DEFAULT_CACHE), help="where speedscope is kept")
    w.set_defaults(func=cmd_view)

    u = sub.add_parser(
        "tune", help="measure impl='auto''s choices and cache them (default: Swin-T's merges)"
    )
    u.add_argument(
        "--shape",
        type=_shape,
        action="append",
        help="B,H,W,C (repeatable; default: Swin-T 224 stages at B=8)",
    )
    u.add_argument(
        "--dtype", choices=list(DTYPES), action="append", help="default: float32 and bfloat16"
    )
    u.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    u.set_defaults(func=cmd_tune)

    r = sub.add_parser(
        "report",
        help="everything above into profiles/report/report.md plus plots (needs a checkout; "
        "--merge does not)",
    )
    r.add_argument(
        "--quick", action="store_true", help="a smoke run: one small shape, float32, fewer rounds"
    )
    r.add_argument(
        "--full",
        action="store_true",
        help="also the pytest-benchmark matrix, compile peers, whole models and the family",
    )
    r.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="instead of measuring: put several runs' summary.json side by side, a column "
        "per machine (markdown to stdout, or to --merge-out)",
    )
    r.add_argument("--merge-out", metavar="FILE", help="with --merge: write the tables here")
    r.add_argument(
        "--out", default="profiles/report", help="report folder (default: profiles/report)"
    )
    r.add_argument(
        "--update-readme", action="store_true", help="also refresh README.md's findings section"
    )
    _impl_option(r)
    r.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # verify and bench hand unknown options to pytest (`pm-core bench -k conv`)
    if extra:
        if not hasattr(args, "pytest_args"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.pytest_args = [*args.pytest_args, *extra]
    if getattr(args, "impl", None):
        from .user_impls import add

        add(args.impl)  # the suite and the benchmarks load them in their subprocesses
    return int(args.func(args))


__all__ = ["build_parser", "main"]
