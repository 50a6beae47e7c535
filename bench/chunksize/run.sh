#!/usr/bin/env bash
# Chunk-size benchmark (docs/chunk-size.md): how many chunks change between
# two builds of a real Debian root that differ by one small package.
#
#   bash bench/chunksize/run.sh
#
#   CHUNKSIZE_SIZES=64K,256K,1M,4M,16M   chunk sizes
#   CHUNKSIZE_PACKAGE=less               the package v2 adds (from the host's apt)
#   BENCH_DIR=/some/dir                  work directory (default: a new /var/tmp dir)
#   BENCH_KEEP=1                         keep the work directory
#
# v1 = the cached debootstrap tree (scripts/debian-root.sh), v2 = the same
# tree with the package installed into it with dpkg. Both trees live on a
# noatime tmpfs (~1 GiB of RAM) because mkfs.ext4 -d copies atime and ctime
# into the image: reading a tree must not change the next build.
#
# Builds compared, each at every chunk size:
#   control   v1 built twice (must fetch nothing: reproducibility check)
#   a         fresh mkfs.ext4 -d of each tree, as imprint build --rootfs does
#             today (size estimated per tree, UUID and hash seed from the tree)
#   a-size    as a, v2 at v1's size
#   a-pinned  as a-size, v2 with v1's UUID and hash seed
#   b         v1's image copied, loop-mounted noatime, rsync --delete from tree v2, unmounted
# Needs root, mkfs.ext4, rsync, dpkg, zstd, go. Output: tables on stdout and
# in bench/chunksize/out/results.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SIZES=${CHUNKSIZE_SIZES:-64K,256K,1M,4M,16M}
PKG=${CHUNKSIZE_PACKAGE:-less}
OUT=$ROOT/bench/chunksize/out
W=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-chunksize.XXXXXX)}
mkdir -p "$W" "$OUT"
log() { printf '[chunksize %s] %s\n' "$(date +%T)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (tmpfs, loop mount, dpkg --root)" >&2; exit 1; }
for t in mkfs.ext4 rsync dpkg zstd go e2fsck; do
	command -v "$t" >/dev/null || { echo "run.sh: $t is not installed" >&2; exit 1; }
done

