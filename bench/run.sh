#!/usr/bin/env bash
# imprint benchmark: imprint deploy vs bmaptool copy vs dd, on the same data,
# in one run. Called by `make bench` (after `make build`).
#
#   bash bench/run.sh                 full size (~1 GiB of content, 4 GiB disk)
#   BENCH_QUICK=1 bash bench/run.sh   4x smaller, a smoke run
#   BENCH_DIR=/big/disk bash ...      where the work files go (default bench/out/work)
#   BENCH_REPS=3                      repetitions per timed command (median is reported)
#   BENCH_KEEP=1                      keep the big work files at the end
#   BENCH_SETTLE=10                   seconds to wait after dropping the page
#                                     cache before each timed run (default 0)
#   BENCH_BASELINE=/path/to/imprint   also time this (older) imprint's verified
#                                     deploys in the same rounds, for a
#                                     before/after under the same load
#   BENCH_CHUNK=1M                    build the images with --chunk-size 1M
#                                     (default: imprint's default)
#   BENCH_CHUNK_ALT=4M                also build both images at this chunk size
#                                     and time their verified deploys in the
#                                     same rounds (chunk size A/B)
#   BENCH_HTTP=1                      also time verified deploys from
#                                     `imprint serve` on 127.0.0.1 (each store,
#                                     BENCH_CHUNK_ALT's too)
#
# Needs: bin/imprint, bmaptool (bmap-tools), zstd, sgdisk (gdisk),
# mkfs.ext4 (e2fsprogs), coreutils. Run as root (drop_caches; imprint deploy).
#
# Output: a table on stdout and in bench/out/results.md; details of every run
# in the work directory's logs (removed with the work files unless BENCH_KEEP=1).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMPRINT_SRC=$ROOT/bin/imprint
OUT=$ROOT/bench/out
W=${BENCH_DIR:-$OUT/work}
REPS=${BENCH_REPS:-3}
QUICK=${BENCH_QUICK:-0}
SETTLE=${BENCH_SETTLE:-0}
CHUNK=${BENCH_CHUNK:-}
ALT=${BENCH_CHUNK_ALT:-}
HTTP=${BENCH_HTTP:-0}
HTTP_PORT=${BENCH_HTTP_PORT:-18091} # and the next one, for BENCH_CHUNK_ALT's store

MiB=$((1 << 20))
GiB=$((1 << 30))
if [[ $QUICK == 1 ]]; then
	DISK=$((1 * GiB))    # whole sparse disk image
	ESP=$((128 * MiB))   # ESP of the source image (>= 48 MiB for FAT32)
	COMP=$((150 * MiB))  # compressible files in the root tree
	RAND=$((100 * MiB))  # random files in the root tree
	DENSE=$((256 * MiB)) # dense partition of random data
else
	DISK=$((4 * GiB))
	ESP=$((512 * MiB))
	COMP=$((600 * MiB))
	RAND=$((400 * MiB))
	DENSE=$((1 * GiB))
fi
# imprint's default layout: (BIOS boot,) a 512 MiB ESP, the partition, and an
# optional scratch partition (>= 64 MiB, mkfs.ext4) when there is room. 32 MiB
# spare leaves room for alignment and the GPTs but none for scratch.
DENSE_DISK=$((512 * MiB + 256 * MiB + DENSE + 32 * MiB)) # + the default layout's 256 MiB state partition

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

for t in bmaptool zstd sgdisk mkfs.ext4 cmp tar; do
	command -v "$t" >/dev/null || die "$t not found (make deps installs it)"
done
[[ -x $IMPRINT_SRC ]] || die "$IMPRINT_SRC missing: run make build"
[[ $(id -u) == 0 ]] || die "run as root (imprint deploy, drop_caches)"

