#!/usr/bin/env bash
# The copier's cost per byte (issue 14), on a real Debian disk: a verified
# `imprint deploy` from its store against `bmaptool copy` of the raw image
# with its bmap and of the `.img.zst`, page cache warm, wall and CPU time
# (user + sys), every command once per round, medians.
#
#   bash bench/copier/debian.sh
#
#   BENCH_DIR=DIR        work directory (default /var/tmp/imprint-copier; the
#                        disk image, bmap, .zst and store are kept there and
#                        reused by the next run)
#   BENCH_REPS=5         rounds
#   BENCH_BASELINE=BIN   also time another imprint's verified deploys in the
#                        same rounds (before/after under the same load)
#   BENCH_PROFILE=1      one more verified deploy with IMPRINT_CPUPROFILE
#                        (pprof top 10 printed; the profile stays in the work dir)
#   BENCH_TARGET=loop    write to a loop block device (over a 4 GiB file in the
#                        work dir, --direct-io=on) instead of a new image file:
#                        nothing is a hole there, so imprint zeroes the zero
#                        chunks and reads them back; bmaptool leaves them as
#                        they were
#
# imprint-noreadback is `deploy --no-verify`: each chunk still checked
# against its SHA-256 before it is written (bmaptool's level of checking),
# no read-back. Every imprint target is checked with `imprint verify` after its run (not
# timed); bmaptool checks its own copies (the bmap's SHA-256).
#
# Data: the cached Debian 12 root of scripts/debian-root.sh, mkfs.ext4 -d into
# the root partition of a 4 GiB GPT disk image (a 512 MiB ESP left empty,
# the root the rest but 16 MiB). Needs root, bin/imprint, bmap-tools, zstd,
# gdisk, e2fsprogs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[[ -x $ROOT/bin/imprint ]] || { echo "bench/copier/debian.sh: build bin/imprint first (make build)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "bench/copier/debian.sh: needs root" >&2; exit 1; }
W=${BENCH_DIR:-/var/tmp/imprint-copier}
REPS=${BENCH_REPS:-5}
BASE=${BENCH_BASELINE:-}
MiB=$((1 << 20))
DISK=$((4 << 30))
ESP=$((512 * MiB))
log() { printf '[copier-debian %s] %s\n' "$(date +%T)" "$*" >&2; }
mkdir -p "$W"
IMP=$W/imprint
cp "$ROOT/bin/imprint" "$IMP"

if [[ ! -s $W/disk.img.zst ]]; then
	tar=$(bash "$ROOT/scripts/debian-root.sh")
	mkdir -p "$W/tree"
	mountpoint -q "$W/tree" || mount -t tmpfs -o size=3G,noatime,mode=755 tmpfs "$W/tree"
	tar -C "$W/tree" --numeric-owner --xattrs --xattrs-include='*' -xf "$tar"
	rm -f "$W/disk.img" "$W/root.ext4"
	truncate -s "$DISK" "$W/disk.img"
	R1=$((2048 + ESP / 512))
	R2=$((DISK / 512 - 16 * 2048 - 1))
	# No -q: gdisk 1.0.9's sgdisk -q silently writes nothing.
	sgdisk -o -n "1:2048:$((R1 - 1))" -t 1:ef00 -c 1:esp -n "2:$R1:$R2" -t 2:8304 -c 2:root "$W/disk.img" >/dev/null
	truncate -s $(((R2 - R1 + 1) * 512)) "$W/root.ext4"
	mkfs.ext4 -q -F -L root -b 4096 -d "$W/tree" "$W/root.ext4"
	dd if="$W/root.ext4" of="$W/disk.img" bs=64K seek=$((R1 * 512 / 65536)) conv=notrunc,sparse status=none
	rm -f "$W/root.ext4"
	umount "$W/tree"
	bmaptool create -o "$W/disk.bmap" "$W/disk.img" 2>/dev/null
	rm -rf "$W/store"
	"$IMP" build --store "$W/store" --name deb --version 1 --disk-image "$W/disk.img" >"$W/build.log" 2>&1
	zstd -T0 -3 -q -f "$W/disk.img" -o "$W/disk.img.zst"
fi
MAPPED=$(($(sed -n 's:.*<MappedBlocksCount>[[:space:]]*\([0-9]*\).*:\1:p' "$W/disk.bmap") * 4096))
log "disk.img 4 GiB, $((MAPPED / MiB)) MiB mapped; .zst $(($(stat -c %s "$W/disk.img.zst") / MiB)) MiB; imprint $(cd "$ROOT" && git describe --always --dirty)"

