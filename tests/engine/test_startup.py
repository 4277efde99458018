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
)
#: imported on first use only: typing (3 ms), dataclasses + inspect (8 ms), logging (8 ms), the
#: layer applier, manifest parsing, ctypes.util (runs ldconfig), platform, uuid, secrets
FORBIDDEN = ("typing", "dataclasses", "inspect", "logging", "pallet.storage.extract",
             "pallet.content.manifest", "ctypes.util", "platform", "uuid", "secrets")


def test_run_path_imports_nothing_heavy() -> None:
    code = (
        "import sys, importlib\n"
        f"for m in {RUN_PATH!r}: importlib.import_module(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
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
