#!/usr/bin/env bash
# Diskless boot of the Debian 12 root (vmtests/fixture, scripts/debian-root.sh)
# against the same image booted from a local disk, same VM kind (OVMF +
# systemd-boot from a disk, TCG, 1 CPU, 2 GiB), same run, interleaved:
# (a) local entry, (b) diskless imprint.root=ram, (c) diskless
# imprint.root=ondemand. Time from QEMU's start to systemd's "Reached target
# multi-user.target" on the console, as ratios to (a); chunk bytes the HTTP
# server sent and the NBD server fetched, as a share of the root; the
# guest's meminfo and the root server's RSS after boot. Then the root plus
# 2 GiB of random filler: ram vs ondemand, and both in a 1 GiB VM.
#
#   bench/diskless/run.sh            # 2 boots per case (20-40 min under TCG, by load)
#   IMPRINT_BENCH_REPS=3 bench/diskless/run.sh
#   IMPRINT_BENCH_PARTS=small IMPRINT_BENCH_NORAM=1 IMPRINT_BENCH_READAHEAD=2 bench/diskless/run.sh
#       # ondemand with read-ahead off vs imprint.readahead=2 (default 8), no ram case
#   IMPRINT_BENCH_CPU=qemu64,max IMPRINT_BENCH_PARTS=small IMPRINT_BENCH_READAHEAD=0 bench/diskless/run.sh
#       # every small case once per QEMU CPU model (-cpu) a round, as case@model
#       # (default: QEMU's own, qemu64); READAHEAD=0 leaves the read-ahead case out
#   IMPRINT_BENCH_CHUNK="1M 256K 128K" IMPRINT_BENCH_PARTS=small IMPRINT_BENCH_NORAM=1 IMPRINT_BENCH_READAHEAD=0 bench/diskless/run.sh
#       # one image of the root per chunk size (imprint build --chunk-size), every
#       # diskless case once per size a round, as case/size; local once a round
#   IMPRINT_BENCH_SLICE="0 64K 128K" IMPRINT_BENCH_PARTS=small IMPRINT_BENCH_NORAM=1 IMPRINT_BENCH_READAHEAD=0 bench/diskless/run.sh
#       # the ondemand case once per imprint.slice= value a round, as dl-ondemand-s<value>
#       # (0: whole chunks; else signed pieces from the server's web seed, which is on here)
#
# Needs QEMU and OVMF (make deps) and the cached Debian root (built on first
# use, ~9 min). The whole log goes to $LOG (default /tmp/imprint-bench-diskless.log).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
LOG=${LOG:-/tmp/imprint-bench-diskless.log}
IMPRINT_BENCH_DISKLESS=1 go test -count=1 -tags vmtest -timeout 120m -run '^TestDisklessBootTimes$' -v ./vmtests/ >"$LOG" 2>&1 || true
sed -n '/ boot [0-9].*multi-user after\|in 1 GiB\|images built/p;/DISKLESS BOOT TIMES/,/load (uptime)/p;/^--- \|^FAIL\|^ok/p' "$LOG"
