#!/usr/bin/env bash
# Per-FUSE-opcode round-trip latency, smoothfs vs mergerfs, same tiers.
#
#   bench/opcodes.sh            (N=3000 files, ROUNDS=3, tmpfs tiers)
#   TIERS=ext4 bench/opcodes.sh (loop-backed ext4 tiers instead)
#
# Runs bench/metabench.c on a smoothfs mount and a mergerfs mount over two
# tmpfs tiers (no device: FUSE and daemon cost only) and records the
# kernel's fuse:fuse_request_send / fuse:fuse_request_end tracepoints with
# `perf`. For each opcode it prints the median and p90 of send -> end: the
# time from the kernel queueing a request to the daemon's reply being
# processed. This is the profile behind the metadata rows of
# docs/benchmarks.md: it says which request type costs what, which ops/s
# alone cannot. Needs root and perf (installed from linux-perf if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${N:-3000}
ROUNDS=${ROUNDS:-3}
TIERS=${TIERS:-tmpfs}
case $TIERS in tmpfs | ext4) ;; *) echo "TIERS must be tmpfs or ext4" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "bench/opcodes.sh needs root" >&2; exit 1; }
command -v mergerfs >/dev/null || bash scripts/install-deps.sh
if ! command -v perf >/dev/null; then
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
tracepoints=$(perf list 2>/dev/null || true)
grep -q fuse:fuse_request_send <<<"$tracepoints" || {
  echo "this kernel has no fuse:fuse_request_send tracepoint" >&2
  exit 1
}
cargo build --release -q -p smoothfs-cli
S=$REPO/target/release/smoothfs
W=$(mktemp -d /tmp/smoothfs-opcodes.XXXXXX)
cleanup() {
  umount "$W/ms" 2>/dev/null || true
  umount "$W/mm" 2>/dev/null || true
  sleep 0.5
  umount "$W/t0" "$W/t1" 2>/dev/null || true
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$W"
}
LOOPS=()
trap cleanup EXIT
cc -O2 -o "$W/metabench" bench/metabench.c
mkdir -p "$W/t0" "$W/t1" "$W/ms" "$W/mm"
for t in t0 t1; do
  if [ "$TIERS" = ext4 ]; then
    truncate -s 1G "$W/$t.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$W/$t.img"
    dev=$(losetup --direct-io=on -f --show "$W/$t.img")
    LOOPS+=("$dev")
    mount "$dev" "$W/$t"
  else
    mount -t tmpfs -o size=1G tmpfs "$W/$t"
  fi
done
mkdir -p "$W/t0/s" "$W/t1/s" "$W/t0/m" "$W/t1/m"
"$S" mount -o "pool=opcodes,uuid=$(cat /proc/sys/kernel/random/uuid),tiers=$W/t0/s:$W/t1/s" none "$W/ms"
mergerfs -o minfreespace=64M "$W/t0/m:$W/t1/m" "$W/mm"

for r in $(seq "$ROUNDS"); do
  for t in ms mm; do
    rm -rf "$W/$t/meta"
    perf record -q -e fuse:fuse_request_send -e fuse:fuse_request_end -a \
      -o "$W/perf.data" -- "$W/metabench" "$W/$t/meta" "$N" 1100 >/dev/null 2>&1
    perf script -i "$W/perf.data" 2>/dev/null | sed "s/^/$t /" >> "$W/trace.txt"
  done
done

python3 - "$W/trace.txt" <<'PY'
import collections, re, sys
lat = collections.defaultdict(list)
send = {}
for line in open(sys.argv[1]):
    target = line.split(" ", 1)[0]
    m = re.search(r"\s(\d+\.\d+):\s+fuse:fuse_request_(send|end):.*?req (\d+)", line)
    if not m:
        continue
    t, kind, req = float(m.group(1)), m.group(2), (target, m.group(3))
    if kind == "send":
        op = re.search(r"\((FUSE_\w+)\)", line)
        send[req] = (t, op.group(1) if op else "?")
    elif req in send:
        t0, op = send.pop(req)
        lat[(op, target)].append((t - t0) * 1e6)
name = {"ms": "smoothfs", "mm": "mergerfs"}
print("| opcode | smoothfs p50 µs | p90 | mergerfs p50 µs | p90 | n smoothfs | n mergerfs |")
print("|---|---:|---:|---:|---:|---:|---:|")
ops = sorted({op for op, _ in lat}, key=lambda o: -len(lat.get((o, "ms"), [])))
for op in ops:
    row = [op]
    for t in ("ms", "mm"):
        v = sorted(lat.get((op, t), []))
        row += [f"{v[len(v) // 2]:.0f}", f"{v[int(len(v) * 0.9)]:.0f}"] if v else ["-", "-"]
    n = len(lat.get((op, "ms"), []))
    nm = len(lat.get((op, "mm"), []))
    if max(n, nm) < 50:
        continue
    print("| " + " | ".join(row) + f" | {n} | {nm} |")
PY
