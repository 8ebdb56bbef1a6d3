"""Value rules the setting groups share: bounds, regexes, and what a resume may change."""

from __future__ import annotations

import re


def at_least(low: float, note: str = ""):
    """A check: the value is >= `low` (`note` follows the message, e.g. " (0: off)")."""
    return (lambda v: v >= low, f"must be >= {low:g}{note}")


POSITIVE = (lambda v: v > 0, "must be > 0")


def _regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as e:
        return f"is not a valid regex ({e})"
    return None


def regex_check(name: str):
    """A check that `--name`'s value compiles as a regular expression."""

    def check(value: str) -> str | None:
        problem = _regex(value)
        return None if problem is None else f"--{name}={value!r} {problem}"

    return check


def plateau_resume(saved: str, now: str) -> bool:
    """The plateau keeps its state in the optimizer's tree: switching it on or off changes it."""
    return (saved == "plateau") != (now == "plateau")


def toggle(saved: float, now: float) -> bool:
    """Whether a transform is in the optimizer's chain depends on the value being > 0."""
    return (saved > 0) != (now > 0)
