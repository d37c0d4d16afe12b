"""Errors users see: one line that names the file or parameter and the fix.

A leaf module (imports nothing of ours) so that every room, `images.py` included, can raise
them. The CLI prints `str(error)` and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class HerbscanError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class ImageError(HerbscanError):
    """An image file cannot be opened or decoded."""


class ManifestError(HerbscanError):
    """A source or manifest is missing, malformed or unusable for the task."""


class RunError(HerbscanError):
    """A run folder is missing, incomplete or incompatible."""


class ParameterError(HerbscanError, ValueError):
    """A parameter has a value outside its allowed set or range."""


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise the uniform parameter error when `value` is not one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ParameterError(f"{name} must be one of {shown}; got {value!r}")


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> None:
    """Raise the uniform parameter error when `value` is outside [low, high]."""
    bad = (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high
    )
    if not bad:
        return
    if high is None:  # "workers must be at least 1", not "in [1, inf]"
        rule = f"more than {low}" if low_open else f"at least {low}"
    elif low is None:
        rule = f"at most {high}"
    else:
        rule = f"in {'(' if low_open else '['}{low}, {high}]"
    raise ParameterError(f"{name} must be {rule}; got {value!r}")
