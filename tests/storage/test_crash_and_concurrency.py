"""Crash safety (kill -9 mid-apply) and concurrency (8 processes applying shared layers)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.storage.conftest import make_store, needs_root, unmount_all
from tests.storage.helpers import compress, d, diff_id, f, make_tar, tree

from pallet.content import mediatypes as mt
from pallet.storage.driver import Kind
from pallet.storage.layers import LayerStore, chain_ids

pytestmark = [needs_root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def worker(tmp: Path, driver: str, spec: list[dict], *extra: str, **popen) -> subprocess.Popen:
    spec_path = tmp / f"spec-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "tests.storage.worker", str(tmp / "root"), str(tmp / "run"), driver,
            str(spec_path), *extra]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def big_layer(n: int = 3000, size: int = 12_000, seed: int = 0) -> bytes:
    import random

    rng = random.Random(seed)
    entries = [d("big")]
    for i in range(n):
        if i % 100 == 0:
            entries.append(d(f"big/d{i // 100}"))
        entries.append(f(f"big/d{i // 100}/f{i}", rng.randbytes(size)))
    return make_tar(entries)


def files_under(p: Path) -> int:
    return sum(len(fs) for _, _, fs in os.walk(p))


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_kill_9_mid_apply_then_next_apply_completes(tmp_path: Path, driver: str) -> None:
    raw = big_layer()
    blob = compress(raw)
    (tmp_path / "blob").write_bytes(blob)
    spec = [{"path": str(tmp_path / "blob"), "media_type": mt.OCI_LAYER_GZIP, "diff_id": diff_id(raw)}]
    cid = diff_id(raw)
    a = worker(tmp_path, driver, spec, "--stdin", stdin=subprocess.PIPE)
    b = None
    try:
        assert a.stdin is not None
        a.stdin.write(blob[: len(blob) // 2])  # half the layer, then the stream stalls
        a.stdin.flush()
        probe = make_store(tmp_path, driver)  # cleanup at open must not touch a live apply
        deadline = time.monotonic() + 60
        extracting = None
        while time.monotonic() < deadline:
            active = [i for i in probe.driver.walk() if i.name.startswith("extract-")]
            if active and files_under(probe.driver.data_dir(active[0].name)) > 500:
                extracting = active[0]
                break
            time.sleep(0.05)
        assert extracting is not None, "the worker never got halfway"
        assert not probe.exists(cid)
        # a second process applying the same layer waits for the first, never sees half a layer
        b = worker(tmp_path, driver, spec)
        time.sleep(0.5)
        assert b.poll() is None
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        out, err = b.communicate(timeout=120)
        assert b.returncode == 0, err.decode()
        assert json.loads(out) == [{"chain_id": cid, "applied": True}]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    store = make_store(tmp_path, driver)
    store.cleanup()
    # the killed extraction is gone; the layer is whole
    assert [i.name for i in store.driver.walk()] == [cid]
    root = store.mount_image("img", cid)
    try:
        got = tree(root)
        assert files_under(root) == 3000
        assert got["big/d29/f2999"][2] == 12_000
    finally:
        store.unmount_image("img", force=True)
        unmount_all(tmp_path)


def test_kill_9_leftovers_removed_on_next_open(tmp_path: Path) -> None:
    raw = big_layer(n=1500, seed=1)
    blob = compress(raw)
    spec = [{"path": "-", "media_type": mt.OCI_LAYER_GZIP, "diff_id": diff_id(raw)}]
    a = worker(tmp_path, "overlay", spec, "--stdin", stdin=subprocess.PIPE)
    try:
        a.stdin.write(blob[: len(blob) // 3])  # type: ignore[union-attr]
        a.stdin.flush()  # type: ignore[union-attr]
        home = tmp_path / "root" / "storage" / "overlay" / "snapshots"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(files_under(p) > 200 for p in home.glob("*")):
            time.sleep(0.05)
        a.send_signal(signal.SIGKILL)
        a.wait(30)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    ctx_store = make_store(tmp_path, "overlay")  # a new process would clean at open; so does cleanup()
    ctx_store.cleanup()
    assert list(ctx_store.driver.walk()) == []
    assert os.listdir(tmp_path / "root" / "storage" / "overlay" / "tmp") == []
    layer = ctx_store.apply(None, io.BytesIO(blob), mt.OCI_LAYER_GZIP, expected_diff_id=diff_id(raw))
    assert layer.applied and files_under(ctx_store.layer_path(layer.chain_id)) == 1500


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_8_parallel_applies_share_layers(tmp_path: Path, driver: str) -> None:
    layers = {
        "L0": big_layer(n=1500, size=4000, seed=10),
        "L1": make_tar([d("one"), *[f(f"one/{i}", os.urandom(3000)) for i in range(300)]]),
        "L2": make_tar([d("two"), f("two/x", b"2"), f("one/.wh.0")]),
        "L3": make_tar([d("three"), *[f(f"three/{i}", os.urandom(3000)) for i in range(300)]]),
    }
    specs = {}
    for name, raw in layers.items():
        (tmp_path / name).write_bytes(compress(raw))
        specs[name] = {"path": str(tmp_path / name), "media_type": mt.OCI_LAYER_GZIP, "diff_id": diff_id(raw)}
    images = {"X": ["L0", "L1"], "Y": ["L0", "L1", "L2"], "Z": ["L0", "L3"]}
    go = tmp_path / "go"
    order = ["X", "Y", "Z", "X", "Y", "Z", "X", "Y"]
    procs = [worker(tmp_path, driver, [specs[x] for x in images[img]], "--go", str(go)) for img in order]
    time.sleep(0.3)
    go.touch()
    applied: Counter[str] = Counter()
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()
            for x in json.loads(out):
                applied[x["chain_id"]] += x["applied"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    chains = {img: chain_ids([specs[x]["diff_id"] for x in names]) for img, names in images.items()}
    every = {c for cs in chains.values() for c in cs}
    assert len(every) == 4  # L0, L0+L1, L0+L1+L2, L0+L3
    # each layer is applied exactly once, whichever process got there first
    assert {c: applied[c] for c in every} == dict.fromkeys(every, 1)
    store: LayerStore = make_store(tmp_path, driver)
    try:
        assert {x.chain_id for x in store.layers()} == every
        assert [i.name for i in store.driver.walk() if i.kind != Kind.COMMITTED] == []
        y = store.mount_image("Y", chains["Y"][-1])
        assert sorted(os.listdir(y)) == ["big", "one", "two"]
        assert len(os.listdir(y / "one")) == 299
        z = store.mount_image("Z", chains["Z"][-1])
        assert sorted(os.listdir(z)) == ["big", "three"]
    finally:
        unmount_all(tmp_path)