mkdir -p "$OUT" "$W"
W=$(cd "$W" && pwd)
need=$(((COMP + RAND) * 3 + DISK / 4 + DENSE * 3 + 2 * GiB)) # tree, images, stores, target
free=$(($(df -Pk "$W" | awk 'NR == 2 {print $4}') * 1024))
((free >= need)) || die "$W has $((free / GiB)) GiB free, the run needs about $((need / GiB + 1)) GiB (set BENCH_DIR)"
LOGS=$W/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
# Run a private copy, so a rebuild of bin/imprint during the run cannot mix
# two versions in one table.
IMPRINT=$W/imprint
cp "$IMPRINT_SRC" "$IMPRINT"
IMPRINT_ID="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?') (binary sha256 $(sha256sum "$IMPRINT" | cut -c1-12))"
BASE=""
if [[ -n ${BENCH_BASELINE:-} ]]; then
	[[ -x $BENCH_BASELINE ]] || die "BENCH_BASELINE=$BENCH_BASELINE is not an executable"
	BASE=$W/imprint-baseline
	cp "$BENCH_BASELINE" "$BASE"
	IMPRINT_ID+="; baseline binary sha256 $(sha256sum "$BASE" | cut -c1-12)"
fi

SERVE_PIDS=()
cleanup() {
	local rc=$?
	local p
	for p in "${SERVE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	if [[ ${BENCH_KEEP:-0} != 1 ]]; then
		# Only what this script made: BENCH_DIR may hold other files.
		rm -rf "$W/tree" "$W/store" "$W/dstore" "$W/store-alt" "$W/dstore-alt"
		rm -f "$W/imprint" "$W/imprint-baseline" "$W/disk.img" "$W/disk.img.zst" "$W/disk.bmap" "$W/dense.raw" \
			"$W/target.img" "$W/root.ext4" "$W/usrfiles" "$W/list"
	fi
	((rc == 0)) || log "failed (exit $rc); logs in $LOGS"
}
trap cleanup EXIT

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "warning: cannot drop caches (timings include cached reads)"
	# On a VM with free page reporting, memory freed by the drop goes back
	# to the host a few seconds later; a run that starts at once refills
	# the page cache from pages not yet given back, which is cheaper. A
	# pause gives every command the same settled start (docs/performance.md).
	((SETTLE == 0)) || sleep "$SETTLE"
}

now() { date +%s.%N; }

# median of the arguments (numbers)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# ---------------------------------------------------------------- GPT helpers
# part_range FILE TYPECODE -> "start_byte length_bytes" of the first partition
# with that sgdisk type code (e.g. 8304, EF00).
part_range() {
	local f=$1 code=$2 line
	line=$(sgdisk -p "$f" 2>/dev/null | awk -v c="$code" '$1 ~ /^[0-9]+$/ && toupper($6) == toupper(c) {print $2, $3; exit}')
	[[ -n $line ]] || die "$f: no partition of type $code"
	set -- $line
	echo "$(($1 * 512)) $((($2 - $1 + 1) * 512))"
}
part_range_by_name() { # FILE NAME (GPT partition name)
	local f=$1 name=$2 line
	line=$(sgdisk -p "$f" 2>/dev/null | awk -v n="$name" '$1 ~ /^[0-9]+$/ && $7 == n {print $2, $3; exit}')
	[[ -n $line ]] || die "$f: no partition named $name"
	set -- $line
	echo "$(($1 * 512)) $((($2 - $1 + 1) * 512))"
}

# check_range SRC SRC_OFF TGT TGT_OFF LEN LABEL: the bytes must be identical.
# Both sides are read with O_DIRECT (offsets and lengths are MiB multiples):
# it reads what is on the disk, and it is much faster than buffered reads
# through the holes of sparse files (the kernel zero-fills page cache there).
range() { dd if="$1" iflag=direct,skip_bytes,count_bytes skip="$2" count="$3" bs=4M status=none; }
check_range() {
	local src=$1 so=$2 tgt=$3 to=$4 len=$5 label=$6
	((so % 4096 == 0 && to % 4096 == 0 && len % 4096 == 0)) || die "$label: unaligned range"
	if ! cmp -s -n "$len" <(range "$src" "$so" "$len") <(range "$tgt" "$to" "$len"); then
		cmp -n "$len" <(range "$src" "$so" "$len") <(range "$tgt" "$to" "$len") 2>&1 | head -3 >&2 || true
		die "$label: target differs from the source ($len bytes at $to vs $so)"
	fi
}

