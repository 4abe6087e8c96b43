#!/usr/bin/env bash
# Control-plane benchmarks (BENCHMARKS.md "control plane", issue 5):
# a planner pass over 1,000,000 synthetic objects (the pure decision code,
# and loading 1,000,000 rows from SQLite + planning), and heat ingest
# through the daemon's write-behind cache (samples/s) plus its flush.
# Release build; results on stdout and, with WRITE_DOCS=1 (default), in the
# "Control plane" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WRITE_DOCS=${WRITE_DOCS:-1}
export PATH="$HOME/.cargo/bin:$PATH"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== planner pass, 1,000,000 synthetic objects" >&2
cargo test --release -q -p smoothfs-control --test planner -- --ignored --nocapture synthetic_million 2>/dev/null | grep -E '^build' | tee -a "$out"
echo "== load 1,000,000 rows from SQLite + plan" >&2
cargo test --release -q -p smoothfs-control --test store -- --ignored --nocapture million_rows 2>/dev/null | grep -E '^(load|inventory|heat)' | tee -a "$out"
echo "== heat ingest (write-behind cache)" >&2
cargo test --release -q -p smoothfs-control --test store -- --ignored --nocapture heat_cache_rate 2>/dev/null | grep -E '^heat ingest' | tee -a "$out"
if [ "$WRITE_DOCS" = 1 ]; then
  python3 - "$out" <<'PY'
import datetime, os, re, subprocess, sys
lines = open(sys.argv[1]).read().strip().splitlines()
kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 30)
body = "\n".join(f"    {l}" for l in lines)
section = f"""## Control plane (bench/controlplane.sh)

{datetime.date.today()}, {os.cpu_count()} CPUs, {mem} GiB, kernel {kernel}; release
build. Command: `bash bench/controlplane.sh`. Targets: a planner pass over
1,000,000 objects under 2 s; heat ingest of at least 1,000,000 samples/s.

{body}
"""
doc = "docs/benchmarks.md"
text = open(doc).read()
pat = re.compile(r"## Control plane \(bench/controlplane\.sh\).*?(?=\n## |\Z)", re.S)
text = pat.sub(section.rstrip() + "\n", text) if pat.search(text) else text.rstrip() + "\n\n" + section
open(doc, "w").write(text)
PY
  echo "docs/benchmarks.md updated" >&2
fi
