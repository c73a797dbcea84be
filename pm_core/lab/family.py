"""The space-to-depth family measured: each layer's gather form against its conv form.

Two of the family's layers, at the inputs they see in the models that ship them
(:data:`FAMILY_SHAPES`):

* **MONAI SwinUNETR's four merges at a 96^3 input** (feature_size 48, patch size 2):
  :func:`pm_core.window_merge` over ``Window((2, 2, 2), padding="corner")`` in the
  ``"monai-v2-3d"`` layout with the LayerNorm before the projection, as
  ``impl="gather"`` (:func:`pm_core.space_to_depth`, one copy; LayerNorm; linear) or
  ``impl="conv"`` (one ``F.conv3d`` on the channels-last view, the pre-norm folded in).
* **YOLOv5's Focus at 640x640**, on YOLO's NCHW tensor: the gather form is Focus's own,
  its space-to-depth (:class:`pm_core.SpaceToDepth`, ``"focus"`` order) then a ``k x k``
  conv; the conv form is the one ``2k x 2k`` conv, stride 2, padding ``2*(k//2)``, with
  :func:`pm_core.focus.focus_to_conv`'s weight (what :class:`pm_core.FocusConv` runs). ``k=3``
  is YOLOv5s's ``Focus(3, 32, 3)`` (width 0.5 of 64 channels); ``k=1`` is ultralytics'
  default. BatchNorm and SiLU act on the output alike in both forms and are left out.

Both forms of a layer compute the same function (``tests/lab/test_family_lab.py`` checks it).
Time is measured by ``benchmarks/test_family_bench.py`` (pytest-benchmark medians, run by
:func:`run_family_bench`); bytes are counted at the aten dispatcher
(:func:`pm_core.lab.traffic.measure_traffic`) against :func:`minimum_bytes`: read the
input and the parameters once, write the output once. :func:`section_family` puts the
table and MONAI's legacy-merge story (:mod:`pm_core.lab.monai_legacy`) in the report.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from pm_core import SpaceToDepth, Window, window_merge
from pm_core.focus import focus_to_conv

from .bench import command
from .checkout import FAMILY_BENCH, stream
from .interleave import ROUNDS, Interval, ratio_interval, time_interleaved
from .monai_legacy import CORNER3, legacy_merge_findings, legacy_merge_text
from .shapes import SWIN_UNETR_96_STAGES, YOLO_640
from .traffic import distinct_bytes, measure_traffic

#: The two forms of every layer: its gather (space-to-depth copy, then the projection or
#: conv) and one convolution.
Form = Literal["gather", "conv"]
FORMS: tuple[Form, ...] = get_args(Form)


@dataclass(frozen=True)
class FamilyShape:
    """One layer of the family at one input.

    ``shape`` is the layer's input as it takes it: ``(B, D, H, W, C)`` for a MONAI merge,
    ``(B, C, H, W)`` for Focus; ``focus_kernel`` is ``None`` for a MONAI merge and Focus's
    conv kernel ``k`` otherwise. ``name`` is the benchmark id's suffix, ``layer`` the
    tables' label.
    """

    name: str
    layer: str
    shape: tuple[int, ...]
    out_channels: int
    focus_kernel: int | None = None

    @property
    def label(self) -> str:
        """The input as the tables print it, e.g. ``1x48x48x48x48 BDHWC``."""
        conv = "BDHWC" if self.focus_kernel is None else "NCHW"
        return "x".join(map(str, self.shape)) + f" {conv}"


def _merges(stages: tuple[tuple[int, ...], ...]) -> tuple[FamilyShape, ...]:
    return tuple(
        FamilyShape(f"swin_unetr_96_s{i}", f"SwinUNETR 96^3 merge {i}", s, 2 * s[-1])
        for i, s in enumerate(stages, 1)
    )


YOLOV5S_FOCUS = FamilyShape("yolov5s_focus_640", "YOLOv5s Focus(3, 32, k=3)", YOLO_640, 32, 3)
#: The report's rows: SwinUNETR's merges at 96^3, Focus at 640 with k=3 and k=1.
FAMILY_SHAPES: tuple[FamilyShape, ...] = (
    *_merges(SWIN_UNETR_96_STAGES),
    YOLOV5S_FOCUS,
    FamilyShape("focus_k1_640", "Focus(3, 32), k=1", YOLO_640, 32, 1),
)
#: ``--quick``: SwinUNETR's smallest merge, an odd-sized 3-D merge (padding), a small Focus.
QUICK_FAMILY_SHAPES: tuple[FamilyShape, ...] = (
    FAMILY_SHAPES[3],
    FamilyShape("merge_3d_odd", "3-D merge, odd sizes", (1, 3, 5, 4, 8), 16),
    FamilyShape("yolov5s_focus_64", "YOLOv5s Focus(3, 32, k=3)", (1, 3, 64, 64), 32, 3),
)


@dataclass(frozen=True)
class FamilyCall:
    """One form of one layer, ready to run: ``fn(*args)``."""

    fn: Callable[..., Tensor]
    args: tuple[Tensor | None, ...]

    def __call__(self) -> Tensor:
        return self.fn(*self.args)


def family_inputs(
    fs: FamilyShape,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    seed: int = 0,
) -> tuple[Tensor, ...]:
    """The layer's input and parameters, random from ``seed`` (empty on ``"meta"``).

    MONAI merge: ``(x, reduction_weight [O, 8C] in "monai-v2-3d", norm_weight (8C,),
    norm_bias (8C,))``. Focus: ``(x, w)``, ``w`` Focus's conv weight ``[O, 4C, k, k]``.
    """
    c = fs.shape[-1] if fs.focus_kernel is None else fs.shape[1]
    n = (8 if fs.focus_kernel is None else 4) * c
    k = fs.focus_kernel
    shapes = [fs.shape, (fs.out_channels, n) if k is None else (fs.out_channels, n, k, k)]
    if k is None:
        shapes += [(n,), (n,)]
    if torch.device(device).type == "meta":
        return tuple(torch.empty(s, dtype=dtype, device=device) for s in shapes)
    g = torch.Generator().manual_seed(seed)
    out = [
        torch.randn(fs.shape, generator=g),
        torch.randn(shapes[1], generator=g) / (n * (k or 1) ** 2) ** 0.5,
    ]
    if k is None:
        out += [1 + 0.1 * torch.randn(n, generator=g), 0.1 * torch.randn(n, generator=g)]
    return tuple(t.to(dtype=dtype, device=device) for t in out)


def _focus_gather(x: Tensor, w: Tensor, *, k: int) -> Tensor:
    v = SpaceToDepth(Window((2, 2)), "focus", channels_first=True)(x)
    return F.conv2d(v, w, padding=k // 2)


def _focus_conv(x: Tensor, w6: Tensor, *, k: int) -> Tensor:
    return F.conv2d(x, w6, stride=2, padding=2 * (k // 2))


def family_call(
    fs: FamilyShape,
    form: Form,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> FamilyCall:
    """``form`` of ``fs``'s layer on :func:`family_inputs`; the conv form of Focus gets
    :func:`pm_core.focus.focus_to_conv`'s weight, mapped here (once, as adoption does)."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS}")
    args = family_inputs(fs, dtype, device)
    k = fs.focus_kernel
    if k is None:
        fn = functools.partial(
            window_merge, window=CORNER3, layout="monai-v2-3d", norm="pre", impl=form
        )
        return FamilyCall(fn, args)
    if form == "gather":
        return FamilyCall(functools.partial(_focus_gather, k=k), args)
    x, w = args
    return FamilyCall(functools.partial(_focus_conv, k=k), (x, focus_to_conv(w)))


