# Shared by scripts/pjdfstest.sh and scripts/fsx.sh (sourced, not run):
# loop-backed tiers and a foreground smoothfs pool, all torn down by
# `pool_cleanup` (install it with `trap pool_cleanup EXIT`).
#
# Needs: WORK (a scratch directory) set by the caller.

LOOP_DEVS=()
LOOP_MNTS=()
POOL_PID=""
POOL_MNT=""

# The smoothfs binary, built like `cargo test` builds it.
smoothfs_bin() {
  local target="${CARGO_TARGET_DIR:-$PWD/target}"
  cargo build --quiet -p smoothfs-cli --bin smoothfs >&2
  echo "$target/debug/smoothfs"
}

# make_tier NAME SIZE_MIB FS [IMAGE_DIR] [MKFS_ARGS...]: mounts a fresh
# loop-backed filesystem at $WORK/NAME and sets TIER to that path. (Not
# meant for $(...): the loop device must be recorded in this shell.)
make_tier() {
  local name=$1 size=$2 fs=$3 imgdir=${4:-$WORK}
  shift 4 || shift $#
  local img="$imgdir/$name.img" mnt="$WORK/$name"
  truncate -s "${size}M" "$img"
  case "$fs" in
    ext4) mkfs.ext4 -q -F "$@" "$img" ;;
    xfs) mkfs.xfs -q -f "$@" "$img" ;;
    *) echo "make_tier: unsupported fs $fs" >&2; return 1 ;;
  esac
  mkdir -p "$mnt"
  local dev
  dev=$(losetup -f --show "$img")
  LOOP_DEVS+=("$dev")
  mount "$dev" "$mnt"
  LOOP_MNTS+=("$mnt")
  TIER=$mnt
}

# start_pool MNT TIERS [EXTRA_OPTS]: runs `smoothfs mount -f` in the
# background and waits (10 s) until MNT shows type fuse.smoothfs.
start_pool() {
  local mnt=$1 tiers=$2 extra=${3:-}
  local uuid opts
  uuid=$(cat /proc/sys/kernel/random/uuid)
  opts="pool=scripted,uuid=$uuid,tiers=$tiers"
  [ -n "$extra" ] && opts="$opts,$extra"
  mkdir -p "$mnt"
  POOL_MNT=$mnt
  POOL_LOG="$WORK/$(basename "$mnt").daemon.log"
  echo "+ smoothfs mount -f -o $opts none $mnt" >&2
  "$SMOOTHFS" mount -f -o "$opts" none "$mnt" </dev/null >"$POOL_LOG" 2>&1 &
  POOL_PID=$!
  local i
  for i in $(seq 1 200); do
    if ! kill -0 "$POOL_PID" 2>/dev/null; then
      echo "smoothfs daemon exited before the mount was live; log:" >&2
      cat "$POOL_LOG" >&2
      POOL_PID=""
      return 1
    fi
    if [ "$(findmnt -no FSTYPE --mountpoint "$mnt" 2>/dev/null | tail -n1)" = fuse.smoothfs ]; then
      return 0
    fi
    sleep 0.05
  done
  echo "smoothfs mount at $mnt not live after 10 s; log:" >&2
  cat "$POOL_LOG" >&2
  return 1
}

# stop_pool: umount (lazy fallback) and wait up to 5 s for the daemon.
# Returns non-zero if the daemon had died before or exits non-zero.
stop_pool() {
  local rc=0
  [ -n "$POOL_PID" ] || return 0
  if ! kill -0 "$POOL_PID" 2>/dev/null; then
    echo "smoothfs daemon $POOL_PID died during the run; log tail:" >&2
    tail -n 50 "$POOL_LOG" >&2
    rc=1
  fi
  umount "$POOL_MNT" 2>/dev/null || umount -l "$POOL_MNT" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$POOL_PID" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$POOL_PID" 2>/dev/null; then
    echo "smoothfs daemon $POOL_PID did not exit after umount; killing" >&2
    kill -9 "$POOL_PID" 2>/dev/null || true
    rc=1
  fi
  wait "$POOL_PID" 2>/dev/null || { [ $rc -ne 0 ] || { echo "smoothfs daemon exited non-zero" >&2; rc=1; }; }
  POOL_PID=""
  return $rc
}

pool_cleanup() {
  [ -z "$POOL_PID" ] || stop_pool || true
  local m d
  for ((i = ${#LOOP_MNTS[@]} - 1; i >= 0; i--)); do
    m=${LOOP_MNTS[$i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for d in "${LOOP_DEVS[@]}"; do
    losetup -d "$d" 2>/dev/null || true
  done
  LOOP_MNTS=()
  LOOP_DEVS=()
  [ -z "${WORK:-}" ] || rm -rf "$WORK"
  [ -z "${SHM_WORK:-}" ] || rm -rf "$SHM_WORK"
}
