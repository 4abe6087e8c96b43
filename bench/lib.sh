# Shared by the benchmark scripts that make their own loop-backed tiers
# (move.sh, scale.sh, cutover.sh, tiering.sh). Source it from the repository root.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# bench_start NAME TOOL: what every benchmark script starts with -- root,
# the test dependencies (scripts/install-deps.sh) when TOOL is missing, the
# release build (SMOOTHFS) and a fresh work directory
# WORK=/var/tmp/smoothfs-NAMEbench.XXXXXX.
bench_start() {
  [ "$(id -u)" -eq 0 ] || { echo "bench/$1.sh needs root" >&2; exit 1; }
  command -v "$2" >/dev/null || bash scripts/install-deps.sh
  build_smoothfs
  WORK=$(mktemp -d "/var/tmp/smoothfs-$1bench.XXXXXX")
}

# unmount_pool MNT [POOL]: unmount a pool (lazily if busy) and wait up to
# 5 s for its daemon (the process with pool=POOL, in its options) to exit.
unmount_pool() {
  if mountpoint -q "$1" 2>/dev/null; then umount "$1" || umount -l "$1"; fi
  if [ -n "${2:-}" ]; then
    for _ in $(seq 1 50); do pgrep -f "pool=$2," >/dev/null || break; sleep 0.1; done
  fi
}

# build_smoothfs: release build of the CLI; sets SMOOTHFS to its path.
build_smoothfs() {
  log "building smoothfs (release)"
  cargo build --release --quiet -p smoothfs-cli --bin smoothfs
  SMOOTHFS=${CARGO_TARGET_DIR:-$PWD/target}/release/smoothfs
}

# What loop_tier made, for undo_loop_tiers. A script adds its pool's
# mountpoint to BENCH_MOUNTS after its tiers, so it is unmounted first.
BENCH_MOUNTS=()
BENCH_LOOPS=()

# loop_tier IMG DIR SIZE [mkfs.ext4 option...]: a fresh ext4 image on a
# direct-I/O loop device, mounted at DIR.
loop_tier() {
  local img=$1 dir=$2 size=$3 dev
  shift 3
  truncate -s "$size" "$img"
  mkfs.ext4 -q -F "$@" -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  dev=$(losetup --direct-io=on -f --show "$img")
  BENCH_LOOPS+=("$dev")
  mkdir -p "$dir"
  mount "$dev" "$dir"
  BENCH_MOUNTS+=("$dir")
}

# undo_loop_tiers: unmounts BENCH_MOUNTS, last first, and frees the loops.
undo_loop_tiers() {
  local i m l
  for ((i = ${#BENCH_MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${BENCH_MOUNTS[$i]}
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" || umount -l "$m"; fi
  done
  for l in "${BENCH_LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
}