# ---------------------------------------------------------------- results
declare -A MED     # key -> median seconds
declare -A BYTES   # key -> bytes the case is about (for MB/s)
declare -A ALL     # key -> all samples
ORDER=()

# add_case KEY BYTES SETUP_FN RUN_FN CHECK_FN registers a timed command;
# run_cases runs every registered case once per round, REPS rounds, so that
# background load on a noisy machine falls on all tools alike. Each run:
# setup (untimed), drop caches, time the command, check the result (untimed).
declare -A C_SETUP C_RUN C_CHECK SAMPLES
PENDING=()
add_case() {
	local key=$1
	BYTES[$key]=$2 C_SETUP[$key]=$3 C_RUN[$key]=$4 C_CHECK[$key]=$5 SAMPLES[$key]=""
	PENDING+=("$key")
}
run_cases() {
	local r key t0 t1 s
	for ((r = 1; r <= REPS; r++)); do
		for key in "${PENDING[@]}"; do
			${C_SETUP[$key]}
			drop_caches
			t0=$(now)
			${C_RUN[$key]} >"$LOGS/$key.$r.log" 2>&1 || {
				tail -20 "$LOGS/$key.$r.log" >&2
				die "$key (run $r) failed"
			}
			t1=$(now)
			${C_CHECK[$key]} "$key.$r"
			s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
			SAMPLES[$key]+=" $s"
			log "$key run $r: $s s"
		done
	done
	for key in "${PENDING[@]}"; do
		# shellcheck disable=SC2086
		MED[$key]=$(median ${SAMPLES[$key]})
		ALL[$key]=${SAMPLES[$key]# }
		ORDER+=("$key")
	done
	PENDING=()
}

mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / s / 1e6}'; }

T_START=$(now)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $W (quick=$QUICK, reps=$REPS, settle=${SETTLE}s)"

# ================================================================ data
# ---- the root tree: compressible files (copies of /usr) + random files
log "making the root tree: $((COMP / MiB)) MiB of /usr files, $((RAND / MiB)) MiB random"
rm -rf "$W/tree"
mkdir -p "$W/tree/rand"
# Regular files of /usr (text, libraries, binaries), in a stable order, cut at
# COMP bytes; repeated into copyN/ directories if /usr is smaller than COMP.
find /usr/share /usr/lib /usr/bin -xdev -type f -size -16M -printf '%s %p\n' 2>/dev/null |
	sort -k2 >"$W/usrfiles"
have=0 n=0
while ((have < COMP)); do
	n=$((n + 1))
	awk -v need=$((COMP - have)) '{ if (t >= need) exit; t += $1; sub(/^[0-9]+ /, ""); print }' "$W/usrfiles" >"$W/list"
	[[ -s $W/list ]] || die "no files found under /usr"
	mkdir -p "$W/tree/copy$n"
	tar -cf - --no-recursion -T "$W/list" 2>/dev/null | tar -xf - -C "$W/tree/copy$n" 2>/dev/null || true
	have=$(du -sb --apparent-size "$W/tree" | cut -f1)
done
rm -f "$W/usrfiles" "$W/list"
# Random files of different sizes.
left=$RAND i=0
for sz in 64 96 8 128 32 16 48 4 2 1; do
	((left > 0)) || break
	b=$((sz * MiB * RAND / (400 * MiB)))
	((b > left || i == 9)) && b=$left
	((b > 0)) || continue
	head -c "$b" /dev/urandom >"$W/tree/rand/blob$i.bin"
	left=$((left - b)) i=$((i + 1))
