#!/usr/bin/env bash
# smoothfs cutover stall benchmark (SPEC S28 N11): the longest stall of a
# mediated 4 KiB write caused by a cutover, target p99 <= 50 ms.
#
#   bash bench/cutover.sh              (MOVES=60, a 16 MiB file)
#
# Two loop-backed ext4 tiers, the pool mounted with passthrough=off (every
# handle mediated). bench/cutover_stall.py holds the file open, moves it
# back and forth MOVES times with `smoothfs move`, and writes 4 KiB the
# moment each move enters cutover_in_progress (from the pool's events),
# timing the write; moves whose write got in before the drain fail with
# "source raced" (the source changed after the copy) and are counted
# apart. The same write is timed with no move running, for comparison.
#
# Output: a table on stdout and, with WRITE_DOCS=1 (default), the
# "Cutover stall" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MOVES=${MOVES:-60}
FILE_MIB=${FILE_MIB:-16}
WRITE_DOCS=${WRITE_DOCS:-1}

. bench/lib.sh
bench_start cutover mkfs.ext4
MNT="$WORK/mnt"
POOL="cutoverbench-$$"
cleanup() {
  set +e
  unmount_pool "$MNT" "$POOL"
  undo_loop_tiers
  rm -rf "$WORK"
}
trap cleanup EXIT

for t in t0 t1; do loop_tier "$WORK/$t.img" "$WORK/$t" 1G; done
mkdir -p "$MNT"
"$SMOOTHFS" mount -o "pool=$POOL,uuid=$(cat /proc/sys/kernel/random/uuid),tiers=$WORK/t0:$WORK/t1,passthrough=off" \
  none "$MNT" >"$WORK/mount.log" 2>&1 || { cat "$WORK/mount.log" >&2; exit 1; }
dd if=/dev/urandom of="$MNT/f" bs=1M count="$FILE_MIB" status=none
sync

log "$MOVES moves of a $FILE_MIB MiB file with a 4 KiB write at each cutover"
res=$(python3 bench/cutover_stall.py "$SMOOTHFS" "$POOL" "$MNT/f" "$MOVES")
md=$(python3 - "$res" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
s, b = r["stall_ms"], r["baseline_ms"]
ok = "yes" if r["moved_with_write"] and s["p99"] <= 50 else "**no**"
print("| | writes | p50 ms | p99 ms | max ms | target | met |")
print("|---|---:|---:|---:|---:|---|---|")
print(f"| 4 KiB write during a cutover (N11) | {r['moved_with_write']} | {s['p50']} | {s['p99']} "
      f"| {s['max']} | p99 ≤ 50 ms | {ok} |")
print(f"| 4 KiB write, no move running | 500 | {b['p50']} | {b['p99']} | {b['max']} | | |")
print()
print(f"{r['moves']} moves: {r['moved_with_write']} completed with a write held at the cutover, "
      f"{r['raced']} failed with \"source raced\" (the write got in before the drain), "
      f"{r['other_failures']} failed otherwise.")
PY
)
echo "$md"

if [ "$WRITE_DOCS" = 1 ]; then
  python3 bench/docsection.py "Cutover stall (bench/cutover.sh)" <<EOF
two loop-backed ext4 tiers, pool mounted with \`passthrough=off\`; a
$FILE_MIB MiB file held open for writing and moved back and forth $MOVES
times with \`smoothfs move\`; at each move's \`cutover_in_progress\` event a
4 KiB write is issued at once and timed. Command: \`bash bench/cutover.sh\`.

$md
EOF
  log "docs/benchmarks.md updated"
fi
