#!/usr/bin/env bash
# Unpacking refimage.py's reference image (6 gzip layers, ~60,000 files, ~323 MB compressed)
# from a loopback docker-registry into empty storage, side by side in one hyperfine run:
#   pallet:  every layer streamed from the registry into LayerStore.apply_image (overlay)
#   floor:   for each layer `curl BLOB | tar -xz` into one directory
# hyperfine's --prepare empties both targets (not timed). Then the peak RSS of pallet's apply,
# for the whole image and for its smallest and biggest layer alone (it must not grow).
# With WITH_PODMAN=1, `podman pull` into an empty --root joins the same run (the anchor; the
# full `pallet pull` comparison is podman_pull.sh once pull is wired).
# INTERLEAVED=N adds N rounds of the same commands interleaved (interleaved.py), whose
# per-round ratios resist the shared disk's noise better than back-to-back blocks.
#   [WITH_PODMAN=1] [INTERLEAVED=N] bench/storage/unpack.sh [RUNS]
source "$(dirname "$0")/common.sh"
RUNS="${1:-5}"
start_registry
mkdir -p "$SCRATCH"
OURS="$SCRATCH/pallet-root"
FLOOR="$SCRATCH/floor"
DIGESTS="$(layer_digests)"
FLOOR_CMD="for d in $DIGESTS; do curl -fsS http://$REG/v2/$REPO_NAME/blobs/\$d | tar -xz -C $FLOOR; done"
PALLET_CMD="$PY $HERE/pull_layers.py $REG $REPO_NAME latest $OURS"
PREP="rm -rf $OURS $FLOOR; mkdir -p $FLOOR; sync"
EXTRA=()
if [ "${WITH_PODMAN:-0}" = 1 ]; then
  POD="$SCRATCH/podman"
  cat > "$SCRATCH/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF="$SCRATCH/containers.conf"
  PODMAN="podman --root $POD/root --runroot $POD/run --storage-driver overlay"
  PREP="$PODMAN rmi -af >/dev/null 2>&1 || true; rm -rf $POD; $PREP"
  EXTRA=(-n "podman pull" "$PODMAN pull -q --tls-verify=false $REG/$REPO_NAME:latest")
fi

hyperfine --runs "$RUNS" --warmup 1 --prepare "$PREP" \
  --export-json "$SCRATCH/unpack.json" --export-markdown "$SCRATCH/unpack.md" \
  -n "pallet apply_image (overlay)" "$PALLET_CMD" \
  -n "floor: curl | tar -xz" "bash -c '$FLOOR_CMD'" "${EXTRA[@]}"
cat "$SCRATCH/unpack.md"

# the same commands interleaved round by round (noise lands on all of them alike)
if [ "${INTERLEAVED:-0}" -gt 0 ]; then
  echo
  "$PY" "$HERE/interleaved.py" --rounds "$INTERLEAVED" --prepare "$PREP" \
    -n "pallet apply_image (overlay)" "$PALLET_CMD" \
    -n "floor: curl | tar -xz" "$FLOOR_CMD" "${EXTRA[@]}"
fi

rss() {  # peak RSS in MB of one run, from an empty root
  eval "$PREP"
  /usr/bin/time -v "$@" 2>&1 >/dev/null | awk '/Maximum resident set size/ {printf "%.0f", $6/1024}'
}
echo
echo "peak RSS, whole image:   $(rss $PALLET_CMD) MB"
echo "peak RSS, layer 1 alone: $(rss $PALLET_CMD --only 0) MB   (1 MB compressed)"
echo "peak RSS, layer 3 alone: $(rss $PALLET_CMD --only 2) MB   (15 MB compressed, 46 MB of tar, 21,000 files)"
echo "peak RSS, layer 5 alone: $(rss $PALLET_CMD --only 4) MB   (295 MB compressed, 579 MB of tar, 30,000 files)"
eval "$PREP"
rm -rf "$OURS" "$FLOOR"
