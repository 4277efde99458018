"""``pallet run``'s start-up path stays light: the modules it imports must not pull in what costs
milliseconds per container (benchmarked against podman, BENCHMARKS.md)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import peers

RUN_PATH = (
    "pallet.cli.main",
    "pallet.cli.containers",
    "pallet.engine.monitor",
    "pallet.engine.containers",
    "pallet.engine.store_source",
    "pallet.store",
    "pallet.storage.layers",
    "pallet.storage.overlay",
    # `run` on a bridge network: its helper imports these (pyroute2's codec on first use only)
    "pallet.engine.networking",
    "pallet.network",
    "pallet.network.bridge",
)
#: imported on first use only: typing (3 ms), dataclasses + inspect (8 ms), logging (8 ms), the
#: layer applier, manifest parsing, ctypes (3 ms: pallet.libc uses _ctypes) and ctypes.util (runs
#: ldconfig), hashlib (loads OpenSSL: 3 ms), platform, uuid, secrets, pyroute2
FORBIDDEN = ("typing", "dataclasses", "inspect", "logging", "pallet.storage.extract",
             "pallet.content.manifest", "ctypes", "ctypes.util", "hashlib", "_hashlib", "platform",
             "uuid", "secrets", "pyroute2.netlink")


def test_run_path_imports_nothing_heavy() -> None:
    code = (
        "import sys, importlib\n"
        f"for m in {RUN_PATH!r}: importlib.import_module(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(peers.REPO))
    assert res.returncode == 0, res.stderr


def test_run_forks_its_monitor_before_anything_heavy_is_imported() -> None:
    """What `pallet run` holds when it forks its monitor (pallet.cli.main, pallet.engine.launch):
    not argparse, not even the monitor's own json and socket, which it imports after the fork."""
    code = (
        "import sys\n"
        "import pallet.cli.main, pallet.engine.launch\n"
        "bad = [m for m in ('argparse', 'json', 'socket', 'selectors', 're', 'sqlite3', 'pathlib',\n"
        "                   'pallet.engine.monitor') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(peers.REPO / "src")})  # -S: as the launcher, no site
    assert res.returncode == 0, res.stderr


def test_run_without_a_bridge_imports_no_shutil_nor_threading() -> None:
    """shutil (with bz2 and lzma) comes while the container runs, threading not at all; and the
    CLI never imports the monitor's module (its config lives in pallet.engine.launch)."""
    modules = ("pallet.cli.main", "pallet.cli.parser", "pallet.cli.containers", "pallet.engine.launch",
               "pallet.engine.containers", "pallet.engine.store_source", "pallet.store",
               "pallet.storage.layers", "pallet.storage.overlay", "pallet.engine.users",
               "pallet.engine.paths")
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('shutil', 'bz2', 'lzma', 'threading', 'pallet.engine.monitor',\n"
        "                   'pallet.engine.logs') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(peers.REPO))
    assert res.returncode == 0, res.stderr


def test_logging_is_configured_when_first_imported() -> None:
    code = (
        "import sys\n"
        "from pallet.cli import main\n"
        "main._configure_logging('INFO')\n"
        "assert 'logging' not in sys.modules\n"
        "import logging\n"
        "logging.getLogger('pallet.test').info('hello')\n"
        "logging.getLogger('pallet.test').debug('hidden')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "INFO pallet.test: hello\n"


def test_installed_launchers_run_the_cli_and_the_runtime(tmp_path) -> None:
    """`pallet` and `pallet-runtime` as installed (the sh/Python launcher beside this venv's
    python: `python -I -S`, the cycle collector off until the command's modules are in)."""
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    res = subprocess.run([str(bin_dir / "pallet"), "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("pallet version "), res
    res = subprocess.run([str(bin_dir / "pallet-runtime"), "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("pallet-runtime version "), res
    res = subprocess.run([str(bin_dir / "pallet"), "run", "--bogus"], capture_output=True, text=True)
    assert res.returncode == 125 and res.stderr.startswith("Error: "), res


def test_both_launcher_first_lines_work() -> None:
    """The launcher as pip writes it (``#!/bin/sh``, re-executing the venv's python -I -S) and as
    ``make setup`` rewrites it (``#!VENV/bin/python3 -IS``, no sh) run the same commands, each
    with the venv's interpreter, isolated and without site."""
    import os
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    lines = (bin_dir / "pallet").read_text().split("\n")
    body, polyglot = "\n".join(lines[1:]), lines[1]
    assert polyglot.startswith("''''true;"), "the second line is the sh re-exec, a Python string"
    probe = "import sys; print(sys.flags.isolated, sys.flags.no_site, 'site' in sys.modules, sys.executable)"
    made = []
    try:
        for form, first in (("sh", "#!/bin/sh"), ("direct", f"#!{bin_dir}/python3 -IS")):
            tag = f"{form}-{os.getpid()}"
            files = {
                "cli": (bin_dir / f"pallet-t-{tag}", body),
                "runtime": (bin_dir / f"pallet-runtime-t-{tag}", body),
                "probe": (bin_dir / f"probe-t-{tag}", f"{polyglot}\n{probe}\n"),
            }
            for p, text in files.values():
                p.write_text(f"{first}\n{text}")
                p.chmod(0o755)
                made.append(p)

            def run(kind: str, *args: str, files: dict = files) -> subprocess.CompletedProcess[str]:
                return subprocess.run([str(files[kind][0]), *args], capture_output=True, text=True)

            res = run("cli", "--version")
            assert res.returncode == 0 and res.stdout.startswith("pallet version "), (form, res)
            res = run("runtime", "--version")
            assert res.returncode == 0 and res.stdout.startswith("pallet-runtime version "), (form, res)
            res = run("probe")
            assert res.returncode == 0, (form, res)
            assert res.stdout.split() == ["1", "1", "False", str(bin_dir / "python3")], (form, res.stdout)
    finally:
        for p in made:
            p.unlink(missing_ok=True)