done
TREE_BYTES=$(du -sb --apparent-size "$W/tree" | cut -f1)
log "tree: $((TREE_BYTES / MiB)) MiB in $(find "$W/tree" -type f | wc -l) files"

# ---- the sparse GPT disk image
log "making disk.img ($((DISK / MiB)) MiB GPT: ESP + ext4 root)"
rm -f "$W/disk.img"
truncate -s "$DISK" "$W/disk.img"
# No -q: gdisk 1.0.9's sgdisk -q silently writes nothing.
# The root ends 16 MiB before the end of the disk and is a whole number of
# MiB: imprint starts partitions at 1 MiB boundaries, rounds sizes up to 1 MiB
# and may add a 1 MiB BIOS boot partition, so a root that runs to the last
# usable sector (sgdisk -n 2:0:0) would not fit a target of the same size.
R1=$((2048 + ESP / 512))
R2=$((DISK / 512 - 16 * 2048 - 1))
sgdisk -o -n "1:2048:$((R1 - 1))" -t 1:ef00 -c 1:esp -n "2:$R1:$R2" -t 2:8304 -c 2:root "$W/disk.img" >"$LOGS/sgdisk.log"
read -r ROOT_OFF ROOT_LEN < <(part_range "$W/disk.img" 8304)
log "root partition at $ROOT_OFF, $ROOT_LEN bytes"
rm -f "$W/root.ext4"
truncate -s "$ROOT_LEN" "$W/root.ext4"
mkfs.ext4 -q -F -L root -b 4096 -d "$W/tree" "$W/root.ext4" >"$LOGS/mkfs.log" 2>&1 || {
	cat "$LOGS/mkfs.log" >&2
	die "mkfs.ext4 failed"
}
dd if="$W/root.ext4" of="$W/disk.img" bs=64K seek=$((ROOT_OFF / 65536)) conv=notrunc,sparse status=none
rm -f "$W/root.ext4"
bmaptool create -o "$W/disk.bmap" "$W/disk.img" 2>"$LOGS/bmap-create.log"
MAPPED=$(sed -n 's:.*<MappedBlocksCount>[[:space:]]*\([0-9]*\).*:\1:p' "$W/disk.bmap")
BLKSZ=$(sed -n 's:.*<BlockSize>[[:space:]]*\([0-9]*\).*:\1:p' "$W/disk.bmap")
MAPPED_BYTES=$((MAPPED * BLKSZ))
zstd -T0 -3 -q -f "$W/disk.img" -o "$W/disk.img.zst"
log "disk.img: $((MAPPED_BYTES / MiB)) MiB mapped; disk.img.zst $(($(stat -c %s "$W/disk.img.zst") / MiB)) MiB"

# ---- the dense partition
log "making dense.raw ($((DENSE / MiB)) MiB random)"
head -c "$DENSE" /dev/urandom >"$W/dense.raw"

# ================================================================ build (not compared)
CS_ARGS=()
[[ -z $CHUNK ]] || CS_ARGS=(--chunk-size "$CHUNK")
build_setup() { rm -rf "$W/store"; }
build_run() { "$IMPRINT" build --store "$W/store" --name bench --version v1 --disk-image "$W/disk.img" "${CS_ARGS[@]}"; }
build_check() { :; }
add_case "imprint-build" "$MAPPED_BYTES" build_setup build_run build_check

