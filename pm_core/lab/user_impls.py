"""A user's impls in pm-core's own tables: ``$PM_CORE_IMPLS`` and ``--impl``.

``PM_CORE_IMPLS`` holds comma-separated entries, each either

* ``package.module``: a module that registers impls when imported
  (``@pm_core.register(...)``), or
* ``package.module:attr``: a function with the impl signature :func:`pm_core.register`
  takes, registered as ``attr`` (a 2x2 fast path in the swin layout, claimed exact for
  every norm: the suite then checks that claim).

The test suite's and the benchmarks' ``conftest.py`` load them before collection, and
``pm-core report`` before its in-process steps, so a user's impl is verified, measured
and reported beside pm-core's own. ``pm-core verify``, ``bench`` and ``report`` take
``--impl SPEC`` (repeatable), which adds to the variable. Each entry must be importable:
installed, or on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import cast

from pm_core import REGISTRY, register
from pm_core.impls import ImplFn

#: The environment variable naming the user's impls.
ENV = "PM_CORE_IMPLS"


def entries(value: str | None = None) -> list[str]:
    """The entries of ``value`` (default: ``$PM_CORE_IMPLS``)."""
    text = os.environ.get(ENV, "") if value is None else value
    return [e.strip() for e in text.split(",") if e.strip()]


def add(specs: Sequence[str]) -> None:
    """Append ``specs`` to ``$PM_CORE_IMPLS`` (for the subprocesses a command starts)."""
    if specs:
        os.environ[ENV] = ",".join([*entries(), *specs])


def load_user_impls(value: str | None = None) -> list[str]:
    """Import or register every entry (see the module docstring); returns the names added.

    An entry that cannot be imported raises :class:`ImportError` naming it and the
    variable; a ``module:attr`` whose name is already registered is left as it is (the
    suite's conftest and a command may both load the same entry).
    """
    before = set(REGISTRY)
    for spec in entries(value):
        module, sep, attr = spec.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ImportError(
                f"{ENV} entry {spec!r}: cannot import {module!r} ({e}); install it or put it "
                "on PYTHONPATH"
            ) from e
        if not sep:
            continue
        obj: object = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{ENV} entry {spec!r} is a {type(obj).__name__}, not a function")
        name = attr.rsplit(".", 1)[-1]
        if name not in REGISTRY:
            register(name, layout="swin", summary=f"user impl {spec}")(cast(ImplFn, obj))
    return [n for n in REGISTRY if n not in before]


__all__ = ["ENV", "add", "entries", "load_user_impls"]
