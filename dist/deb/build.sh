#!/bin/bash
# Builds the Debian package dist/out/imprint_<version>_amd64.deb with plain
# dpkg-deb: the static binary, the imprint-serve unit, man pages and shell
# completions generated from cli's command tree (dist/gen).
# Usage: dist/deb/build.sh [OUTDIR]      (make package)
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
out=${1:-dist/out}
maintainer=${DEB_MAINTAINER:-imprint maintainers <maintainers@imprint-dev.invalid>}

# One version for the package, the binary and the man pages; the commit time
# (not the build time) keeps two builds of one commit identical.
describe=$(git describe --tags --always --dirty)
epoch=$(git log -1 --format=%ct)
version=$("$GO" run ./dist/gen debversion -describe "$describe" -date "$epoch")

stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
umask 022

CGO_ENABLED=0 "$GO" build -trimpath \
	-ldflags "-s -w -X github.com/imprint-dev/imprint/cli.version=$version" \
	-o "$stage/usr/bin/imprint" ./cmd/imprint
install -D -m 0644 dist/imprint-serve.service "$stage/lib/systemd/system/imprint-serve.service"
install -D -m 0644 dist/imprint-bless.service "$stage/lib/systemd/system/imprint-bless.service"
install -D -m 0644 dist/imprint-sync.service "$stage/lib/systemd/system/imprint-sync.service"
install -D -m 0644 dist/imprint-sync.timer "$stage/lib/systemd/system/imprint-sync.timer"
"$GO" run ./dist/gen docs -root "$stage" -version "$version" -date "$epoch"

mkdir -p "$stage/DEBIAN"
installed_kib=$(du -sk --apparent-size "$stage" | cut -f1)
# Depends: what every deploy and build execs (mkfs.ext4). Recommends: what
# deploy installs onto the ESP and what serve hands out (systemd-boot, GRUB
# EFI and BIOS with grub-mkimage, iPXE). Suggests: QEMU and OVMF, used only
# by `imprint vm` and several hundred MB an imaging host rarely needs.
cat >"$stage/DEBIAN/control" <<CONTROL
Package: imprint
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $installed_kib
Depends: e2fsprogs
Recommends: systemd-boot-efi, grub-efi-amd64-bin, grub-pc-bin, ipxe
Suggests: qemu-system-x86, ovmf
Section: admin
Priority: optional
Homepage: https://github.com/imprint-dev/imprint
Description: make many machines run one master root image, bit-for-bit
 imprint partitions a disk, writes a master image onto it bit-for-bit and
 proves it, installs a boot menu that starts the node from its local disk or
 diskless from the network, turns a deployed disk back into a portable
 master, and serves images onward over HTTP, DHCP and TFTP.
 .
 One static binary; see imprint(1). The imprint-serve unit is installed
 but not enabled.
CONTROL
# The unit ships disabled (its store and image are site-specific); systemd
# only has to notice that it appeared or went away.
for script in postinst postrm; do
	cat >"$stage/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
SCRIPT
	chmod 0755 "$stage/DEBIAN/$script"
done

find "$stage" -exec touch -h -d "@$epoch" {} +
mkdir -p "$out"
rm -f "$out"/imprint_*.deb
deb="$out/imprint_${version}_amd64.deb"
SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
