"""Argument types shared by every command, and a parser whose errors are one line.

Each function takes the option's text and returns the value, or raises
``argparse.ArgumentTypeError`` with what is expected; argparse then prints
``mst COMMAND: error: argument --T: ...`` (one line, exit status 2).
"""
from __future__ import annotations

import argparse
import math
import re

# RSM seeds are written into .net files and mixed as 32-bit words; training seeds feed numpy's
# seed (< 2**32, plus the DDP rank). One range that every consumer and the file format can hold.
SEED_MAX = 2 ** 31 - 1


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a single line (no usage block), exit status 2.

    Subparsers made by ``add_subparsers`` inherit the class."""

    def error(self, message: str):  # noqa: D401 - argparse API
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _int(text: str, what: str) -> int:
    s = str(text).strip()
    if not re.fullmatch(r"[+-]?\d+", s.replace("_", "")):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return int(s)


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = _int(text, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    v = _int(text, "a non-negative integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def seed(text: str) -> int:
    """A seed in [0, 2**31 - 1]: what the .net format, numpy and the RSM generator all hold."""
    v = _int(text, f"an integer seed in [0, {SEED_MAX}]")
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, {SEED_MAX}], got {text!r}")
    return v


def _float(text: str, what: str) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (e.g. a learning rate)."""
    v = _float(text, "a finite number > 0")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number in [0, 1) (e.g. label smoothing, a mask ratio)."""
    v = _float(text, "a number in [0, 1)")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return v


def fraction_list(text: str) -> list[float]:
    """Comma-separated numbers in [0, 1), at least one (e.g. ``--levels 0.25,0.5,0.75``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios in [0, 1) such as 0.25,0.5, got {text!r}")
    out = []
    for p in parts:
        try:
            out.append(fraction(p))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{p!r} is not a ratio in [0, 1) (in {text!r})") from None
    return sorted(set(out))


def positive_int_list(text: str) -> list[int]:
    """Comma-separated positive integers, at least one, sorted and deduplicated (e.g. ``--T 8,16,32``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 8,16,32, got {text!r}")
    out = set()
    for p in parts:
        try:
            out.add(positive_int(p))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{p!r} is not a positive integer (in {text!r})") from None
    return sorted(out)


_DEVICE = re.compile(r"(cpu|cuda(:\d+)?)")


def device_name(text: str, *, allow_auto: bool = False) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (and ``auto`` where allowed); availability is checked when used."""
    s = str(text).strip().lower()
    if (allow_auto and s == "auto") or _DEVICE.fullmatch(s):
        return s
    names = "auto, cpu, cuda or cuda:N" if allow_auto else "cpu, cuda or cuda:N"
    raise argparse.ArgumentTypeError(f"expected a device name ({names}), got {text!r}")


def device_or_auto(text: str) -> str:
    return device_name(text, allow_auto=True)


def path_text(text: str) -> str:
    """A non-empty path."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in str(text):
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character: {text!r}")
    return str(text)

