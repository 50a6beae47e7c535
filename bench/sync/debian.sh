#!/usr/bin/env bash
# imprint sync benchmark (realistic): a Debian 12 root (scripts/debian-root.sh)
# as v1, v2 = the same tree with one small package installed into it.
# Reports the bytes `imprint sync` fetches from v1 to v2 as a share of the
# full image, beside RAUC's published "around 10 %" and systemd-sysupdate's
# 100 %, for v2 built with `imprint build --base` and (for comparison) fresh.
#
#   bash bench/sync/debian.sh
#
#   SYNC_CHUNKS="4M 1M"     chunk sizes, one full run each
#   SYNC_PACKAGE=less       the package v2 adds (apt-get download from the host's apt)
#   BENCH_DIR=/some/dir     work directory (default: a new /var/tmp dir)
#   BENCH_KEEP=1            keep it
# Needs root (tmpfs, loop mount), bin/imprint (make build), rsync, dpkg, python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=$ROOT/bin/imprint
[[ -x $IMPRINT ]] || { echo "bench/sync/debian.sh: build bin/imprint first (make build)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "bench/sync/debian.sh: needs root" >&2; exit 1; }
CHUNKS=${SYNC_CHUNKS:-4M 1M}
PKG=${SYNC_PACKAGE:-less}
W=${BENCH_DIR:-$(mktemp -d /var/tmp/imprint-syncdeb.XXXXXX)}
mkdir -p "$W/tree"
log() { printf '[sync-debian %s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
	umount "$W/tree" 2>/dev/null || true
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

tar=$(bash "$ROOT/scripts/debian-root.sh")
# noatime: reading the tree must not change it between builds.
mount -t tmpfs -o size=3G,noatime,mode=755 tmpfs "$W/tree"
tar -C "$W/tree" --numeric-owner --xattrs --xattrs-include='*' -xf "$tar"
(cd "$W" && apt-get download "$PKG" >/dev/null 2>&1) || { echo "debian.sh: apt-get download $PKG failed" >&2; exit 1; }
deb=$(ls "$W"/"$PKG"_*.deb)
log "v1: $(basename "$tar"), $(du -sh --apparent-size "$W/tree" | cut -f1); v2 adds $(basename "$deb") ($(dpkg-deb -f "$deb" Installed-Size) KiB installed)"

results=()
for cs in $CHUNKS; do
	S=$W/store-$cs
	# v1 from the pristine tree; the tree is then changed, so unpack again per chunk size.
	if [[ -e $W/tree/var/lib/dpkg/info/$PKG.list ]]; then
		umount "$W/tree"
		mount -t tmpfs -o size=3G,noatime,mode=755 tmpfs "$W/tree"
		tar -C "$W/tree" --numeric-owner --xattrs --xattrs-include='*' -xf "$tar"
	fi
	log "chunk $cs: build v1"
	"$IMPRINT" build --store "$S" --name deb --version 1 --rootfs "$W/tree" --chunk-size "$cs" >"$W/build1-$cs.log" 2>&1
	dpkg --root="$W/tree" -i "$deb" >"$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log" >&2; exit 1; }
	log "chunk $cs: build v2 --base deb:1, and v2 fresh"
	t0=$(date +%s.%N)
	"$IMPRINT" build --store "$S" --name deb --version 2 --base deb:1 --rootfs "$W/tree" >"$W/build2-$cs.log" 2>&1
	t1=$(date +%s.%N)
	"$IMPRINT" build --store "$S" --name deb --version 2-fresh --rootfs "$W/tree" --chunk-size "$cs" >"$W/build2f-$cs.log" 2>&1
	t2=$(date +%s.%N)
	log "chunk $cs: deploy v1 (two slots), sync to v2"
	rm -f "$W/node.img"
	"$IMPRINT" deploy --from "$S" --image deb:1 --disk "$W/node.img" --size 4G --slots 2 --yes --no-verify >"$W/deploy-$cs.log" 2>&1
	"$IMPRINT" sync --from "$S" --image deb:2-fresh --disk "$W/node.img" --dry-run --json | tail -1 >"$W/fresh-$cs.json"
	"$IMPRINT" sync --from "$S" --image deb:2 --disk "$W/node.img" --json | tail -1 >"$W/sync-$cs.json"
	"$IMPRINT" verify --disk "$W/node.img" >"$W/verify-$cs.log" 2>&1 || { cat "$W/verify-$cs.log" >&2; exit 1; }
	results+=("$cs $S $W/sync-$cs.json $W/fresh-$cs.json $(awk "BEGIN{print $t1 - $t0}") $(awk "BEGIN{print $t2 - $t1}")")
done

python3 - "${results[@]}" <<'PY'
import json, os, sys
def full(store, version):
    m = json.load(open(f"{store}/images/deb/{version}/manifest.json"))
    cs = set()
    raw = 0
    for c in [p["content"] for p in m["partitions"]] + [c for c in m.get("boot", {}).values() if isinstance(c, dict)] + list(m.get("loaders", {}).values()):
        for i, s in enumerate(c["chunks"]):
            if s != "zero" and s not in cs:
                cs.add(s)
                raw += min(m["chunk_size"], c["size"] - i * m["chunk_size"])
    return sum(os.path.getsize(f"{store}/chunks/{s[:2]}/{s}") for s in cs), raw
print("| chunk | v2 built | full image (zstd) | sync fetched (zstd) | share | raw fetched | read from the disk | sync time | build time |")
print("|---|---|---|---|---|---|---|---|---|")
for arg in sys.argv[1:]:
    cs, store, sync, fresh, tb, tf = arg.split()
    r = json.load(open(sync))["result"]
    fz, fraw = full(store, "2")
    print(f"| {cs} | --base deb:1 | {fz/2**20:.1f} MiB | {r['bytes_fetched_stored']/2**20:.2f} MiB | {r['bytes_fetched_stored']/fz:.2%} | {r['bytes_fetched']/2**20:.2f} MiB | {r['bytes_local']/2**20:.0f} MiB | {r['elapsed_ns']/1e9:.1f} s | {float(tb):.0f} s |")
    p = json.load(open(fresh))["result"]["plan"]
    fz2, fraw2 = full(store, "2-fresh")
    print(f"| {cs} | fresh (mkfs -d) | {fz2/2**20:.1f} MiB | (dry run) | {p['bytes_to_fetch']/fraw2:.1%} of raw | {p['bytes_to_fetch']/2**20:.1f} MiB | {p['bytes_local']/2**20:.0f} MiB | | {float(tf):.0f} s |")
print("| | RAUC (published, one package) | | | around 10 % | | | | |")
print("| | systemd-sysupdate | | | 100 % | | | | |")
PY
