#!/usr/bin/env bash
# make demo: build a tiny image, deploy it to a disk image file, boot it in
# QEMU (UEFI, software emulation), then verify and inspect the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
imprint=bin/imprint
out=demo
rm -rf "$out" && mkdir -p "$out"

step() { printf '\n=== %s\n' "$*"; }

step "1/5 build the test system (Debian kernel + busybox; the kernel .deb is cached in /var/cache/imprint)"
go run ./scripts/mkfixture "$out/fixture" | tee "$out/fixture.json"
want=$(sed -n 's/.*"file_sha256": "\(.*\)".*/\1/p' "$out/fixture.json")

step "2/5 imprint build: the root tree becomes a reproducible, versioned image"
$imprint build --store "$out/store" --name demo --rootfs "$out/fixture/rootfs" --cmdline "console=ttyS0 ro panic=1"
$imprint inspect "$out/store" --image demo

step "3/5 imprint deploy: partition demo.img, write the image bit-for-bit, verify, install the boot menu"
$imprint deploy --from "$out/store" --image demo --disk "$out/demo.img" --size 1G --yes --boot-timeout 1

step "4/5 imprint vm: boot demo.img under QEMU with OVMF (no KVM here: this takes a minute)"
$imprint vm "$out/demo.img" --until "IMPRINT-TEST root: ok" --timeout 6m | tee "$out/console.log"
grep -q "IMPRINT-TEST root: sha256=$want" "$out/console.log" || { echo "demo: the booted root does not hold the image's file" >&2; exit 1; }

step "5/5 what was done"
$imprint verify --disk "$out/demo.img"
$imprint inspect "$out/demo.img"
$imprint boot list --disk "$out/demo.img"
echo
echo "demo: booted the image from $out/demo.img; the file in its root hashes to $want, as built."
