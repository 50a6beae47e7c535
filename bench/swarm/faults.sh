#!/usr/bin/env bash
# Swarm faults on shaped links (the harness of bench/swarm/run.sh: every
# node and the server in its own network namespace on one bridge, every
# link tc tbf BENCH_RATE each way; nodes `imprint deploy --swarm --serve
# ... --swarm-listen`). Scenarios, each a PASS/FAIL line with numbers:
#   baseline  N nodes deploy together, no fault: the reference time
#   corrupt   node 1 deploys alone and seeds; then bytes inside every
#             BENCH_CORRUPT_EVERY-th chunk of its data partition are
#             overwritten on its disk file (no hook in the binary) while it
#             serves; nodes 2..N deploy: each must finish with a disk that
#             verifies and is identical to the others', and node 1 must be
#             banned (the deploy's swarm warning names the banned peers)
#   vanish    N nodes deploy together; once the others have BENCH_AT % of
#             the image, node 1 is killed (SIGKILL): the others finish identical
#   restart   N nodes deploy together; at BENCH_AT % `imprint serve` is
#             killed (SIGKILL) and started again on the same address after
#             BENCH_GAP s: every node finishes identical; cost vs baseline
#
#   BENCH_MIB=32  BENCH_RATE=20  BENCH_N=5  BENCH_AT=30  BENCH_GAP=5
#   BENCH_CORRUPT_EVERY=2  BENCH_TIMEOUT=300 (s, per scenario)
#   BENCH_SCENARIOS="baseline corrupt vanish restart"
#   BENCH_NS=imf  BENCH_NET=10.196.0  (namespace prefix, their /24)
# Results in bench/swarm/out/faults/results.txt, each node's percent every
# second in timeline-SCENARIO.txt, a failed scenario's logs in fail-SCENARIO/.
#
# Needs root, iproute2 (netns, veth, bridge, tc tbf), sfdisk, jq, curl.
# Everything runs in namespaces it creates and removes on exit. Not CI.
# Exit status: 0 when every scenario passed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=${IMPRINT:-$ROOT/bin/imprint}
MIB=${BENCH_MIB:-32}
RATE=${BENCH_RATE:-20}
N=${BENCH_N:-5}
AT=${BENCH_AT:-30}
GAP=${BENCH_GAP:-5}
EVERY=${BENCH_CORRUPT_EVERY:-2}
TIMEOUT=${BENCH_TIMEOUT:-300}
SCENARIOS=${BENCH_SCENARIOS:-"baseline corrupt vanish restart"}
NS=${BENCH_NS:-imf}
NET=${BENCH_NET:-10.196.0}
SRV=$NET.1
PORT=8080
log() { printf '[swarm-faults %s] %s\n' "$(date +%T)" "$*" >&2; }
[ "$N" -ge 3 ] && [ "$N" -le 50 ] || { log "BENCH_N: 3..50 nodes"; exit 1; }
for s in $SCENARIOS; do
	case $s in baseline | corrupt | vanish | restart) ;; *) log "BENCH_SCENARIOS: $s: want baseline, corrupt, vanish or restart"; exit 1 ;; esac
done
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-bench-faults.XXXXXX)}
OUT=$ROOT/bench/swarm/out/faults
mkdir -p "$WORK" "$OUT"
[ -x "$IMPRINT" ] || (cd "$ROOT" && make build)
maxn=$N
source "$ROOT/bench/swarm/lib.sh"

