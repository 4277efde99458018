#!/usr/bin/env python3
"""Fetch an image's layers from a registry and apply them with pallet's layer store.

This is the storage half of a pull (no blob store, no image index): manifest and config over
HTTP, then every layer streamed from the registry straight into LayerStore.apply_image
(decompress, hash and extract in one pass, layers in parallel with overlay).

    pull_layers.py HOST:PORT REPO TAG ROOT [--driver overlay] [--parallel N] [--only INDEX]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from pallet.context import Context
from pallet.storage.layers import LayerSource, LayerStore

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def get(url: str, accept: str | None = None):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    return urllib.request.urlopen(req, timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("registry")
    ap.add_argument("repo")
    ap.add_argument("tag")
    ap.add_argument("root", type=Path)
    ap.add_argument("--driver", default="overlay")
    ap.add_argument("--parallel", type=int, default=None)
    ap.add_argument("--only", type=int, default=None, help="apply only this layer (as a base layer)")
    args = ap.parse_args()
    base = f"http://{args.registry}/v2/{args.repo}"
    with get(f"{base}/manifests/{args.tag}", ACCEPT) as r:
        manifest = json.loads(r.read())
    with get(f"{base}/blobs/{manifest['config']['digest']}") as r:
        config = json.loads(r.read())
    layers = manifest["layers"]
    diff_ids = config["rootfs"]["diff_ids"]
    if args.only is not None:
        layers, diff_ids = [layers[args.only]], [diff_ids[args.only]]
    sources = [LayerSource(open=lambda d=desc["digest"]: get(f"{base}/blobs/{d}"),
                           media_type=desc["mediaType"], diff_id=diff, compressed_digest=desc["digest"],
                           compressed_size=desc["size"])
               for desc, diff in zip(layers, diff_ids, strict=True)]
    store = LayerStore(Context(root=args.root, runroot=args.root / "run", storage_driver=args.driver))
    t = time.monotonic()
    applied = store.apply_image(sources, parallel=args.parallel)
    print(f"{len(applied)} layers, {sum(x.size for x in applied) / 1e6:.0f} MB of tar, "
          f"{time.monotonic() - t:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
