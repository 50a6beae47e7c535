#!/usr/bin/env bash
# Swarm benchmark on shaped links: N nodes image themselves from one
# `imprint serve`, each node (and the server) in its own network namespace
# on one bridge, every link shaped with tc tbf to BENCH_RATE each way, so the
# links are the limit, not this machine's cores. Three ways, for each N:
#   server  every node deploys from the server alone
#   tree    cut-through tree: each node `deploy --serve`s, its children
#           (BENCH_FANOUT of them) deploy --from it; the first ones from the server
#   swarm   every node `deploy --swarm --serve` (BitTorrent: peers and the
#           server's web seed; --from the server for what the swarm does not give)
# Reports the wall time until every node is done, as a multiple of one node
# alone (server, N=1), the machine's CPU use during each run (so one can
# check the links, not the CPUs, were the limit), and verifies every disk.
#
#   BENCH_MIB=64          image size (random data: nothing compresses away)
#   BENCH_RATE=20         Mbit/s each way, every link (server's too)
#   BENCH_CHUNK=256K      chunk size (imprint build --chunk-size);
#                         default: imprint build's own
#   BENCH_PIECE=64K       the swarm's piece length (imprint build
#                         --piece-size; 0: pieces are chunks); default:
#                         imprint build's own (64K below larger chunks)
#   BENCH_NODES="1 4 8 16"
#   BENCH_MODES="server tree swarm"
#   BENCH_PLAN="server:1 swarm:4 ..."  runs in this order instead of every
#                         mode for every N (the reference, server:1, must be in it)
#   BENCH_FANOUT=2        children per node in the tree
#   BENCH_DIR=/some/dir   work files (default: a new dir under /var/tmp)
#   BENCH_SERVE_ARGS="--swarm-peers 4"  more imprint serve flags
#   BENCH_SWARM_ARGS="--swarm-peers 8"  more flags for the swarm's deploys
#   BENCH_GSO_SEGS=1      at most this many segments per GSO packet on the
#                         veths (default: the kernel's, up to 64 KiB packets,
#                         which tbf splits and its FIFO drops whole)
#   BENCH_CPUPROFILE=/dir a CPU profile of every deploy: /dir/MODE-N-I.pprof
#   BENCH_NS=imb          namespace name prefix; BENCH_NET=10.199.0 their /24
#                         (another prefix and net let two runs coexist)
#
# Needs root, ip (iproute2) with netns, veth, bridge and tc tbf. Everything
# runs in namespaces it creates (named imb-*) and removes on exit; no packet
# leaves them. Not part of CI: at 20 Mbit/s the default series takes ~30 min (most of it server only at N = 16).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=${IMPRINT:-$ROOT/bin/imprint}
MIB=${BENCH_MIB:-64}
CHUNK=${BENCH_CHUNK:-}
PIECE=${BENCH_PIECE:-}
RATE=${BENCH_RATE:-20}
NODES=${BENCH_NODES:-"1 4 8 16"}
MODES=${BENCH_MODES:-"server tree swarm"}
FANOUT=${BENCH_FANOUT:-2}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-bench-swarm.XXXXXX)}
OUT=$ROOT/bench/swarm/out
NS=${BENCH_NS:-imb}
NET=${BENCH_NET:-10.199.0}
SRV=$NET.1
PORT=8080
mkdir -p "$WORK" "$OUT"
if [ -n "${BENCH_CPUPROFILE:-}" ]; then mkdir -p "$BENCH_CPUPROFILE"; fi
log() { printf '[bench-swarm %s] %s\n' "$(date +%T)" "$*" >&2; }
[ -x "$IMPRINT" ] || (cd "$ROOT" && make build)

