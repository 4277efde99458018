#!/bin/bash
# `pallet-runtime run` vs `runc run` of /bin/true, side by side in one hyperfine run, on two
# prepared busybox bundles (refimage small, unpacked with umoci; no terminal, no rlimits: runc on
# this host cannot raise hard limits):
#   plain    umoci's config (devices cgroup rules, default mounts and namespaces)
#   seccomp  the same plus Docker's default seccomp profile, as engines send with every container
#            (pallet-runtime's compile cache is warmed by hyperfine's warm-up runs)
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
umoci unpack --image "$work/layout:latest" "$work/plain" > /dev/null
python3 - "$work" "$here/tests/runtime/data/docker-default-seccomp.json" <<'PY'
import json, os, sys
work, profile = sys.argv[1], sys.argv[2]
p = os.path.join(work, "plain", "config.json")
c = json.load(open(p))
c["process"].update(terminal=False, args=["/bin/true"])
c["process"].pop("rlimits", None)
c["root"]["path"] = os.path.join(work, "plain", "rootfs")
json.dump(c, open(p, "w"))
os.mkdir(os.path.join(work, "seccomp"))
c["linux"]["seccomp"] = json.load(open(profile))
json.dump(c, open(os.path.join(work, "seccomp", "config.json"), "w"))
PY
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/result.json" \
  -n "runc plain" "runc --root $work/runc-state run --bundle $work/plain bench-runc" \
  -n "pallet plain" "$pallet --root $work/pallet-state run --bundle $work/plain bench-pallet" \
  -n "runc seccomp" "runc --root $work/runc-state run --bundle $work/seccomp bench-runc-sc" \
  -n "pallet seccomp" "$pallet --root $work/pallet-state run --bundle $work/seccomp bench-pallet-sc"
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
for kind in ("plain", "seccomp"):
    a, b = r[f"runc {kind}"], r[f"pallet {kind}"]
    print(f"{kind:8} median ms: runc {a['median'] * 1000:.1f}, pallet-runtime {b['median'] * 1000:.1f}; "
          f"ratio {b['median'] / a['median']:.2f}x (means {a['mean'] * 1000:.1f} / {b['mean'] * 1000:.1f})")
PY