dbuild_setup() { rm -rf "$W/dstore"; }
dbuild_run() { "$IMPRINT" build --store "$W/dstore" --name dense --version v1 --partition "data=$W/dense.raw" "${CS_ARGS[@]}"; }
add_case "imprint-build-dense" "$DENSE" dbuild_setup dbuild_run build_check
if [[ -n $ALT ]]; then
	abuild_setup() { rm -rf "$W/store-alt"; }
	abuild_run() { "$IMPRINT" build --store "$W/store-alt" --name bench --version v1 --disk-image "$W/disk.img" --chunk-size "$ALT"; }
	add_case "imprint-build-alt" "$MAPPED_BYTES" abuild_setup abuild_run build_check
	adbuild_setup() { rm -rf "$W/dstore-alt"; }
	adbuild_run() { "$IMPRINT" build --store "$W/dstore-alt" --name dense --version v1 --partition "data=$W/dense.raw" --chunk-size "$ALT"; }
	add_case "imprint-build-dense-alt" "$DENSE" adbuild_setup adbuild_run build_check
fi
log "imprint build (not part of the comparison)"
run_cases

# ================================================================ sparse case
T=$W/target.img
fresh() { rm -f "$T"; }

imprint_check() { # the root partition (by type) must hold the source's bytes, and verify must pass
	local o l
	read -r o l < <(part_range "$T" 8304)
	((l >= ROOT_LEN)) || die "$1: target root partition is $l bytes, source $ROOT_LEN"
	check_range "$W/disk.img" "$ROOT_OFF" "$T" "$o" "$ROOT_LEN" "$1"
	"$IMPRINT" verify --disk "$T" >"$LOGS/$1.verify.log" 2>&1 || die "$1: imprint verify says the disk is not identical"
}
same_layout_check() { # bmaptool and dd copy the whole disk: same offsets
	[[ $(stat -c %s "$T") -ge $DISK ]] || die "$1: target is $(stat -c %s "$T") bytes, want $DISK"
	check_range "$W/disk.img" "$ROOT_OFF" "$T" "$ROOT_OFF" "$ROOT_LEN" "$1"
}

dep_run() { "$IMPRINT" deploy --from "$W/store" --image bench:v1 --disk "$T" --size "$DISK" --yes "$@"; }
dep_nv_run() { "$IMPRINT" deploy --from "$W/store" --image bench:v1 --disk "$T" --size "$DISK" --yes --no-verify; }
bmap_run() { bmaptool copy --bmap "$W/disk.bmap" "$W/disk.img" "$T"; }
bmapz_run() { bmaptool copy --bmap "$W/disk.bmap" "$W/disk.img.zst" "$T"; }
dd_run() { dd if="$W/disk.img" of="$T" bs=4M conv=sparse,fsync; }

log "sparse case: $((DISK / MiB)) MiB disk, $((MAPPED_BYTES / MiB)) MiB mapped"
add_case "imprint-deploy" "$MAPPED_BYTES" fresh dep_run imprint_check
add_case "imprint-deploy-noverify" "$MAPPED_BYTES" fresh dep_nv_run imprint_check
add_case "bmaptool-copy" "$MAPPED_BYTES" fresh bmap_run same_layout_check
add_case "bmaptool-copy-zst" "$MAPPED_BYTES" fresh bmapz_run same_layout_check
add_case "dd-sparse" "$MAPPED_BYTES" fresh dd_run same_layout_check
base_run() { "$BASE" deploy --from "$W/store" --image bench:v1 --disk "$T" --size "$DISK" --yes; }
[[ -z $BASE ]] || add_case "imprint-deploy-baseline" "$MAPPED_BYTES" fresh base_run imprint_check
alt_run() { "$IMPRINT" deploy --from "$W/store-alt" --image bench:v1 --disk "$T" --size "$DISK" --yes; }
[[ -z $ALT ]] || add_case "imprint-deploy-alt" "$MAPPED_BYTES" fresh alt_run imprint_check
if [[ $HTTP == 1 ]]; then
	# One server per store, started once: the deploys measure what a node
	# pays per request over HTTP (loopback: no network, only the protocol).
	serve_store() { # STORE PORT
		"$IMPRINT" serve --store "$1" --http "127.0.0.1:$2" >"$LOGS/serve-$2.log" 2>&1 &
		SERVE_PIDS+=($!)
		local i
		for ((i = 0; i < 50; i++)); do
			curl -s -o /dev/null "http://127.0.0.1:$2/" && return 0
			sleep 0.2
		done
		die "imprint serve on 127.0.0.1:$2 did not start (logs/serve-$2.log)"
	}
	serve_store "$W/store" "$HTTP_PORT"
	http_run() { "$IMPRINT" deploy --from "http://127.0.0.1:$HTTP_PORT/" --image bench:v1 --disk "$T" --size "$DISK" --yes; }
	add_case "imprint-deploy-http" "$MAPPED_BYTES" fresh http_run imprint_check
	if [[ -n $ALT ]]; then
		serve_store "$W/store-alt" "$((HTTP_PORT + 1))"
		http_alt_run() { "$IMPRINT" deploy --from "http://127.0.0.1:$((HTTP_PORT + 1))/" --image bench:v1 --disk "$T" --size "$DISK" --yes; }
		add_case "imprint-deploy-http-alt" "$MAPPED_BYTES" fresh http_alt_run imprint_check
	fi
