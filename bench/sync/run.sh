#!/usr/bin/env bash
# imprint sync benchmark (synthetic): v2 differs from v1 in 1 % of the root's
# chunks. Times `imprint sync` against a full `imprint deploy` of the same
# version in the same run, and compares the bytes sync fetched with the
# compressed size of the chunks that changed.
#
#   bash bench/sync/run.sh                 1 GiB root, 4 MiB chunks
#   BENCH_QUICK=1 bash bench/sync/run.sh   256 MiB root
#   BENCH_DIR=/big/disk bash ...           where the work files go
#
# Two syncs are measured:
#   first:  v1 deployed with two slots (slot b empty) -> sync v2 into b: every
#           chunk is written, all but the changed ones read from slot a;
#   steady: then v3 (1 % changed from v2) into slot a, which holds v1: only
#           the chunks that differ from v1 are written.
# Needs bin/imprint (make build), python3. Prints a table; appends nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMPRINT=$ROOT/bin/imprint
[[ -x $IMPRINT ]] || { echo "bench/sync: build bin/imprint first (make build)" >&2; exit 1; }
W=${BENCH_DIR:-$ROOT/bench/out/sync}
MiB=$((1 << 20))
SIZE=$((1024 * MiB))
[[ ${BENCH_QUICK:-0} == 1 ]] && SIZE=$((256 * MiB))
rm -rf "$W" && mkdir -p "$W"
trap '[[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$W"' EXIT

# The root: half random, half compressible text, 4 MiB chunks; v2 and v3
# each change 1 % of the chunks (at least one), spread over the root.
python3 - "$W" "$SIZE" <<'PY'
import os, sys, random
w, size = sys.argv[1], int(sys.argv[2])
chunk = 4 << 20
n = size // chunk
rnd = random.Random(1)
def text(k):
    words = [b"imprint", b"slot", b"chunk", b"sync", b"kernel", b"root", b"boot", b"store"]
    out = bytearray()
    while len(out) < k:
        out += b" ".join(rnd.choice(words) for _ in range(16)) + b"\n"
    return bytes(out[:k])
data = bytearray()
for i in range(n):
    data += os.urandom(chunk) if i % 2 == 0 else text(chunk)
open(f"{w}/root-1", "wb").write(data)
k = max(1, n // 100)
for v in (2, 3):
    for j in range(k):
        i = (j * n // k + v * 7) % n
        off = i * chunk + 4096 * v
        data[off:off + 4096] = os.urandom(4096)
    open(f"{w}/root-{v}", "wb").write(data)
open(f"{w}/vmlinuz", "wb").write(os.urandom(8 << 20))
for f in ("sd.efi", "ipxe.efi"):
    open(f"{w}/{f}", "wb").write(b"MZ stand-in " + f.encode())
PY
for v in 1 2 3; do
	"$IMPRINT" build --store "$W/store" --name node --version "$v" --partition "root=$W/root-$v" \
		--kernel "$W/vmlinuz" --loader "systemd-bootx64.efi=$W/sd.efi" --loader "ipxe.efi=$W/ipxe.efi" >/dev/null 2>&1
done
now() { date +%s.%N; }
DISKSZ=$((SIZE * 4 + 1024 * MiB))

# Full deploy of v2 (two slots, like the synced disk; no read-back, like sync).
t0=$(now)
"$IMPRINT" deploy --from "$W/store" --image node:2 --disk "$W/full.img" --size "$DISKSZ" --slots 2 --yes --no-verify >/dev/null 2>&1
t1=$(now)
"$IMPRINT" deploy --from "$W/store" --image node:3 --disk "$W/full3.img" --size "$DISKSZ" --slots 2 --yes --no-verify >/dev/null 2>&1
t1b=$(now)
rm -f "$W/full.img" "$W/full3.img"
"$IMPRINT" deploy --from "$W/store" --image node:1 --disk "$W/node.img" --size "$DISKSZ" --slots 2 --yes --no-verify >/dev/null 2>&1
t2=$(now)
"$IMPRINT" sync --from "$W/store" --image node:2 --disk "$W/node.img" --json | tail -1 >"$W/sync2.json"
t3=$(now)
"$IMPRINT" sync --from "$W/store" --image node:3 --disk "$W/node.img" --json | tail -1 >"$W/sync3.json"
t4=$(now)
"$IMPRINT" verify --disk "$W/node.img" >/dev/null 2>&1

python3 - "$W" "$t0" "$t1" "$t1b" "$t2" "$t3" "$t4" "$SIZE" <<'PY'
import json, os, sys
w = sys.argv[1]
t0, t1, t1b, t2, t3, t4 = map(float, sys.argv[2:8])
size = int(sys.argv[8])
def chunks(v):
    m = json.load(open(f"{w}/store/images/node/{v}/manifest.json"))
    out = set()
    for p in m["partitions"]:
        out |= set(c for c in p["content"]["chunks"] if c != "zero")
    for c in (m["boot"]["kernel"], m["boot"].get("initrd")):
        if c: out |= set(c["chunks"])
    return out
def stored(s):
    return sum(os.path.getsize(f"{w}/store/chunks/{c[:2]}/{c}") for c in s)
c1, c2, c3 = chunks(1), chunks(2), chunks(3)
rows = []
for name, res_file, full, new in (("first sync (slot b empty), v1 -> v2", "sync2.json", t1 - t0, c2 - c1),
                                  ("steady sync (slot a holds v1), v2 -> v3", "sync3.json", t1b - t1, c3 - c1 - c2)):
    r = json.load(open(f"{w}/{res_file}"))["result"]
    el = r["elapsed_ns"] / 1e9
    fetched = r["bytes_fetched_stored"]
    want = stored(new)
    rows.append((name, el, full, el / full, fetched, want, fetched / want if want else float("nan"),
                 r["bytes_in_place"], r["bytes_local"], r["bytes_fetched"]))
print(f"root {size >> 20} MiB, 4 MiB chunks; full deploys: v2 {t1 - t0:.2f} s, v3 {t1b - t1:.2f} s")
print(f"{'sync':44} {'time':>7} {'full':>7} {'ratio':>6} {'fetched':>10} {'changed':>10} {'x':>5} {'in place':>10} {'local':>10} {'raw fetched':>11}")
for r in rows:
    print(f"{r[0]:44} {r[1]:6.2f}s {r[2]:6.2f}s {r[3]:6.1%} {r[4]:10d} {r[5]:10d} {r[6]:5.2f} {r[7]:10d} {r[8]:10d} {r[9]:11d}")
PY
