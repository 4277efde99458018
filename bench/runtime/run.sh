#!/bin/bash
# `pallet-runtime run` vs `runc run` of /bin/true in the same prepared busybox bundle (refimage small,
# unpacked with umoci; no terminal, no rlimits: runc on this host cannot raise hard limits).
#
#   bench/runtime/run.sh [RUNS]        (as root; needs hyperfine, umoci, runc)
set -euo pipefail
runs=${1:-100}
here=$(cd "$(dirname "$0")/../.." && pwd)
pallet=${PALLET_RUNTIME:-$here/.venv/bin/pallet-runtime}
refimage=${PALLET_REFIMAGE:-$here/../shared/bench/refimage.py}
[ -f "$refimage" ] || refimage=/work/shared/bench/refimage.py
work=$(mktemp -d /tmp/pallet-bench-runtime.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 "$refimage" small "$work/layout" --tag latest > /dev/null
umoci unpack --image "$work/layout:latest" "$work/bundle" > /dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"].update(terminal=False, args=["/bin/true"])
c["process"].pop("rlimits", None)
json.dump(c, open(p, "w"))
PY
cd "$work/bundle"
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/result.json" \
  "runc --root $work/runc-state run bench-runc" \
  "$pallet --root $work/pallet-state run bench-pallet"
python3 - "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
med = {x["command"].split()[0].rsplit("/", 1)[-1]: x["median"] * 1000 for x in r}
print(f"median ms: runc {med['runc']:.1f}, pallet-runtime {med['pallet-runtime']:.1f}; "
      f"ratio pallet/runc {med['pallet-runtime'] / med['runc']:.2f}x")
PY