fi
run_cases

# ================================================================ dense case
dense_check() {
	local o l
	read -r o l < <(part_range_by_name "$T" data)
	((l >= DENSE)) || die "$1: target data partition is $l bytes, want $DENSE"
	check_range "$W/dense.raw" 0 "$T" "$o" "$DENSE" "$1"
	"$IMPRINT" verify --disk "$T" >"$LOGS/$1.verify.log" 2>&1 || die "$1: imprint verify says the disk is not identical"
}
dd_dense_check() {
	[[ $(stat -c %s "$T") -eq $DENSE ]] || die "$1: target is $(stat -c %s "$T") bytes, want $DENSE"
	check_range "$W/dense.raw" 0 "$T" 0 "$DENSE" "$1"
}
ddep_run() { "$IMPRINT" deploy --from "$W/dstore" --image dense:v1 --disk "$T" --size "$DENSE_DISK" --slots 1 --yes "$@"; }
ddep_nv_run() { "$IMPRINT" deploy --from "$W/dstore" --image dense:v1 --disk "$T" --size "$DENSE_DISK" --slots 1 --yes --no-verify; }
ddd_run() { dd if="$W/dense.raw" of="$T" bs=4M oflag=direct conv=fsync; }

log "dense case: $((DENSE / MiB)) MiB of random data"
add_case "imprint-deploy-dense" "$DENSE" fresh ddep_run dense_check
add_case "imprint-deploy-dense-noverify" "$DENSE" fresh ddep_nv_run dense_check
add_case "dd-dense" "$DENSE" fresh ddd_run dd_dense_check
dbase_run() { "$BASE" deploy --from "$W/dstore" --image dense:v1 --disk "$T" --size "$DENSE_DISK" --yes; }
[[ -z $BASE ]] || add_case "imprint-deploy-dense-baseline" "$DENSE" fresh dbase_run dense_check
dalt_run() { "$IMPRINT" deploy --from "$W/dstore-alt" --image dense:v1 --disk "$T" --size "$DENSE_DISK" --slots 1 --yes; }
[[ -z $ALT ]] || add_case "imprint-deploy-dense-alt" "$DENSE" fresh dalt_run dense_check
run_cases

