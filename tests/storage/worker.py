"""A separate process applying layers, for the crash and concurrency tests.

    python -m tests.storage.worker ROOT RUNROOT DRIVER SPEC.json [--stdin] [--go FILE]

SPEC is a list of {"path", "media_type", "diff_id"} (base first). With --stdin the single
layer's blob comes from standard input instead of its path (so a test can stop the stream
midway). With --go, wait until FILE exists before starting (a start barrier). Prints a JSON
list of {"chain_id", "applied"}.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

from pallet.context import Context
from pallet.storage.layers import LayerSource, LayerStore


def main(argv: list[str]) -> int:
    root, runroot, driver, spec_path = argv[:4]
    spec = json.loads(Path(spec_path).read_text())
    if "--go" in argv:
        go = Path(argv[argv.index("--go") + 1])
        while not go.exists():
            time.sleep(0.005)
    store = LayerStore(Context(root=Path(root), runroot=Path(runroot), storage_driver=driver))
    if "--stdin" in argv:
        (layer,) = spec
        out = [store.apply(None, sys.stdin.buffer, layer["media_type"], expected_diff_id=layer["diff_id"])]
    else:
        out = store.apply_image([LayerSource(open=functools.partial(open, x["path"], "rb"),
                                             media_type=x["media_type"], diff_id=x["diff_id"]) for x in spec])
    print(json.dumps([{"chain_id": x.chain_id, "applied": x.applied} for x in out]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
