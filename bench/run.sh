#!/usr/bin/env bash
# smoothfs data-plane benchmark (SPEC S28, shared/BENCHMARKS.md).
#
#   bench/run.sh            full run (~11 min on 2 vCPUs)
#   bench/run.sh --quick    3 rounds, smaller sizes (~5 min)
#
# Must run as root. Installs fio/mergerfs/e2fsprogs if missing, builds
# smoothfs (release), makes its own tiers -- two loop-backed 2 GiB ext4
# images ("ext4") and two tmpfs ("tmpfs", isolates FUSE overhead from the
# device) -- and compares on the same tier filesystems:
#   native             tier 0 accessed directly
#   mergerfs           mergerfs defaults over tier0:tier1
#   mergerfs-pt        mergerfs -o passthrough.io=rw (only if supported)
#   smoothfs-pt        smoothfs, passthrough=auto (default)
#   smoothfs-mediated  smoothfs, passthrough=off
# Each target gets its own subdirectory of the tier roots (t0/<target>,
# t1/<target>), so every target stacks over the same two filesystems.
# Rounds are interleaved: every round runs each target's block of workloads
# (A B C D, then B C D A, ...); the table reports the median per target,
# the min-max spread and ratios to native / mergerfs.
#
# Then bench/move.sh: a 1 GiB `smoothfs move` against cp between two
# loop-backed ext4 tiers, and a fio read's slowdown while files move.
#
# Output: bench/out/<timestamp>/ (results.csv, raw fio JSON, daemon logs,
# table.md) and docs/benchmarks.md. Everything else (mounts, loop devices,
# images) is removed on exit.
#
# Tunables (environment): ROUNDS, TMPFS_ROUNDS, SIZE, RUNTIME, NFILES, META_BATCH,
# VARIANTS ("ext4 tmpfs"), TARGETS (subset of the list above),
# WRITE_DOCS (1/0), MOVE (1/0: the movement benchmark).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=full
for a in "$@"; do
  case "$a" in
    --quick) MODE=quick ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
if [ "$MODE" = quick ]; then
  : "${ROUNDS:=3}" "${TMPFS_ROUNDS:=3}" "${SIZE:=256M}" "${RUNTIME:=3}" "${NFILES:=2000}"
else
  : "${ROUNDS:=5}" "${TMPFS_ROUNDS:=3}" "${SIZE:=1G}" "${RUNTIME:=3}" "${NFILES:=10000}"
fi
: "${VARIANTS:=ext4 tmpfs}" "${WRITE_DOCS:=1}"
SETTLE_MS=1100   # > the 1 s FUSE entry/attr lifetime of both mergerfs and smoothfs
: "${META_BATCH:=500}"   # metadata operations per target per turn (metabench -i)

[ "$(id -u)" = 0 ] || { echo "bench/run.sh must run as root" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# ---------------------------------------------------------------- deps
need=()
command -v fio >/dev/null || need+=(fio)
command -v mergerfs >/dev/null || need+=(mergerfs)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v cc >/dev/null || need+=(gcc)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# ---------------------------------------------------------------- build
log "building smoothfs (release)"
(cd "$REPO" && cargo build --release -q -p smoothfs-cli)
BIN=$REPO/target/release/smoothfs

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$REPO/bench/out/$STAMP
mkdir -p "$OUT/raw"
WORK=$(mktemp -d /var/tmp/smoothfs-bench.XXXXXX)
cc -O2 -Wall -o "$WORK/metabench" "$REPO/bench/metabench.c"
CSV=$OUT/results.csv
: > "$CSV"

# ---------------------------------------------------------------- cleanup
# A FUSE daemon may still hold its tier directories open for a moment after
# its mount is gone, so a tier unmount can be briefly busy: retry.
umount_retry() {
  local _
  for _ in $(seq 1 20); do
    umount "$1" 2>/dev/null && return 0
    mountpoint -q "$1" || return 0
    sleep 0.5
  done
  umount "$1"
}
MOUNTS=()   # in mount order; unmounted in reverse
LOOPS=()
UUIDS=()
SLOGS=()
cleanup() {
  local rc=$? i m
  set +e
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${MOUNTS[i]}
    mountpoint -q "$m" || continue
    umount_retry "$m" || { log "lazy-unmounting busy $m"; umount -l "$m"; }
  done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  rm -rf "$WORK"
  # The daemons leave their lock file and log in /run/smoothfs; logs were
  # copied to $OUT.
  for u in "${UUIDS[@]}"; do rm -f "/run/smoothfs/$u.lock" "/run/smoothfs/$u.json"; done
  for s in "${SLOGS[@]}"; do rm -f "$s"; done
  [ $rc -ne 0 ] && log "exited with status $rc; partial results in $OUT"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
dropc() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# PID of the FUSE daemon serving mountpoint $1 (its argv ends with it).
daemon_pid() {
  local p
  for p in /proc/[0-9]*; do
    [ -r "$p/cmdline" ] || continue
    case "$(cat "$p/comm" 2>/dev/null)" in smoothfs|mergerfs) ;; *) continue ;; esac
    if tr '\0' '\n' < "$p/cmdline" 2>/dev/null | grep -qxF -- "$1"; then
      echo "${p#/proc/}"; return
    fi
  done
}
# utime+stime of a PID in ms (0 without a PID).
cpu_ms() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) * 1000 / hz}' "/proc/$1/stat"
}

