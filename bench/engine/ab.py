#!/usr/bin/env python3
"""A/B of ``pallet run --rm --network none IMAGE true``: this checkout against another revision,
on one store, the two alternating run by run (ABBA order), so that the machine's drift (10-20%
from minute to minute on a shared VM) lands on both sides alike. This is how each change in
BENCHMARKS.md's engine section was measured; bench.py (one hyperfine run against podman) is the
issue's benchmark.

The other revision's ``src`` is extracted with ``git archive`` into a temporary directory and run
through a copy of this venv's ``pallet`` launcher that puts it first on ``sys.path``, so both
sides share the interpreter, the venv and pallet-runtime's launcher (the monitor forks the
runtime of the code that forked it, as the installed launcher's path is the same).

A store that has the image: ``bench.py --keep`` leaves one (``PALLET_ROOT=WORK/p-root``,
``PALLET_RUNROOT=WORK/p-run``), or any root the image was pulled into.

    sudo PALLET_ROOT=... PALLET_RUNROOT=... .venv/bin/python bench/engine/ab.py REV IMAGE [--pairs 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def other_launcher(rev: str, work: Path) -> Path:
    """A ``pallet`` launcher that runs revision ``rev``'s sources."""
    src = work / "src"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, env=env)
    launcher = Path(sys.executable).with_name("pallet").read_text()
    head, sep, rest = launcher.partition("import sys\n")
    if not sep:
        sys.exit("ab: the installed pallet launcher has no 'import sys' line to extend")
    # a directory of its own, named pallet: the CLI recognises itself by its name
    bindir = work / "bin"
    bindir.mkdir()
    out = bindir / "pallet"
    out.write_text(f"{head}import sys\nsys.path.insert(0, {str(src)!r})\n{rest}")
    out.chmod(0o755)
    return out


def alternate(a: list[str], b: list[str], pairs: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    ta: list[float] = []
    tb: list[float] = []
    for i in range(pairs + warmup):
        order = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
        for cmd, out in order:
            t0 = time.perf_counter()
            res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            elapsed = (time.perf_counter() - t0) * 1e3
            if res.returncode != 0:
                sys.exit(f"ab: {' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
            if i >= warmup:
                out.append(elapsed)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the other revision (B), e.g. HEAD~1 or a commit")
    ap.add_argument("image", help="an image in the store ($PALLET_ROOT)")
    ap.add_argument("--pairs", type=int, default=40, help="runs of each side (default 40)")
    opts = ap.parse_args()
    for var in ("PALLET_ROOT", "PALLET_RUNROOT"):
        if not os.environ.get(var):
            sys.exit(f"ab: set {var} to a store that has {opts.image} (bench.py --keep makes one)")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=True, env=env)
    work = Path(tempfile.mkdtemp(prefix="pallet-ab-"))
    try:
        b_bin = other_launcher(opts.rev, work)
        run = ["run", "--rm", "--network", "none", opts.image, "true"]
        a_cmd = [str(Path(sys.executable).with_name("pallet")), *run]
        b_cmd = [str(b_bin), *run]
        ta, tb = alternate(a_cmd, b_cmd, opts.pairs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(f"A (this checkout): median {ma:.1f} ms, mean {statistics.mean(ta):.1f} ms")
    print(f"B ({opts.rev}): median {mb:.1f} ms, mean {statistics.mean(tb):.1f} ms")
    print(f"A/B (medians): {ma / mb:.3f} over {opts.pairs} pairs")


if __name__ == "__main__":
    main()
