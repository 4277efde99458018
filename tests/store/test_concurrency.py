"""Several pallet processes on one store at once: tags, new images, removals and gc, nothing lost."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pallet.store import Store
from tests.support.peers import REPO

_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from pallet.store import Store, ImageNotFound
    from tests.store.helpers import build_image
    root, me, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = Store(root)
    img = build_image(s, f"w{me}-0")
    kept = {}
    for r in range(rounds):
        s.tag(img.id, "localhost/shared:latest")          # contended: moves between workers' images
        name = f"localhost/w{me}/n{r % 7}:latest"
        s.tag(img.id, name)
        kept[name] = img.id
        if r % 3 == 2:                                     # untag one of ours again
            gone = f"localhost/w{me}/n{(r - 1) % 7}:latest"
            if gone in kept:
                s.untag(gone)
                del kept[gone]
        s.add_holder(img.id, f"ctr-{me}")
        s.remove_holder(img.id, f"ctr-{me}")
        if r % 5 == 4:                                     # replace our image by a fresh one
            new = build_image(s, f"w{me}-{r}")
            for n in list(kept):
                s.tag(new.id, n)
                kept[n] = new.id
            s.remove_image(img.id)
            img = new
    s.close()
    print(json.dumps({"image": img.id, "names": kept}))
""")

_GC = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from pallet.store import Store
    s = Store(sys.argv[2])
    n = 0
    deadline = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < deadline:
        s.gc()
        n += 1
    print(n)
""")


@pytest.mark.slow
def test_concurrent_processes_keep_the_index_consistent(tmp_path: Path) -> None:
    root = tmp_path / "images"
    Store(root).close()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(REPO), str(root), str(i), "25"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    gc = subprocess.Popen(
        [sys.executable, "-c", _GC, str(REPO), str(root), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = []
    try:
        for w in workers:
            out, err = w.communicate(timeout=240)
            assert w.returncode == 0, err
            results.append(json.loads(out))
        out, err = gc.communicate(timeout=60)
        assert gc.returncode == 0, err
        assert int(out) > 0
    finally:
        for p in [*workers, gc]:
            if p.poll() is None:
                p.kill()
                p.wait()
    db = sqlite3.connect(root / "index.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()
    with Store(root) as s:
        images = {i.id: i for i in s.images()}
        assert len(images) == 4, "each worker ends with exactly one image"
        for res in results:
            img = images[res["image"]]
            for name, image_id in res["names"].items():
                assert image_id == img.id
                assert name in img.names, f"lost tag {name}"
            assert not img.holders
        # the contended name is on at most one image (it vanishes with an image removed while holding it)
        holders_of_shared = [i for i in images.values() if "localhost/shared:latest" in i.names]
        assert len(holders_of_shared) <= 1
        if holders_of_shared:
            assert s.lookup("shared").id == holders_of_shared[0].id
        for img in images.values():  # gc never took a blob an image (or a pull in flight) needed
            for d in (img.id, img.manifest_digest, *(x.digest for x in img.layers)):
                assert s.has_blob(d), d
        s.gc()
        for img in images.values():
            assert s.has_blob(img.manifest_digest)
        on_disk = set(s.blobs.walk())
        needed = {
            d for i in images.values() for d in (i.id, i.manifest_digest, *(x.digest for x in i.layers))
        }
        assert on_disk == needed, "after gc exactly the referenced blobs remain"
        assert list(s.blobs.ingest_dir.iterdir()) == []
