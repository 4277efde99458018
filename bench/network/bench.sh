#!/usr/bin/env bash
# Networking benchmarks (issue 7), each one hyperfine run with the anchor side by side.
#
#   bench/network/bench.sh [cycle|run|throughput|all]     (as root; default all)
#
# cycle       one container's networking as a fresh process: pallet (bench/network/cycle.py:
#             netns, setup on the default bridge network, teardown) vs podman's netavark 1.4
#             doing the same (netavark_cycle.sh), on an idle network (bridge and rules made and
#             removed every time) and with a resident container keeping the bridge up.
# run         `pallet run --rm IMAGE true` vs `podman run --rm IMAGE true`, both on their
#             default bridge network (the issue's target: pallet <= 0.5x podman), and pallet
#             with --network none for what networking adds.
# throughput  1 GiB through busybox nc between two containers on their default bridge network:
#             two pallet containers vs two podman containers (the same host busybox runs in each
#             container's network namespace via nsenter, so only the network path differs).
#
# Environment: PALLET (default .venv/bin/pallet), PYTHON (default .venv/bin/python),
# RUNS (default 20), TP_RUNS (default 5), KEEP_WORK=1 to keep the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
PALLET=${PALLET:-$REPO/.venv/bin/pallet}
RUNS=${RUNS:-20}
TP_RUNS=${TP_RUNS:-5}
WHAT=${1:-all}
WORK=/tmp/pallet-netbench-$$  # lowercase: podman names oci: images after the path
mkdir -p "$WORK"
export PALLET_ROOT=$WORK/pallet/root PALLET_RUNROOT=$WORK/pallet/run
PODMAN=(podman --root "$WORK/podman/storage" --runroot "$WORK/podman/run")
unset PYTHONDONTWRITEBYTECODE  # measure with bytecode caches, as an installed pallet runs
"$PYTHON" -m compileall -q src > /dev/null
export CONTAINERS_CONF=$WORK/containers.conf
cat > "$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF

cleanup() {
  set +e
  "${PODMAN[@]}" rm -f -t 0 pbench-a pbench-b > /dev/null 2>&1
  "$PALLET" rm -f pbench-a pbench-b > /dev/null 2>&1
  "$PYTHON" bench/network/cycle.py "$WORK/cycle-resident" --resident down > /dev/null 2>&1
  "$PYTHON" - "$WORK" <<'PY' > /dev/null 2>&1
import sys
from pathlib import Path
from pallet import network
from pallet.context import Context
work = Path(sys.argv[1])
for base in (work / "pallet", work / "cycle", work / "cycle-resident"):
    network.cleanup(ctx=Context(root=base / "root", runroot=base / "run"))
PY
  for ns in pbench-nv-resident; do
    [ -e "/run/netns/$ns" ] && /usr/lib/podman/netavark --config "$WORK/aardvark" -f "$WORK/resident.json" \
      teardown "/run/netns/$ns" > /dev/null 2>&1; ip netns del "$ns" 2> /dev/null
  done
  [ -n "${KEEP_WORK:-}" ] || { "${PODMAN[@]}" system reset -f > /dev/null 2>&1; rm -rf "$WORK"; }
}
trap cleanup EXIT

free_subnet() {  # a /24 under 10.$1.0.0/16 no route overlaps
  "$PYTHON" - "$1" <<'PY'
import ipaddress, subprocess, json, sys
routes = [ipaddress.ip_network(r["dst"], strict=False) for r in
          json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True,
                                    text=True).stdout) if r["dst"] not in ("default",) and "/" in r["dst"]]
for n in ipaddress.ip_network(f"10.{sys.argv[1]}.0.0/16").subnets(new_prefix=24):
    if not any(n.overlaps(r) for r in routes):
        print(n); break
PY
}

bench_cycle() {
  echo "== one container's networking: pallet library vs netavark (idle network, then bridge kept up)"
  local sub gw
  sub=$(free_subnet 231); gw=${sub%.0/24}.1
  mkdir -p "$WORK/aardvark"
  cat > "$WORK/netavark.json" <<JSON
{"container_id": "@ID@", "container_name": "@ID@", "port_mappings": [],
 "networks": {"pbench": {"interface_name": "eth0", "static_ips": ["${sub%.0/24}.2"]}},
 "network_info": {"pbench": {"name": "pbench", "id": "$(printf 'b%.0s' {1..64})", "driver": "bridge",
   "network_interface": "pbenchnv0", "subnets": [{"subnet": "$sub", "gateway": "$gw"}],
   "ipv6_enabled": false, "internal": false, "dns_enabled": false,
   "ipam_options": {"driver": "host-local"}}}}
JSON
  sed -e 's/@ID@/resident/g' -e "s/${sub%.0/24}.2/${sub%.0/24}.3/" "$WORK/netavark.json" > "$WORK/resident.json"
  hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/cycle-idle.md" \
    -n "pallet network setup+teardown (idle network)" "$PYTHON bench/network/cycle.py $WORK/cycle" \
    -n "netavark setup+teardown (idle network)" "bench/network/netavark_cycle.sh $WORK"
  "$PYTHON" bench/network/cycle.py "$WORK/cycle-resident" --resident up
  ip netns add pbench-nv-resident
  /usr/lib/podman/netavark --config "$WORK/aardvark" -f "$WORK/resident.json" setup /run/netns/pbench-nv-resident > /dev/null
  hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/cycle-busy.md" \
    -n "pallet network setup+teardown (bridge up)" "$PYTHON bench/network/cycle.py $WORK/cycle-resident" \
    -n "netavark setup+teardown (bridge up)" "bench/network/netavark_cycle.sh $WORK"
  echo "-- in-process timings (pallet library only, idle network):"
  "$PYTHON" bench/network/cycle.py "$WORK/cycle" --timings 5
  cat "$WORK/cycle-idle.md" "$WORK/cycle-busy.md"
}

