#!/usr/bin/env bash
# Runs pjdfstest on a smoothfs pool over two loop-backed ext4 tiers and on a
# plain loop-backed ext4, and fails if a test that passes natively fails on
# smoothfs, unless docs/semantics-pjdfstest-exceptions.txt lists it
# (`<test name> <reason>` per line; `#` comments).
#
# Needs root, /dev/fuse and pjdfstest on PATH (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export NO_COLOR=1
EXCEPTIONS=docs/semantics-pjdfstest-exceptions.txt
# Upper bound for one suite run; a hung FUSE request must not hang CI.
SUITE_TIMEOUT=${PJDFSTEST_TIMEOUT:-900}

command -v pjdfstest >/dev/null || { echo "pjdfstest not on PATH: run scripts/install-deps.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "pjdfstest.sh needs root" >&2; exit 1; }

. scripts/lib-pool.sh
SMOOTHFS=$(smoothfs_bin)
WORK=$(mktemp -d /tmp/smoothfs-pjdfstest.XXXXXX)
chmod 755 "$WORK"   # the suite switches to unprivileged users
trap pool_cleanup EXIT

make_tier t0 512 ext4
t0=$TIER
make_tier t1 512 ext4
t1=$TIER
make_tier native 512 ext4
native=$TIER
# A second, distinct filesystem for the EXDEV cases.
make_tier secondary 64 ext4
secondary=$TIER
chmod 755 "$t0" "$t1" "$native" "$secondary"

cat >"$WORK/pjdfstest.toml" <<'TOML'
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
TOML

run_suite() { # LABEL PATH
  local out="$WORK/$1.out" rc=0
  echo "==> pjdfstest on $1 ($2)" >&2
  timeout -k 10 "$SUITE_TIMEOUT" pjdfstest -c "$WORK/pjdfstest.toml" -p "$2" -s "$secondary" >"$out" 2>&1 || rc=$?
  if [ "$rc" -ge 124 ]; then
    echo "pjdfstest on $1 did not finish (exit $rc); last lines:" >&2
    tail -n 20 "$out" >&2
  fi
  grep -E '^Summary:' "$out" >&2 || true
}

passing() { # LABEL -> sorted names of passing tests
  sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/$1.out" | awk '$NF == "ok" && NF == 2 { print $1 }' | sort -u
}

run_suite native "$native"
start_pool "$WORK/mnt" "$t0:$t1" || { echo "pjdfstest: could not mount the pool" >&2; exit 1; }
run_suite smoothfs "$WORK/mnt"
daemon_ok=0
stop_pool || daemon_ok=1

passing native >"$WORK/native.pass"
passing smoothfs >"$WORK/smoothfs.pass"
touch "$EXCEPTIONS"
grep -vE '^[[:space:]]*(#|$)' "$EXCEPTIONS" | awk '{ print $1 }' | sort -u >"$WORK/exceptions" || true

comm -23 "$WORK/native.pass" "$WORK/smoothfs.pass" >"$WORK/lost"
comm -23 "$WORK/lost" "$WORK/exceptions" >"$WORK/regressions"
comm -12 "$WORK/exceptions" "$WORK/smoothfs.pass" >"$WORK/stale" || true

n_native=$(wc -l <"$WORK/native.pass")
n_smooth=$(wc -l <"$WORK/smoothfs.pass")
n_reg=$(wc -l <"$WORK/regressions")

if [ -s "$WORK/stale" ]; then
  echo "note: listed as exceptions but passing now (remove them from $EXCEPTIONS):"
  sed 's/^/  /' "$WORK/stale"
fi
if [ "$n_reg" -gt 0 ]; then
  echo "pjdfstest: passing on ext4 but failing on smoothfs (not in $EXCEPTIONS):"
  while read -r name; do
    # The result word ends the name's line; details follow on tab-indented lines.
    sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/smoothfs.out" |
      awk -v n="$name" '$1 == n { $1 = ""; print "  " n ":" $0; show = 1; next }
                        show && /^\t/ { print "    " $0; next } { show = 0 }' | head -n 8
  done <"$WORK/regressions"
  echo "smoothfs daemon log tail:"
  tail -n 30 "$WORK/mnt.daemon.log" | sed 's/^/  /'
fi
echo "pjdfstest: ext4 ${n_native} passed, smoothfs ${n_smooth} passed, ${n_reg} regressions"
[ "$n_native" -gt 0 ] || { echo "pjdfstest: no test passed on plain ext4; the suite itself is broken" >&2; exit 1; }
[ "$daemon_ok" -eq 0 ] || { echo "pjdfstest: the smoothfs daemon did not survive the run cleanly" >&2; exit 1; }
[ "$n_reg" -eq 0 ]
