#!/usr/bin/env bash
# HTTP benchmark: 32 concurrent `imprint deploy --from http://...` to image
# files, served by `imprint serve` and by nginx from the same store
# directory, on 127.0.0.1. Prints aggregate MB/s and the ratio.
#   BENCH_CLIENTS=32  BENCH_MIB=64  BENCH_DIR=/some/dir
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=$ROOT/bin/imprint
CLIENTS=${BENCH_CLIENTS:-32}
MIB=${BENCH_MIB:-64}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-bench-http.XXXXXX)}
OUT=$ROOT/bench/http/out
mkdir -p "$WORK" "$OUT"
chmod 755 "$WORK" # nginx's workers run as www-data
log() { printf '[bench-http %s] %s\n' "$(date +%T)" "$*" >&2; }
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
[ -x "$IMPRINT" ] || (cd "$ROOT" && make build)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

log "data: a ${MIB} MiB partition, half random, half text"
head -c $((MIB / 2 * 1024 * 1024)) /dev/urandom >"$WORK/part.img"
head -c $((MIB / 2 * 1024 * 1024)) < <(yes "imprint benchmark line of fairly compressible text") >>"$WORK/part.img"
printf 'esp esp 48M esp\ndata linux-generic auto image\n' >"$WORK/layout"
"$IMPRINT" build --store "$WORK/store" --name bench --partition data="$WORK/part.img" --layout "$WORK/layout" >/dev/null

"$IMPRINT" serve --store "$WORK/store" --http 127.0.0.1:18081 --image bench 2>"$WORK/serve.log" &
pids+=($!)
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:18082; root $WORK/store; }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 1

run() { # $1 = url, $2 = label; runs in a subshell: it must not inherit the cleanup
	trap - EXIT
	rm -f "$WORK"/d*.img
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
	local t0 t1
	t0=$(date +%s.%N)
	local ps=()
	for i in $(seq 1 "$CLIENTS"); do
		"$IMPRINT" deploy --from "$1" --image bench --disk "$WORK/d$i.img" --size $((MIB + 60))M --yes --no-bootloader >/dev/null 2>"$WORK/err$i" &
		ps+=($!)
	done
	for p in "${ps[@]}"; do
		wait "$p" || { log "a deploy from $2 failed"; tail -3 "$WORK"/err*; exit 1; }
	done
	t1=$(date +%s.%N)
	for i in $(seq 1 "$CLIENTS"); do "$IMPRINT" verify --disk "$WORK/d$i.img" >/dev/null 2>&1 || { log "$2: disk $i differs"; exit 1; }; done
	awk -v a="$t0" -v b="$t1" -v n="$CLIENTS" -v m="$MIB" 'BEGIN { printf "%.2f %.1f\n", b - a, n * m * 1048576 / (b - a) / 1e6 }'
}
read -r ti mi < <(run http://127.0.0.1:18081/ imprint)
read -r tn mn < <(run http://127.0.0.1:18082/ nginx)
read -r ti2 mi2 < <(run http://127.0.0.1:18081/ imprint)
read -r tn2 mn2 < <(run http://127.0.0.1:18082/ nginx)
{
	echo "| server | run 1 s | run 2 s | aggregate MB/s (best) |"
	echo "|---|---:|---:|---:|"
	best_i=$(printf '%s\n%s\n' "$mi" "$mi2" | sort -g | tail -1)
	best_n=$(printf '%s\n%s\n' "$mn" "$mn2" | sort -g | tail -1)
	echo "| imprint serve | $ti | $ti2 | $best_i |"
	echo "| nginx | $tn | $tn2 | $best_n |"
	awk -v a="$best_i" -v b="$best_n" 'BEGIN { printf "\nimprint / nginx throughput: %.2f (goal >= 0.90)\n", a / b }'
	echo "$CLIENTS concurrent deploys of a $MIB MiB partition (verification on), every disk checked with imprint verify."
} | tee "$OUT/results.md"