# ================================================================ phase breakdown
# One more deploy of each case with --json; every event line gets a
# timestamp, so the time of each phase (partition, write, verify) shows.
phase_table() { # EVENTS T0
	awk -v t0="$2" '
		NR == 1 { prev = t0 }
		{ t = $1 }
		/"event":"plan"/ && !p0 { printf "open+plan %.2fs; ", t - t0; p0 = 1; last = t }
		/"event":"phase"/ { match($0, /"phase":"[a-z]+"/); p = substr($0, RSTART + 9, RLENGTH - 10)
			if (cur != "" && cur != "partitioned") printf "%s %.2fs; ", cur, t - last; cur = p; last = t }
		/"event":"result"/ { if (cur != "") printf "%s %.2fs; ", cur, t - last; cur = ""; last = t }
		END { printf "total %.2fs\n", t - t0 }
	' "$1"
}
run_phases() { # KEY RUN...
	local key=$1
	shift
	fresh
	drop_caches
	local t0=$EPOCHREALTIME
	"$@" --json | while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done >"$LOGS/$key.events"
	phase_table "$LOGS/$key.events" "$t0"
}
log "phase breakdown (one extra run each, with --json)"
PH_SPARSE=$(run_phases phases-sparse dep_run)
PH_DENSE=$(run_phases phases-dense ddep_run)
fresh

# ================================================================ report
r2() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a >= b)}'; }

desc() {
	case $1 in
	imprint-build) echo "imprint build --disk-image (not compared)" ;;
	imprint-build-dense) echo "imprint build --partition (not compared)" ;;
	imprint-deploy) echo "imprint deploy (verify on)" ;;
	imprint-deploy-noverify) echo "imprint deploy --no-verify" ;;
	bmaptool-copy) echo "bmaptool copy --bmap, raw image (checksums on)" ;;
	bmaptool-copy-zst) echo "bmaptool copy --bmap, .img.zst (checksums on)" ;;
	dd-sparse) echo "dd bs=4M conv=sparse,fsync" ;;
	imprint-deploy-dense) echo "imprint deploy (verify on)" ;;
	imprint-deploy-dense-noverify) echo "imprint deploy --no-verify" ;;
	dd-dense) echo "dd bs=4M oflag=direct conv=fsync" ;;
	imprint-deploy-baseline | imprint-deploy-dense-baseline) echo "baseline imprint deploy (verify on): BENCH_BASELINE" ;;
	imprint-build-alt) echo "imprint build --disk-image --chunk-size $ALT (not compared)" ;;
	imprint-build-dense-alt) echo "imprint build --partition --chunk-size $ALT (not compared)" ;;
	imprint-deploy-alt | imprint-deploy-dense-alt) echo "imprint deploy (verify on), chunk size $ALT" ;;
	imprint-deploy-http) echo "imprint deploy (verify on) from imprint serve, 127.0.0.1" ;;
	imprint-deploy-http-alt) echo "imprint deploy (verify on) from imprint serve, 127.0.0.1, chunk size $ALT" ;;
	esac
}
case_of() { case $1 in *dense*) echo dense ;; *) echo sparse ;; esac }

SP_RATIO=$(r2 "${MED[imprint-deploy]}" "${MED[bmaptool-copy]}")
SP_RATIO_NV=$(r2 "${MED[imprint-deploy-noverify]}" "${MED[bmaptool-copy]}")
SP_RATIO_Z=$(r2 "${MED[imprint-deploy]}" "${MED[bmaptool-copy-zst]}")
SP_RATIO_DD=$(r2 "${MED[imprint-deploy]}" "${MED[dd-sparse]}")
# throughput ratio = dd time / imprint time
DN_RATIO=$(r2 "${MED[dd-dense]}" "${MED[imprint-deploy-dense]}")
DN_RATIO_NV=$(r2 "${MED[dd-dense]}" "${MED[imprint-deploy-dense-noverify]}")
if ge 0.5 "$SP_RATIO"; then G1="HOLDS"; else G1="MISSED"; fi
if ge "$DN_RATIO" 0.9; then G2="HOLDS"; else G2="MISSED"; fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(awk -v a="$T_START" -v b="$(now)" 'BEGIN {printf "%.0f", b - a}')

