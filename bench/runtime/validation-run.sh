#!/usr/bin/env bash
# Run the opencontainers/runtime-tools validation suite against an OCI runtime.
#
# Assumes the suite is already built (see docs/runtime-cgroups-seccomp.md, "runtime-tools"):
#   /work/tools/runtime-tools/{runtimetest,validation/*/*.t}
# Usage (as root):  bench/runtime/validation-run.sh [RUNTIME] [TEST-GLOB]
#   RUNTIME    runc (default), or e.g. /work/wt/runtime/.venv/bin/pallet-runtime
#   TEST-GLOB  which tests, default '*' (e.g. 'linux_cgroups_*')
# Env: RT_TOOLS (suite dir), RESULTS (output dir), TEST_TIMEOUT (seconds per test file, 180)
# Prints one line per test file (pass/skip/fail counts, exit code) and the totals; full TAP output
# of each file is kept in $RESULTS/<name>.tap.
set -u
RUNTIME=${1:-runc}
GLOB=${2:-*}
RT_TOOLS=${RT_TOOLS:-/work/tools/runtime-tools}
RESULTS=${RESULTS:-$(mktemp -d /tmp/validation-results.XXXXXX)}
TEST_TIMEOUT=${TEST_TIMEOUT:-180}
if [ ! -x "$RT_TOOLS/runtimetest" ]; then
  echo "missing $RT_TOOLS/runtimetest: build the suite first (docs/runtime-cgroups-seccomp.md)" >&2
  exit 2
fi
case "$RUNTIME" in */*) RUNTIME=$(readlink -f "$RUNTIME");; esac
cd "$RT_TOOLS" || exit 2
mkdir -p "$RESULTS"
tp=0; ts=0; tf=0; tbad=0; n=0
for t in validation/$GLOB/*.t; do
  name=$(basename "$t" .t)
  RUNTIME="$RUNTIME" timeout -k 10 "$TEST_TIMEOUT" "$t" >"$RESULTS/$name.tap" 2>"$RESULTS/$name.err" </dev/null
  rc=$?
  p=$(grep -E '^ok ' "$RESULTS/$name.tap" | grep -vc '# SKIP')
  s=$(grep -cE '^ok .*# SKIP' "$RESULTS/$name.tap")
  f=$(grep -cE '^not ok ' "$RESULTS/$name.tap")
  printf '%-45s pass %4d  skip %4d  fail %3d  rc %d\n' "$name" "$p" "$s" "$f" "$rc"
  tp=$((tp + p)); ts=$((ts + s)); tf=$((tf + f)); n=$((n + 1))
  # a file that died without a 'not ok' line counts as one failure (node-tap does the same)
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then tbad=$((tbad + 1)); fi
done
echo "files $n  pass $tp  skip $ts  fail $tf  files-failed-without-tap $tbad  (TAP in $RESULTS)"
