from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pallet import images
from pallet.context import Context


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(root=tmp_path / "root", runroot=tmp_path / "run")


@pytest.fixture
def small(ctx: Context, small_layout: Path) -> images.Image:
    """refimage small loaded from its OCI layout as localhost/small:latest."""
    (loaded,) = images.load_layout(small_layout, "latest", name="small", ctx=ctx)
    return loaded.image


def derived_layout(base: Path, out: Path, keep_layers: int, label: str, tag: str = "latest") -> Path:
    """An OCI layout whose image shares ``base``'s first ``keep_layers`` layers (a child of them)."""
    index = json.loads((base / "index.json").read_bytes())
    man = json.loads((base / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    cfg = json.loads((base / "blobs/sha256" / man["config"]["digest"].split(":")[1]).read_bytes())
    (out / "blobs/sha256").mkdir(parents=True)
    layers = man["layers"][:keep_layers]
    for layer in layers:
        h = layer["digest"].split(":")[1]
        shutil.copyfile(base / "blobs/sha256" / h, out / "blobs/sha256" / h)
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:keep_layers]
    label_step = {
        "created": "2024-02-02T00:00:00Z",
        "created_by": f"/bin/sh -c #(nop)  LABEL derived={label}",
        "empty_layer": True,
    }
    cfg["history"] = [*cfg["history"][:keep_layers], label_step]
    cfg["config"]["Labels"] = {"derived": label}
    cfg["created"] = "2024-02-02T00:00:00Z"

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (out / "blobs/sha256" / h).write_bytes(data)
        return f"sha256:{h}"

    cfg_raw = json.dumps(cfg, sort_keys=True).encode()
    man["config"] = {"mediaType": man["config"]["mediaType"], "digest": put(cfg_raw), "size": len(cfg_raw)}
    man["layers"] = layers
    man_raw = json.dumps(man, sort_keys=True).encode()
    (out / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": man["mediaType"],
                        "digest": put(man_raw),
                        "size": len(man_raw),
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return out


def pallet(
    ctx: Context, *args: str, input: bytes | None = None, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run the pallet CLI as a separate process (real exit codes, stdin, stdout bytes)."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pallet.cli.main",
            "--root",
            str(ctx.root),
            "--runroot",
            str(ctx.runroot),
            *args,
        ],
        input=input,
        capture_output=True,
        timeout=120,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"pallet {' '.join(args)} failed ({res.returncode}): {res.stderr.decode()}")
    return res
