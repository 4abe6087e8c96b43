"""Write stalls caused by cutovers (S28 N11), for bench/cutover.sh.

    python3 bench/cutover_stall.py SMOOTHFS POOL PATH MOVES

PATH is a file on a pool mounted with passthrough=off, so the handle
opened here is mediated. A thread follows the pool's events; when a move of
the file enters `cutover_in_progress` it writes 4 KiB at once and times the
write. The daemon emits that state just before it drains and switches, so
the write either gets in before the drain (the move then fails with
"source raced", as it must: the source changed after the copy) or waits
for the switch -- that wait is the stall. Moves go back and forth between
tier 0 and tier 1 MOVES times. Also times BASELINE writes with no move
running. Prints one JSON object.
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time

BASELINE = 500


def main() -> None:
    smoothfs, pool, path, moves = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    info = json.loads(subprocess.run([smoothfs, "inspect", "--json", path], check=True,
                                     capture_output=True, text=True).stdout)
    oid, tier = info["object_id"], int(info["current_tier"])
    fd = os.open(path, os.O_RDWR)
    block = os.urandom(4096)

    def write_once() -> float:
        t = time.perf_counter()
        os.pwrite(fd, block, 0)
        return time.perf_counter() - t

    baseline = []
    for _ in range(BASELINE):
        baseline.append(write_once())
        time.sleep(0.001)

    stalls = []
    lock = threading.Lock()
    events = subprocess.Popen([smoothfs, "events", "--pool", pool], stdout=subprocess.PIPE,
                              text=True, bufsize=1)

    def follow() -> None:
        assert events.stdout is not None
        for line in events.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("object_id") == oid and ev.get("movement_state") == "cutover_in_progress":
                dt = write_once()
                with lock:
                    stalls.append(dt)

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.5)  # subscribed

    moved, raced, other = [], 0, 0
    for _ in range(moves):
        to = 1 - tier
        with lock:
            before = len(stalls)
        r = subprocess.run([smoothfs, "move", "--json", "--to", str(to), path],
                           capture_output=True, text=True)
        time.sleep(0.05)  # the follower has written and timed by now
        with lock:
            mine = stalls[before:]
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "{}"
        result = json.loads(last).get("result", "")
        if r.returncode == 0 and result == "moved":
            tier = to
            if mine:
                moved.append(mine[-1])
        elif "raced" in (r.stdout + r.stderr):
            raced += 1
        else:
            other += 1
            sys.stderr.write(r.stdout + r.stderr)
    events.kill()
    os.close(fd)

    def ms(xs: list, q: float) -> float:
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else float("nan")

    print(json.dumps({
        "moves": moves,
        "moved_with_write": len(moved),
        "raced": raced,
        "other_failures": other,
        "stall_ms": {"p50": ms(moved, 0.5), "p99": ms(moved, 0.99), "max": ms(moved, 1.0)},
        "baseline_ms": {"p50": ms(baseline, 0.5), "p99": ms(baseline, 0.99),
                        "max": ms(baseline, 1.0)},
        "stall_mean_ms": round(1000 * statistics.mean(moved), 3) if moved else None,
    }))


if __name__ == "__main__":
    main()
