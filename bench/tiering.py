"""Tiering quality (SPEC S28 N16), driven by bench/tiering.sh.

    python3 bench/tiering.py MNT T0 T1 DB METRICS_URL INTERVAL_S

MNT is a pool started with `smoothfs up` over the lower directories T0
(fast) and T1 (slow), with its store at DB and its Prometheus endpoint at
METRICS_URL. The pool holds FILES files (d00/f00000 ...) of equal size,
all on T1 at the start.

The workload reads whole files through MNT at RATE reads/s, each read
picking a file from a Zipf(1.0) distribution over a random ranking of the
files. After PHASE_CYCLES planner cycles the ranking is replaced by a new
random one (the hot-set shift) for another PHASE_CYCLES cycles.

Cycles are counted from the planner's own ticks
(`smoothfs_planner_tick_seconds_count`); the workload starts right after a
tick, so cycle 1 is the first tick that saw a full interval of heat. Near
the end of each cycle (0.5 s before the next tick is due) the lower
directory of tier 0 is listed, and the share of reads that land on tier 0
under the current distribution is computed, against the oracle: the K
hottest files, K being the number of files that fit on tier 0 under its
target fill (90 %) and the 64 MiB move reserve, given its usage before
the run.

From the store's movement log, every completed move (a `switched` row) is
checked for being undone later: the same object moved back from the
destination to the source tier. A move undone while the ranking it was
made under still held is churn (the target is < 5 %); one undone after the
shift is reported apart.

Prints one JSON object.
"""
import bisect
import itertools
import json
import os
import random
import re
import sqlite3
import sys
import threading
import time
import urllib.request

FILES = int(os.environ.get("FILES", "10000"))
RATE = float(os.environ.get("RATE", "2000"))
PHASE_CYCLES = int(os.environ.get("PHASE_CYCLES", "8"))
SEED = int(os.environ.get("SEED", "16"))
TARGET_FILL_PCT = 90
RESERVE = (64 + 8) << 20  # move reserve + the planner's slack (PLAN_SLACK_BYTES)


def name(i: int) -> str:
    return f"d{i // 100:02d}/f{i:05d}"


def ticks(url: str) -> int:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return -1
    m = re.search(r"^smoothfs_planner_tick_seconds_count\S*\s+(\d+)", body, re.M)
    return int(m.group(1)) if m else 0


def decisions(url: str) -> dict[str, int]:
    """The planner's decision counters (cumulative, by reason code)."""
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for m in re.finditer(r'^smoothfs_planner_decisions_total\{[^}]*decision="([^"]+)"[^}]*\}\s+(\d+)',
                         body, re.M):
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


