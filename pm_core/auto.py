"""``impl="auto"``: the fastest *exact* impl for a call, measured on this machine and cached.

A call is classed by device, dtype, norm, grad mode and a shape bucket (the number of
windows and ``C``, each rounded to a power of two). The first call in a class times
every impl that is exact for its norm (``Impl.exact_for``) on random inputs
of the call's shape, interleaved, and keeps the one with the lowest median. Inexact
impls are never timed, so never chosen.

The choices are cached as JSON, keyed by what decides speed (``machine_key``: the
device's model and units, and the torch version), at ``$PM_CORE_AUTO_CACHE`` if set, else ``$XDG_CACHE_HOME/pm-core/auto.json``
(``~/.cache/pm-core/auto.json``). ``pm-core tune`` fills it ahead of time for the Swin
stage shapes. A cache that cannot be read, or an entry that names an impl that is not
registered or not exact for its norm, is re-measured with one :class:`AutoCacheWarning`:
never a crash, never an inexact choice.

**Cost of the first call in a class:** every candidate runs ``ROUNDS`` (5) times plus a
warm-up, in a rotating interleaved order, and those within 15% of the fastest 10 times
more: about ``6 x`` the sum of the candidates' times plus ``10 x`` the close ones'
(``pm-core tune`` measures the report's classes ahead of time, and the report states
how long that took). Later calls in the class cost one cache lookup.

Where nothing can be timed (meta or fake tensors, tracing under ``torch.compile``) a
cached choice is used if there is one, else ``FALLBACK`` (``"conv"``). Under
``torch.compile`` the cache is read while tracing, so ``auto`` stays inside one graph
(``fullgraph=True`` works) and the graph keeps the choice it was traced with: run
``pm-core tune``, or one eager call per class, before compiling.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import _compat
from ._checks import Norm, _cpu_capability
from .impls import REGISTRY, run_swin
from .window import SWIN_WINDOW
from .window_layouts import window_layout

AUTO = "auto"
CACHE_ENV = "PM_CORE_AUTO_CACHE"
SCHEMA = 1
#: Timed rounds per candidate (after one warm-up); the median is kept.
ROUNDS = 5
#: Candidates within this factor of the fastest median are timed again, ``2 * ROUNDS``
#: more rounds among themselves: on a shared machine 5 rounds cannot split a 5% gap.
CLOSE = 1.15
#: The choice where nothing can be measured and nothing is cached: exact for every norm.
FALLBACK = "conv"


class AutoCacheWarning(UserWarning):
    """The ``impl="auto"`` cache was unreadable or stale and is being re-measured."""


def cache_path() -> Path:
    """Where the choices are cached: ``$PM_CORE_AUTO_CACHE``, else the user's cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pm-core" / "auto.json"


#: The CPU units that change which kernel oneDNN runs, and so which impl is fastest.
CPU_UNITS = ("avx2", "avx512_f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")