load_image() {
  if ! "${PODMAN[@]}" image exists pbench-small:latest; then
    "$PYTHON" /work/shared/bench/refimage.py small "$WORK/small" --tag latest > /dev/null 2>&1 \
      || "$PYTHON" "$REPO/../shared/bench/refimage.py" small "$WORK/small" --tag latest > /dev/null
    "${PODMAN[@]}" pull -q "oci:$WORK/small:latest" > /dev/null
    "${PODMAN[@]}" tag "$("${PODMAN[@]}" images -q | head -1)" pbench-small:latest
  fi
}

pallet_image() {  # the same refimage layout into pallet's store, as pbench-small
  if ! "$PALLET" image inspect pbench-small > /dev/null 2>&1; then
    load_image
    "$PALLET" load -q -i "$WORK/small" > /dev/null
    "$PALLET" tag localhost/latest:latest pbench-small > /dev/null
  fi
}

bench_run() {
  echo "== run --rm IMAGE true on the default bridge network"
  load_image
  pallet_image
  "$PALLET" run --rm pbench-small true  # first start after boot: crash cleanup runs once
  hyperfine --warmup 3 --runs "$RUNS" --export-markdown "$WORK/run.md" \
    -n "podman run --rm (bridge)" "${PODMAN[*]} run --rm --network bridge pbench-small:latest true" \
    -n "pallet run --rm (bridge)" "$PALLET run --rm pbench-small true" \
    -n "pallet run --rm --network none" "$PALLET run --rm --network none pbench-small true"
  cat "$WORK/run.md"
}

bench_throughput() {
  echo "== 1 GiB through busybox nc between two containers on one bridge network"
  load_image
  pallet_image
  local bb port=5001 fifo=$WORK/idle.fifo
  bb=$(command -v busybox)
  mkfifo "$fifo"
  # podman: two containers on its default network
  for c in pbench-a pbench-b; do
    "${PODMAN[@]}" run -d --name "$c" --network bridge pbench-small:latest sleep 3600 > /dev/null
  done
  local pa pb ipa
  pa=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' pbench-a)
  pb=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' pbench-b)
  ipa=$("${PODMAN[@]}" inspect -f '{{.NetworkSettings.IPAddress}}' pbench-a)
  # pallet: two containers on its default network
  for c in pbench-a pbench-b; do
    "$PALLET" run -d --name "$c" pbench-small sleep 3600 > /dev/null
  done
  local na nb xa
  na=$("$PALLET" container inspect -f '{{.NetworkSettings.SandboxKey}}' pbench-a)
  nb=$("$PALLET" container inspect -f '{{.NetworkSettings.SandboxKey}}' pbench-b)
  xa=$("$PALLET" container inspect -f '{{.NetworkSettings.IPAddress}}' pbench-a)
  # the same host busybox runs in each container's network namespace: only the path differs
  serve() { echo "nsenter --net=$1 sh -c 'head -c 1073741824 /dev/zero | $bb nc -l -p $port' > /dev/null 2>&1 & sleep 0.3"; }
  hyperfine --runs "$TP_RUNS" --export-markdown "$WORK/throughput.md" \
    --prepare "$(serve "/proc/$pa/ns/net")" \
    -n "podman bridge: 1 GiB busybox nc" "nsenter --net=/proc/$pb/ns/net $bb nc $ipa $port <> $fifo > /dev/null" \
    --prepare "$(serve "$na")" \
    -n "pallet bridge: 1 GiB busybox nc" "nsenter --net=$nb $bb nc $xa $port <> $fifo > /dev/null"
  "$PALLET" rm -f pbench-a pbench-b > /dev/null
  cat "$WORK/throughput.md"
}

case $WHAT in
  cycle) bench_cycle ;;
  run) bench_run ;;
  throughput) bench_throughput ;;
  all) bench_cycle; bench_run; bench_throughput ;;
  *) echo "usage: $0 [cycle|run|throughput|all]" >&2; exit 2 ;;
esac
