#!/usr/bin/env python3
"""Run commands side by side, interleaved round by round, and report per-round ratios.

On a noisy shared disk a burst of someone else's I/O lands on whichever command hyperfine is
running at the time; interleaving (every round runs each command once, in rotating order) puts
the same noise on all of them, and the median of per-round ratios cancels most of it.

    interleaved.py --rounds 5 --prepare 'rm -rf X' -n pallet 'CMD1' -n floor 'CMD2' ...

Prints a markdown table: median/min/max wall time, median user and system time, median peak
RSS, and the median per-round ratio to the first command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def run(cmd: str) -> tuple[float, float, float, int]:
    """Wall, user and system seconds, and peak RSS (KiB, the largest process of the command)."""
    t = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed ({os.waitstatus_to_exitcode(status)}): {cmd}")
    return wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prepare", default="true")
    ap.add_argument("-n", "--name", action="append", nargs=2, metavar=("NAME", "CMD"), required=True)
    args = ap.parse_args()
    names = [n for n, _ in args.name]
    cmds = dict(args.name)
    results: dict[str, list[tuple[float, float, float, int]]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            subprocess.run(["bash", "-c", args.prepare], check=True, stdout=subprocess.DEVNULL)
            results[n].append(run(cmds[n]))
            print(f"round {r + 1}: {n}: {results[n][-1][0]:.2f}s", file=sys.stderr)
    base = names[0]
    print(f"| command | median wall [s] | min | max | user [s] | sys [s] | peak RSS [MB] | "
          f"{base} / command (per-round median) |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        rows = results[n]
        ratios = [results[base][i][0] / rows[i][0] for i in range(len(rows))]
        print(f"| {n} | {statistics.median(x[0] for x in rows):.2f} | {min(x[0] for x in rows):.2f} | "
              f"{max(x[0] for x in rows):.2f} | {statistics.median(x[1] for x in rows):.2f} | "
              f"{statistics.median(x[2] for x in rows):.2f} | "
              f"{statistics.median(x[3] for x in rows) / 1024:.0f} | "
              f"{statistics.median(ratios):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
