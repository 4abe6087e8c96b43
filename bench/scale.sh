#!/usr/bin/env bash
# smoothfs scale benchmark (SPEC S28 N8 and N9):
#
#   N8  data-plane memory per resident object:
#       (daemon RSS after looking up N files - RSS idle) / N, target < 1 KiB
#   N9  mount time (to the helper's exit) of a pool holding N files against
#       one holding SMALL files: t(N) - t(SMALL) <= 0.5 s and t(N) <= 2 s
#
#   bash bench/scale.sh                  (N=1000000, SMALL=1000)
#   NFILES=200000 bash bench/scale.sh
#
# Each pool gets two fresh loop-backed ext4 tiers. The files are created
# directly in tier 0 (empty, DIRS directories), then the pool is mounted and
# every file is looked up through the mount (os.walk + stat; the pool
# discovers and indexes them); the pool is unmounted cleanly and mounted
# ROUNDS more times, each timed. The first mount (files present but not yet indexed) is reported too.
#
# Output: a table on stdout and, with WRITE_DOCS=1 (default), the "Scale"
# section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
NFILES=${NFILES:-1000000}
SMALL=${SMALL:-1000}
DIRS=${DIRS:-1000}
ROUNDS=${ROUNDS:-5}
WRITE_DOCS=${WRITE_DOCS:-1}

. bench/lib.sh
bench_start scale mkfs.ext4
cleanup() {
  set +e
  local m
  for m in "$WORK"/*-mnt; do
    unmount_pool "$m"
  done
  for _ in $(seq 1 50); do pgrep -f "pool=scalebench-" >/dev/null || break; sleep 0.1; done
  undo_loop_tiers
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
daemon_pid() { pgrep -f "pool=$1,"; }
wait_gone() { for _ in $(seq 1 200); do pgrep -f "pool=$1," >/dev/null || return 0; sleep 0.05; done; return 1; }

# make_tiers NAME FILES: two ext4 tiers with enough inodes, FILES empty files
# in DIRS directories of tier 0.
make_tiers() {
  local name=$1 files=$2 t
  for t in t0 t1; do
    loop_tier "$WORK/$name-$t.img" "$WORK/$name-$t" 4G -N $((files + 100000))
  done
  python3 - "$WORK/$name-t0/data" "$files" "$DIRS" <<'PY'
import os, sys
root, n, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dirs = max(1, min(dirs, n))
for d in range(dirs):
    os.makedirs(f"{root}/d{d:05}", exist_ok=True)
for i in range(n):
    fd = os.open(f"{root}/d{i % dirs:05}/f{i:08}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
PY
  sync
}

# mount_timed NAME UUID: mounts the pool, prints the helper's wall time in s.
mount_timed() {
  local name=$1 uuid=$2 mnt="$WORK/$1-mnt" a b
  mkdir -p "$mnt"
  sync
  echo 3 >/proc/sys/vm/drop_caches
  a=$(now)
  "$SMOOTHFS" mount -o "pool=scalebench-$name,uuid=$uuid,tiers=$WORK/$name-t0:$WORK/$name-t1" \
    none "$mnt" >>"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; exit 1; }
  b=$(now)
  mountpoint -q "$mnt" || { echo "scalebench-$name: not mounted" >&2; exit 1; }
  python3 -c "print(f'{$b - $a:.3f}')"
}

# unmount_case NAME: a clean (not lazy) unmount; the daemon must exit.
unmount_case() {
  umount "$WORK/$1-mnt"
  wait_gone "scalebench-$1" || { echo "scalebench-$1: daemon did not exit" >&2; exit 1; }
}

# run_case NAME FILES: prints "first_mount rss_idle_kib rss_after_kib looked_up remount..."
run_case() {
  local name=$1 files=$2 uuid first pid idle after seen r out=()
  uuid=$(cat /proc/sys/kernel/random/uuid)
  log "$name: creating $files files in tier 0"
  make_tiers "$name" "$files"
  first=$(mount_timed "$name" "$uuid")
  pid=$(daemon_pid "scalebench-$name")
  sleep 1
  idle=$(rss_kib "$pid")
  log "$name: first mount ${first} s; looking up every file through the mount"
  seen=$(python3 - "$WORK/$name-mnt/data" <<'PY'
import os, sys
n = 0
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        os.stat(os.path.join(d, f))
        n += 1
print(n)
PY
)
  after=$(rss_kib "$pid")
  [ "$seen" -eq "$files" ] || { echo "$name: looked up $seen files, expected $files" >&2; exit 1; }
  unmount_case "$name"
  for r in $(seq 1 "$ROUNDS"); do
    out+=("$(mount_timed "$name" "$uuid")")
    unmount_case "$name"
  done
  log "$name: remounts ${out[*]} s; RSS idle ${idle} KiB, after lookups ${after} KiB"
  echo "$first $idle $after $seen ${out[*]}"
}

run_case small "$SMALL" >"$WORK/small.res"
run_case large "$NFILES" >"$WORK/large.res"

md=$(python3 - "$SMALL" "$NFILES" "$WORK/small.res" "$WORK/large.res" <<'PY'
import statistics, sys
small, large, fs, fl = sys.argv[1:]
def parse(path):
    v = open(path).read().split()
    return {"first": float(v[0]), "idle": int(v[1]), "after": int(v[2]), "seen": int(v[3]),
            "mounts": [float(x) for x in v[4:]]}
s, l = parse(fs), parse(fl)
ts, tl = statistics.median(s["mounts"]), statistics.median(l["mounts"])
per_obj = (l["after"] - l["idle"]) * 1024 / l["seen"]
ok = lambda c: "yes" if c else "**no**"
print(f"| id | measure | {small} files | {large} files | result | target | met |")
print("|---|---|---:|---:|---|---|---|")
print(f"| N8 | daemon RSS, KiB: idle / after looking up every file | {s['idle']} / {s['after']} "
      f"| {l['idle']} / {l['after']} | {per_obj:.0f} bytes per object | < 1024 | {ok(per_obj < 1024)} |")
print(f"| N9 | mount time, median of the remounts (s) | {ts:.3f} | {tl:.3f} "
      f"| difference {tl - ts:.3f} s | ≤ 0.5 s, and ≤ 2 s | {ok(tl - ts <= 0.5 and tl <= 2)} |")
print(f"| - | first mount, files not yet indexed (s) | {s['first']:.3f} | {l['first']:.3f} | | reported | |")
print(f"| - | each remount (s) | {' '.join(f'{x:.3f}' for x in s['mounts'])} "
      f"| {' '.join(f'{x:.3f}' for x in l['mounts'])} | | | |")
PY
)
echo "$md"

if [ "$WRITE_DOCS" = 1 ]; then
  python3 bench/docsection.py "Scale (bench/scale.sh)" <<EOF
two loop-backed ext4 tiers per pool. A small pool ($SMALL files) and a
large one ($NFILES files), empty files in $DIRS directories created
directly in tier 0, then looked up once through the mount (\`os.walk\` and
\`stat\` of each: the pool discovers and indexes them); then $ROUNDS clean
remounts of each, timed to the mount helper's exit with a cold page cache.
Command: \`bash bench/scale.sh\`.

$md
EOF
  log "docs/benchmarks.md updated"
fi
