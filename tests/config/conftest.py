"""Config tests run with a private HOME and no containers-related environment."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in (
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "CONTAINERS_REGISTRIES_CONF",
    ):
        monkeypatch.delenv(var, raising=False)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return h