cleanup() {
	umount "$W/mnt" 2>/dev/null || true
	umount "$W/tree" 2>/dev/null || true
	if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

tar=$(bash "$ROOT/scripts/debian-root.sh")
log "root tree: $tar"
(cd "$ROOT" && go build -o "$W/chunksize" ./bench/chunksize)

# The builder's mke2fs.conf, taken from its source so the two cannot drift.
sed -n '/^const mke2fsConf = `/,/^`/p' "$ROOT/builder/rootfs.go" | sed '1s/.*`//;$d' >"$W/mke2fs.conf"
grep -q 'metadata_csum' "$W/mke2fs.conf" || { echo "run.sh: could not extract mke2fsConf from builder/rootfs.go" >&2; exit 1; }

# uuid SEED: a version-4-layout UUID from a seed, as builder.uuidFrom does.
uuid() {
	local h
	h=$(printf '%s' "$1" | sha256sum | cut -c1-32)
	printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" $(((0x${h:16:2} & 0x3f) | 0x80)) "${h:18:2}" "${h:20:12}"
}
# treeinfo TREE: prints "DIGEST NEWEST_MTIME ESTIMATED_SIZE". The digest
# stands in for builder.treeDigest (any value that differs between the
# trees gives the same effect: a different UUID and hash seed); the size is
# the builder's estimate, rounded up to 1 MiB.
treeinfo() {
	local d
	d=$(cd "$1" && find . -printf '%p %y %m %U %G %s %T@ %l\n' | LC_ALL=C sort | sha256sum | cut -c1-64)
	(cd "$1" && find . -printf '%y %s %T@\n') | awk -v d="$d" '
		{ files++; if ($1 == "f") data += int(($2 + 4095) / 4096) * 4096; t = int($3); if (t > newest) newest = t }
		END { size = data + int(data / 4) + files * (4096 + 256) + 24 * 1048576; size = int((size + 1048575) / 1048576) * 1048576
		      printf "%s %d %d\n", d, newest, size }'
}
# mkext4 TREE OUT SIZE DIGEST NEWEST: the builder's makeExt4.
mkext4() {
	rm -f "$2"
	truncate -s "$3" "$2"
	MKE2FS_CONFIG=$W/mke2fs.conf E2FSPROGS_FAKE_TIME=$5 MKE2FS_DEVICE_SECTSIZE=512 MKE2FS_DEVICE_PHYS_SECTSIZE=4096 \
		mkfs.ext4 -q -F -t ext4 -L root -U "$(uuid "fs-uuid:$4")" \
		-E "hash_seed=$(uuid "hash-seed:$4"),root_owner=0:0,nodiscard" -d "$1" "$2"
}

mkdir -p "$W/tree" "$W/mnt"
mount -t tmpfs -o size=3G,noatime,mode=755 tmpfs "$W/tree"
log "unpacking v1"
tar -C "$W/tree" --numeric-owner --xattrs --xattrs-include='*' -xf "$tar"
read -r d1 t1 s1 < <(treeinfo "$W/tree")
log "v1: $(du -sh --apparent-size "$W/tree" | cut -f1) in $(find "$W/tree" | wc -l) entries; image $((s1 >> 20)) MiB"
mkext4 "$W/tree" "$W/v1.img" "$s1" "$d1" "$t1"
mkext4 "$W/tree" "$W/v1-again.img" "$s1" "$d1" "$t1"

log "v2: installing $PKG into the same tree with dpkg"
(cd "$W" && apt-get download "$PKG" >/dev/null 2>&1) || { echo "run.sh: apt-get download $PKG failed" >&2; exit 1; }
deb=$(ls "$W"/"$PKG"_*.deb)
dpkg --root="$W/tree" -i "$deb" >"$W/dpkg.log" 2>&1 ||
	{ cat "$W/dpkg.log" >&2; exit 1; }
read -r d2 t2 s2 < <(treeinfo "$W/tree")
log "v2: $(basename "$deb") ($(dpkg-deb -f "$deb" Installed-Size) KiB installed); image $((s2 >> 20)) MiB"
mkext4 "$W/tree" "$W/v2-a.img" "$s2" "$d2" "$t2"
mkext4 "$W/tree" "$W/v2-a-size.img" "$s1" "$d2" "$t2"
mkext4 "$W/tree" "$W/v2-a-pinned.img" "$s1" "$d1" "$t2"

log "b: v1's image, mounted, rsync --delete from tree v2"
cp --sparse=always "$W/v1.img" "$W/v2-b.img"
mount -o loop,noatime "$W/v2-b.img" "$W/mnt"
rsync -aHAX --delete --numeric-ids --exclude=/lost+found "$W/tree/" "$W/mnt/" >"$W/rsync.log" 2>&1 || { cat "$W/rsync.log" >&2; exit 1; }
umount "$W/mnt"
e2fsck -fn "$W/v2-b.img" >"$W/fsck.log" 2>&1 || { cat "$W/fsck.log" >&2; echo "run.sh: b image fails e2fsck" >&2; exit 1; }
# Where b's changes land: the journal is rewritten by every mount.
jblocks=$(debugfs -R 'stat <8>' "$W/v2-b.img" 2>/dev/null | sed -n 's/.*(0-[0-9]*):\([0-9]*\)-\([0-9]*\).*/\1 \2/p' | head -n1)

{
	echo "# chunk size: v1 -> v1 + $PKG ($(basename "$deb")), $(date -u +%F)"
	echo
	echo "tree: $(basename "$tar"), image v1 $((s1 >> 20)) MiB, v2 (as built today) $((s2 >> 20)) MiB; ext4 journal blocks: ${jblocks:-?}"
	echo "columns: moved = positions whose chunk differs; fetched = distinct non-zero chunks of v2 not in v1 (what a node downloads);"
	echo "% of stored = fetched / distinct non-zero chunks of v2; full deploy = all of v2, zstd; manifest = v2's chunk list bytes"
	"$W/chunksize" -sizes "$SIZES" -label "control: v1 built twice" "$W/v1.img" "$W/v1-again.img"
	"$W/chunksize" -sizes "$SIZES" -label "a: fresh mkfs.ext4 -d, as imprint build --rootfs today" "$W/v1.img" "$W/v2-a.img"
	"$W/chunksize" -sizes "$SIZES" -label "a-size: fresh mkfs.ext4 -d, v2 at v1's size" "$W/v1.img" "$W/v2-a-size.img"
	"$W/chunksize" -sizes "$SIZES" -label "a-pinned: fresh mkfs.ext4 -d, v1's size, UUID and hash seed" "$W/v1.img" "$W/v2-a-pinned.img"
	"$W/chunksize" -sizes "$SIZES" -label "b: v1's image + rsync --delete of tree v2 (loop mount, noatime)" "$W/v1.img" "$W/v2-b.img"
	echo
	echo "per-chunk overhead (loopback HTTP, keep-alive; manifest = chunk list only)"
	echo
	"$W/chunksize" -sizes "$SIZES" -overhead
} | tee "$OUT/results.md"
