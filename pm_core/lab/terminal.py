"""Progress on the terminal, and keeping libkineto's chatter out of it.

:class:`Progress` is a tqdm bar when stderr is a terminal. When it is not (a CI log, a
pipe, ``nohup``) a bar would print nothing until the end, so it prints one plain line
per finished step instead, with the step's elapsed time.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, NoReturn, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


@functools.cache
def terminal() -> TextIO:
    """A stream on the terminal's stderr that survives :func:`without_kineto_chatter`'s redirect."""
    stream = os.fdopen(os.dup(2), "w", buffering=1)
    atexit.register(stream.close)
    return stream


def _is_tty() -> bool:
    return terminal().isatty()


class Progress:
    """Progress of a run made of named steps, each of which may tick many times.

    On a terminal: a tqdm bar (``total`` steps, or open-ended), the current step in its
    description and the latest tick in its postfix. Elsewhere: ``[<desc>] <step>: done in
    12.3 s`` as each step finishes, and nothing per tick.
    """

    def __init__(self, desc: str, total: int | None = None, *, stream: TextIO | None = None):
        self.desc = desc
        self.out = stream if stream is not None else terminal()
        self._bar: tqdm[NoReturn] | None = None
        self._step: str | None = None
        self._counting = total is None  # an open-ended bar counts ticks, not steps
        self._start = time.perf_counter()
        if stream is None and _is_tty():
            from tqdm import tqdm  # lab dependency, only when there is a terminal to draw on

            self._bar = tqdm(
                total=total, desc=desc, unit="step", file=self.out, leave=False, dynamic_ncols=True
            )

    def step(self, name: str) -> None:
        """Start step ``name``, finishing the one before."""
        self._finish()
        self._step, self._start = name, time.perf_counter()
        if self._bar is not None:
            self._bar.set_description(f"{self.desc}: {name}")

    def tick(self, line: str = "") -> None:
        """One unit of work inside the current step (a pytest result line, a run name)."""
        if self._bar is not None:
            if self._counting:
                self._bar.update(1)
            self._bar.set_postfix_str(line.split("::")[-1][:40])

    def _finish(self) -> None:
        if self._step is None:
            return
        seconds = time.perf_counter() - self._start
        if self._bar is not None:
            if not self._counting:
                self._bar.update(1)
        else:
            print(f"[{self.desc}] {self._step}: done in {seconds:.1f} s", file=self.out, flush=True)
        self._step = None

    def close(self) -> None:
        """Finish the current step and take the bar down."""
        self._finish()
        if self._bar is not None:
            self._bar.close()


_KINETO_NOISE = ("USDT:", "gpuGetDeviceCount failed", "Memory block of unknown size")


def _flush_c_streams() -> None:
    import ctypes

    with suppress(OSError, AttributeError):  # no libc symbol table: nothing to flush
        ctypes.CDLL(None).fflush(None)


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


__all__ = ["Progress", "terminal", "without_kineto_chatter"]
