#!/bin/bash
# Run opencontainers/runtime-tools' validation suite against OCI runtimes, side by side: each test
# file runs under every runtime given before the next file starts, so all see the same machine.
#
#   bench/runtime/validation.sh [RUNTIME...]      (as root; default: runc and this venv's pallet-runtime)
#
# The suite is built outside the repo (docs/runtime.md, "runtime-tools validation suite"). Env:
#   RT_TOOLS      suite dir with runtimetest and validation/*/*.t   (/work/tools/runtime-tools)
#   RESULTS       output dir (default: a new /tmp dir); TAP in RESULTS/<runtime>/<test>.tap
#   GLOB          which test dirs under validation/, e.g. 'linux_cgroups_*'   ('*')
#   TEST_TIMEOUT  seconds per test file (180)
# Prints one line per file and runtime, then per runtime:
#   SUMMARY <runtime> files=N passed=P failed=F skipped=S died=D
# passed = `ok` lines without `# SKIP`, skipped = `ok ... # SKIP`, failed = `not ok` lines,
# died = files that exited nonzero without any `not ok` (e.g. "failed to create the container").
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -gt 0 ] || set -- runc "$here/.venv/bin/pallet-runtime"
RT_TOOLS=${RT_TOOLS:-/work/tools/runtime-tools}
RESULTS=${RESULTS:-$(mktemp -d /tmp/validation-results.XXXXXX)}
GLOB=${GLOB:-*}
TEST_TIMEOUT=${TEST_TIMEOUT:-180}
if [ ! -x "$RT_TOOLS/runtimetest" ]; then
  echo "missing $RT_TOOLS/runtimetest: build the suite first (docs/runtime.md)" >&2
  exit 2
fi
runtimes=()
for r in "$@"; do
  case "$r" in */*) r=$(readlink -f "$r");; esac  # RUNTIME is run as a command from the suite dir
  runtimes+=("$r")
done
cd "$RT_TOOLS" || exit 2
declare -A P S F D N
for r in "${runtimes[@]}"; do
  n=$(basename "$r"); mkdir -p "$RESULTS/$n"; P[$n]=0; S[$n]=0; F[$n]=0; D[$n]=0; N[$n]=0
done
for t in validation/$GLOB/*.t; do
  name=$(basename "$t" .t)
  for r in "${runtimes[@]}"; do
    n=$(basename "$r"); tap="$RESULTS/$n/$name.tap"
    RUNTIME="$r" timeout -k 10 "$TEST_TIMEOUT" "$t" >"$tap" 2>"$RESULTS/$n/$name.err" </dev/null
    rc=$?
    echo "exit=$rc" >>"$RESULTS/$n/$name.err"
    p=$(grep -E '^ok ' "$tap" | grep -vc '# SKIP')
    s=$(grep -cE '^ok .*# SKIP' "$tap")
    f=$(grep -cE '^not ok ' "$tap")
    printf '%-16s %-40s pass %4d  skip %4d  fail %3d  rc %d\n' "$n" "$name" "$p" "$s" "$f" "$rc"
    P[$n]=$((P[$n] + p)); S[$n]=$((S[$n] + s)); F[$n]=$((F[$n] + f)); N[$n]=$((N[$n] + 1))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then D[$n]=$((D[$n] + 1)); fi
  done
done
for r in "${runtimes[@]}"; do
  n=$(basename "$r")
  echo "SUMMARY $n files=${N[$n]} passed=${P[$n]} failed=${F[$n]} skipped=${S[$n]} died=${D[$n]}"
done
echo "TAP in $RESULTS"
