"""A pull killed with SIGKILL in the middle leaves nothing half-done that the next pull would use;
eight pulls at once of images that share layers apply each layer exactly once."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.images.test_pull_push import ok, tree
from tests.support import peers
from tests.support.layout_registry import LayoutRegistry

pytestmark = pytest.mark.slow


def derived_layout(base: Path, out: Path, text: str) -> None:
    """``base`` plus one more layer holding /extra.txt: an image sharing all of base's layers."""
    shutil.copytree(base, out)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = text.encode()
        ti = tarfile.TarInfo("extra.txt")
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
        tf.addfile(ti, io.BytesIO(data))
    layer = raw.getvalue()

    def put(blob: bytes) -> str:
        h = hashlib.sha256(blob).hexdigest()
        (out / "blobs" / "sha256" / h).write_bytes(blob)
        return f"sha256:{h}"

    index = json.loads((out / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((out / "blobs" / mdesc["digest"].replace(":", "/")).read_bytes())
    config = json.loads((out / "blobs" / manifest["config"]["digest"].replace(":", "/")).read_bytes())
    ldigest = put(layer)
    config["rootfs"]["diff_ids"].append(ldigest)
    config["history"].append({"created": "2023-11-14T22:13:20Z", "created_by": "test: extra layer"})
    craw = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": put(craw), "size": len(craw)}
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": ldigest, "size": len(layer)})
    mraw = json.dumps(manifest).encode()
    mdesc.update(digest=put(mraw), size=len(mraw))
    (out / "index.json").write_text(json.dumps(index))


def test_eight_parallel_pulls_share_layers_and_apply_each_once(pallet_root: Path, small_layout: Path,
                                                               registry: str, tmp_path: Path) -> None:
    refs = []
    for i in range(2):
        layout = tmp_path / f"img{i}"
        derived_layout(small_layout, layout, f"image {i}\n")
        ref = f"{registry}/concurrent/img{i}:v1"
        peers.skopeo_copy(f"oci:{layout}:latest", f"docker://{ref}")
        refs.append(ref)
    procs = [subprocess.Popen([sys.executable, "-m", "pallet.cli.main", "--log-level", "info", "pull", "-q",
                               refs[n % 2]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(8)]
    applied: Counter[str] = Counter()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        applied.update(re.findall(r"applied layer (sha256:[0-9a-f]{64})", err))
    # 3 shared layers of small + one extra layer per image: each applied by exactly one process
    assert len(applied) == 5 and set(applied.values()) == {1}, applied
    for i, ref in enumerate(refs):
        mount = Path(ok("image", "mount", ref).strip())
        try:
            assert (mount / "extra.txt").read_text() == f"image {i}\n"
            assert (mount / "etc" / "motd").is_file()
        finally:
            ok("image", "unmount", ref)


def test_kill_9_mid_pull_then_the_next_pull_is_complete(pallet_root: Path, small_layout: Path,
                                                        small_expect) -> None:
    reg = LayoutRegistry(small_layout)
    try:
        ref = f"{reg.addr}/{reg.repo}:latest"
        reg.faults = {"blob": "slow"}
        p = subprocess.Popen([sys.executable, "-m", "pallet.cli.main", "pull", ref],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        big = reg.largest_blob().split(":")[1]
        while not any(big in h for h in reg.hits) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.4)  # in the middle of the big layer's download and unpack
        p.send_signal(signal.SIGKILL)
        p.communicate()
        assert p.returncode == -signal.SIGKILL
        assert ok("images", "-q") == ""  # no image registered from a half pull
        reg.faults = {}
        ok("pull", "-q", ref)
        mount = Path(ok("image", "mount", ref).strip())
        try:
            assert tree(mount) == {p: (k, m, s, t) for p, k, m, s, t in small_expect}
        finally:
            ok("image", "unmount", ref)
    finally:
        reg.close()
