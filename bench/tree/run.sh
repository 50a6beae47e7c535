#!/usr/bin/env bash
# Tree benchmark: 8 clients imaged by one server, against the same 8 imaged
# as a three-level tree (master -> 2 nodes -> 6 nodes): store-and-forward
# (each deployed node serves with `imprint serve --disk`) and cut-through
# (`imprint deploy --serve`: a node serves chunks while it deploys). All on 127.0.0.1, all deploys with
# read-back verification on. Then the scale simulation (bench/tree/sim),
# calibrated with this run's measured client and server rates.
#   BENCH_MIB=256  BENCH_DIR=/some/dir
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=$ROOT/bin/imprint
MIB=${BENCH_MIB:-256}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-bench-tree.XXXXXX)}
OUT=$ROOT/bench/tree/out
mkdir -p "$WORK" "$OUT"
log() { printf '[bench-tree %s] %s\n' "$(date +%T)" "$*" >&2; }
[ -x "$IMPRINT" ] || (cd "$ROOT" && make build)
(cd "$ROOT" && go build -o "$WORK/fetch" ./bench/tree/fetch && go build -o "$WORK/sim" ./bench/tree/sim)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

log "data: a ${MIB} MiB partition, half random, half text"
head -c $((MIB / 2 * 1024 * 1024)) /dev/urandom >"$WORK/part.img"
head -c $((MIB / 2 * 1024 * 1024)) < <(yes "imprint benchmark line of fairly compressible text") >>"$WORK/part.img"
printf 'esp esp 48M esp\ndata linux-generic auto image\n' >"$WORK/layout"
"$IMPRINT" build --store "$WORK/store" --name bench --version v1 --partition data="$WORK/part.img" --layout "$WORK/layout" >/dev/null
SIZE=$((MIB + 60))M