def wait_tick(url: str, seen: int, limit_s: float) -> tuple[int, float]:
    """Polls until the tick count passes `seen`; returns (count, time)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        n = ticks(url)
        if n > seen:
            return n, time.monotonic()
        time.sleep(0.1)
    raise SystemExit(f"no planner tick within {limit_s} s (count {seen})")


def on_tier(root: str) -> set[int]:
    """Indices of the bench files present in a lower directory."""
    out = set()
    for d in range(FILES // 100 + 1):
        try:
            entries = os.listdir(os.path.join(root, f"d{d:02d}"))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.startswith("f") and e[1:].isdigit():
                out.add(int(e[1:]))
    return out


class Workload(threading.Thread):
    """Reads Zipf-distributed whole files through the mount."""

    def __init__(self, mnt: str, weights: list[float]) -> None:
        super().__init__(daemon=True)
        self.mnt = mnt
        self.cum = list(itertools.accumulate(weights))
        self.ranking: list[int] = []
        self.rng = random.Random(SEED + 1)
        self.stop = threading.Event()
        self.reads = 0
        self.errors = 0

    def run(self) -> None:
        total = self.cum[-1]
        start = time.monotonic()
        while not self.stop.is_set():
            ranking = self.ranking
            for _ in range(50):
                r = bisect.bisect_left(self.cum, self.rng.random() * total)
                try:
                    with open(os.path.join(self.mnt, name(ranking[r])), "rb") as f:
                        while f.read(1 << 20):
                            pass
                except OSError:
                    self.errors += 1
                self.reads += 1
            ahead = self.reads / RATE - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def share(files: set[int], prob: dict[int, float]) -> float:
    return sum(prob[i] for i in files)


def main() -> None:
    mnt, t0, t1, db, url, interval = sys.argv[1:7]
    interval = float(interval)
    rng = random.Random(SEED)
    weights = [1.0 / r for r in range(1, FILES + 1)]
    total_w = sum(weights)
    st = os.statvfs(t0)
    size = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bavail) * st.f_frsize
    first = os.path.join(t1, name(0))
    if not os.path.exists(first):
        first = os.path.join(t0, name(0))
    alloc = os.stat(first).st_blocks * 512
    # The planner fills to the target while keeping the move reserve free;
    # bench files already on tier 0 (START=full) count as room for the oracle.
    limit = min(size * TARGET_FILL_PCT // 100, size - RESERVE)
    k = max(0, int((limit - used + len(on_tier(t0)) * alloc) // alloc))
    oracle = sum(weights[:k]) / total_w

    load = Workload(mnt, weights)
    rankings = []
    cycles = []
    seen = ticks(url)
    while seen < 0:
        time.sleep(0.2)
        seen = ticks(url)
    seen, t_tick = wait_tick(url, seen, 3 * interval + 30)
    phase_start = []
    last_dec = decisions(url)
    for phase in (1, 2):
        ranking = list(range(FILES))
        rng.shuffle(ranking)
        rankings.append(ranking)
        prob = {f: weights[r] / total_w for r, f in enumerate(ranking)}
        if phase == 2:
            # The shift comes right after a tick, as the start did: the
            # tick that ends the last cycle of phase 1 still plans on its
            # heat, and cycle 1 of phase 2 sees a full interval of the new.
            seen, t_tick = wait_tick(url, seen, 3 * interval + 30)
        load.ranking = ranking
        phase_start.append(time.time())
        if phase == 1:
            load.start()
        for cycle in range(1, PHASE_CYCLES + 1):
            seen, t_tick = wait_tick(url, seen, 3 * interval + 30)
            # Just before the next tick: what this cycle's moves achieved.
            time.sleep(max(0.0, t_tick + interval - 0.5 - time.monotonic()))
            fast = on_tier(t0)
            s = share(fast, prob)
            now_dec = decisions(url)
            delta = {k: v - last_dec.get(k, 0) for k, v in now_dec.items()
                     if v - last_dec.get(k, 0) and not k.startswith("stay:")}
            last_dec = now_dec
            cycles.append({
                "phase": phase, "cycle": cycle, "files_on_tier0": len(fast),
                "hit_share": round(s, 4), "oracle_share": round(oracle, 4),
                "of_oracle": round(s / oracle, 4) if oracle else 0.0,
                "reads": load.reads, "decisions": delta,
            })
            print(json.dumps(cycles[-1]), file=sys.stderr, flush=True)
    load.stop.set()
    load.join()
    end = time.time()

    moves = read_moves(db)
    shift_at = phase_start[1]
    undone_same = undone_after = 0
    by_oid: dict[str, list[dict]] = {}
    for m in moves:
        by_oid.setdefault(m["oid"], []).append(m)
    for seq in by_oid.values():
        for m, later in zip(seq, seq[1:]):
            if later["src"] != m["dst"] or later["dst"] != m["src"]:
                continue
            if (m["at"] < shift_at) == (later["at"] < shift_at):
                undone_same += 1
            else:
                undone_after += 1
    print(json.dumps({
        "files": FILES, "rate": RATE, "interval_s": interval, "phase_cycles": PHASE_CYCLES,
        "k": k, "oracle_share": round(oracle, 4), "cycles": cycles,
        "reads": load.reads, "read_errors": load.errors,
        "seconds": round(end - phase_start[0], 1),
        "moves": len(moves),
        "promotions": sum(1 for m in moves if m["dst"] < m["src"]),
        "demotions": sum(1 for m in moves if m["dst"] > m["src"]),
        "undone_same_phase": undone_same, "undone_after_shift": undone_after,
    }))


def parse_time(s: str) -> float:
    """RFC 3339 UTC with nanoseconds (S22.1/4) to seconds since the epoch."""
    import datetime
    s = s.replace("Z", "+00:00")
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)", s)
    if not m:
        return datetime.datetime.fromisoformat(s.replace(" ", "T") + "+00:00").timestamp()
    base = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) or "+00:00"))
    return base.timestamp() + float(m.group(2) or 0)


def read_moves(db: str) -> list[dict]:
    """Completed moves in log order: object, source and destination rank."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rank = {tid: r for tid, r in con.execute("SELECT id, rank FROM tier_targets")}
    rows = con.execute(
        "SELECT object_id, source_tier, dest_tier, written_at FROM smoothfs_movement_log "
        "WHERE to_state = 'switched' ORDER BY id").fetchall()
    failed = con.execute(
        "SELECT payload_json, count(*) FROM smoothfs_movement_log WHERE to_state = 'failed' "
        "GROUP BY payload_json ORDER BY count(*) DESC LIMIT 5").fetchall()
    con.close()
    for payload, n in failed:
        print(f"failed moves: {n} x {payload[:300]}", file=sys.stderr)
    out = []
    for oid, src, dst, at in rows:
        out.append({"oid": oid, "src": rank.get(src, src), "dst": rank.get(dst, dst),
                    "at": parse_time(at)})
    return out


if __name__ == "__main__":
    main()
