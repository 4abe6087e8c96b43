#!/usr/bin/env bash
# The test command: formatting, lints, unit and integration tests (the
# integration tests mount real pools: root and /dev/fuse needed), then the
# POSIX suites (pjdfstest, fsx) against a mounted pool. Every step runs even
# after an earlier one failed; the exit status is non-zero if any failed.
#
# Prerequisites: scripts/install-deps.sh (run by .ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Upper bound for `cargo test`; the harness's own watchdog kills a hung
# pool daemon after SMOOTHFS_TEST_WATCHDOG_SECS.
TEST_TIMEOUT=${SMOOTHFS_TEST_TIMEOUT:-1500}

passed=0
failed=0
report=()

step() { # NAME COMMAND...
  local name=$1 t0=$SECONDS rc=0
  shift
  echo
  echo "==> $name: $*"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    report+=("ok     $name ($((SECONDS - t0)) s)")
  else
    failed=$((failed + 1))
    report+=("FAILED $name (exit $rc, $((SECONDS - t0)) s)")
  fi
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step test timeout -k 30 "$TEST_TIMEOUT" cargo test --workspace --no-fail-fast
step pjdfstest scripts/pjdfstest.sh
step fsx scripts/fsx.sh
step deb scripts/deb-test.sh

echo
echo "==> summary"
printf '  %s\n' "${report[@]}"
echo "steps: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
