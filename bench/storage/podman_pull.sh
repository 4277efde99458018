#!/usr/bin/env bash
# The issue's pull benchmark, ready for when `pallet pull` exists (the lead wires pull to the
# layer store): refimage.py reference from a loopback docker-registry into empty storage,
# side by side in one hyperfine run:
#   pallet pull   into an empty --root
#   podman pull   into an empty --root (runc, clamped ulimits: see /work/wt/GUIDE.md)
#   floor         for each layer `curl BLOB | tar -xz` into one directory
# Target: pallet <= 0.5x podman and <= 1.5x the floor. Then pallet pull's peak RSS.
#   bench/storage/podman_pull.sh [RUNS]
source "$(dirname "$0")/common.sh"
RUNS="${1:-3}"
PALLET="${PALLET:-$REPO/.venv/bin/pallet}"
start_registry
mkdir -p "$SCRATCH"
P_ROOT="$SCRATCH/pallet"
POD_ROOT="$SCRATCH/podman"
FLOOR="$SCRATCH/floor"
cat > "$SCRATCH/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$SCRATCH/containers.conf"
DIGESTS="$(layer_digests)"
IMAGE="$REG/$REPO_NAME:latest"
FLOOR_CMD="for d in $DIGESTS; do curl -fsS http://$REG/v2/$REPO_NAME/blobs/\$d | tar -xz -C $FLOOR; done"
PREP="podman --root $POD_ROOT/root --runroot $POD_ROOT/run --storage-driver overlay rmi -af >/dev/null 2>&1 || true; \
rm -rf $P_ROOT $POD_ROOT $FLOOR; mkdir -p $FLOOR; sync"

hyperfine --runs "$RUNS" --prepare "$PREP" \
  --export-json "$SCRATCH/pull.json" --export-markdown "$SCRATCH/pull.md" \
  -n "pallet pull" "$PALLET --root $P_ROOT/root --runroot $P_ROOT/run pull --tls-verify=false $IMAGE" \
  -n "podman pull" "podman --root $POD_ROOT/root --runroot $POD_ROOT/run --storage-driver overlay pull --tls-verify=false -q $IMAGE" \
  -n "floor: curl | tar -xz" "bash -c '$FLOOR_CMD'"
cat "$SCRATCH/pull.md"
eval "$PREP"
echo "pallet pull peak RSS: $(/usr/bin/time -v "$PALLET" --root "$P_ROOT/root" --runroot "$P_ROOT/run" pull \
  --tls-verify=false "$IMAGE" 2>&1 >/dev/null | awk '/Maximum resident set size/ {printf "%.0f", $6/1024}') MB"
eval "$PREP"
