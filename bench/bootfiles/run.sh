#!/usr/bin/env bash
# Boot-file benchmark: a rack powering on. BENCH_CLIENTS clients at once
# fetch the kernel, then the initrd, from `imprint serve` (boot files
# streamed from the store's chunks) and from nginx (the same files as
# plain files on disk, sendfile, 2 workers), on 127.0.0.1. Every body is
# compared byte for byte. Reports wall time and the server's peak resident
# memory (VmHWM; nginx: master + workers summed), and checks imprint's peak
# against 2x the files' size plus BENCH_FIXED_MIB.
#
#   bash bench/bootfiles/run.sh
#   BENCH_CLIENTS=500  BENCH_KERNEL_MIB=8  BENCH_INITRD_MIB=40  BENCH_FIXED_MIB=128
#   BENCH_BASELINE=/path/to/older/imprint   the same load against it first, with
#   BENCH_BASELINE_CLIENTS=50 clients (an imprint that assembles every
#   request's copy needs about clients x files of memory: 500 would be ~24 GiB)
#   BENCH_DIR=/some/dir
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=$ROOT/bin/imprint
CLIENTS=${BENCH_CLIENTS:-500}
KMIB=${BENCH_KERNEL_MIB:-8}
IMIB=${BENCH_INITRD_MIB:-40}
FIXED=${BENCH_FIXED_MIB:-128}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-bench-boot.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK" # nginx's workers run as www-data
log() { printf '[bench-bootfiles %s] %s\n' "$(date +%T)" "$*" >&2; }
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
[ -x "$IMPRINT" ] || (cd "$ROOT" && make build)
(cd "$ROOT" && go build -o "$WORK/bootfilesbench" ./bench/bootfiles)
ulimit -n "$(ulimit -Hn)" # 2 x clients descriptors: server and client ends

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

log "data: a ${KMIB} MiB kernel (random) and a ${IMIB} MiB initrd (3/4 random, 1/4 text)"
head -c $((KMIB << 20)) /dev/urandom >"$WORK/vmlinuz"
head -c $((IMIB * 3 / 4 << 20)) /dev/urandom >"$WORK/initrd.img"
head -c $((IMIB / 4 << 20)) < <(yes "imprint benchmark initrd line of fairly compressible text") >>"$WORK/initrd.img"
head -c $((4 << 20)) /dev/urandom >"$WORK/part.img"
printf 'esp esp 48M esp\ndata linux-generic auto image\n' >"$WORK/layout"
"$IMPRINT" build --store "$WORK/store" --name bench --version v1 --partition data="$WORK/part.img" --layout "$WORK/layout" \
	--kernel "$WORK/vmlinuz" --initrd "$WORK/initrd.img" >"$WORK/build.log" 2>&1 || { tail "$WORK/build.log" >&2; exit 1; }
mkdir -p "$WORK/www/boot/bench/v1"
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/www/boot/bench/v1/"
FILES=$(($(stat -c %s "$WORK/vmlinuz") + $(stat -c %s "$WORK/initrd.img")))
PATHS=boot/bench/v1/vmlinuz,boot/bench/v1/initrd.img
LOCAL=$WORK/vmlinuz,$WORK/initrd.img

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# load LABEL CLIENTS PORT PIDS... -> prints "LABEL seconds hwm_kib"
load() {
	local label=$1 n=$2 port=$3
	shift 3
	local out
	out=$("$WORK/bootfilesbench" -base "http://127.0.0.1:$port" -paths "$PATHS" -files "$LOCAL" -clients "$n" -pids "$(
		IFS=,
		echo "$*"
	)")
	log "$label: $out"
	echo "$label $(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out") $(sed -n 's/.*hwm_kib=\([0-9]*\).*/\1/p' <<<"$out")"
}

serve_imprint() { # BINARY PORT -> pid in SPID
	"$1" serve --store "$WORK/store" --http "127.0.0.1:$2" --image bench --http-max-conns 4096 2>"$WORK/serve-$2.log" &
	SPID=$!
	pids+=("$SPID")
	wait_port "$2" || { tail "$WORK/serve-$2.log" >&2; exit 1; }
}

RESULTS=()
if [[ -n ${BENCH_BASELINE:-} ]]; then
	serve_imprint "$BENCH_BASELINE" 18090
	log "baseline imprint serve: RSS at start $(rss_kib "$SPID") KiB"
	RESULTS+=("$(load baseline "${BENCH_BASELINE_CLIENTS:-50}" 18090 "$SPID" || echo "baseline - 0")")
	kill "$SPID"
fi

serve_imprint "$IMPRINT" 18091
START_RSS=$(rss_kib "$SPID")
log "imprint serve: RSS at start $START_RSS KiB"
RESULTS+=("$(load imprint "$CLIENTS" 18091 "$SPID")")
kill "$SPID"

cat >"$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:18092; root $WORK/www; }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
NPID=$!
pids+=("$NPID")
wait_port 18092
NGINX_PIDS=("$NPID" $(pgrep -P "$NPID"))
RESULTS+=("$(load nginx "$CLIENTS" 18092 "${NGINX_PIDS[@]}")")

declare -A SEC HWM
for r in "${RESULTS[@]}"; do
	read -r l s h <<<"$r"
	SEC[$l]=$s HWM[$l]=$h
done
LIMIT=$((2 * FILES / 1024 + FIXED * 1024))
VERDICT=MISSED
((HWM[imprint] <= LIMIT)) && VERDICT=HOLDS
r2() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "## boot files: $CLIENTS clients x (kernel ${KMIB} MiB + initrd ${IMIB} MiB), 127.0.0.1, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| server | clients | seconds | peak RSS MiB |"
echo "|---|---:|---:|---:|"
for l in baseline imprint nginx; do
	[[ -n ${SEC[$l]:-} ]] || continue
	n=$CLIENTS
	[[ $l == baseline ]] && n=${BENCH_BASELINE_CLIENTS:-50}
	printf '| %s | %s | %s | %d |\n' "$l" "$n" "${SEC[$l]}" $((HWM[$l] / 1024))
done
echo
echo "imprint peak RSS $((HWM[imprint] / 1024)) MiB; limit 2 x $((FILES >> 20)) MiB + $FIXED MiB = $((LIMIT / 1024)) MiB: **$VERDICT**"
echo "imprint / nginx: time $(r2 "${SEC[imprint]}" "${SEC[nginx]}"), peak RSS $(r2 "${HWM[imprint]}" "${HWM[nginx]}")"
[[ $VERDICT == HOLDS ]]