maxn=0
for n in $NODES ${BENCH_PLAN:-}; do
	n=${n#*:}
	[ "$n" -gt "$maxn" ] && maxn=$n
done
[ "$maxn" -le 200 ] || { log "BENCH_NODES: at most 200 nodes"; exit 1; }

pids=()
killall_pids() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
cleanup() {
	killall_pids
	# The server too: left running it would hold the caller's flock on
	# the bench lock (an inherited fd) and keep every later run waiting.
	if [ -n "${SERVER:-}" ]; then
		kill "$SERVER" 2>/dev/null || true
		wait "$SERVER" 2>/dev/null || true
	fi
	[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
	netdown
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

source "$ROOT/bench/swarm/lib.sh"
netdown
netup
log "network: server + $maxn nodes on a bridge, every link ${RATE} Mbit/s each way (tc tbf)"

# --- the image ---
log "image: a ${MIB} MiB partition of random data${CHUNK:+, ${CHUNK} chunks}${PIECE:+, ${PIECE} swarm pieces}"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$WORK/part.img"
printf 'esp esp 48M esp\ndata linux-generic auto image\n' >"$WORK/layout"
"$IMPRINT" build --store "$WORK/store" --name bench --version v1 --partition data="$WORK/part.img" --layout "$WORK/layout" ${CHUNK:+--chunk-size "$CHUNK"} ${PIECE:+--piece-size "$PIECE"} >/dev/null
rm -f "$WORK/part.img"
SIZE=$((MIB + 60))M

ip netns exec $NS-0 "$IMPRINT" serve --store "$WORK/store" --image bench --http "$SRV:$PORT" --public-url "http://$SRV:$PORT/" ${BENCH_SERVE_ARGS:-} >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do ip netns exec $NS-1 curl -sf "http://$SRV:$PORT/index.json" >/dev/null && break; sleep 0.1; done
ip netns exec $NS-1 curl -sf "http://$SRV:$PORT/index.json" >/dev/null || { log "imprint serve did not start"; cat "$WORK/serve.log" >&2; exit 1; }

# The link's real rate, for the record: 16 MiB through one shaped link.
t0=$(date +%s.%N)
ip netns exec $NS-1 curl -sf -o /dev/null "http://$SRV:$PORT/swarm/data/bench/v1" -r 0-16777215 || true
LINK=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", 16 * 1.048576 / (b - a) }')
log "one link carries $LINK MB/s (${RATE} Mbit/s is $(awk -v r="$RATE" 'BEGIN { printf "%.2f", r / 8 }') MB/s)"

# --- CPU: busy share of the whole machine, sampled each second ---
cpusample() {
	local a b
	read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
	while sleep 1; do
		read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
		a=$((a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8))
		b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8))
		awk -v t=$((b - a)) -v i=$(((b4 + b5) - (a4 + a5))) 'BEGIN { if (t > 0) printf "%.0f\n", 100 * (t - i) / t }'
		a1=$b1 a2=$b2 a3=$b3 a4=$b4 a5=$b5 a6=$b6 a7=$b7 a8=$b8
	done
}

now() { date +%s.%N; }
# failed MODE N WHY: keeps the nodes' logs in OUT, prints a result line that
# says so, and the series goes on.
failed() {
	log "$1 N=$2: $3; logs in $OUT/fail-$1-$2"
	killall_pids
	[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
	SAMPLER=
	rm -rf "$OUT/fail-$1-$2"
	mkdir -p "$OUT/fail-$1-$2"
	cp "$WORK"/d-*.err "$WORK"/d-*.out "$WORK"/serve.log "$OUT/fail-$1-$2/" 2>/dev/null || true
	grep -h -i -E 'error|fail|timeout' "$WORK"/d-*.err | sort | uniq -c | sort -rn | head -3 >&2 || true
	echo "0 0 0 0 0 FAILED"
}
# Bytes the server's link has sent (its uplink: what every node took from
# it, peer protocol, web seed and --from alike; the interface's counter,
# so headers partly included).
srvtx() { ip netns exec "$NS-0" cat /sys/class/net/eth0/statistics/tx_bytes; }
# CPU ticks of this bench's own processes: the reaped children (deploys) of
# this shell and the server, so other users of the machine do not count.
HZ=$(getconf CLK_TCK)
ticks() { echo $(($(awk '{ print $16 + $17 }' /proc/$$/stat) + $(awk '{ print $14 + $15 }' /proc/$SERVER/stat))); }
# run MODE N: deploys N nodes; prints "seconds cpu_mean cpu_max load1 own_cpu
# server_sent_images"
run() {
	local mode=$1 n=$2 i p
	rm -f "$WORK"/d-*.img "$WORK"/d-*.out "$WORK"/d-*.err
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
	cpusample >"$WORK/cpu" &
	SAMPLER=$!
	local t0 c0 tx0 serving=()
	tx0=$(srvtx)
	c0=$(ticks)
	t0=$(now)
	for i in $(seq 1 "$n"); do
		local from=$SRV extra=()
		case $mode in
		server) ;;
		tree)
			p=$(((i - 1) / FANOUT))
			from=$(addr "$p")
			extra=(--serve "$(addr "$i"):$PORT")
			if [ "$p" -ne 0 ]; then # the parent must listen before its child asks
				for _ in $(seq 100); do ip netns exec "$NS-$i" curl -s -o /dev/null "http://$from:$PORT/index.json" && break; sleep 0.05; done
			fi
			;;
		swarm) extra=(--swarm --serve "$(addr "$i"):$PORT" --swarm-listen "$(addr "$i"):6881" ${BENCH_SWARM_ARGS:-}) ;;
		esac
		ip netns exec "$NS-$i" env ${BENCH_CPUPROFILE:+IMPRINT_CPUPROFILE=$BENCH_CPUPROFILE/$mode-$n-$i.pprof} "$IMPRINT" deploy --from "http://$from:$PORT/" "${extra[@]}" --image bench:v1 \
			--disk "$WORK/d-$i.img" --size "$SIZE" --yes --no-bootloader >"$WORK/d-$i.out" 2>"$WORK/d-$i.err" &
		pids+=($!)
		serving+=($!)
	done
	# Done: a plain deploy exits; a serving one says "still serving".
	local left=$n
	while [ "$left" -gt 0 ]; do
		left=0
		for i in $(seq 1 "$n"); do
			local pid=${serving[$((i - 1))]}
			if [ "$mode" = server ]; then
				kill -0 "$pid" 2>/dev/null && left=$((left + 1))
			elif ! grep -q "still serving" "$WORK/d-$i.err"; then
				kill -0 "$pid" 2>/dev/null || { failed "$mode" "$n" "node $i exited"; return 0; }
				left=$((left + 1))
			fi
		done
		[ "$left" -gt 0 ] && sleep 0.1
	done
	local t1 load sent
	t1=$(now)
	sent=$(($(srvtx) - tx0))
	load=$(cut -d' ' -f1 /proc/loadavg)
	kill "$SAMPLER" 2>/dev/null
	wait "$SAMPLER" 2>/dev/null || true
	SAMPLER=
	if [ "$mode" = server ]; then
		local bad=0
		for p in "${pids[@]}"; do wait "$p" || bad=1; done
		pids=()
		[ $bad = 0 ] || { failed "$mode" "$n" "a deploy failed"; return 0; }
	else
		killall_pids
	fi
	local own
	own=$(awk -v c=$(($(ticks) - c0)) -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 100 * c / hz / (b - a) / 2 }')
	for i in $(seq 1 "$n"); do
		"$IMPRINT" verify --disk "$WORK/d-$i.img" >/dev/null || { failed "$mode" "$n" "node $i's disk is not identical"; return 0; }
	done
	# Where the bytes came from (swarm: peers vs web seed vs --from), for the record.
	if [ "$mode" = swarm ]; then
		grep -h -i -E 'swarm|peer' "$WORK"/d-*.out "$WORK"/d-*.err 2>/dev/null | sort | uniq -c | sort -rn | head -5 >"$WORK/swarm-$n.txt" || true
		cp "$WORK/swarm-$n.txt" "$OUT/swarm-$n.txt" 2>/dev/null || true
		cp "$WORK/d-1.err" "$OUT/swarm-$n-node1.err" 2>/dev/null || true
	fi
	awk -v a="$t0" -v b="$t1" -v l="$load" -v o="$own" -v x="$sent" -v img=$((MIB << 20)) '
		{ s += $1; if ($1 > m) m = $1; k++ }
		END { printf "%.1f %.0f %.0f %s %s %.2f\n", b - a, k ? s / k : 0, m, l, o, x / img }' "$WORK/cpu"
}

