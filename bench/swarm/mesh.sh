#!/usr/bin/env bash
# The shaped network alone, without imprint: N nodes on bench/swarm/run.sh's
# bridge (same tc tbf on every link), each sending bulk TCP to every other
# one for BENCH_DUR seconds (one connection per pair, as the swarm's peers
# have). Prints what each node received as a share of its link: whether many
# flows through the shaped FIFOs can fill the links at all, against which the
# swarm's use of its peers' links is measured (docs/scale.md).
#
#   BENCH_NODES=16 BENCH_RATE=20 BENCH_DUR=20 bash bench/swarm/mesh.sh
#
# Needs root, ip netns, veth, bridge, tc tbf, python3. Namespaces imm-*
# (BENCH_NS), net 10.195.0.0/24 (BENCH_NET), removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NS=${BENCH_NS:-imm} NET=${BENCH_NET:-10.195.0} RATE=${BENCH_RATE:-20} maxn=${BENCH_NODES:-16}
DUR=${BENCH_DUR:-20}
W=$(mktemp -d)
source "$ROOT/bench/swarm/lib.sh"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	netdown
	rm -rf "$W"
}
trap cleanup EXIT
netdown
netup
for i in $(seq 1 "$maxn"); do
	ip netns exec "$NS-$i" python3 "$ROOT/bench/swarm/mesh.py" serve 7777 >"$W/rx-$i" &
	pids+=($!)
done
sleep 1
senders=()
for i in $(seq 1 "$maxn"); do
	hosts=()
	for j in $(seq 1 "$maxn"); do [ "$j" = "$i" ] || hosts+=("$(addr "$j")"); done
	ip netns exec "$NS-$i" python3 "$ROOT/bench/swarm/mesh.py" send "$DUR" "${hosts[@]}" &
	senders+=($!)
done
wait "${senders[@]}"
# Stopped as the senders stop: what was still queued does not count.
for p in "${pids[@]}"; do kill "$p"; done
wait "${pids[@]}" 2>/dev/null || true
pids=()
tot=0
for i in $(seq 1 "$maxn"); do tot=$((tot + $(cat "$W/rx-$i"))); done
awk -v t="$tot" -v n="$maxn" -v d="$DUR" -v r="$RATE" 'BEGIN {
	printf "%d nodes, each sending to the %d others for %d s: %.2f MB/s received per node, %.0f %% of a %d Mbit/s link (%.2f MB/s)\n",
		n, n - 1, d, t / n / d / 1e6, 100 * t / n / d / 1e6 / (r / 8), r, r / 8 }'
