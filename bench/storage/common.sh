# Shared by the storage benchmarks: the reference image, a loopback docker-registry serving it.
# Everything big lives outside the repo (BENCH_DATA, default /work/tools/bench-data).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
BENCH_DATA="${BENCH_DATA:-/work/tools/bench-data}"
REFIMAGE="${PALLET_REFIMAGE:-$REPO/../shared/bench/refimage.py}"
[ -f "$REFIMAGE" ] || REFIMAGE=/work/shared/bench/refimage.py
LAYOUT="$BENCH_DATA/reference"
REG_DIR="$BENCH_DATA/registry"
REPO_NAME="bench/reference"
SCRATCH="${SCRATCH:-/var/tmp/pallet-bench-storage}"

ensure_layout() {
  if [ ! -f "$LAYOUT/index.json" ]; then
    echo "building refimage.py reference into $LAYOUT (once)" >&2
    python3 "$REFIMAGE" reference "$LAYOUT" --tag latest >&2
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry: docker-registry on a free loopback port with the reference image pushed; sets REG
start_registry() {
  ensure_layout
  mkdir -p "$REG_DIR"
  local port; port="$(free_port)"
  cat > "$REG_DIR/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $REG_DIR/data}
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$REG_DIR/config.yml" > "$REG_DIR/registry.log" 2>&1 &
  REG_PID=$!
  trap 'kill $REG_PID 2>/dev/null || true' EXIT
  REG="127.0.0.1:$port"
  for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
  if ! curl -fs "http://$REG/v2/$REPO_NAME/manifests/latest" -H 'Accept: application/vnd.oci.image.manifest.v1+json' >/dev/null; then
    echo "pushing the reference image to $REG (once)" >&2
    skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$REG/$REPO_NAME:latest"
  fi
}

# layer_digests: the blob digests of the reference image's layers, base first
layer_digests() {
  python3 - "$LAYOUT" <<'PY'
import json, sys
lay = sys.argv[1]
idx = json.load(open(f"{lay}/index.json"))
man = json.load(open(f"{lay}/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
print(" ".join(l["digest"] for l in man["layers"]))
PY
}