def _cpu_model() -> str:
    """The CPU's model name: ``/proc/cpuinfo``'s where there is one, else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def _machine_key(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        units = "+".join(u for u in CPU_UNITS if _cpu_capability(u, False)) or "no units known"
        where = f"{_cpu_model()}|{units}|{os.cpu_count()}cpu|{threads}threads"
    return "|".join((platform.machine(), f"torch {torch.__version__}", where))


# Read once per device and thread count: reading /proc/cpuinfo and the CPU's units on
# every impl="auto" call cost more than a small merge. By call, not as a decorator:
# mutmut does not mutate decorated functions.
_machine_key_cached = functools.lru_cache(maxsize=64)(_machine_key)


def machine_key(device: torch.device) -> str:
    """What decides which impl is fastest: the device (a GPU's name; a CPU's model, its
    vector and matrix units, its cores and torch's threads) and the torch version.
    Not the host's name: a new container on the same hardware reuses the choices."""
    return _machine_key_cached(device, torch.get_num_threads())


def _bucket(n: int) -> int:
    return 0 if n <= 0 else 2 ** round(math.log2(n))


def class_key(x: Tensor, norm: Norm, grad: bool) -> str:
    """The class a call of ``(B, H, W, C)`` input ``x`` (H and W even) is timed for."""
    b, h, w, c = x.shape
    mode = "fwd+bwd" if grad else "fwd"
    dtype = str(x.dtype).removeprefix("torch.")
    return f"{dtype}|{norm}|{mode}|windows~{_bucket(b * (h // 2) * (w // 2))}|C~{_bucket(c)}"


def candidates(norm: Norm) -> tuple[str, ...]:
    """The impls ``auto`` may choose for ``norm``: every registered impl exact for it."""
    swin = window_layout("swin")
    return tuple(
        name
        for name, spec in REGISTRY.items()
        if norm in spec.exact_for and spec.supports(SWIN_WINDOW, swin)
    )


# --- the cache file ---------------------------------------------------------------

_loaded: dict[Path, dict[str, Any]] = {}


def _warn(msg: str) -> None:
    warnings.warn(msg, AutoCacheWarning, stacklevel=4)


def _read(path: Path) -> dict[str, Any]:
    """The cache's machines table; an unreadable file warns once and reads as empty."""
    if path in _loaded:
        return _loaded[path]
    data: dict[str, Any] = {}
    if path.exists():
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
                raise ValueError(f"not a schema-{SCHEMA} pm-core auto cache")
            machines = raw.get("machines")
            if not isinstance(machines, dict) or not all(
                isinstance(v, dict) for v in machines.values()
            ):
                raise ValueError("its 'machines' is not a table of tables")
            data = machines
        except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
            _warn(f"impl='auto' cache {path} is unreadable ({e}); re-measuring")
    _loaded[path] = data
    return data


def _write(path: Path, machines: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"schema": SCHEMA, "machines": machines}, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        _warn(f"impl='auto' cannot write its cache {path} ({e}); choices last this process only")


def _valid(entry: object, norm: Norm) -> str | None:
    """The impl a cache entry names, if it is registered and exact for ``norm``."""
    if not isinstance(entry, dict):
        return None
    name = entry.get("impl")
    if isinstance(name, str) and name in REGISTRY and norm in REGISTRY[name].exact_for:
        return name
    return None


def forget() -> None:
    """Drop what this process has read from the cache file (the file itself is kept)."""
    _loaded.clear()


# --- measuring --------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(
    name: str, args: list[Tensor | None], norm: Norm, eps: float, grad: bool
) -> Callable[[], None]:
    x, weight, nw, nb = args
    assert x is not None
    assert weight is not None
    spec = REGISTRY[name]

    def fn(
        x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, e: float
    ) -> Tensor:
        return run_swin(spec, x, w, nw, nb, norm, e)

    if not grad:

        def fwd() -> None:
            with torch.no_grad():
                fn(x, weight, nw, nb, norm, eps)

        return fwd

    params = [t for t in args if t is not None]

    def fwd_bwd() -> None:
        for t in params:  # as a training step sees them after zero_grad(): no accumulation
            t.grad = None
        y = fn(x, weight, nw, nb, norm, eps)
        torch.autograd.backward(y, torch.ones_like(y))

    return fwd_bwd


def measure(
    shape: tuple[int, int, int, int],
    *,
    norm: Norm,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    grad: bool = False,
    out_dim: int | None = None,
    affine: bool = True,
    eps: float = 1e-5,
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """Median seconds of every candidate for ``norm`` on random inputs of ``shape``
    (``(B, H, W, C)``, H and W even), timed interleaved: round ``r`` runs each once."""
    dev = torch.device(device)
    b, h, w, c = shape
    o = 2 * c if out_dim is None else out_dim
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*size: int) -> Tensor:
        return torch.randn(size, generator=gen, device=dev).to(dtype).requires_grad_(grad)

    n_norm = 4 * c if norm == "pre" else o
    affine = affine and norm != "none"
    args: list[Tensor | None] = [
        rand(b, h, w, c),
        rand(o, 4 * c) / math.sqrt(4 * c),
        rand(n_norm) if affine else None,
        rand(n_norm) if affine else None,
    ]
    args = [None if t is None else t.detach().requires_grad_(grad) for t in args]
    runs = {name: _runner(name, args, norm, eps, grad) for name in candidates(norm)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up: first-call allocations, oneDNN primitive caches
        run()

    def interleave(names: list[str], n: int) -> None:
        for r in range(n):
            # rotate the order: no candidate always runs right after the same neighbour
            for name in names[r % len(names) :] + names[: r % len(names)]:
                _sync(dev)
                t0 = time.perf_counter()
                runs[name]()
                _sync(dev)
                times[name].append(time.perf_counter() - t0)

    def medians() -> dict[str, float]:
        return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}

    interleave(list(runs), rounds)
    med = medians()
    # the close ones (within CLOSE of the fastest) again, twice as long, among themselves
    close = [name for name, t in med.items() if t <= CLOSE * min(med.values())]
    if len(close) > 1:
        interleave(close, 2 * rounds)
    return medians()


