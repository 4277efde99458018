"""The OCI runtime-tools validation suite (opencontainers/runtime-tools `validation/`), when a built
copy is present (it is built outside the repo: see docs/runtime.md). Runs bench/runtime/validation.sh
against pallet-runtime and holds it to runc 1.1.5's result on this host (BENCHMARKS.md).

Tests of cgroups and seccomp are counted apart until that implementation is merged."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.runtime.conftest import runtime_binary

REPO = Path(__file__).resolve().parents[2]
# runc 1.1.5 on this host, outside the cgroups/seccomp tests (bench/runtime/validation.sh)
RUNC_OTHER_PASSED, RUNC_OTHER_FAILED = 2826, 10
PENDING = re.compile(r"cgroups|seccomp|delete_resources")


def _tools() -> Path | None:
    for cand in (os.environ.get("PALLET_RUNTIME_TOOLS", ""), "/work/tools/runtime-tools"):
        if cand and (Path(cand) / "runtimetest").exists() and any(Path(cand, "validation").glob("*/*.t")):
            return Path(cand)
    return None


@pytest.mark.slow
def test_runtime_tools_validation(tmp_path: Path) -> None:
    tools = _tools()
    if tools is None:
        pytest.skip(
            "runtime-tools validation not built (set PALLET_RUNTIME_TOOLS to a checkout after "
            "`make runtimetest validation-executables`)"
        )
    out = tmp_path / "tap"
    res = subprocess.run(
        [str(REPO / "bench/runtime/validation.sh"), str(tools), runtime_binary(), str(out)],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert res.returncode == 0, res.stderr
    passed = failed = 0
    for tap in out.glob("*.tap"):
        if PENDING.search(tap.name) or tap.name == "process_capabilities_fail.tap":
            continue
        for line in tap.read_text(errors="replace").splitlines():
            if line.startswith("ok ") and "# SKIP" not in line.upper():
                passed += 1
            elif line.startswith("not ok "):
                failed += 1
    assert passed >= RUNC_OTHER_PASSED, res.stdout
    assert failed <= RUNC_OTHER_FAILED, res.stdout
