"""Fixtures shared by every component's tests. Component fixtures live in tests/<component>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import peers


@pytest.fixture(scope="session")
def small_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """refimage.py's `small` profile as an OCI layout (tag `latest`); read-only by convention."""
    out = tmp_path_factory.mktemp("refimage") / "small"
    peers.build_refimage("small", out)
    return out


@pytest.fixture(scope="session")
def small_expect() -> list[tuple[str, str, int, int, str]]:
    return peers.refimage_expect("small")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A docker-registry (CNCF distribution) on loopback, shared by the session; yields HOST:PORT."""
    with peers.docker_registry(tmp_path_factory.mktemp("docker-registry")) as addr:
        yield addr


@pytest.fixture
def pallet_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private pallet root and runroot for one test, also exported as PALLET_ROOT/PALLET_RUNROOT."""
    root, runroot = tmp_path / "root", tmp_path / "run"
    monkeypatch.setenv("PALLET_ROOT", str(root))
    monkeypatch.setenv("PALLET_RUNROOT", str(runroot))
    return root


def pytest_report_header(config: pytest.Config) -> str:
    return f"pallet tests as uid {os.geteuid()}"
