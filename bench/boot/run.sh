#!/usr/bin/env bash
# Boot time of a deployed disk's local entry through imprint's agent
# (local mode: root by PARTUUID, identity, overlay) against the image's own
# initrd (entry local-initrd), same VM, same run, 3 boots each, medians;
# plus the agent's time to apply identity and the overlay's memory.
# Needs QEMU and OVMF (make deps). Takes about 5 minutes under TCG.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
IMPRINT_BENCH_BOOT=1 go test -count=1 -tags vmtest -timeout 30m -run '^TestBootTimeAgentVsOwnInitrd$' -v ./vmtests/ |
	sed -n '/BOOT TIMES/,/overlay adds/p;/boot [0-9]: /p;/^--- \|^FAIL\|^ok/p'
