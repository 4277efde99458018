from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "images")
    try:
        yield s
    finally:
        s.close()
