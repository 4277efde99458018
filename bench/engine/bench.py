#!/usr/bin/env python3
"""Container engine benchmark: pallet vs podman, side by side on the same machine and image.

1. ``run --rm --network none IMAGE true``, in one hyperfine run: pallet with its default runtime
   (pallet-runtime), pallet with runc, and podman (runc: crun refuses this host's cgroups).
2. 50 x ``run -d`` (sleep), ``ps``, ``rm -f`` of all 50: wall time of each phase, and the peak
   and steady memory of each side's processes (pallet: its CLIs and container monitors; podman:
   its CLIs, conmon and cleanup processes), sampled every 100 ms as the sum of RSS and of PSS.

The image is refimage.py's ``small`` profile, pushed by skopeo to a docker-registry on loopback
and pulled from there by both sides into their own stores (pallet: the image store + overlay
layer storage; podman: a private --root/--runroot, overlay driver, the CONTAINERS_CONF this host
needs). Pallet's sources are byte-compiled first (this environment sets PYTHONDONTWRITEBYTECODE;
an installed package has its bytecode).

    sudo .venv/bin/python bench/engine/bench.py [--runs 30] [--count 50] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support import peers  # noqa: E402


def sh(
    cmd: list[str], env: dict[str, str] | None = None, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class Side:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], image: str, marker: str) -> None:
        self.name, self.argv, self.env, self.image, self.marker = name, argv, env, image, marker

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def shell(self, *args: str) -> str:
        env = " ".join(
            f"{k}={v}" for k, v in self.env.items() if k.startswith(("PALLET", "CONTAINERS", "PYTHON"))
        )
        return f"env {env} " + " ".join(self.cmd(*args))

    def run(self, *args: str) -> str:
        env = dict(os.environ)
        env.update(self.env)
        return sh(self.cmd(*args), env=env).stdout

    def owns(self, pid: int) -> bool:
        """Is ``pid`` one of this side's processes (not a container's)?"""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return False
        if self.name == "pallet":
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                return False
            return f"PALLET_ROOT={self.marker}\0".encode() in environ + b"\0"
        return comm in ("podman", "conmon") and self.marker.encode() in cmdline


class Owners:
    """Which pids belong to a side, decided once per pid (reading /proc/PID/environ is not free)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.known: dict[int, tuple[bool, int, str]] = {}

    def pids(self) -> list[int]:
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            try:
                start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
            except (OSError, ValueError, IndexError):
                continue
            comm = ""
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cached = self.known.get(pid)
            # decided again when the command changes: a container's init is cloned from the
            # runtime (the monitor's environment) and only then execs the container's program
            if cached is None or cached[1:] != (start, comm):
                # runc and its init are transient helpers on both sides; pallet's CLI and monitors
                # (python) and podman's CLI and conmon are what each side keeps around
                owned = pid != os.getpid() and comm not in ("runc", "runc:[2:INIT]") and self.side.owns(pid)
                self.known[pid] = cached = (owned, start, comm)
            if cached[0]:
                out.append(pid)
        return out


def memory(owners: Owners) -> tuple[int, int, int]:
    """(number of processes, sum of RSS, sum of PSS) in bytes for one side."""
    n = rss = pss = 0
    for pid in owners.pids():
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
            n += 1
        except OSError:
            continue
    return n, rss, pss