def _cached_choice(device: torch.device, ckey: str, norm: Norm) -> str | None:
    """The impl the cache validly names for class ``ckey`` on ``device`` here, if any."""
    return _valid(_read(cache_path()).get(machine_key(device), {}).get(ckey), norm)


# torch.compile cannot trace reading the cache file. By call, not as a decorator: mutmut
# does not mutate decorated functions.
_compat.constant_when_traced(_cached_choice)


def _records_grad(*ts: Tensor | None) -> bool:
    """Whether autograd records a call on these tensors: grad mode on, and one needs a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _concrete(t: Tensor) -> bool:
    """Whether ``t`` holds values to time on: not meta, not a fake tensor, and not while
    ``torch.compile`` traces (timing would break its graph)."""
    # is_compiling first: dynamo does not trace into torch's fake-tensor check
    return not torch.compiler.is_compiling() and _compat.has_values(t)


def choose(
    x: Tensor,
    weight: Tensor,
    nw: Tensor | None,
    nb: Tensor | None,
    norm: Norm,
    eps: float,
) -> str:
    """The impl ``impl="auto"`` runs for Swin's 2x2 merge of ``x`` (``(B, H, W, C)``, H and
    W even; the parameters in the swin layout)."""
    grad = _records_grad(x, weight, nw, nb)
    ckey = class_key(x, norm, grad)
    name = _cached_choice(x.device, ckey, norm)
    if name is not None:
        return name
    if not _concrete(x):  # nothing to time on, or torch.compile tracing
        return FALLBACK
    path = cache_path()
    machines = _read(path)
    mkey = machine_key(x.device)
    entry = machines.get(mkey, {}).get(ckey)
    if entry is not None:
        _warn(f"impl='auto' cache {path}: entry {ckey!r} is stale ({entry!r}); re-measuring")
    b, h, w, c = x.shape
    medians = measure(
        (b, h, w, c), norm=norm, dtype=x.dtype, device=x.device, grad=grad,
        out_dim=weight.shape[0], affine=nw is not None, eps=eps,
    )  # fmt: skip
    name = min(medians, key=medians.__getitem__)
    table = machines.setdefault(mkey, {})
    table[ckey] = {"impl": name, "shape": [b, h, w, c], "medians": medians}
    _write(path, machines)
    return name


def tune(
    shapes: list[tuple[int, int, int, int]],
    *,
    dtypes: tuple[torch.dtype, ...] = (torch.float32,),
    norms: tuple[Norm, ...] = ("pre", "post", "none"),
    grads: tuple[bool, ...] = (False, True),
    device: torch.device | str = "cpu",
    tick: Callable[[str], None] = lambda _msg: None,
) -> list[dict[str, Any]]:
    """Measure and cache the choice for every class the arguments span (re-measuring
    any already cached); returns one row per class: key, shape, choice and medians."""
    dev = torch.device(device)
    path = cache_path()
    machines = _read(path)
    table = machines.setdefault(machine_key(dev), {})
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for dtype in dtypes:
            for norm in norms:
                for grad in grads:
                    probe = torch.empty(shape, dtype=dtype, device="meta")
                    ckey = class_key(probe, norm, grad)
                    tick(ckey)
                    medians = measure(shape, norm=norm, dtype=dtype, device=dev, grad=grad)
                    name = min(medians, key=medians.__getitem__)
                    table[ckey] = {"impl": name, "shape": list(shape), "medians": medians}
                    rows.append(
                        {"class": ckey, "shape": list(shape), "impl": name, "medians": medians}
                    )
    _write(path, machines)
    return rows


def cached_choices(device: torch.device | str = "cpu") -> dict[str, dict[str, Any]]:
    """This machine's cached choices, by class (read fresh from the file)."""
    _loaded.pop(cache_path(), None)
    table = _read(cache_path()).get(machine_key(torch.device(device)), {})
    return dict(table) if isinstance(table, dict) else {}


__all__ = [
    "AUTO",
    "CACHE_ENV",
    "FALLBACK",
    "AutoCacheWarning",
    "cache_path",
    "cached_choices",
    "candidates",
    "choose",
    "class_key",
    "forget",
    "machine_key",
    "measure",
    "tune",
]