report() {
	echo "## imprint benchmark results"
	echo
	echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') RAM, imprint $IMPRINT_ID, quick=$QUICK, chunk size ${CHUNK:-default}${ALT:+ (and $ALT)}, $REPS runs each, median, ${SETTLE}s pause after each cache drop; whole run ${T_TOTAL}s; load average before the run $LOAD0, after it $LOAD1."
	echo
	echo "Sparse case: $((DISK / MiB)) MiB GPT disk image, ext4 root holding $((TREE_BYTES / MiB)) MiB of files ($((COMP / MiB)) MiB from /usr, $((RAND / MiB)) MiB random); $((MAPPED_BYTES / MiB)) MiB mapped by the bmap. Dense case: $((DENSE / MiB)) MiB of random data as one partition. MB/s = mapped (sparse) or partition (dense) bytes / wall time; 1 MB = 10^6 bytes. Page cache dropped before every run; every target checked byte for byte (cmp) afterwards, imprint targets also with \`imprint verify\`."
	echo
	echo "| tool | case | median s | MB/s | runs (s) |"
	echo "|---|---|---:|---:|---|"
	local k
	for k in "${ORDER[@]}"; do
		printf '| %s | %s | %.2f | %s | %s |\n' "$(desc "$k")" "$(case_of "$k")" "${MED[$k]}" "$(mbps "${BYTES[$k]}" "${MED[$k]}")" "${ALL[$k]}"
	done
	echo
	echo "| ratio | value | goal |"
	echo "|---|---:|---|"
	echo "| sparse: imprint deploy (verify) / bmaptool copy, time | $SP_RATIO | ≤ 0.50: **$G1** |"
	echo "| sparse: imprint deploy --no-verify / bmaptool copy, time | $SP_RATIO_NV | (information) |"
	echo "| sparse: imprint deploy (verify) / bmaptool copy .zst, time | $SP_RATIO_Z | (information) |"
	echo "| sparse: imprint deploy (verify) / dd conv=sparse, time | $SP_RATIO_DD | (information) |"
	echo "| dense: imprint deploy (verify) / dd, throughput | $DN_RATIO | ≥ 0.90: **$G2** |"
	echo "| dense: imprint deploy --no-verify / dd, throughput | $DN_RATIO_NV | (information) |"
	if [[ -n $ALT ]]; then
		echo "| sparse: imprint deploy at $ALT / at ${CHUNK:-the default}, time | $(r2 "${MED[imprint-deploy-alt]}" "${MED[imprint-deploy]}") | (information: chunk size) |"
		echo "| dense: imprint deploy at $ALT / at ${CHUNK:-the default}, time | $(r2 "${MED[imprint-deploy-dense-alt]}" "${MED[imprint-deploy-dense]}") | (information: chunk size) |"
		[[ $HTTP != 1 ]] || echo "| sparse over HTTP: imprint deploy at $ALT / at ${CHUNK:-the default}, time | $(r2 "${MED[imprint-deploy-http-alt]}" "${MED[imprint-deploy-http]}") | (information: chunk size) |"
	fi
	if [[ -n $BASE ]]; then
		echo "| sparse: baseline imprint deploy (verify) / bmaptool copy, time | $(r2 "${MED[imprint-deploy-baseline]}" "${MED[bmaptool-copy]}") | (information: before) |"
		echo "| dense: baseline imprint deploy (verify) / dd, throughput | $(r2 "${MED[dd-dense]}" "${MED[imprint-deploy-dense-baseline]}") | (information: before) |"
	fi
	echo
	echo "imprint deploy phases (one extra run, --json event times):"
	echo
	echo "- sparse: $PH_SPARSE"
	echo "- dense: $PH_DENSE"
	echo
	echo "bmaptool checks the bmap's SHA-256 of the data it reads while copying (its default); it does not read the target back. imprint's default reads every written chunk back from the target (with O_DIRECT where the target allows it, so from the device, not the page cache) and checks its SHA-256."
}
report | tee "$OUT/results.md"
log "done in ${T_TOTAL}s; table also in $OUT/results.md"