declare -A PID=()
SERVER=
stop_nodes() {
	local i
	for i in "${!PID[@]}"; do kill "${PID[$i]}" 2>/dev/null || true; done
	for i in "${!PID[@]}"; do wait "${PID[$i]}" 2>/dev/null || true; done
	PID=()
}
stop_server() { # stop_server [SIGNAL]
	if [ -n "$SERVER" ]; then
		kill "-${1:-TERM}" "$SERVER" 2>/dev/null || true
		wait "$SERVER" 2>/dev/null || true
	fi
	SERVER=
}
cleanup() {
	timeline_stop
	stop_nodes
	# The server too: left running it would hold the caller's flock.
	stop_server
	netdown
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

netdown
netup
log "network: server + $N nodes on a bridge, every link ${RATE} Mbit/s each way (tc tbf)"

log "image: a ${MIB} MiB partition of random data"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$WORK/part.img"
printf 'esp esp 48M esp\ndata linux-generic auto image\n' >"$WORK/layout"
"$IMPRINT" build --store "$WORK/store" --name bench --version v1 --partition data="$WORK/part.img" --layout "$WORK/layout" >/dev/null
rm -f "$WORK/part.img"
SIZE=$((MIB + 60))M
CHUNK=$(jq -r '.chunk_size' "$WORK/store/images/bench/v1/manifest.json")

start_server() {
	ip netns exec $NS-0 "$IMPRINT" serve --store "$WORK/store" --image bench --http "$SRV:$PORT" --public-url "http://$SRV:$PORT/" >>"$WORK/serve.log" 2>&1 &
	SERVER=$!
	local _
	for _ in $(seq 100); do
		ip netns exec $NS-1 curl -sf "http://$SRV:$PORT/index.json" >/dev/null && return 0
		sleep 0.1
	done
	log "imprint serve did not start"
	cat "$WORK/serve.log" >&2
	return 1
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

deploy_node() { # deploy_node I: deploy --swarm --serve in the background
	local i=$1
	rm -f "$WORK/d-$i.img"
	ip netns exec "$NS-$i" "$IMPRINT" deploy --json --from "http://$SRV:$PORT/" --swarm \
		--serve "$(addr "$i"):$PORT" --swarm-listen "$(addr "$i"):6881" --image bench:v1 \
		--disk "$WORK/d-$i.img" --size "$SIZE" --yes --no-bootloader >"$WORK/d-$i.out" 2>"$WORK/d-$i.err" &
	PID[$i]=$!
}

# percent I: how much of the image node I has from the swarm (its last
# swarm progress event), 0..100.
percent() {
	grep -h '"event":"progress","phase":"swarm"' "$WORK/d-$1.out" 2>/dev/null | tail -1 |
		jq -r 'if (.total // 0) > 0 then (100 * (.done // 0) / .total | floor) else 0 end' 2>/dev/null || echo 0
}
minpercent() { # minpercent I...: the least of their percents
	local i p m=100
	for i in "$@"; do
		p=$(percent "$i")
		p=${p:-0}
		[ "$p" -lt "$m" ] && m=$p
	done
	echo "$m"
}
# wait_until_percent P I...: until every node given has P % (or timeout).
wait_until_percent() {
	local p=$1 t0
	shift
	t0=$(now)
	while [ "$(minpercent "$@")" -lt "$p" ]; do
		done_all "$@" && return 0
		awk -v a="$t0" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }' && return 1
		sleep 0.1
	done
}
# timeline NAME I...: every second, each node's percent, in
# OUT/timeline-NAME.txt (seconds since the start, then one column a node),
# until stopped (TIMELINE is its pid).
timeline() {
	local name=$1 t0 i line
	shift
	t0=$(now)
	while sleep 1; do
		line=$(since "$t0")
		for i in "$@"; do line="$line $(percent "$i")"; done
		echo "$line"
	done >"$OUT/timeline-$name.txt"
}
TIMELINE=
timeline_start() { timeline "$@" & TIMELINE=$!; }
timeline_stop() { [ -n "$TIMELINE" ] && kill "$TIMELINE" 2>/dev/null; wait "$TIMELINE" 2>/dev/null || true; TIMELINE=; }
done_all() { # done_all I...: every one says "still serving"
	local i
	for i in "$@"; do grep -q "still serving" "$WORK/d-$i.err" 2>/dev/null || return 1; done
}
# wait_done I...: until every node given is done; 1 when one exited or
# the timeout passed.
wait_done() {
	local t0 i
	t0=$(now)
	until done_all "$@"; do
		for i in "$@"; do
			grep -q "still serving" "$WORK/d-$i.err" 2>/dev/null && continue
			kill -0 "${PID[$i]}" 2>/dev/null || { WHY="node $i exited: $(grep -v '^{' "$WORK/d-$i.err" | tail -1)"; return 1; }
		done
		awk -v a="$t0" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }' && { WHY="timeout after ${TIMEOUT}s"; return 1; }
		sleep 0.1
	done
}

