#!/usr/bin/env bash
# fsx (File System eXerciser) on a file in a smoothfs pool over two
# loop-backed ext4 tiers: once with passthrough at its default (auto), once
# with passthrough=off (every handle mediated). Any fsx error fails.
#
#   FSX_OPS   operations per run (default 100000)
#   FSX_SEED  RNG seed (default 1; the run is reproducible from it)
#   scripts/fsx.sh --native   the same run on plain ext4 (checks the config)
#
# A third run ("moving", S11/S13) keeps the fsx file mediated and moves it
# back and forth between the tiers with `smoothfs move` every ~200 ms while
# fsx runs, so its open handle and its mappings cross many cutovers (handle
# reissue, page-cache invalidation, dirty mapped pages written back to the
# destination); fsx checks every byte it reads against its model. fsx writes
# about every millisecond, which would make every copy race (the write_seq
# guard refuses such a cutover, as it must), so the mover SIGSTOPs fsx for
# the few milliseconds of each move; writes held during a cutover are
# covered by the S11 A5/A6 tests. The run needs at least FSX_MIN_MOVES
# (default 4) completed moves.
#
# The tier images live on /dev/shm and have no ext4 journal: fsx fsyncs
# often and a journalled loop image on disk makes a run several times
# slower without testing anything of smoothfs's.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
OPS=${FSX_OPS:-100000}
SEED=${FSX_SEED:-1}
RUN_TIMEOUT=${FSX_TIMEOUT:-900}

command -v fsx >/dev/null || { echo "fsx not on PATH: run scripts/install-deps.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "fsx.sh needs root" >&2; exit 1; }

. scripts/lib-pool.sh
WORK=$(mktemp -d /tmp/smoothfs-fsx.XXXXXX)
SHM_WORK=$(mktemp -d /dev/shm/smoothfs-fsx.XXXXXX)
trap pool_cleanup EXIT

# FUSE has no clone, dedupe, collapse/insert range or FIEMAP, and fsx-rs
# issues none of them; everything it can do is enabled.
cat >"$WORK/fsx.toml" <<'TOML'
flen = 1048576

[opsize]
max = 65536
min = 0
align = 1

[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 2
fsync = 1
fdatasync = 1
posix_fallocate = 1
punch_hole = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
TOML

# The moving run stops and continues fsx (SIGSTOP/SIGCONT) around every
# move. A stop during fsx-rs's sendfile op makes sendfile return short, and
# fsx-rs then waits forever for the rest on its socket pair (its reader
# never sees EOF): a harness hang, not a smoothfs fault. That run leaves
# sendfile out; the other two keep it.
sed 's/^sendfile = 1$/sendfile = 0/' "$WORK/fsx.toml" >"$WORK/fsx-moving.toml"

run_fsx() { # LABEL FILE
  local label=$1 file=$2 rc=0 t0=$SECONDS conf="$WORK/fsx.toml"
  if [ "$label" = moving ]; then conf="$WORK/fsx-moving.toml"; fi
  mkdir -p "$WORK/artifacts-$label"
  echo "==> fsx $label: $OPS ops, seed $SEED, $file"
  timeout -k 10 "$RUN_TIMEOUT" fsx -N "$OPS" -S "$SEED" -f "$conf" -P "$WORK/artifacts-$label" "$file" \
    >"$WORK/fsx-$label.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "fsx $label FAILED (exit $rc) after $((SECONDS - t0)) s; last lines:"
    tail -n 40 "$WORK/fsx-$label.log" | sed 's/^/  /'
    return 1
  fi
  echo "fsx $label: ok in $((SECONDS - t0)) s"
}

failed=0
passed=0
if [ "${1:-}" = --native ]; then
  make_tier native 256 ext4 "$SHM_WORK" -O ^has_journal
  native=$TIER
  if run_fsx native "$native/fsx.bin"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
else
  SMOOTHFS=$(smoothfs_bin)
  for mode in auto off; do
    # Fresh tiers per run: a tier belongs to one pool UUID (S1.2).
    make_tier "t0-$mode" 256 ext4 "$SHM_WORK" -O ^has_journal
    t0=$TIER
    make_tier "t1-$mode" 256 ext4 "$SHM_WORK" -O ^has_journal
    t1=$TIER
    extra=""
    [ "$mode" = auto ] || extra="passthrough=$mode"
    ok=1
    if start_pool "$WORK/mnt-$mode" "$t0:$t1" "$extra"; then
      run_fsx "passthrough-$mode" "$WORK/mnt-$mode/fsx-$mode.bin" || ok=0
      stop_pool || ok=0
    else
      ok=0
    fi
    if [ "$ok" -eq 1 ]; then passed=$((passed + 1)); else
      failed=$((failed + 1))
      echo "smoothfs daemon log tail (passthrough=$mode):"
      tail -n 30 "$WORK/mnt-$mode.daemon.log" | sed 's/^/  /'
    fi
  done
fi
if [ "${1:-}" != --native ]; then
  # The moving run.
  make_tier t0-moving 256 ext4 "$SHM_WORK" -O ^has_journal
  t0=$TIER
  make_tier t1-moving 256 ext4 "$SHM_WORK" -O ^has_journal
  t1=$TIER
  ok=1
  if start_pool "$WORK/mnt-moving" "$t0:$t1" "passthrough=off"; then
    file="$WORK/mnt-moving/fsx-moving.bin"
    run_fsx moving "$file" &
    fsx_job=$!
    moved=0 tried=0 dest=1
    while kill -0 "$fsx_job" 2>/dev/null; do
      if [ -e "$file" ]; then
        tried=$((tried + 1))
        pkill -STOP -f -- "-P $WORK/artifacts-moving" || true
        if "$SMOOTHFS" move --json --to "$dest" "$file" 2>/dev/null | tail -n 1 | grep -q '"result":"moved"'; then
          moved=$((moved + 1))
          dest=$((1 - dest))
        fi
        pkill -CONT -f -- "-P $WORK/artifacts-moving" || true
      fi
      sleep 0.2
    done
    wait "$fsx_job" || ok=0
    echo "fsx moving: $moved moves completed of $tried attempts"
    [ "$moved" -ge "${FSX_MIN_MOVES:-4}" ] || { echo "fsx moving: too few completed moves"; ok=0; }
    stop_pool || ok=0
  else
    ok=0
  fi
  if [ "$ok" -eq 1 ]; then passed=$((passed + 1)); else
    failed=$((failed + 1))
    tail -n 30 "$WORK/mnt-moving.daemon.log" | sed 's/^/  /'
  fi
fi
echo "fsx: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
