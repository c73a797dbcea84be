"""An offline trace viewer that works: speedscope, fetched once from npm, fed a converted trace.

TensorBoard's profiler page needs two scripts from the internet (Google Charts, and the
web-components polyfill its Trace view imports), and torch-tb-profiler is no longer
maintained upstream. speedscope is a maintained, MIT-licensed flame-chart viewer whose npm
package ships a release build that runs from ``file://`` with no network at all.

Why convert first: speedscope 1.25.0 reads Chrome trace JSON, but it refuses a raw
Kineto trace ("Could not find events for key: undefined", from Kineto's whole-trace span
event whose pid is the string ``"Spans"``), and it appends every event's ``args`` JSON to
the frame name. :func:`to_speedscope` writes speedscope's own documented file format
instead: one evented profile per thread, op names only, and nesting made exact (Kineto's
ranges may end a few microseconds after their parent; a child is clipped to its parent).

    >>> from pm_core.lab.trace_viewer import fetch_speedscope, viewer_url
    >>> url = viewer_url("profiles/conv-pre-float32-8x56x56x96", fetch_speedscope())  # doctest: +SKIP

or ``pm-core view profiles/conv-pre-float32-8x56x56x96`` / ``nox -s view``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

from .profiling import trace_events, trace_file

SPEEDSCOPE_VERSION = "1.25.0"
#: npm's ``dist.integrity`` of speedscope-1.25.0.tgz; a tarball that does not match is refused.
SPEEDSCOPE_INTEGRITY = "sha512-cpf9HWTZf1ijLXBJrk87Ve/54tnYx6rlf0gUThvn3ook6h63hLXVOQiMf44PT+XoV503cPfvfiT5gP5vojp6Ag=="
DEFAULT_CACHE = Path("profiles/.cache")
#: speedscope recognises its own format by this exact ``$schema`` value.
SCHEMA = "https://www.speedscope.app/file-format-schema.json"


class ViewerUnavailable(RuntimeError):
    """speedscope could not be fetched; the message says what to install."""


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_speedscope(cache: Path | str = DEFAULT_CACHE) -> Path:
    """The folder holding speedscope's ``index.html``, fetched with ``npm pack`` on first use.

    The tarball's sha512 must equal :data:`SPEEDSCOPE_INTEGRITY`. Only regular files under
    ``package/dist/release/`` and the licence are unpacked, by base name, so a tarball cannot
    write outside the cache. Later calls reuse ``<cache>/speedscope-<version>/``.
    """
    dest = Path(cache) / f"speedscope-{SPEEDSCOPE_VERSION}"
    if (dest / "index.html").is_file():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerUnavailable(
            f"the offline viewer needs npm once, to fetch speedscope {SPEEDSCOPE_VERSION} "
            "(Debian/Ubuntu: apt-get install npm); no npm on PATH"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        spec = f"speedscope@{SPEEDSCOPE_VERSION}"
        done = subprocess.run(
            [npm, "pack", spec, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            check=False,
        )
        tarball = Path(tmp) / f"speedscope-{SPEEDSCOPE_VERSION}.tgz"
        if done.returncode != 0 or not tarball.is_file():
            raise ViewerUnavailable(f"`npm pack {spec}` failed: {done.stderr.strip()[-500:]}")
        got = _integrity(tarball)
        if got != SPEEDSCOPE_INTEGRITY:
            raise ViewerUnavailable(
                f"{tarball.name} has integrity {got}, expected {SPEEDSCOPE_INTEGRITY}"
            )
        staging = Path(tmp) / "release"
        staging.mkdir()
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                wanted = member.name.startswith("package/dist/release/") or member.name in (
                    "package/LICENSE",
                )
                source = tar.extractfile(member) if member.isfile() and wanted else None
                if source is not None:
                    (staging / Path(member.name).name).write_bytes(source.read())
        if not (staging / "index.html").is_file():
            raise ViewerUnavailable(f"{tarball.name} holds no dist/release/index.html")
        os.replace(staging, dest)
    return dest


# ---------------------------------------------------------------- conversion


class SpeedscopeEvent(TypedDict):
    type: str  # "O" opens a frame, "C" closes it
    frame: int
    at: float


class SpeedscopeProfile(TypedDict):
    type: str
    name: str
    unit: str
    startValue: float
    endValue: float
    events: list[SpeedscopeEvent]


def _thread_names(events: Iterable[dict[str, Any]]) -> dict[tuple[Any, Any], str]:
    names: dict[tuple[Any, Any], str] = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e.get("pid"), e.get("tid"))] = str(e.get("args", {}).get("name", ""))
    return names


def to_speedscope(path: Path | str) -> dict[str, Any]:
    """A Kineto ``*.pt.trace.json`` (or a run folder's latest) as a speedscope file.

    Every complete event (``ph == "X"``) on a numeric thread becomes a frame named by the
    op alone; Kineto's whole-trace span (pid ``"Spans"``) is dropped. Events are nested
    per thread by start time, longest first on ties; a child that outlives its parent is
    clipped to the parent's end, so every close matches the innermost open frame. Times
    are microseconds from the trace's first event, shared by every thread.
    """
    path = trace_file(Path(path))
    events = trace_events(path)
    complete = [
        e
        for e in events
        if e.get("ph") == "X"
        and isinstance(e.get("pid"), int)
        and isinstance(e.get("tid"), int)
        and isinstance(e.get("ts"), int | float)
        and isinstance(e.get("dur"), int | float)
    ]
    if not complete:
        raise ValueError(f"{path} holds no complete ('X') events on a thread")
    t0 = min(float(e["ts"]) for e in complete)
    frames: dict[str, int] = {}
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for e in complete:
        by_thread.setdefault((e["pid"], e["tid"]), []).append(e)
    names = _thread_names(events)
    profiles: list[SpeedscopeProfile] = []
    for key, evs in by_thread.items():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        out: list[SpeedscopeEvent] = []
        stack: list[tuple[float, int]] = []  # (end, frame) of the open frames, innermost last
        for e in evs:
            start = float(e["ts"]) - t0
            while stack and stack[-1][0] <= start:
                end, frame = stack.pop()
                out.append({"type": "C", "frame": frame, "at": end})
            end = start + float(e["dur"])
            if stack:
                end = min(end, stack[-1][0])
            frame = frames.setdefault(str(e.get("name", "?")), len(frames))
            out.append({"type": "O", "frame": frame, "at": start})
            stack.append((end, frame))
        while stack:
            end, frame = stack.pop()
            out.append({"type": "C", "frame": frame, "at": end})
        label = names.get(key) or f"thread {key[1]}"
        profiles.append(
            {
                "type": "evented",
                "name": f"{label} (pid {key[0]}, tid {key[1]})",
                "unit": "microseconds",
                "startValue": out[0]["at"],
                "endValue": out[-1]["at"],
                "events": out,
            }
        )
    # the busiest thread (where the profiled steps ran) opens first
    profiles.sort(key=lambda p: -len(p["events"]))
    return {
        "$schema": SCHEMA,
        "name": path.name,
        "exporter": "pm-core",
        "activeProfileIndex": 0,
        "shared": {"frames": [{"name": n} for n in frames]},
        "profiles": profiles,
    }


def viewer_url(trace: Path | str, speedscope: Path, out_dir: Path | str | None = None) -> str:
    """A ``file://`` URL that opens ``trace`` in the local speedscope, with no network.

    Writes ``<name>.speedscope.json`` (drag it into any speedscope) and the script
    speedscope's ``#localProfilePath=`` loads, into ``out_dir`` (default: beside the trace).
    """
    path = trace_file(Path(trace))
    out = Path(out_dir) if out_dir is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    stem = path.name.removesuffix(".json")
    converted = out / f"{stem}.speedscope.json"
    converted.write_text(json.dumps(to_speedscope(path)))
    encoded = base64.b64encode(converted.read_bytes()).decode()
    loader = out / f"{stem}.speedscope.js"
    loader.write_text(
        f"speedscope.loadFileFromBase64({json.dumps(converted.name)}, {json.dumps(encoded)})"
    )
    index = (speedscope / "index.html").resolve()
    return f"{index.as_uri()}#localProfilePath={loader.resolve()}"


__all__ = [
    "DEFAULT_CACHE",
    "SCHEMA",
    "SPEEDSCOPE_INTEGRITY",
    "SPEEDSCOPE_VERSION",
    "SpeedscopeEvent",
    "SpeedscopeProfile",
    "ViewerUnavailable",
    "fetch_speedscope",
    "to_speedscope",
    "viewer_url",
]