# datasum I: SHA-256 of node I's data partition.
datasum() {
	local start size
	read -r start size < <(sfdisk -J "$WORK/d-$1.img" | jq -r '.partitiontable.partitions[] | select(.name == "data") | "\(.start) \(.size)"')
	dd if="$WORK/d-$1.img" bs=512 skip="$start" count="$size" status=none | sha256sum | cut -d' ' -f1
}
# check I...: every disk verifies and their data partitions are identical.
check() {
	local i s first=
	for i in "$@"; do
		"$IMPRINT" verify --disk "$WORK/d-$i.img" >"$WORK/v-$i.log" 2>&1 || { WHY="node $i: imprint verify failed: $(tail -1 "$WORK/v-$i.log")"; return 1; }
		s=$(datasum "$i")
		[ -z "$first" ] && first=$s
		[ "$s" = "$first" ] || { WHY="node $i's data partition differs"; return 1; }
	done
}
# swarmed I...: MiB the nodes took from the swarm (peers and server's
# seeding peer / web seed) and from --from (HTTP) fallback, summed.
swarmed() {
	local i
	for i in "$@"; do cat "$WORK/d-$i.out"; done | grep -h '"event":"result"' |
		jq -s -r '"\((map(.result.bytes_from_swarm) | add) / 1048576 | floor) MiB from the swarm, \((map(.result.bytes_from_source // [] | add // 0) | add) / 1048576 | floor) MiB by --from"'
}
range() { seq "$1" "$2" | tr '\n' ' '; }
# webseeds: the server's web seed requests (HTTP range reads of the image)
# so far in this scenario.
webseeds() { grep -c 'GET /swarm/data/' "$WORK/serve.log" || true; }

RES=$WORK/results.txt
: >"$RES"
T0=
result() { # result NAME PASS|FAIL TEXT
	log "$1: $2 $3"
	printf '%-9s %s  %s\n' "$1" "$2" "$3" >>"$RES"
	if [ "$2" = FAIL ]; then
		rm -rf "$OUT/fail-$1"
		mkdir -p "$OUT/fail-$1"
		cp "$WORK"/d-*.err "$WORK"/d-*.out "$WORK"/serve.log "$OUT/fail-$1/" 2>/dev/null || true
	fi
}
fresh() { # a new server and no disks: each scenario starts alike
	timeline_stop
	stop_nodes
	stop_server
	rm -f "$WORK"/d-* "$WORK"/v-*
	: >"$WORK/serve.log"
	sync
	start_server
}

baseline() {
	fresh
	local t0 i
	t0=$(now)
	for i in $(range 1 "$N"); do deploy_node "$i"; done
	timeline_start baseline $(range 1 "$N")
	WHY=
	if wait_done $(range 1 "$N") && check $(range 1 "$N"); then
		T0=$(since "$t0")
		result baseline PASS "$N nodes in ${T0} s; $(webseeds) web seed requests; $(swarmed $(range 1 "$N"))"
	else
		result baseline FAIL "$WHY"
	fi
}

corrupt() {
	fresh
	local t0 t1 start off k chunks bad=0 banned=0 fails=0 wrong=0 i
	t0=$(now)
	deploy_node 1
	WHY=
	wait_done 1 || { result corrupt FAIL "the seed (node 1): $WHY"; return; }
	t1=$(since "$t0")
	# Overwrite 64 bytes inside every EVERY-th chunk of node 1's data
	# partition, under the running seed (its pieces are read from the disk
	# file each time they are sent).
	start=$(sfdisk -J "$WORK/d-1.img" | jq -r '.partitiontable.partitions[] | select(.name == "data") | .start')
	chunks=$(((MIB * 1048576 + CHUNK - 1) / CHUNK))
	for ((k = 0; k < chunks; k += EVERY)); do
		off=$((start * 512 + k * CHUNK + (k * 7919 % (CHUNK - 64))))
		head -c 64 /dev/urandom | dd of="$WORK/d-1.img" bs=64 seek="$off" oflag=seek_bytes conv=notrunc status=none
		bad=$((bad + 1))
	done
	sync
	"$IMPRINT" verify --disk "$WORK/d-1.img" >/dev/null 2>&1 && { result corrupt FAIL "node 1's disk still verifies after the overwrite"; return; }
	log "corrupt: node 1 seeds after ${t1} s; $bad of $chunks chunks overwritten on its disk; nodes 2..$N deploy"
	t0=$(now)
	for i in $(range 2 "$N"); do deploy_node "$i"; done
	timeline_start corrupt $(range 2 "$N")
	if ! wait_done $(range 2 "$N") || ! check $(range 2 "$N"); then
		result corrupt FAIL "$WHY"
		return
	fi
	t1=$(since "$t0")
	# Who banned whom: the deploy's warning "swarm: K pieces did not check
	# ...; banned: [IP ...]".
	for i in $(range 2 "$N"); do
		local w
		w=$(jq -r 'select(.event == "warning") | .message' "$WORK/d-$i.out" | grep 'did not check' || true)
		[ -z "$w" ] && continue
		fails=$((fails + $(sed -E 's/^swarm: ([0-9]+) pieces.*/\1/' <<<"$w")))
		grep -q "$(addr 1)[] ]" <<<"$w" && banned=$((banned + 1))
		local j
		for j in 0 $(range 2 "$N"); do grep -q "$(addr "$j")[] ]" <<<"$w" && wrong=$((wrong + 1)); done
	done
	local txt="$((N - 1)) good nodes in ${t1} s (baseline ${T0:-?} s), identical; $bad/$chunks chunks bad on node 1; $fails failed pieces; node 1 banned by $banned of $((N - 1)); honest peers (nodes, server) banned: $wrong; $(swarmed $(range 2 "$N"))"
	if [ "$banned" -ge 1 ] && [ "$wrong" -eq 0 ]; then
		result corrupt PASS "$txt"
	else
		result corrupt FAIL "$txt"
	fi
}

