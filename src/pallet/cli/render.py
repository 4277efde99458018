"""Output helpers shared by every CLI module: docker-style tables, sizes, ages, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from pallet.timefmt import human_duration, parse_time


def human_size(n: float) -> str:
    """Sizes as docker prints them: SI units, 3 significant digits ("5.59MB", "1.2GB", "512B")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    text = f"{n:.3g}"
    if "e" in text:  # 3 significant digits of e.g. 999.6 round up to 1e+03
        text = f"{n:.0f}"
    return f"{text}{units[i]}"


def parse_size(text: str) -> int:
    """``512m``, ``1g``, ``100k``, ``1024`` (bytes) as docker's flags accept them (binary units)."""
    t = text.strip().lower()
    mult = 1
    if t.endswith("b"):
        t = t[:-1]
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = float(t)
    except ValueError:
        from pallet.errors import UsageError

        raise UsageError(f"invalid size {text!r}: expected a number and a unit (b, k, m, g)") from None
    if value < 0:
        from pallet.errors import UsageError

        raise UsageError(f"invalid size {text!r}: must not be negative")
    return int(value * mult)


def time_ago(when: datetime | str | None, now: datetime | None = None) -> str:
    """"3 weeks ago" as docker's go-units HumanDuration renders it."""
    if when is None or when == "":
        return "N/A"
    if isinstance(when, str):
        when = parse_time(when)
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    secs = (now - when).total_seconds()
    if secs < 0:
        return "Less than a second from now"
    return f"{human_duration(secs)} ago"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    """A docker-style table: columns padded to their widest cell, three spaces between."""
    out = out or sys.stdout
    rows = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    for r in [list(headers), *rows]:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        out.write("   ".join(cells).rstrip() + "\n")


def print_json(obj: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, indent=4, ensure_ascii=False, default=str) + "\n")
