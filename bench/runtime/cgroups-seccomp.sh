#!/usr/bin/env bash
# What the cgroups and seccomp code costs per container start, with hyperfine (run as root).
#   1. importing pallet.runtime.cgroups + pallet.runtime.seccomp vs a bare interpreter
#   2. one container's cgroup life: manager, create, apply (a `true` child), set (docker-like
#      resources), destroy -- beside runc's whole `runc run` of a busybox `true` for scale
#   3. compiling Docker's default seccomp profile: cold vs from the compile cache
# Usage: bench/runtime/cgroups-seccomp.sh [hyperfine args...]
set -eu
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export PYTHONDONTWRITEBYTECODE=   # measure with bytecode caches, as an installed package runs
$PY -c 'import pallet.runtime.cgroups, pallet.runtime.seccomp'  # warm the .pyc files
work=$(mktemp -d /tmp/pallet-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/cg.py" <<'PYEOF'
import os, subprocess, sys
from pallet.runtime import cgroups
m = cgroups.manager("/pallet-bench/" + str(os.getpid()), "b")
m.create()
p = subprocess.Popen(["true"])
m.apply(p.pid)
m.set({"memory": {"limit": 256 << 20, "swap": 512 << 20}, "cpu": {"shares": 512, "quota": 50000,
       "period": 100000}, "pids": {"limit": 100}})
p.wait()
m.destroy()
PYEOF
cat >"$work/sc.py" <<'PYEOF'
import json, sys
from pallet.runtime import seccomp
seccomp.compile_profile(json.load(open("tests/runtime/data/docker-default-seccomp.json")),
                        cache_dir=sys.argv[1] if len(sys.argv) > 1 else None)
PYEOF
# a runc bundle for scale
mkdir -p "$work/bundle/rootfs/bin"
cp "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox"
ln -s busybox "$work/bundle/rootfs/bin/true"
(cd "$work/bundle" && runc spec && python3 - <<'PYEOF'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
json.dump(c, open("config.json", "w"))
PYEOF
)
$PY "$work/sc.py" "$work/cache"  # fill the cache
hyperfine -N --warmup 3 "$@" \
  -n "python -c pass" "$PY -c pass" \
  -n "import cgroups+seccomp" "$PY -c 'import pallet.runtime.cgroups, pallet.runtime.seccomp'" \
  -n "cgroup lifecycle (python)" "$PY $work/cg.py" \
  -n "seccomp compile docker profile" "$PY $work/sc.py" \
  -n "seccomp compile docker profile (cached)" "$PY $work/sc.py $work/cache" \
  -n "runc run true (whole container)" "runc run --bundle $work/bundle pallet-bench-$$"
rmdir /sys/fs/cgroup/*/pallet-bench 2>/dev/null || true