RES=$WORK/results.tsv
: >"$RES"
PLAN=${BENCH_PLAN:-}
if [ -z "$PLAN" ]; then
	for mode in $MODES; do for n in $NODES; do PLAN="$PLAN $mode:$n"; done; done
fi
for step in $PLAN; do
	mode=${step%%:*} n=${step#*:}
	case $mode in server | tree | swarm) ;; *) log "BENCH_PLAN: $step: mode must be server, tree or swarm"; exit 1 ;; esac
	[ "$n" -ge 1 ] && [ "$n" -le "$maxn" ] || { log "BENCH_PLAN: $step: N must be 1..$maxn"; exit 1; }
	log "$mode: $n node(s)"
	run "$mode" "$n" >"$WORK/r"
	r=$(cat "$WORK/r")
	log "$mode N=$n: $r (seconds, machine CPU% mean, max, load, this bench's CPU%, server sent in images)"
	echo "$mode $n $r" >>"$RES"
	cp "$RES" "$OUT/results.tsv"
done

T1=$(awk '$1 == "server" && $2 == 1 { print $3 }' "$RES")
{
	echo "## Shaped links: ${MIB} MiB image${CHUNK:+ (${CHUNK} chunks)}${PIECE:+ (${PIECE} swarm pieces)}, ${RATE} Mbit/s each way per link, $(date -u +%Y-%m-%d)"
	echo
	echo "One link measured at $LINK MB/s. One node alone (server, N=1): ${T1:-?} s. CPU, as a share of"
	echo "the machine's 2 cores: *bench* is this bench's own processes (server and deploys) over the run;"
	echo "*machine* is every process on it (other users too), mean and peak of 1 s samples; load: 1-min"
	echo "average at the end of the run; server sent: the bytes out of the server's link over the run"
	echo "(every protocol, headers partly included) as a multiple of the image's size."
	echo
	echo "| mode | N | wall time | x one node | bench CPU | machine CPU mean / peak | load | server sent |"
	echo "|---|---|---|---|---|---|---|---|"
	awk -v t1="$T1" '$8 == "FAILED" { printf "| %s | %d | failed (logs in bench/swarm/out/fail-%s-%d) | | | | | |\n", $1, $2, $1, $2; next }
		{ printf "| %s | %d | %.1f s | %s | %d%% | %d%% / %d%% | %s | %.2f images |\n", $1, $2, $3, t1 ? sprintf("%.2fx", $3 / t1) : "?", $7, $4, $5, $6, $8 }' "$RES"
	echo
	echo "Tree fan-out: $FANOUT (node i's parent: node (i-1)/$FANOUT, 0 = the server). All disks verified identical (imprint verify)."
} | tee "$OUT/results.md"
