"""Signal names and numbers without the ``signal`` module (it imports ``enum``: 3 ms)."""

from __future__ import annotations

from pallet.errors import RuntimeFailure

SIGNALS = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "ILL": 4,
    "TRAP": 5,
    "ABRT": 6,
    "IOT": 6,
    "BUS": 7,
    "FPE": 8,
    "KILL": 9,
    "USR1": 10,
    "SEGV": 11,
    "USR2": 12,
    "PIPE": 13,
    "ALRM": 14,
    "TERM": 15,
    "STKFLT": 16,
    "CHLD": 17,
    "CLD": 17,
    "CONT": 18,
    "STOP": 19,
    "TSTP": 20,
    "TTIN": 21,
    "TTOU": 22,
    "URG": 23,
    "XCPU": 24,
    "XFSZ": 25,
    "VTALRM": 26,
    "PROF": 27,
    "WINCH": 28,
    "IO": 29,
    "POLL": 29,
    "PWR": 30,
    "SYS": 31,
}
SIGRTMIN, SIGRTMAX = 34, 64


def parse(sig: str) -> int:
    """ "9", "KILL", "SIGKILL", "RTMIN+3" → number; a bad name is a one-line error."""
    s = sig.strip().upper()
    if s.isdigit():
        n = int(s)
        if 0 < n <= SIGRTMAX:
            return n
        raise RuntimeFailure(f"invalid signal number {sig}")
    if s.startswith("SIG"):
        s = s[3:]
    if s in SIGNALS:
        return SIGNALS[s]
    for base, num, sign in (("RTMIN", SIGRTMIN, 1), ("RTMAX", SIGRTMAX, -1)):
        if s == base:
            return num
        if s.startswith(base + ("+" if sign > 0 else "-")) and s[len(base) + 1 :].isdigit():
            n = num + sign * int(s[len(base) + 1 :])
            if SIGRTMIN <= n <= SIGRTMAX:
                return n
    raise RuntimeFailure(f"unknown signal {sig!r}")
