"""Times as docker writes and prints them: RFC 3339 with nanoseconds in, "3 minutes" out.

Shared by the engine (inspect's status text) and the CLI's renderers; neither owns it.
"""

from __future__ import annotations

from datetime import UTC, datetime


def human_duration(secs: float) -> str:
    if secs < 1:
        return "Less than a second"
    if secs < 2:
        return "1 second"
    if secs < 60:
        return f"{int(secs)} seconds"
    minutes = secs / 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 2:
        return "About an hour"
    if hours < 48:
        return f"{int(hours)} hours"
    days = hours / 24
    if days < 14:
        return f"{int(days)} days"
    if days < 60:
        return f"{int(days // 7)} weeks"
    if days < 365 * 2:
        return f"{int(days // 30)} months"
    return f"{int(days // 365)} years"


def parse_time(text: str) -> datetime:
    """RFC 3339 with any number of fractional digits (Go writes nanoseconds)."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    if "." in t:
        head, _, rest = t.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        t = f"{head}.{(frac + '000000')[:6]}{rest[i:]}"
    dt = datetime.fromisoformat(t)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