class Sampler(threading.Thread):
    def __init__(self, side: Side, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.owners, self.interval = Owners(side), interval
        self.peak_rss = self.peak_pss = self.peak_n = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            n, rss, pss = memory(self.owners)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_n = max(self.peak_n, n)
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()


def scenario(side: Side, count: int) -> dict:
    """count x run -d, then ps, then rm -f of them all; times and memory."""
    sampler = Sampler(side)
    sampler.start()
    t0 = time.monotonic()
    ids = [
        side.run("run", "-d", "--network", "none", side.image, "sleep", "600").strip() for _ in range(count)
    ]
    t1 = time.monotonic()
    time.sleep(1.0)
    steady = memory(sampler.owners)
    t2 = time.monotonic()
    listed = side.run("ps", "-q")
    t3 = time.monotonic()
    side.run("rm", "-f", *ids)
    t4 = time.monotonic()
    sampler.stop()
    assert len(listed.split()) >= count, f"{side.name} ps listed {len(listed.split())} containers"
    return {
        "run_d_s": t1 - t0,
        "ps_s": t3 - t2,
        "rm_s": t4 - t3,
        "total_s": (t1 - t0) + (t3 - t2) + (t4 - t3),
        "peak_rss": sampler.peak_rss,
        "peak_pss": sampler.peak_pss,
        "peak_procs": sampler.peak_n,
        "steady_procs": steady[0],
        "steady_rss": steady[1],
        "steady_pss": steady[2],
    }


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="hyperfine runs per command")
    ap.add_argument("--count", type=int, default=50, help="containers in the run -d / ps / rm -f scenario")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    for tool in ("hyperfine", "podman", "runc", "skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="pallet-bench-", dir="/tmp"))
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    registry_cm = peers.docker_registry(work / "registry")
    try:
        registry = registry_cm.__enter__()
        peers.build_refimage("small", work / "small")
        image = f"{registry}/small:latest"
        peers.skopeo_copy(f"oci:{work / 'small'}:latest", f"docker://{image}")
        # pallet: byte-compiled sources (an installed package has them)
        sh(
            [sys.executable, "-m", "compileall", "-q", str(REPO / "src")],
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        )
        penv = {"PALLET_ROOT": str(work / "p-root"), "PALLET_RUNROOT": str(work / "p-run")}
        pallet_bin = str(Path(sys.executable).with_name("pallet"))
        pallet = Side("pallet", [pallet_bin], penv, image, str(work / "p-root"))
        pallet_runc = Side("pallet-runc", [pallet_bin, "--runtime", "runc"], penv, image,
                           str(work / "p-root"))
        pallet.run("pull", "-q", image)
        pallet.run("run", "--rm", "--network", "none", image, "true")
        # podman: private storage, runc, the ulimits this host accepts
        conf = work / "containers.conf"
        conf.write_text(
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            '[engine]\nruntime = "runc"\n'
        )
        podman_argv = [
            "podman",
            "--root",
            str(work / "pm-root"),
            "--runroot",
            str(work / "pm-run"),
            "--tmpdir",  # its exit files: /run/libpod is shared with other podman users of the host
            str(work / "pm-tmp"),
            "--storage-driver",
            "overlay",
        ]
        podman = Side("podman", podman_argv, {"CONTAINERS_CONF": str(conf)}, image, str(work / "pm-run"))
        podman.run("pull", "-q", "--tls-verify=false", image)
        podman.run("run", "--rm", "--network", "none", image, "true")

        out_json = results_dir / "engine-run-rm.json"
        hf = [
            "hyperfine",
            "-N",
            "--warmup",
            "3",
            "--runs",
            str(args.runs),
            "--export-json",
            str(out_json),
        ]
        for side in (pallet, pallet_runc, podman):
            cmd = side.shell("run", "--rm", "--network", "none", image, "true")
            hf += ["-n", f"{side.name} run --rm", cmd]
        print("$", " ".join(hf[:6]), "...", flush=True)
        subprocess.run(hf, check=True)
        data = {r["command"]: r for r in json.loads(out_json.read_text())["results"]}
        q = data["podman run --rm"]
        for name in ("pallet run --rm", "pallet-runc run --rm"):
            p = data[name]
            print(
                f"{name} true: {p['mean'] * 1000:.0f} ms (median {p['median'] * 1000:.0f}), podman "
                f"{q['mean'] * 1000:.0f} ms (median {q['median'] * 1000:.0f}): ratio of means "
                f"{p['mean'] / q['mean']:.2f}x, of medians {p['median'] / q['median']:.2f}x (target <= 0.5x)",
                flush=True,
            )

        rows = {}
        for side in (pallet, podman):
            print(f"scenario: {args.count} x run -d, ps, rm -f ({side.name})", flush=True)
            rows[side.name] = scenario(side, args.count)
        (results_dir / "engine-scenario.json").write_text(json.dumps(rows, indent=2))
        p, q = rows["pallet"], rows["podman"]
        print(f"\n| {args.count} containers | pallet | podman | ratio |\n|---|---|---|---|")
        for key, label in (
            ("run_d_s", f"{args.count} x run -d"),
            ("ps_s", "ps"),
            ("rm_s", f"rm -f x{args.count}"),
            ("total_s", "total"),
        ):
            print(f"| {label} | {p[key]:.2f} s | {q[key]:.2f} s | {p[key] / q[key]:.2f}x |")
        for key, label in (
            ("peak_rss", "peak RSS (sum)"),
            ("peak_pss", "peak PSS (sum)"),
            ("steady_rss", f"RSS with {args.count} running"),
            ("steady_pss", f"PSS with {args.count} running"),
        ):
            print(f"| {label} | {mib(p[key])} | {mib(q[key])} | {p[key] / q[key]:.2f}x |")
        print(f"| processes with {args.count} running | {p['steady_procs']} | {q['steady_procs']} | |")
        print(
            f"| per monitor (RSS / PSS) | {mib(p['steady_rss'] // max(1, p['steady_procs']))} / "
            f"{mib(p['steady_pss'] // max(1, p['steady_procs']))} | "
            f"{mib(q['steady_rss'] // max(1, q['steady_procs']))} / "
            f"{mib(q['steady_pss'] // max(1, q['steady_procs']))} | |"
        )
        return 0
    finally:
        cleanup(work, keep=args.keep)
        registry_cm.__exit__(None, None, None)


def cleanup(work: Path, keep: bool) -> None:
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(work / "containers.conf"),
        "PALLET_ROOT": str(work / "p-root"),
        "PALLET_RUNROOT": str(work / "p-run"),
    }
    pallet_bin = str(Path(sys.executable).with_name("pallet"))
    ids = subprocess.run([pallet_bin, "ps", "-aq"], capture_output=True, text=True, env=env).stdout.split()
    if ids:
        subprocess.run([pallet_bin, "rm", "-f", *ids], capture_output=True, env=env)
    podman = ["podman", "--root", str(work / "pm-root"), "--runroot", str(work / "pm-run"),
              "--tmpdir", str(work / "pm-tmp")]
    subprocess.run([*podman, "rm", "-a", "-f", "-t", "0"], capture_output=True, env=env)
    if keep:
        print(f"kept {work}")
        return
    subprocess.run([*podman, "system", "reset", "-f"], capture_output=True, env=env)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(work))]
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
