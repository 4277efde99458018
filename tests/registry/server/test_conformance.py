"""The OCI distribution-spec conformance suite, every test enabled, against our server.

The suite is fetched and built outside the repository (bench/registry/conformance.py build ...);
CI cannot fetch it, so this test runs only where the binary exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import peers

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "registry"))
import conformance

pytestmark = pytest.mark.skipif(
    not conformance.DEFAULT_BIN.exists(),
    reason=f"OCI conformance suite not built at {conformance.DEFAULT_BIN} (set PALLET_OCI_CONFORMANCE; "
           "build it with bench/registry/conformance.py build)")


@pytest.mark.slow
def test_oci_conformance_every_test_enabled(tmp_path: Path) -> None:
    with peers.pallet_registry(tmp_path) as addr:
        counts, out = conformance.run_suite(conformance.DEFAULT_BIN, addr, tmp_path / "results")
    assert counts["failed"] == 0 and counts["skipped"] == 0, out[-5000:]
    assert counts["passed"] > 700
