#!/usr/bin/env bash
# smoothfs movement benchmark (BENCHMARKS.md "movement", SPEC S28):
# `smoothfs move` of N files totalling 1 GiB between two loop-backed ext4
# tiers vs `cp` of the same files between the same two lower filesystems,
# interleaved, median of ROUNDS; plus the foreground slowdown of a fio
# sequential read through the mount while files move.
#
#   bench/move.sh              (ROUNDS=5, one 1 GiB file)
#   ROUNDS=3 NFILES=2 bench/move.sh
#
# Fairness: both sides end durable (the worker fsyncs the staging file and
# its directory; cp is followed by `sync -f` of the destination fs), both
# start with a cold page cache (drop_caches), and each round goes in the
# direction the previous one did not (tier 0 -> 1, then 1 -> 0), cp in the
# same direction as the move of that round. The worker also verifies: it
# hashes the source while copying, re-reads the staging file and re-hashes
# the source (BLAKE3) before the cutover -- extra reads that cp does not do.
#
# Output: a table on stdout and, with WRITE_DOCS=1 (default), the
# "Movement" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
NFILES=${NFILES:-1}
FILE_MIB=${FILE_MIB:-$((1024 / NFILES))}
WRITE_DOCS=${WRITE_DOCS:-1}

. bench/lib.sh
bench_start move fio
MNT="$WORK/mnt"
DAEMON=""
cleanup() {
  set +e
  unmount_pool "$MNT"
  [ -n "$DAEMON" ] && wait "$DAEMON" 2>/dev/null
  undo_loop_tiers
  rm -rf "$WORK"
}
trap cleanup EXIT

# Both sets, the 512 MiB foreground file and the 64 MiB move reserve on
# either tier, plus ext4's reserved blocks (5 %) and metadata.
size_mib=$((NFILES * FILE_MIB * 2 + NFILES * FILE_MIB / 4 + 1024))
for t in t0 t1; do loop_tier "$WORK/$t.img" "$WORK/$t" "${size_mib}M"; done
mkdir -p "$MNT" "$WORK/t0/cp" "$WORK/t1/cp"
uuid=$(cat /proc/sys/kernel/random/uuid)
"$SMOOTHFS" mount -f -o "pool=movebench,uuid=$uuid,tiers=$WORK/t0:$WORK/t1" none "$MNT" \
  >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { cat "$WORK/daemon.log"; exit 1; }

log "writing $NFILES x $FILE_MIB MiB through the mount (tier 0) and the cp set"
mkdir -p "$MNT/mv"
for i in $(seq 1 "$NFILES"); do
  dd if=/dev/urandom of="$MNT/mv/f$i" bs=1M count="$FILE_MIB" status=none
  cp "$WORK/t0/mv/f$i" "$WORK/t0/cp/f$i"
done
dd if=/dev/urandom of="$MNT/fg.bin" bs=1M count=512 status=none
sync
total_mib=$((NFILES * FILE_MIB))

dropc() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

declare -a CP MV
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then src=t0 dst=t1 to=1; else src=t1 dst=t0 to=0; fi
  run_cp() {
    # cp: same files, same two filesystems, same direction, made durable.
    rm -f "$WORK/$dst/cp/"*
    dropc
    a=$(now)
    cp "$WORK/$src/cp/"* "$WORK/$dst/cp/"
    sync -f "$WORK/$dst/cp"
    b=$(now)
    rm -f "$WORK/$src/cp/"*
    CP+=("$(elapsed "$a" "$b")")
  }
  run_mv() {
    dropc
    a=$(now)
    for i in $(seq 1 "$NFILES"); do
      "$SMOOTHFS" move --json --to "$to" "$MNT/mv/f$i" | tail -n 1 | grep -q '"result":"moved"' \
        || { echo "move of f$i failed" >&2; exit 1; }
    done
    b=$(now)
    MV+=("$(elapsed "$a" "$b")")
  }
  # Interleaved: A B, then B A.
  if [ $(((r + 1) / 2 % 2)) -eq 1 ]; then run_cp; run_mv; else run_mv; run_cp; fi
  log "round $r ($src -> $dst): cp ${CP[-1]} s, smoothfs move ${MV[-1]} s"
done

# Foreground: fio sequential read of fg.bin through the mount, alone and
# while the move set goes back and forth.
fg() {
  fio --name=fg --filename="$MNT/fg.bin" --rw=read --bs=1M --size=512M --time_based \
    --runtime="$1" --direct=1 --output-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw"])'
}
dropc
fg_alone=$(fg 10)
( for _ in 1 2 3; do for i in $(seq 1 "$NFILES"); do
    if [ -e "$WORK/t0/mv/f$i" ]; then t=1; else t=0; fi
    "$SMOOTHFS" move --to "$t" "$MNT/mv/f$i" >/dev/null 2>&1 || true
  done; done ) &
mover=$!
fg_moving=$(fg 10)
# The loop's running `smoothfs move` first (SIGTERM aborts its move
# cleanly), then the loop, so nothing holds the tiers at cleanup.
pkill -TERM -P "$mover" 2>/dev/null || true
kill "$mover" 2>/dev/null || true
wait "$mover" 2>/dev/null || true
for _ in $(seq 1 100); do pgrep -f "smoothfs move .*$MNT/" >/dev/null || break; sleep 0.1; done

read -r cp_med cp_min cp_max mv_med mv_min mv_max ratio fg_ratio < <(python3 - "$total_mib" "$fg_alone" "$fg_moving" "${CP[@]}" -- "${MV[@]}" <<'PY'
import statistics, sys
a = sys.argv[1:]
mib, fa, fm = float(a[0]), float(a[1]), float(a[2])
i = a.index("--")
cp = [float(x) for x in a[3:i]]
mv = [float(x) for x in a[i + 1:]]
cm, mm = statistics.median(cp), statistics.median(mv)
print(f"{cm:.2f} {min(cp):.2f} {max(cp):.2f} {mm:.2f} {min(mv):.2f} {max(mv):.2f} {cm / mm:.2f} {fm / fa:.2f}")
PY
)
cp_mbs=$(python3 -c "print(f'{$total_mib / $cp_med:.0f}')")
mv_mbs=$(python3 -c "print(f'{$total_mib / $mv_med:.0f}')")
table=$(cat <<EOF
| | median s | spread s | MiB/s | ratio to cp |
|---|---|---|---|---|
| cp (+ sync) | $cp_med | $cp_min-$cp_max | $cp_mbs | 1.00 |
| smoothfs move | $mv_med | $mv_min-$mv_max | $mv_mbs | $ratio |

Foreground fio sequential read (1 MiB, O_DIRECT) through the mount while
files move: $fg_ratio x its bandwidth alone ($fg_moving vs $fg_alone KiB/s).
EOF
)
echo "$table"
if [ "$WRITE_DOCS" = 1 ]; then
  python3 bench/docsection.py "Movement (bench/move.sh)" <<EOF
two loop-backed ext4 tiers; $NFILES files x $FILE_MIB MiB moved with \`smoothfs
move\` (copy, fsync, BLAKE3 verify of staging and source, cutover, cleanup)
vs \`cp\` + \`sync -f\` of the same files between the same filesystems; cold
cache, interleaved, median of $ROUNDS. Command: \`bash bench/move.sh\`.

$table
EOF
  log "docs/benchmarks.md updated"
fi