def minimum_bytes(fs: FamilyShape, dtype: torch.dtype = torch.float32) -> int:
    """The analytic minimum a forward of ``fs``'s layer moves: read the input and the
    parameters once (zero padding is free), write the output once."""
    call = family_call(fs, "gather", dtype, "meta")
    y = call()
    return sum(distinct_bytes(t) for t in call.args if t is not None) + distinct_bytes(y)


def family_traffic(
    fs: FamilyShape,
    form: Form,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> int:
    """Bytes one forward of ``form`` moves, counted at the aten dispatcher on ``device``
    (the kernels' output layouts, and so later copies, are the device's)."""
    call = family_call(fs, form, dtype, device)
    with torch.no_grad():
        return measure_traffic(call.fn, *call.args).total


class FamilyTiming(TypedDict):
    """One case of ``benchmarks/test_family_bench.py``: a form of a layer, forward."""

    case: str  # FamilyShape.name
    layer: str
    form: str  # "gather" or "conv"
    dtype: str
    shape: list[int]  # the layer's input, as FamilyShape.shape
    label: str  # FamilyShape.label
    bytes: int  # bytes moved, counted at the aten dispatcher
    min_bytes: int  # the analytic minimum (minimum_bytes)
    device: str
    median: float  # seconds


def read_family_json(path: Path) -> list[FamilyTiming]:
    """The rows of a pytest-benchmark JSON written by ``benchmarks/test_family_bench.py``."""
    data = json.loads(path.read_text())
    out: list[FamilyTiming] = []
    for b in data["benchmarks"]:
        e: dict[str, Any] = b["extra_info"]
        out.append(
            FamilyTiming(
                case=str(e["case"]),
                layer=str(e["layer"]),
                form=str(e["form"]),
                dtype=str(e["dtype"]),
                shape=[int(s) for s in e["shape"]],
                label=str(e["label"]),
                bytes=int(e["bytes"]),
                min_bytes=int(e["min_bytes"]),
                device=str(e["device"]),
                median=float(b["stats"]["median"]),
            )
        )
    return out


def run_family_bench(
    json_path: Path, *, quick: bool, tick: Callable[[str], None] = lambda _line: None
) -> list[FamilyTiming]:
    """Run ``benchmarks/test_family_bench.py``'s report subset (``--quick``: its smoke
    subset) in the checkout, JSON to ``json_path``, and read its rows."""
    json_path = json_path.resolve()  # the benchmark runs in the checkout
    done = stream(
        command(FAMILY_BENCH, json_path, quick=quick),
        on_line=lambda line: tick(line) if "::" in line else None,
    )
    if done.returncode != 0 or not json_path.is_file():
        raise RuntimeError(f"benchmark run {FAMILY_BENCH} failed:\n" + "\n".join(done.tail[-40:]))
    return read_family_json(json_path)


def conv_speedups(
    rows: list[FamilyTiming], *, rounds: int = ROUNDS
) -> dict[tuple[str, str], Interval]:
    """Per case and dtype of ``rows``: ``t_gather / t_conv`` (the conv form's speedup), the
    two forms timed interleaved in this process, with its 95% interval."""
    by_name = {fs.name: fs for fs in (*FAMILY_SHAPES, *QUICK_FAMILY_SHAPES)}
    out = {}
    for case, dtype, device in dict.fromkeys((r["case"], r["dtype"], r["device"]) for r in rows):
        fs = by_name[case]
        calls: dict[str, Callable[[], object]] = {
            form: family_call(fs, form, getattr(torch, dtype), device) for form in FORMS
        }
        sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        with torch.no_grad():
            times = time_interleaved(calls, rounds=rounds, sync=sync)
        out[case, dtype] = ratio_interval(times["gather"], times["conv"])
    return out


def family_table(
    rows: list[FamilyTiming], speedups: dict[tuple[str, str], Interval] | None = None
) -> str:
    """Markdown: per layer and form, the median per dtype (and for the conv form its
    interleaved speedup over the gather form, with its interval), and the bytes moved
    against the minimum in the first dtype measured."""
    speedups = speedups or {}
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    keyed = {(r["case"], r["form"], r["dtype"]): r for r in rows}
    cases = list(dict.fromkeys(r["case"] for r in rows))
    first = dtypes[0] if dtypes else "float32"
    lines = [
        "| layer | input | form | "
        + " | ".join(f"{d} ms (x gather [95%])" for d in dtypes)
        + f" | MB moved ({first}) | minimum MB | ratio |",
        "|---|---|---|" + "---:|" * (len(dtypes) + 3),
    ]
    for case in cases:
        for form in FORMS:
            cells = []
            for d in dtypes:
                r, iv = keyed.get((case, form, d)), speedups.get((case, d))
                if r is None:
                    cells.append("-")
                    continue
                speed = "" if iv is None or form == "gather" else f" ({iv})"
                cells.append(f"{r['median'] * 1e3:.2f}{speed}")
            t = keyed.get((case, form, first))
            if t is None:
                continue
            lines.append(
                f"| {t['layer']} | {t['label']} | {form} | "
                + " | ".join(cells)
                + f" | {t['bytes'] / 1e6:.1f} | {t['min_bytes'] / 1e6:.1f} | "
                f"{t['bytes'] / t['min_bytes']:.2f} |"
            )
    return "\n".join(lines)


class ReportLike(Protocol):
    """What :func:`section_family` uses of :class:`pm_core.lab.report.Report` (typed
    structurally: the report imports this module, so this module cannot import it)."""

    out: Path
    quick: bool
    headline: list[str]

    def add(self, title: str, *body: str) -> None: ...


def section_family(r: ReportLike, tick: Callable[[str], None]) -> None:
    """The family's gather-vs-conv table (``benchmarks/test_family_bench.py``, ``--quick``
    in a quick report) and MONAI's legacy-merge story, as two sections and a headline line."""
    rows = run_family_bench(r.out / "family.json", quick=r.quick, tick=tick)
    tick("conv against gather, interleaved")
    speedups = conv_speedups(rows, rounds=7 if r.quick else ROUNDS)
    findings = legacy_merge_findings()
    shown = " ".join(command(FAMILY_BENCH, Path("family.json"), quick=r.quick)[2:])
    merges = list(dict.fromkeys(x["case"] for x in rows if len(x["shape"]) == 5))
    focus = list(dict.fromkeys(x["case"] for x in rows if len(x["shape"]) == 4))
    parts = []
    for what, cases in (("3-D merges", merges), ("Focus", focus)):
        s = sorted(
            (iv for (case, d), iv in speedups.items() if d == "float32" and case in cases),
            key=lambda iv: iv.estimate,
        )
        if s:
            parts.append(f"{what} {s[0]}" + (f" to {s[-1]}" if len(s) > 1 else ""))
    dup = ", ".join(f"({', '.join(map(str, o))})" for o in findings.duplicated)
    r.headline.append(
        "- **The space-to-depth family** (speedup of the conv form over the gather form, "
        "timed interleaved, with 95% intervals, float32 forward: "
        + "; ".join(parts)
        + f"). MONAI <= 1.4's legacy 3-D merge reads {dup} twice and "
        + ", ".join(f"({', '.join(map(str, o))})" for o in findings.missing)
        + " never: `from_module` refuses it; its function on the same weights differs by "
        f"relative L2 {findings.merge_rel_l2:.2f} from >= 1.5's."
    )
    r.add(
        "The space-to-depth family: gather form against conv form",
        "MONAI SwinUNETR's four merges at a 96^3 input (feature_size 48, patch size 2; "
        "2x2x2 window, `monai-v2-3d` layout, LayerNorm before the projection) as "
        '`pm_core.window_merge(..., impl="gather")` (space-to-depth copy, LayerNorm, linear) '
        'and `impl="conv"` (one `conv3d` on the channels-last view, the pre-norm folded in); '
        "YOLOv5's Focus at 640x640 on its NCHW tensor as its own space-to-depth then a k x k "
        "conv (gather) and as one 2k x 2k, stride-2 conv with `pm_core.focus.focus_to_conv`'s "
        "weight (conv); BatchNorm and SiLU, the same in both, are left out. Forward only. "
        f"pytest-benchmark medians (`{shown}`; raw JSON: [family.json](family.json)); the "
        "conv form's speedup over the gather form, `t_gather / t_conv`, from the two timed "
        f"interleaved in one process over {7 if r.quick else ROUNDS} rounds, with its 95% "
        "interval; "
        "bytes counted at the aten dispatcher like the Traffic section's, against the "
        "minimum (read the input and parameters once, write the output once).",
        family_table(rows, speedups),
        "Where the bytes go (the counts are machine-independent): Focus's one conv reads "
        "the NCHW input in place and moves exactly the minimum, while its gather form "
        "writes and reads a space-to-depth copy first. The 3-D merges' conv form moves "
        "*more* than their gather form: it centres each window in passes of its own over "
        "x (sum, subtract, square) before the conv, and folds the LayerNorm's affine into "
        "a fresh conv weight on every call (multiply, contiguous copy), which dominates "
        "where the weight outweighs the activations (the last stages).",
    )
    r.add("MONAI's legacy 3-D merge before 1.5", *legacy_merge_text(findings))


__all__ = [
    "FAMILY_SHAPES",
    "FORMS",
    "QUICK_FAMILY_SHAPES",
    "YOLOV5S_FOCUS",
    "FamilyCall",
    "FamilyShape",
    "FamilyTiming",
    "Form",
    "ReportLike",
    "conv_speedups",
    "family_call",
    "family_inputs",
    "family_table",
    "family_traffic",
    "minimum_bytes",
    "read_family_json",
    "run_family_bench",
    "section_family",
]
