#!/usr/bin/env bash
# Verified deploys of the same image stored at two chunk sizes, from a store
# directory and from `imprint serve` on 127.0.0.1, round-robin, page cache
# dropped before each run: the chunk-size A/B of docs/chunk-size.md, with
# more runs than bench/run.sh can afford. Reuses bench/run.sh's stores:
#
#   BENCH_KEEP=1 BENCH_CHUNK=1M BENCH_CHUNK_ALT=4M bash bench/run.sh
#   bash bench/chunksize/deploy.sh bench/out/work
#
# DIR must hold store/ (bench:v1, the sparse case), store-alt/ (the same at
# the other chunk size) and dstore/, dstore-alt/ (dense:v1).
#   REPS=7 SETTLE=10 IMPRINT=bin/imprint BASELINE=/old/imprint (optional: its
#   deploys from store/ too)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=$(cd "${1:?usage: deploy.sh DIR}" && pwd)
IMPRINT=${IMPRINT:-$ROOT/bin/imprint}
REPS=${REPS:-7}
SETTLE=${SETTLE:-10}
PORT=${PORT:-18095}
T=$W/ab-target.img
log() { printf '[deploy-ab %s] %s\n' "$(date +%T)" "$*" >&2; }

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -f "$T"
}
trap cleanup EXIT
serve() { # STORE PORT
	"$IMPRINT" serve --store "$1" --http "127.0.0.1:$2" >"$W/ab-serve-$2.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$2/" && return; sleep 0.2; done
	log "serve on $2 did not start"
	exit 1
}
serve "$W/store" "$PORT"
serve "$W/store-alt" "$((PORT + 1))"
cs() { sed -n 's/.*"chunk_size": *\([0-9]*\).*/\1/p' "$1/images/$2/v1/manifest.json" | head -1; }
A=$(($(cs "$W/store" bench) >> 20))M B=$(($(cs "$W/store-alt" bench) >> 20))M

# label|binary|from|image|disk size
cases=(
	"sparse $A|$IMPRINT|$W/store|bench:v1|4G"
	"sparse $B|$IMPRINT|$W/store-alt|bench:v1|4G"
	"sparse $A http|$IMPRINT|http://127.0.0.1:$PORT/|bench:v1|4G"
	"sparse $B http|$IMPRINT|http://127.0.0.1:$((PORT + 1))/|bench:v1|4G"
	"dense $A|$IMPRINT|$W/dstore|dense:v1|1568M"
	"dense $B|$IMPRINT|$W/dstore-alt|dense:v1|1568M"
)
[[ -z ${BASELINE:-} ]] || cases+=("sparse $A baseline|$BASELINE|$W/store|bench:v1|4G" "dense $A baseline|$BASELINE|$W/dstore|dense:v1|1568M")
declare -A S
for ((r = 1; r <= REPS; r++)); do
	for c in "${cases[@]}"; do
		IFS='|' read -r label bin from img size <<<"$c"
		rm -f "$T"
		sync
		echo 3 >/proc/sys/vm/drop_caches
		sleep "$SETTLE"
		t0=$EPOCHREALTIME
		"$bin" deploy --from "$from" --image "$img" --disk "$T" --size "$size" --yes >"$W/ab-last.log" 2>&1 || {
			tail "$W/ab-last.log"
			exit 1
		}
		t1=$EPOCHREALTIME
		"$IMPRINT" verify --disk "$T" >/dev/null 2>&1 || { log "$label: verify failed"; exit 1; }
		s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
		S[$label]+=" $s"
		log "$label run $r: $s s"
	done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "| deploy (verify on) | median s | runs (s) |"
echo "|---|---:|---|"
for c in "${cases[@]}"; do
	label=${c%%|*}
	# shellcheck disable=SC2086
	printf '| %s | %.2f | %s |\n' "$label" "$(median ${S[$label]})" "${S[$label]# }"
done
echo
echo "$(date -u +%FT%TZ), $REPS runs each, ${SETTLE}s pause after each cache drop, load average $(cut -d' ' -f1-3 /proc/loadavg)"
