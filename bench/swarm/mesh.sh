#!/usr/bin/env bash
# The shaped network alone, without imprint: N nodes on bench/swarm/run.sh's
# bridge (same tc tbf on every link), each sending bulk TCP to every other
# one for BENCH_DUR seconds (one connection per pair, as the swarm's peers
# have). Prints what the nodes received per second, from their interfaces'
# byte counters over a window in which every sender runs (from 3 s after
# the start to 2 s before the end), as a share of the tbf rate: whether
# many flows through the shaped FIFOs can fill the links at all, against
# which the swarm's use of its peers' links is measured (docs/scale.md).
# Both are wire bytes (Ethernet frames), as tbf counts them.
#
#   BENCH_MESH_NODES=16 BENCH_RATE=20 BENCH_DUR=20 bash bench/swarm/mesh.sh
#
# Needs root, ip netns, veth, bridge, tc tbf, python3. Namespaces imm-*
# (BENCH_NS), net 10.195.0.0/24 (BENCH_NET), removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NS=${BENCH_NS:-imm} NET=${BENCH_NET:-10.195.0} RATE=${BENCH_RATE:-20} maxn=${BENCH_MESH_NODES:-16}
DUR=${BENCH_DUR:-20}
[ "$DUR" -ge 8 ] || { echo "bench/swarm/mesh.sh: BENCH_DUR must be at least 8 s" >&2; exit 1; }
source "$ROOT/bench/swarm/lib.sh"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	netdown
}
trap cleanup EXIT
netdown
netup
for i in $(seq 1 "$maxn"); do
	ip netns exec "$NS-$i" python3 "$ROOT/bench/swarm/mesh.py" serve 7777 >/dev/null &
	pids+=($!)
done
sleep 1
senders=()
for i in $(seq 1 "$maxn"); do
	hosts=()
	for j in $(seq 1 "$maxn"); do [ "$j" = "$i" ] || hosts+=("$(addr "$j")"); done
	ip netns exec "$NS-$i" python3 "$ROOT/bench/swarm/mesh.py" send "$DUR" "${hosts[@]}" &
	senders+=($!)
	pids+=($!)
done
rx() { # the bytes every node's interface has received
	local i n=0
	for i in $(seq 1 "$maxn"); do n=$((n + $(ip netns exec "$NS-$i" cat /sys/class/net/eth0/statistics/rx_bytes))); done
	echo "$n"
}
sleep 3
r0=$(rx) t0=$(date +%s.%N)
sleep $((DUR - 5))
r1=$(rx) t1=$(date +%s.%N)
for p in "${senders[@]}"; do
	wait "$p" || { echo "bench/swarm/mesh.sh: a sender failed (see above)" >&2; exit 1; }
done
awk -v b=$((r1 - r0)) -v a="$t0" -v z="$t1" -v n="$maxn" -v r="$RATE" 'BEGIN {
	s = b / n / (z - a) / 1e6
	printf "%d nodes, each sending to the %d others: %.2f MB/s received per node over %.1f s, %.0f %% of a %d Mbit/s tbf (%.2f MB/s, wire bytes)\n",
		n, n - 1, s, z - a, 100 * s / (r / 8), r, r / 8 }'
