"""A failing check's report ends with its one-line repro, on every supported Python.

The repro is attached as an exception note. ``BaseException.add_note`` exists from
Python 3.11; on 3.10 (which ``requires-python`` admits) :func:`pm_core.testing.add_note`
appends it to the message instead, so that a failing check still reports rather than
dying of an AttributeError. That fallback is called directly here, since the suite
usually runs on a newer Python.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from torch import Tensor

import pm_core
from pm_core.testing import Case, Subject, Values, add_note, add_note_to_message, check_forward

NOTE = 'repro: python -c "from pm_core.testing import *; check_forward(...)"'


def _report(exc: BaseException) -> str:
    """What pytest shows of ``exc``: its message, then its notes (Python >= 3.11)."""
    notes: list[str] = getattr(exc, "__notes__", [])
    return "\n".join([str(exc), *notes])


def test_add_note_fallback_appends_note_to_message() -> None:
    """The 3.10 path: the note becomes the last line of the message, so ``str(exc)``
    (and pytest's ``AssertionError: ...`` line, and ``match=``) shows it."""
    exc = AssertionError("forward of 'slice' is outside pm_core.error_bounds")
    add_note_to_message(exc, NOTE)
    assert str(exc) == f"forward of 'slice' is outside pm_core.error_bounds\n{NOTE}"
    assert exc.args == (str(exc),)
    assert not hasattr(exc, "__notes__")
    with pytest.raises(AssertionError, match="repro: python -c"):
        raise exc


@pytest.mark.parametrize("args", [(), (3,), ("two", "args")], ids=["no-args", "int", "two"])
def test_add_note_fallback_keeps_other_arguments(args: tuple[object, ...]) -> None:
    """An exception whose message is not one string keeps its arguments, and the note
    still shows in ``str(exc)``."""
    exc = ValueError(*args)
    add_note_to_message(exc, NOTE)
    assert exc.args[: len(args)] == args
    assert NOTE in str(exc)


def test_add_note_on_this_python() -> None:
    """``add_note`` uses the native notes where they exist, else the fallback."""
    exc = AssertionError("message")
    add_note(exc, NOTE)
    if sys.version_info >= (3, 11):
        assert exc.__notes__ == [NOTE]
        assert str(exc) == "message"
    else:
        assert str(exc) == f"message\n{NOTE}"


def _doubled(x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, **kw: Any) -> Tensor:
    """A merge off by a factor of two: far outside any rounding bound."""
    return 2 * pm_core.patch_merge(x, w, nw, nb, **kw)


def test_failing_check_reports_its_repro(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real failing check (``check_forward`` on a wrong merge) raises an AssertionError
    whose report carries the repro line."""
    monkeypatch.delenv("PM_CORE_RECORD", raising=False)  # not an implementation
    case = Case((1, 2, 2, 3), "float64", "contiguous", "bhwc", Values("normal", 0, 0, 0))
    with pytest.raises(AssertionError, match=r"outside pm_core\.error_bounds") as info:
        check_forward(Subject("doubled", _doubled, "doubled"), case, norm="none")
    assert "repro: python -c" in _report(info.value)
