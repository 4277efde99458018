#!/usr/bin/env bash
# The anchor of cycle.py: podman's network stack (netavark 1.4, iptables driver) doing the same
# work for one container: a netns, `netavark setup` on a bridge network, `netavark teardown`,
# netns removal. Usage: netavark_cycle.sh WORKDIR (holds config.json from bench.sh).
set -euo pipefail
work=$1
ns="pbench-nv-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
sed "s/@ID@/$ns/" "$work/netavark.json" > "$work/$ns.json"
/usr/lib/podman/netavark --config "$work/aardvark" -f "$work/$ns.json" setup "/run/netns/$ns" > /dev/null
/usr/lib/podman/netavark --config "$work/aardvark" -f "$work/$ns.json" teardown "/run/netns/$ns"
rm -f "$work/$ns.json"