MERGERFS_VERSION=$(mergerfs --version 2>&1 | head -1 || true)
if mergerfs --help 2>&1 | grep -q 'passthrough\.io' ||
   { man mergerfs 2>/dev/null | grep -q 'passthrough\.io'; }; then
  MERGERFS_PT=1
else
  MERGERFS_PT=0
fi

# mergerfs defaults, except minfreespace: its default (4G) exceeds our 2 GiB
# tiers and every create would fail with ENOSPC. 64M is close to smoothfs's
# full_pct=98 on a 2 GiB tier.
MERGERFS_OPTS=minfreespace=64M
ALL_TARGETS="native mergerfs mergerfs-pt smoothfs-pt smoothfs-mediated"
: "${TARGETS:=$ALL_TARGETS}"
declare -A DIR PID

mount_targets() { # variant t0 t1
  local v=$1 t0=$2 t1=$3 t mnt
  for t in $TARGETS; do
    mkdir -p "$t0/$t" "$t1/$t"
    mnt=$WORK/$v/mnt-$t
    case $t in
      native)
        DIR[$t]=$t0/$t/w; mkdir -p "${DIR[$t]}"; PID[$t]=""; ACTIVE+=("$t"); continue ;;
      mergerfs)
        mkdir -p "$mnt" "$t0/$t/w"   # w only on tier 0: epmfs creates there
        mergerfs -o "$MERGERFS_OPTS" "$t0/$t:$t1/$t" "$mnt" ;;
      mergerfs-pt)
        if [ "$MERGERFS_PT" != 1 ]; then
          log "skipping mergerfs-pt: $MERGERFS_VERSION has no passthrough.io"
          continue
        fi
        mkdir -p "$mnt" "$t0/$t/w"
        if ! mergerfs -o "$MERGERFS_OPTS,cache.files=full,passthrough.io=rw" "$t0/$t:$t1/$t" "$mnt"; then
          log "mergerfs -o passthrough.io=rw failed to mount; skipping mergerfs-pt"
          continue
        fi ;;
      smoothfs-pt|smoothfs-mediated)
        local pt=auto
        [ $t = smoothfs-mediated ] && pt=off
        mkdir -p "$mnt"
        local slog=/run/smoothfs/$(echo "$mnt" | tr / _).log
        local uuid
        uuid=$(cat /proc/sys/kernel/random/uuid)
        UUIDS+=("$uuid")
        if ! "$BIN" mount -o "pool=bench-$v-$t,uuid=$uuid,tiers=$t0/$t:$t1/$t,passthrough=$pt" none "$mnt"; then
          log "smoothfs mount ($t) failed; daemon log $slog:"
          tail -20 "$slog" >&2 || true
          continue
        fi
        SLOGS+=("$slog") ;;
    esac
    MOUNTS+=("$mnt")
    DIR[$t]=$mnt/w
    mkdir -p "${DIR[$t]}"
    PID[$t]=$(daemon_pid "$mnt")
    ACTIVE+=("$t")
  done
}