vanish() {
	fresh
	local t0 tk i
	t0=$(now)
	for i in $(range 1 "$N"); do deploy_node "$i"; done
	timeline_start vanish $(range 1 "$N")
	WHY=
	wait_until_percent "$AT" $(range 2 "$N") || { result vanish FAIL "the nodes did not reach ${AT} %"; return; }
	local p1
	p1=$(percent 1)
	done_all 1 && { result vanish FAIL "node 1 was done before the others reached ${AT} %: nothing to vanish from"; return; }
	tk=$(since "$t0")
	kill -KILL "${PID[1]}"
	wait "${PID[1]}" 2>/dev/null || true
	unset 'PID[1]'
	log "vanish: node 1 killed at ${tk} s (it had ${p1} %, the others >= ${AT} %)"
	if wait_done $(range 2 "$N") && check $(range 2 "$N"); then
		result vanish PASS "$((N - 1)) nodes in $(since "$t0") s (baseline ${T0:-?} s), identical; node 1 (${p1} %) killed at ${tk} s; $(swarmed $(range 2 "$N"))"
	else
		result vanish FAIL "$WHY"
	fi
}

restart() {
	fresh
	local t0 tk tb i
	t0=$(now)
	for i in $(range 1 "$N"); do deploy_node "$i"; done
	timeline_start restart $(range 1 "$N")
	WHY=
	wait_until_percent "$AT" $(range 1 "$N") || { result restart FAIL "the nodes did not reach ${AT} %"; return; }
	done_all $(range 1 "$N") && { result restart FAIL "done before the server could be killed"; return; }
	tk=$(since "$t0")
	local w0
	w0=$(webseeds)
	stop_server KILL
	log "restart: server killed at ${tk} s (every node >= ${AT} %); back in ${GAP} s"
	sleep "$GAP"
	start_server || { result restart FAIL "the server did not come back"; return; }
	tb=$(since "$t0")
	if wait_done $(range 1 "$N") && check $(range 1 "$N"); then
		local t
		t=$(since "$t0")
		result restart PASS "$N nodes in ${t} s (baseline ${T0:-?} s: +$(awk -v a="$t" -v b="${T0:-0}" 'BEGIN { printf "%.1f", a - b }') s for a ${GAP} s outage); killed at ${tk} s, back at ${tb} s; web seed requests: ${w0} before the kill, $(($(webseeds) - w0)) after; $(swarmed $(range 1 "$N"))"
	else
		result restart FAIL "$WHY"
	fi
}

rm -f "$OUT"/timeline-*.txt
for s in $SCENARIOS; do
	log "$s: $N nodes, ${MIB} MiB, ${RATE} Mbit/s links"
	$s
done
timeline_stop
stop_nodes
stop_server
{
	echo "## Swarm faults: ${MIB} MiB image, $N nodes, ${RATE} Mbit/s each way per link, $(date -u +%Y-%m-%d), load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	cat "$RES"
} | tee "$OUT/results.txt"
! grep -q ' FAIL ' "$RES"