T=$W/target.img
TARGET=${BENCH_TARGET:-file}
if [[ $TARGET == loop ]]; then
	truncate -s "$DISK" "$W/loop.img"
	T=$(losetup --show --direct-io=on -f "$W/loop.img")
	trap 'losetup -d "$T"' EXIT
	log "target: loop device $T"
fi

names=(imprint imprint-noreadback bmap-raw bmap-zst)
cmd_imprint() { "$IMP" deploy --from "$W/store" --image deb:1 --disk "$T" --size "$DISK" --yes; }
# The same checks as bmaptool's: every chunk against its SHA-256 before it
# is written, no read-back.
cmd_imprint-noreadback() { "$IMP" deploy --no-verify --from "$W/store" --image deb:1 --disk "$T" --size "$DISK" --yes; }
cmd_bmap-raw() { bmaptool copy --bmap "$W/disk.bmap" "$W/disk.img" "$T"; }
cmd_bmap-zst() { bmaptool copy --bmap "$W/disk.bmap" "$W/disk.img.zst" "$T"; }
if [[ -n $BASE ]]; then
	cp "$BASE" "$W/imprint-base"
	names+=(baseline)
	cmd_baseline() { "$W/imprint-base" deploy --from "$W/store" --image deb:1 --disk "$T" --size "$DISK" --yes; }
fi
# run NAME [TIMES]: one run of a command onto a new target, timed into
# TIMES when given; an imprint target is then checked with imprint verify.
run() {
	if [[ $TARGET != loop ]]; then
		rm -f "$T"
		truncate -s "$DISK" "$T"
	fi
	local out=/dev/null
	[[ -n ${2:-} ]] && out=$2
	/usr/bin/time -f "$1 %e %U %S" -a -o "$out" bash -c "$(declare -f "cmd_$1"); IMP=$IMP W=$W T=$T DISK=$DISK; cmd_$1" >"$W/$1.log" 2>&1 ||
		{ cat "$W/$1.log" >&2; exit 1; }
	if [[ $1 == imprint* || $1 == baseline ]]; then
		"$IMP" verify --disk "$T" >/dev/null || { echo "$1: imprint verify says the target differs" >&2; exit 1; }
	fi
}
# Warm the page cache: one untimed run of each command reads what it reads.
for n in "${names[@]}"; do run "$n"; done
: >"$W/times"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$REPS"); do
	for n in "${names[@]}"; do run "$n" "$W/times"; done
done
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W/times" "${names[@]}" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1]) if l.strip() and l.split()[0] in sys.argv[2:]]
med = {}
print("| command | wall s | user s | sys s | CPU s | runs: wall (CPU) |")
print("|---|---:|---:|---:|---:|---|")
for n in sys.argv[2:]:
    r = [(float(a), float(b), float(c)) for m, a, b, c in rows if m == n]
    w, u, s, c = st.median(x[0] for x in r), st.median(x[1] for x in r), st.median(x[2] for x in r), st.median(x[1] + x[2] for x in r)
    med[n] = (w, c)
    print(f"| {n} | {w:.2f} | {u:.2f} | {s:.2f} | {c:.2f} | {' '.join(f'{x[0]:.2f} ({x[1]+x[2]:.2f})' for x in r)} |")
i = med["imprint"]
for p, goal in (("bmap-raw", 1.0), ("bmap-zst", 0.3)):
    b = med[p]
    print(f"imprint / {p}: wall {i[0]/b[0]:.2f}, CPU {i[1]/b[1]:.2f} (goal <= {goal})")
b, i2 = med["bmap-raw"], med["imprint-noreadback"]
print(f"imprint --no-verify / bmap-raw (the same checks, no read-back): wall {i2[0]/b[0]:.2f}, CPU {i2[1]/b[1]:.2f}")
if "baseline" in med:
    b = med["baseline"]
    print(f"imprint / baseline: wall {i[0]/b[0]:.2f}, CPU {i[1]/b[1]:.2f}")
PY
if [[ ${BENCH_PROFILE:-0} == 1 ]]; then
	for n in imprint ${BASE:+baseline}; do
		bin=$IMP; [[ $n == baseline ]] && bin=$W/imprint-base
		[[ $TARGET == loop ]] || { rm -f "$T"; truncate -s "$DISK" "$T"; }
		IMPRINT_CPUPROFILE=$W/$n.pprof "$bin" deploy --from "$W/store" --image deb:1 --disk "$T" --size "$DISK" --yes >/dev/null 2>&1
		echo "== pprof $n"
		go tool pprof -top -nodecount=10 "$bin" "$W/$n.pprof" 2>/dev/null | sed -n '1,20p'
	done
fi
