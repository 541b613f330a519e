"""Argument checks shared by the package: each error names the argument, the value received
and what is allowed, before any work is done."""

from __future__ import annotations

import numbers


def check_positive_int(argument: str, value, *, allow_none: bool = False) -> None:
    """Raise unless `value` is an int >= 1 (NumPy integers count; bools do not), or None
    with `allow_none`."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Expected {argument} to be a positive integer{' or None' if allow_none else ''}, "
            f"but got {value!r}."
        )


def check_positive_number(argument: str, value, *, allow_none: bool = False) -> None:
    """Raise unless `value` is a real number > 0 (bools do not count), or None with
    `allow_none`."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(
            f"Expected {argument} to be a positive number{' or None' if allow_none else ''}, "
            f"but got {value!r}."
        )


def check_choice(argument: str, value, allowed) -> None:
    """Raise unless `value` is one of `allowed`."""
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(
            f"Expected {argument} to be one of {', '.join(map(repr, allowed))}, but got {value!r}."
        )


def check_bool(argument: str, value) -> None:
    """Raise unless `value` is True or False (a string such as "false" is refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"Expected {argument} to be True or False, but got {value!r}.")
