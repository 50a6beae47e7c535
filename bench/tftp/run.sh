#!/usr/bin/env bash
# TFTP benchmark: imprint's server (netboot/tftp, through bench/tftp/imprint-tftpd)
# against tftpd-hpa, on the same files, with the same client (curl), on 127.0.0.1.
#
#   bash bench/tftp/run.sh
#   BENCH_REPS=5            runs per cell (the median is reported)
#   BENCH_PORT=26969        tftpd-hpa listens on this port, imprint on the next one
#   BENCH_DIR=/some/dir     where the work files go (default: a fresh temp dir)
#
# Needs: go, curl, in.tftpd (tftpd-hpa; the system service is not used: a
# private in.tftpd runs in the foreground as a child of this script).
#
# Output: a table on stdout and in bench/tftp/out/results.md. MB/s is the
# file size over curl's total time for the transfer (1 MB = 10^6 bytes).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/bench/tftp/out
REPS=${BENCH_REPS:-5}
PORT_HPA=${BENCH_PORT:-26969}
PORT_IMP=$((PORT_HPA + 1))
ADDR=127.0.0.1

log() { printf '[bench-tftp %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

for t in go curl in.tftpd cmp; do
	command -v "$t" >/dev/null || die "$t not found (make deps installs curl and tftpd-hpa)"
done
for p in $PORT_HPA $PORT_IMP; do
	if ss -Hlun "sport = :$p" 2>/dev/null | grep -q .; then
		die "UDP port $p is in use; set BENCH_PORT"
	fi
done

W=${BENCH_DIR:-$(mktemp -d /tmp/imprint-bench-tftp.XXXXXX)}
mkdir -p "$W/root" "$OUT"
# in.tftpd drops to the unprivileged tftp user: the tree must be world-readable.
chmod 755 "$W" "$W/root"

pids=()
cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	[[ -n ${BENCH_DIR:-} ]] || rm -rf "$W"
	((rc == 0)) || log "failed (exit $rc)"
}
trap cleanup EXIT

log "building imprint-tftpd"
(cd "$ROOT" && go build -o "$W/imprint-tftpd" ./bench/tftp/imprint-tftpd)
IMPRINT_ID="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')"

declare -A SIZE=([1MiB]=$((1 << 20)) [30MiB]=$((30 << 20)))
for f in 1MiB 30MiB; do
	head -c "${SIZE[$f]}" /dev/urandom >"$W/root/$f"
	chmod 644 "$W/root/$f"
done

log "starting tftpd-hpa on $ADDR:$PORT_HPA and imprint on $ADDR:$PORT_IMP"
in.tftpd --foreground --address "$ADDR:$PORT_HPA" --secure "$W/root" 2>"$W/hpa.log" &
pids+=($!)
"$W/imprint-tftpd" -addr "$ADDR:$PORT_IMP" -root "$W/root" 2>"$W/imprint.log" &
pids+=($!)

# Wait until both answer, with the file that has to come back right.
for p in $PORT_HPA $PORT_IMP; do
	ok=0
	for _ in $(seq 50); do
		if curl -s --max-time 2 -o "$W/probe" "tftp://$ADDR:$p/1MiB" && cmp -s "$W/probe" "$W/root/1MiB"; then
			ok=1
			break
		fi
		sleep 0.1
	done
	((ok)) || die "server on port $p does not serve (logs in $W)"
done

# fetch PORT FILE BLKSIZE -> seconds on stdout; checks the bytes.
fetch() {
	local port=$1 file=$2 blk=$3 args=() t
	[[ $blk == default ]] || args=(--tftp-blksize "$blk")
	t=$(curl -s -S --max-time 120 "${args[@]}" -o "$W/got" -w '%{time_total}' "tftp://$ADDR:$port/$file")
	cmp -s "$W/got" "$W/root/$file" || die "port $port: $file came back different"
	echo "$t"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

rows=()
for f in 1MiB 30MiB; do
	for blk in default 1468; do
		hpa=() imp=()
		# Alternate the servers so that a burst of load elsewhere on the
		# machine hits both alike.
		for _ in $(seq "$REPS"); do
			hpa+=("$(fetch "$PORT_HPA" "$f" "$blk")")
			imp+=("$(fetch "$PORT_IMP" "$f" "$blk")")
		done
		th=$(printf '%s\n' "${hpa[@]}" | median)
		ti=$(printf '%s\n' "${imp[@]}" | median)
		row=$(awk -v s="${SIZE[$f]}" -v th="$th" -v ti="$ti" -v f="$f" -v b="$blk" 'BEGIN {
			mh = s / th / 1e6; mi = s / ti / 1e6
			printf "| %-5s | %-7s | %8.2f | %8.2f | %5.2fx |", f, b, mh, mi, mi / mh
		}')
		log "$row  (hpa s: ${hpa[*]}; imprint s: ${imp[*]})"
		rows+=("$row")
	done
done

{
	echo "# TFTP: imprint vs tftpd-hpa"
	echo
	echo "$(date -u +%FT%TZ), imprint $IMPRINT_ID, $(in.tftpd -V 2>&1 | head -1), $(curl --version | head -1 | cut -d' ' -f1-2),"
	echo "client curl on $ADDR, median of $REPS runs, MB/s = 10^6 bytes/s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	echo "| file  | blksize | tftpd-hpa MB/s | imprint MB/s | imprint/hpa |"
	echo "|-------|---------|----------:|----------:|------:|"
	printf '%s\n' "${rows[@]}"
} | tee "$OUT/results.md"