run_fio() { # variant target round workload fio-args...
  local v=$1 t=$2 r=$3 wl=$4; shift 4
  local json=$OUT/raw/$v-$t-r$r-$wl.json c0 c1
  c0=$(cpu_ms "${PID[$t]}")
  if ! fio --name="$wl" --output-format=json --output="$json" "$@" >/dev/null 2>"$json.err"; then
    local msg
    msg=$(grep -m1 -E 'error|err=' "$json.err" | sed 's/^fio: //' | cut -c1-200)
    log "fio $wl on $t FAILED: $msg"
    FAILURES+=("$v $t $wl: ${msg:-fio exited non-zero}")
    return 0
  fi
  c1=$(cpu_ms "${PID[$t]}")
  python3 "$REPO/bench/report.py" fio "$json" "$v" "$wl" "$t" "$r" "$((${c1%.*} - ${c0%.*}))" >> "$CSV"
  log "  $v r$r $t $wl: $(grep "^$v,$wl," "$CSV" | grep -F ",$t,$r," | head -1 | cut -d, -f3,6) (daemon cpu $((${c1%.*} - ${c0%.*})) ms)"
}

run_block() { # variant target round
  local v=$1 t=$2 r=$3 f
  f=${DIR[$t]}/seq.dat
  local seq=(--filename="$f" --bs=1M --size="$SIZE" --ioengine=psync --runtime=120)
  local rnd=(--filename="$f" --bs=4k --size="$SIZE" --rw=randread --direct=1 --ioengine=libaio
             --time_based --runtime="$RUNTIME" --norandommap --randrepeat=0 --lat_percentiles=1)
  rm -f "$f"
  # --fallocate=none: fio preallocates before the timed job, and its own CPU
  # figure leaves that out while the daemon's (which does the fallocate for
  # a FUSE target) would not -- on tmpfs that is ~300 ms per GiB.
  dropc; run_fio "$v" "$t" "$r" seq-write-direct "${seq[@]}" --rw=write --direct=1 --end_fsync=1 --fallocate=none
  rm -f "$f"
  dropc; run_fio "$v" "$t" "$r" seq-write "${seq[@]}" --rw=write --direct=0 --end_fsync=1 --fallocate=none
  dropc; run_fio "$v" "$t" "$r" seq-read "${seq[@]}" --rw=read --direct=0
  dropc; run_fio "$v" "$t" "$r" seq-read-direct "${seq[@]}" --rw=read --direct=1
  dropc; run_fio "$v" "$t" "$r" rand-read-4k-qd1 "${rnd[@]}" --iodepth=1
  dropc; run_fio "$v" "$t" "$r" rand-read-4k-qd32 "${rnd[@]}" --iodepth=32
  rm -f "$f"
}

# Metadata for every target at once: metabench -i interleaves them in
# batches of META_BATCH operations within each phase, so all targets run
# through the same seconds of the VM's drift (one target per block, as the
# fio workloads do, let metadata ratios swing by +-0.15 between runs).
run_meta() { # variant round
  local v=$1 r=$2 t k dirs=()
  for t in "${ACTIVE[@]}"; do dirs+=("${DIR[$t]}/meta"); done
  sync
  "$WORK/metabench" -i "$META_BATCH" "$NFILES" "$SETTLE_MS" "${dirs[@]}" > "$OUT/raw/$v-r$r-meta.txt"
  for k in "${!ACTIVE[@]}"; do
    t=${ACTIVE[$k]}
    awk -v k="$k" '$1 == k { print $2, $3, $4, $5 }' "$OUT/raw/$v-r$r-meta.txt" > "$OUT/raw/$v-$t-r$r-meta.txt"
    python3 "$REPO/bench/report.py" meta "$OUT/raw/$v-$t-r$r-meta.txt" "$v" "$t" "$r" >> "$CSV"
    log "  $v r$r $t meta: $(awk '{printf "%s %.0f/s p99 %.0fus; ", $1, $2, $4}' "$OUT/raw/$v-$t-r$r-meta.txt")"
  done
}

