#!/usr/bin/env bash
# pallet load/save of the reference image (6 gzip layers, ~60k files) side by side with skopeo,
# which moves the same archives without unpacking (as pallet's store does). Run from the repo root:
#   bench/images/load_save.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/pallet-bench-images.XXXXXX)}
pallet="$here/.venv/bin/pallet"
refimage=${PALLET_REFIMAGE:-$here/../shared/bench/refimage.py}
[ -f "$refimage" ] || refimage=/work/shared/bench/refimage.py
mkdir -p "$work"
[ -d "$work/ref" ] || python3 "$refimage" reference "$work/ref" >/dev/null
[ -f "$work/ref.tar" ] || skopeo copy -q "oci:$work/ref:latest" "oci-archive:$work/ref.tar:ref"
mkdir -p "$here/bench/results"
hyperfine -r 5 --export-markdown "$here/bench/results/images-load.md" \
  --prepare "rm -rf $work/root $work/skdir" \
  -n "pallet load" "$pallet --root $work/root load -q -i $work/ref.tar" \
  -n "skopeo copy oci-archive: → oci:" "skopeo copy -q oci-archive:$work/ref.tar oci:$work/skdir:x"
"$pallet" --root "$work/root" load -q -i "$work/ref.tar" >/dev/null
hyperfine -r 5 --export-markdown "$here/bench/results/images-save.md" \
  --prepare "rm -f $work/o1.tar $work/o2.tar" \
  -n "pallet save --format oci-archive" "$pallet --root $work/root save --format oci-archive -o $work/o1.tar ref" \
  -n "skopeo copy oci: → oci-archive:" "skopeo copy -q oci:$work/ref:latest oci-archive:$work/o2.tar"
