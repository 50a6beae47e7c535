#!/usr/bin/env bash
# The CPU a 1 MiB chunk costs the on-demand root's server (zstd decode +
# SHA-256, image.Decoder), natively and under QEMU TCG with the CPU models
# the diskless bench compares (IMPRINT_BENCH_CPU). Needs qemu-user
# (apt-get install qemu-user): its TCG is the same translator as
# qemu-system-x86_64's, without a guest kernel.
#
#   bash bench/chunkcpu/run.sh [FILE]    # default: the Go compiler binary (~30 % as zstd, like a root's /usr)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
FILE=${1:-$(go env GOROOT)/pkg/tool/$(go env GOOS)_$(go env GOARCH)/compile}
BIN=$(mktemp)
trap 'rm -f "$BIN"' EXIT
CGO_ENABLED=0 go build -o "$BIN" ./bench/chunkcpu
echo "== native"; "$BIN" ${FILE:+"$FILE"}
# Go's own switch: as a CPU with AVX2 and no SHA-NI (Intel Xeons before
# Ice Lake) would hash. x/sys/cpu warns that it does not know the name.
echo "== native, GODEBUG=cpu.sha=off"; GODEBUG=cpu.sha=off "$BIN" ${FILE:+"$FILE"} 2>&1 | grep -v 'unknown cpu feature'
if ! command -v qemu-x86_64 >/dev/null; then
	echo "no qemu-x86_64: apt-get install qemu-user for the TCG figures" >&2
	exit 1
fi
for cpu in ${CPUS:-qemu64 max}; do
	echo "== qemu-x86_64 -cpu $cpu"; qemu-x86_64 -cpu "$cpu" "$BIN" ${FILE:+"$FILE"}
done