# ---------------------------------------------------------------- main
FAILURES=()
T_START=$(date +%s)
for v in $VARIANTS; do
  base=$WORK/$v
  mkdir -p "$base/t0" "$base/t1"
  case $v in
    ext4)
      for i in 0 1; do
        truncate -s 2G "$base/t$i.img"
        mkfs.ext4 -q -F "$base/t$i.img"
        l=$(losetup -f --show --direct-io=on "$base/t$i.img")
        LOOPS+=("$l")
        mount "$l" "$base/t$i"
        MOUNTS+=("$base/t$i")
      done
      rounds=$ROUNDS ;;
    tmpfs)
      for i in 0 1; do
        mount -t tmpfs -o size=2G,mode=0755 tmpfs "$base/t$i"
        MOUNTS+=("$base/t$i")
      done
      rounds=$TMPFS_ROUNDS ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  ACTIVE=()
  mount_targets "$v" "$base/t0" "$base/t1"
  log "$v: targets ${ACTIVE[*]}; $rounds rounds, size $SIZE, runtime ${RUNTIME}s, $NFILES files"
  n=${#ACTIVE[@]}
  for ((r = 1; r <= rounds; r++)); do
    for ((k = 0; k < n; k++)); do
      run_block "$v" "${ACTIVE[$(((k + r - 1) % n))]}" "$r"
    done
    run_meta "$v" "$r"
  done
  # Unmount this variant's stack now so the next one has the machine alone.
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    case ${MOUNTS[i]} in "$base"/*) umount_retry "${MOUNTS[i]}" ;; esac
  done
  for s in "${SLOGS[@]}"; do [ -f "$s" ] && cp "$s" "$OUT/$(basename "$s")"; done
done
ELAPSED=$(( $(date +%s) - T_START ))

# ---------------------------------------------------------------- report
PT_NOTE=""
PT_WARN=0
for s in "${SLOGS[@]}"; do
  f=$OUT/$(basename "$s")
  [ -f "$f" ] || continue
  if grep -qiE 'passthrough unavailable|does not offer FUSE passthrough' "$f"; then
    PT_WARN=1
    PT_NOTE+="- WARNING: $(basename "$f"): $(grep -iE 'passthrough unavailable|does not offer FUSE passthrough' "$f" | head -1 | sed 's/\x1b\[[0-9;]*m//g')"$'\n'
  fi
done
if [ ${#FAILURES[@]} -gt 0 ]; then
  while read -r cnt f; do
    PT_NOTE+="- FAILED in $cnt round(s), no value recorded: $f"$'\n'
  done < <(printf '%s\n' "${FAILURES[@]}" | sed "s#$WORK#<work>#g" | sort | uniq -c)
fi
[ "$PT_WARN" = 0 ] && PT_NOTE="- no 'passthrough unavailable' in the smoothfs daemon logs."$'\n'"$PT_NOTE"
if [ "$MERGERFS_PT" = 1 ]; then
  MPT_NOTE="mergerfs-pt: mounted with \`-o cache.files=full,passthrough.io=rw\`."
else
  MPT_NOTE="mergerfs-pt: not run — the installed $MERGERFS_VERSION has no \`passthrough.io\` option (added in later mergerfs releases; Debian 12 ships 2.33.5)."
fi

TABLE=$(python3 "$REPO/bench/report.py" table "$CSV" $ALL_TARGETS)
echo "$TABLE" > "$OUT/table.md"
echo
echo "$TABLE"
echo
printf '%s' "$PT_NOTE"
echo "$MPT_NOTE"
log "benchmark took ${ELAPSED}s; results in $OUT"

if [ "$WRITE_DOCS" = 1 ]; then
  # Hand-written analysis below this marker survives re-runs.
  MARK='<!-- analysis: everything below is hand-written and kept by bench/run.sh -->'
  KEEP=""
  if [ -f "$REPO/docs/benchmarks.md" ] && grep -qF -- "$MARK" "$REPO/docs/benchmarks.md"; then
    KEEP=$(awk -v m="$MARK" '$0 == m {k = 1} k' "$REPO/docs/benchmarks.md")
  fi
  CMD="bench/run.sh${*:+ $*}"
  {
    echo "# Benchmarks"
    echo
    echo "Latest run of \`$CMD\` (mode: $MODE). Method: \`shared/BENCHMARKS.md\`;"
    echo "targets: SPEC S28. Re-run with the same command as root; it takes about"
    echo "$(( (ELAPSED + 59) / 60 )) minutes here, then about 2 more for the movement benchmark"
    echo "(bench/move.sh, section \"Movement\" below)."
    echo
    echo "## Setup"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: nproc $(nproc), kernel $(uname -r), memory:"
    echo '  ```'
    free -g | sed 's/^/  /'
    echo '  ```'
    echo "- smoothfs: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$REPO" && [ -n "$(git status --porcelain -- crates 2>/dev/null)" ] && echo ' + uncommitted changes'), release build"
    echo "- fio: $(fio --version); mergerfs: $MERGERFS_VERSION"
    echo "- tiers: **ext4** = two 2 GiB sparse images, \`mkfs.ext4\` defaults, on"
    echo "  \`losetup --direct-io=on\` loop devices backed by the root disk (virtio);"
    echo "  **tmpfs** = two 2 GiB tmpfs (no device: shows FUSE overhead alone)."
    echo "  Each target uses its own subdirectory of the same two tier filesystems;"
    echo "  native = tier 0 directly."
    echo "- rounds: ext4 $ROUNDS, tmpfs $TMPFS_ROUNDS, interleaved (each round runs every target's"
    echo "  block of fio workloads, target order rotated per round, then the metadata"
    echo "  run for all targets together); medians over rounds."
    echo "- fio: seq = 1 job, bs=1M, size=$SIZE, psync, direct=0 and direct=1; writes"
    echo "  create a fresh file without preallocation (\`fallocate=none\`: fio's CPU"
    echo "  figure leaves its layout step out, a FUSE daemon's would not) and include"
    echo "  \`end_fsync=1\`; reads follow"
    echo "  \`echo 3 > /proc/sys/vm/drop_caches\`. rand = bs=4k, libaio, direct=1,"
    echo "  iodepth 1 and 32, time_based ${RUNTIME}s over the same $SIZE file."
    echo "- metadata: \`bench/metabench.c\`, $NFILES empty files in one directory per"
    echo "  target; phases create (open O_CREAT|O_EXCL + close), stat, open-close, readdir"
    echo "  (10 full listings; ops/s = entries/s, p99 = per listing), rename, unlink."
    echo "  Once per round for all targets together (\`metabench -i $META_BATCH\`): within"
    echo "  each phase the targets take turns, $META_BATCH operations (one listing) at a"
    echo "  time, the order rotating every turn; a target's ops/s is its operations over"
    echo "  its own turns' time. All sleep ${SETTLE_MS} ms before each phase so the 1 s"
    echo "  entry/attr caches (same lifetime in mergerfs and smoothfs) have expired:"
    echo "  every op reaches the daemon."
    echo "- mergerfs: defaults except \`-o $MERGERFS_OPTS\` (its 4G default exceeds the"
    echo "  2 GiB tiers: every create would fail with ENOSPC)."
    echo "- $MPT_NOTE"
    echo
    echo "## Results"
    echo
    echo "$TABLE"
    echo
    echo "## Notes"
    echo
    printf '%s' "$PT_NOTE"
    if [ -n "$KEEP" ]; then echo; echo "$KEEP"; fi
  } > "$REPO/docs/benchmarks.md"
  log "wrote docs/benchmarks.md"
fi

# Movement throughput against cp and the foreground slowdown while files
# move (N10, N15): bench/move.sh on its own two loop-backed ext4 tiers,
# interleaved with cp; its table is printed and goes to the "Movement"
# section of docs/benchmarks.md. MOVE=0 skips it.
if [ "${MOVE:-1}" = 1 ]; then
  log "movement: bench/move.sh"
  if [ "$MODE" = quick ]; then move_rounds=3; else move_rounds=5; fi
  ROUNDS=$move_rounds WRITE_DOCS=$WRITE_DOCS bash "$REPO/bench/move.sh"
fi