port=18200
URL=
serve() { # serve ARGS...: start imprint serve on the next port; sets URL
	port=$((port + 1))
	"$IMPRINT" serve "$@" --http 127.0.0.1:$port --public-url http://127.0.0.1:$port/ >>"$WORK/serve.log" 2>&1 &
	pids+=($!)
	URL="http://127.0.0.1:$port/"
	for _ in $(seq 100); do curl -sf "${URL}index.json" >/dev/null && return 0; sleep 0.1; done
	log "imprint serve $* did not start"
	cat "$WORK/serve.log" >&2
	exit 1
}
deploy() { # deploy DISK FROM...
	local disk=$1
	shift
	local from=()
	for f in "$@"; do from+=(--from "$f"); done
	"$IMPRINT" deploy "${from[@]}" --image bench:v1 --disk "$WORK/$disk.img" --size "$SIZE" --yes --no-bootloader >"$WORK/$disk.out" 2>"$WORK/$disk.err"
}
fresh() {
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
waitall() { local rc=0; for p in "$@"; do wait "$p" || rc=1; done; return $rc; }

serve --store "$WORK/store" --image bench
MASTER=$URL

log "one node alone from the master"
fresh
t0=$(now)
deploy one "$MASTER"
T1=$(secs "$t0" "$(now)")
rm -f "$WORK/one.img"

log "single server: 8 clients at once"
fresh
t0=$(now)
ps=()
for i in 1 2 3 4 5 6 7 8; do deploy s$i "$MASTER" & ps+=($!); done
waitall "${ps[@]}" || { log "a deploy failed"; tail -3 "$WORK"/s*.err; exit 1; }
TS=$(secs "$t0" "$(now)")
rm -f "$WORK"/s*.img

log "three-level tree: master -> a1 a2 -> b1..b6 (each from its parent, the master as fallback)"
fresh
t0=$(now)
deploy a1 "$MASTER" & p1=$!
deploy a2 "$MASTER" & p2=$!
waitall $p1 $p2 || { log "a level-1 deploy failed"; tail -3 "$WORK"/a*.err; exit 1; }
tL1=$(secs "$t0" "$(now)")
serve --disk "$WORK/a1.img"
A1=$URL
serve --disk "$WORK/a2.img"
A2=$URL
ps=()
for i in 1 2 3; do deploy b$i "$A1" "$MASTER" & ps+=($!); done
for i in 4 5 6; do deploy b$i "$A2" "$MASTER" & ps+=($!); done
waitall "${ps[@]}" || { log "a level-2 deploy failed"; tail -3 "$WORK"/b*.err; exit 1; }
TT=$(secs "$t0" "$(now)")
for d in a1 a2 b1 b2 b3 b4 b5 b6; do
	"$IMPRINT" verify --disk "$WORK/$d.img" >/dev/null || { log "$d is not identical"; exit 1; }
done
frommaster=$(grep -h "from $MASTER" "$WORK"/b*.out | awk '{print $1, $2}' | paste -sd, -)

log "cut-through tree: a1 a2 deploy --serve from the master; b1..b6 start at once, each from its parent"
fresh
pa1=$((port + 1)) pa2=$((port + 2))
port=$((port + 2))
t0=$(now)
"$IMPRINT" deploy --from "$MASTER" --image bench:v1 --disk "$WORK/c-a1.img" --size "$SIZE" --yes --no-bootloader --serve 127.0.0.1:$pa1 >"$WORK/c-a1.out" 2>"$WORK/c-a1.err" &
ca1=$!
pids+=($ca1)
"$IMPRINT" deploy --from "$MASTER" --image bench:v1 --disk "$WORK/c-a2.img" --size "$SIZE" --yes --no-bootloader --serve 127.0.0.1:$pa2 >"$WORK/c-a2.out" 2>"$WORK/c-a2.err" &
ca2=$!
pids+=($ca2)
for p in $pa1 $pa2; do
	for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/index.json" && break; sleep 0.05; done
done
ps=()
for i in 1 2 3; do deploy c-b$i "http://127.0.0.1:$pa1/" & ps+=($!); done
for i in 4 5 6; do deploy c-b$i "http://127.0.0.1:$pa2/" & ps+=($!); done
waitall "${ps[@]}" || { log "a cut-through deploy failed"; tail -3 "$WORK"/c-b*.err; exit 1; }
for f in c-a1 c-a2; do
	until grep -q "still serving" "$WORK/$f.err"; do
		kill -0 $ca1 2>/dev/null || kill -0 $ca2 2>/dev/null || { log "$f failed"; cat "$WORK/$f.err"; exit 1; }
		sleep 0.05
	done
done
TC=$(secs "$t0" "$(now)")
kill $ca1 $ca2
wait $ca1 $ca2 2>/dev/null || true
for d in c-a1 c-a2 c-b1 c-b2 c-b3 c-b4 c-b5 c-b6; do
	"$IMPRINT" verify --disk "$WORK/$d.img" >/dev/null || { log "$d is not identical"; exit 1; }
done

# The rates for the model. A server and its clients are different machines
# in a real tree; here each gets one core (taskset), so that one does not
# measure the other's load.
log "rates: one deploy on core 0 from a server on core 1; servers on core 1, fetchers (bytes discarded) on core 0"
port=$((port + 1))
taskset -c 1 "$IMPRINT" serve --store "$WORK/store" --image bench --http 127.0.0.1:$port --public-url http://127.0.0.1:$port/ >>"$WORK/serve.log" 2>&1 &
pids+=($!)
PM=$port
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PM/index.json" >/dev/null && break; sleep 0.1; done
fresh
t0=$(now)
taskset -c 0 "$IMPRINT" deploy --from "http://127.0.0.1:$PM/" --image bench:v1 --disk "$WORK/rate.img" --size "$SIZE" --yes --no-bootloader >/dev/null 2>"$WORK/rate.err"
TR=$(secs "$t0" "$(now)")
C=$(awk -v m="$MIB" -v t="$TR" 'BEGIN { printf "%.1f", m * 1.048576 / t }')
SM=$(for _ in 1 2 3; do taskset -c 0 "$WORK/fetch" -url "http://127.0.0.1:$PM/" -image bench:v1 -workers 4 | awk '{print $1}'; done | sort -n | sed -n 2p)
port=$((port + 1))
taskset -c 1 "$IMPRINT" serve --disk "$WORK/rate.img" --http 127.0.0.1:$port --public-url http://127.0.0.1:$port/ >>"$WORK/serve.log" 2>&1 &
pids+=($!)
PD=$port
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PD/index.json" >/dev/null && break; sleep 0.1; done
SD=$(for _ in 1 2 3; do taskset -c 0 "$WORK/fetch" -url "http://127.0.0.1:$PD/" -image bench:v1 -workers 4 | awk '{print $1}'; done | sort -n | sed -n 2p)
median3() { sort -n | sed -n 2p; }
lockstep() { # lockstep URL: F=MB/s for F = 4, 8, 16 children fetching together
	local out= f r
	for f in 4 8 16; do
		r=$(for _ in 1 2 3; do taskset -c 0 "$WORK/fetch" -url "$1" -image bench:v1 -workers $f -lockstep | awk '{print $1}'; done | median3)
		out=${out:+$out,}$f=$r
	done
	echo "$out"
}
LOCK=$(lockstep "http://127.0.0.1:$PD/")
MLOCK=$(lockstep "http://127.0.0.1:$PM/")

{
	echo "## Tree: 8 clients, ${MIB} MiB image, $(date -u +%Y-%m-%d)"
	echo
	echo "| setup | wall time | x one node | x single server |"
	echo "|---|---|---|---|"
	echo "| one node alone | ${T1} s | 1.0x | |"
	awk -v t="$TS" -v o="$T1" 'BEGIN { printf "| single server, 8 clients at once | %.2f s | %.1fx | 1.00x |\n", t, t / o }'
	awk -v t="$TT" -v o="$T1" -v s="$TS" -v l="$tL1" 'BEGIN { printf "| three-level tree (2 then 6; level 1 took %.2f s) | %.2f s | %.1fx | %.2fx |\n", l, t, t / o, t / s }'
	awk -v t="$TC" -v o="$T1" -v s="$TS" 'BEGIN { printf "| cut-through tree (deploy --serve; all 8 at once) | %.2f s | %.1fx | %.2fx |\n", t, t / o, t / s }'
	echo
	echo "Level-2 bytes taken from the master (fallback): ${frommaster:-none}."
	echo
	echo "Measured rates (MB/s of image data; one core each for the server and its clients; medians of 3):"
	echo
	echo "- one deploy (verify on) ingests ${C};"
	echo "- to 4 clients fetching different chunks, a store server (the master) sends ${SM}, serve --disk ${SD};"
	echo "- to F clients fetching the same chunks together (cut-through children), F=rate: master ${MLOCK}; serve --disk ${LOCK}."
	echo
	echo "### Simulation, 1000 nodes, 1 GiB image, calibrated with these rates"
	echo
	echo '```'
	echo "sim -nodes 1000 -size-mib 1024 -client-mbs $C -master-mbs $SM -server-mbs $SD -lockstep-mbs $LOCK -master-lockstep-mbs $MLOCK"
	echo '```'
	echo
	"$WORK/sim" -nodes 1000 -size-mib 1024 -client-mbs "$C" -master-mbs "$SM" -server-mbs "$SD" -lockstep-mbs "$LOCK" -master-lockstep-mbs "$MLOCK"
	echo
	echo "Same, every rate capped at a 10 GbE link (1170 MB/s):"
	echo
	"$WORK/sim" -nodes 1000 -size-mib 1024 -client-mbs "$C" -master-mbs "$SM" -server-mbs "$SD" -lockstep-mbs "$LOCK" -master-lockstep-mbs "$MLOCK" -link-mbs 1170
	echo
	echo "Same, every rate capped at a 1 GbE link (117 MB/s):"
	echo
	"$WORK/sim" -nodes 1000 -size-mib 1024 -client-mbs "$C" -master-mbs "$SM" -server-mbs "$SD" -lockstep-mbs "$LOCK" -master-lockstep-mbs "$MLOCK" -link-mbs 117
} | tee "$OUT/results.md"
