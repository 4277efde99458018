#!/bin/bash
# Run the OCI runtime-tools validation suite (opencontainers/runtime-tools validation/, built outside
# the repo) against a runtime and count TAP assertions.
#
#   bench/runtime/validation.sh RUNTIME_TOOLS_DIR RUNTIME_BINARY OUT_DIR
#
# RUNTIME_TOOLS_DIR is a checkout with `make runtimetest validation-executables` done (the .t files
# and runtimetest). Each .t runs from that dir (it untars rootfs-amd64.tar.gz from the cwd) with
# RUNTIME set, under a timeout; its TAP output goes to OUT_DIR/<name>.tap. Prints one summary line:
#   RUNTIME passed=N failed=M skipped=S tests=T
set -u
tools=${1:?runtime-tools dir}; runtime=${2:?runtime binary}; out=${3:?output dir}
per_test_timeout=${VALIDATION_TIMEOUT:-120}
mkdir -p "$out"
cd "$tools" || exit 2
pass=0; fail=0; skip=0; n=0
for t in $(find validation -name '*.t' | sort); do
  name=$(basename "$t" .t)
  RUNTIME="$runtime" timeout -k 5 "$per_test_timeout" "$t" > "$out/$name.tap" 2> "$out/$name.err" < /dev/null
  echo "exit=$?" >> "$out/$name.err"
  p=$(grep -cE '^ok ' "$out/$name.tap" | head -1)
  s=$(grep -cE '^ok .*# (SKIP|skip)' "$out/$name.tap" | head -1)
  f=$(grep -cE '^not ok ' "$out/$name.tap" | head -1)
  pass=$((pass + p - s)); skip=$((skip + s)); fail=$((fail + f)); n=$((n + 1))
done
echo "$(basename "$runtime") passed=$pass failed=$fail skipped=$skip tests=$n"
