#!/usr/bin/env bash
# A real Debian 12 root tree, built once with debootstrap and cached as a
# tarball keyed by everything that decides its contents (suite, variant,
# package list, pruning). Later callers unpack it in seconds.
#
#   scripts/debian-root.sh [OUT_TAR]
#
# Prints the path of the tarball: OUT_TAR if given (a hard link or copy of the
# cached file), else /var/cache/imprint/debian-<hash>.tar.zst. Reuses the
# cached tarball when it is there; builds it (~9 min, needs root and the
# Debian mirror apt is configured with) when it is not. Concurrent callers
# wait for one build.
#
# Unpack with:  mkdir t && tar -C t --numeric-owner --xattrs --xattrs-include='*' -xf TAR
#
# Environment:
#   DEBIAN_ROOT_PACKAGES  comma-separated packages added to minbase
#                         (default below; changes the cache key)
#   DEBIAN_ROOT_MIRROR    mirror URL (default: the first deb.debian.org-style
#                         URI of apt's sources; not part of the key)
#   IMPRINT_CACHE         cache directory (default /var/cache/imprint)
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
PACKAGES=${DEBIAN_ROOT_PACKAGES:-systemd-sysv,linux-image-amd64,initramfs-tools,udev,kmod,e2fsprogs,iproute2}
# What is removed after debootstrap: documentation, translations and apt's
# package lists/caches. None of it is needed to boot, and apt's lists would
# otherwise make every tree depend on the day it was built. Bump PRUNE_REV
# when this changes (it is part of the key).
PRUNE_REV=1
CACHE=${IMPRINT_CACHE:-/var/cache/imprint}

key=$(printf 'suite=%s\nvariant=%s\npackages=%s\nprune=%s\n' "$SUITE" "$VARIANT" \
	"$(tr ',' '\n' <<<"$PACKAGES" | sort -u | paste -sd,)" "$PRUNE_REV" | sha256sum | cut -c1-16)
tarball=$CACHE/debian-$key.tar.zst

die() { echo "debian-root.sh: $*" >&2; exit 1; }

mirror() {
	if [ -n "${DEBIAN_ROOT_MIRROR:-}" ]; then echo "$DEBIAN_ROOT_MIRROR"; return; fi
	local m
	m=$(grep -hoE '(URIs:|^deb)[[:space:]]+[^[:space:]]*/debian/?([[:space:]]|$)' \
		/etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | awk '{print $2}' | head -n1 || true)
	echo "${m:-http://deb.debian.org/debian}"
}

build() {
	[ "$(id -u)" = 0 ] || die "building the tree needs root (debootstrap)"
	command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
	command -v zstd >/dev/null || die "zstd is not installed"
	local work tree
	work=$(mktemp -d "$CACHE/debian-build.XXXXXX")
	# shellcheck disable=SC2064
	trap "umount -R '$work/tree' 2>/dev/null || true; rm -rf '$work'" EXIT
	tree=$work/tree
	echo "debian-root.sh: debootstrap --variant=$VARIANT --include=$PACKAGES $SUITE (about 9 minutes)" >&2
	debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$tree" "$(mirror)" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	rm -rf "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/info/* \
		"$tree"/usr/share/locale/* "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin \
		"$tree"/var/cache/apt/archives/*.deb "$tree"/var/log/*.log
	tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --sort=name -cf - . |
		zstd -q -T0 -10 -o "$work/out.tar.zst"
	mv "$work/out.tar.zst" "$tarball"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/debian-$key.lock"
flock 9
[ -s "$tarball" ] || build
flock -u 9

if [ $# -ge 1 ] && [ -n "$1" ]; then
	out=$1
	if [ "$(realpath -m "$out")" != "$(realpath "$tarball")" ]; then
		rm -f "$out"
		ln "$tarball" "$out" 2>/dev/null || cp "$tarball" "$out"
	fi
	echo "$out"
else
	echo "$tarball"
fi
