#!/usr/bin/env python3
"""Helpers for bench/run.sh: turn fio/metabench output into CSV rows, and
CSV rows into the results table (median, min-max spread, ratios) plus a
check of the SPEC S28 targets.

  report.py fio JSON TIER WORKLOAD TARGET ROUND DAEMON_CPU_MS   -> CSV rows
  report.py meta FILE TIER TARGET ROUND                          -> CSV rows
  report.py table CSV [TARGET ...]                               -> markdown

CSV columns: tier,workload,metric,target,round,value
"""
import csv
import json
import statistics
import sys


def emit(rows):
    w = csv.writer(sys.stdout)
    for r in rows:
        w.writerow(r)


def cmd_fio(path, tier, workload, target, rnd, daemon_cpu_ms):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before the JSON document.
    j = json.loads(text[text.index("{"):])
    job = j["jobs"][0]
    if job.get("error"):
        sys.exit(f"fio job error {job['error']} in {path}")
    ddir = "write" if job["write"]["io_bytes"] > 0 else "read"
    d = job[ddir]
    rows = []
    if workload.startswith("rand"):
        rows.append((tier, workload, "IOPS", target, rnd, f"{d['iops']:.1f}"))
        # Total latency (submission + completion): with a synchronous
        # io_submit (FUSE without async DIO) clat alone is near zero.
        p99 = d["lat_ns"].get("percentile", {}).get("99.000000")
        if p99 is None:
            p99 = d["clat_ns"].get("percentile", {}).get("99.000000")
        if p99 is not None:
            rows.append((tier, workload, "p99 us", target, rnd, f"{p99 / 1000:.1f}"))
    else:
        rows.append((tier, workload, "MiB/s", target, rnd, f"{d['bw_bytes'] / 2**20:.1f}"))
        # CPU spent by fio itself plus the FUSE daemon (N7); kernel threads
        # (writeback, loop workers) are not counted.
        fio_cpu_ms = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * job["job_runtime"]
        rows.append((tier, workload, "cpu ms", target, rnd,
                     f"{fio_cpu_ms + float(daemon_cpu_ms):.0f}"))
        if target != "native":
            rows.append((tier, workload, "daemon cpu ms", target, rnd,
                         f"{float(daemon_cpu_ms):.0f}"))
    emit(rows)


def cmd_meta(path, tier, target, rnd):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue
            op, ops, _p50, p99 = parts
            rows.append((tier, f"meta-{op}", "ops/s", target, rnd, ops))
            rows.append((tier, f"meta-{op}", "p99 us", target, rnd, p99))
    emit(rows)


def fmt(v):
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cmd_table(path, targets):
    data = {}  # (tier, workload, metric) -> target -> [values]
    order = []
    with open(path) as f:
        for tier, wl, metric, target, _rnd, value in csv.reader(f):
            key = (tier, wl, metric)
            if key not in data:
                data[key] = {}
                order.append(key)
            data[key].setdefault(target, []).append(float(value))
    if not targets:
        targets = sorted({t for d in data.values() for t in d})

    def sort_key(key):
        tier, wl, metric = key
        tiers = ["ext4", "tmpfs"]
        wls = ["seq-read", "seq-read-direct", "seq-write", "seq-write-direct",
               "rand-read-4k-qd1", "rand-read-4k-qd32", "meta-create", "meta-stat",
               "meta-open-close", "meta-readdir", "meta-rename", "meta-unlink"]
        metrics = ["MiB/s", "IOPS", "ops/s", "p99 us", "cpu ms", "daemon cpu ms"]
        idx = lambda lst, x: lst.index(x) if x in lst else len(lst)
        return (idx(tiers, tier), tier, idx(wls, wl), wl, idx(metrics, metric))

    order.sort(key=sort_key)

    med = {}
    lines = [
        "| tier | workload | metric | target | median | min–max | × native | × mergerfs | n |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in order:
        tier, wl, metric = key
        for t in targets:
            vals = data[key].get(t)
            if not vals:
                continue
            med[key + (t,)] = statistics.median(vals)
        nat = med.get(key + ("native",))
        mfs = med.get(key + ("mergerfs",))
        for t in targets:
            vals = data[key].get(t)
            if not vals:
                continue
            m = med[key + (t,)]
            rn = f"{m / nat:.2f}" if nat and t != "native" else ""
            rm = f"{m / mfs:.2f}" if mfs and t not in ("native", "mergerfs") else ""
            lines.append(
                f"| {tier} | {wl} | {metric} | {t} | {fmt(m)} | "
                f"{fmt(min(vals))}–{fmt(max(vals))} | {rn} | {rm} | {len(vals)} |"
            )
    print("\n".join(lines))
    print()
    print("Ratios are median/median. For MiB/s, IOPS and ops/s higher is better;")
    print("for `p99 us` and `cpu ms` lower is better. `cpu ms` = fio's own CPU time plus the")
    print("FUSE daemon's (utime+stime from /proc, 10 ms ticks); `daemon cpu ms` is the daemon's")
    print("share alone (near 0 for smoothfs-pt means the I/O bypassed the daemon).")
    print()
    print(s28_check(med, sorted({k[0] for k in order})))


def s28_check(med, tiers):
    out = ["| tier | target | id | measure | value | goal | met |", "|---|---|---|---|---:|---|---|"]

    def ratio(tier, wl, metric, a, b):
        x, y = med.get((tier, wl, metric, a)), med.get((tier, wl, metric, b))
        if x is None or not y:
            return None
        return x / y

    def row(tier, target, nid, measure, val, goal, ok):
        if val is None:
            out.append(f"| {tier} | {target} | {nid} | {measure} | n/a | {goal} | n/a |")
        else:
            out.append(f"| {tier} | {target} | {nid} | {measure} | {val:.2f} | {goal} | "
                       f"{'yes' if ok else '**no**'} |")

    for tier in tiers:
        sp = "smoothfs-pt"
        for nid, wl in (("N1", "seq-read"), ("N1", "seq-read-direct"),
                        ("N2", "seq-write"), ("N2", "seq-write-direct")):
            r = ratio(tier, wl, "MiB/s", sp, "native")
            row(tier, sp, nid, f"{wl} MiB/s × native", r, "≥ 0.95", r is not None and r >= 0.95)
        for wl in ("rand-read-4k-qd1", "rand-read-4k-qd32"):
            r = ratio(tier, wl, "IOPS", sp, "native")
            row(tier, sp, "N3", f"{wl} IOPS × native", r, "≥ 0.90", r is not None and r >= 0.90)
        for nid, wl in (("N7", "seq-read"), ("N7", "seq-write")):
            r = ratio(tier, wl, "cpu ms", sp, "native")
            row(tier, sp, nid, f"{wl} CPU × native", r, "≤ 1.10", r is not None and r <= 1.10)
        for t in ("smoothfs-pt", "smoothfs-mediated"):
            r = ratio(tier, "meta-create", "p99 us", t, "native")
            row(tier, t, "N4", "create p99 × native", r, "≤ 2.0", r is not None and r <= 2.0)
            r = ratio(tier, "meta-stat", "p99 us", t, "native")
            row(tier, t, "N5", "stat p99 × native", r, "≤ 1.5", r is not None and r <= 1.5)
            for op in ("create", "stat", "open-close", "readdir", "rename", "unlink"):
                r = ratio(tier, f"meta-{op}", "ops/s", t, "mergerfs")
                row(tier, t, "N6", f"{op} ops/s × mergerfs", r, "≥ 1.0", r is not None and r >= 1.0)
        for wl in ("seq-read", "seq-write"):
            r = ratio(tier, wl, "MiB/s", "smoothfs-mediated", "native")
            row(tier, "smoothfs-mediated", "N14", f"{wl} MiB/s × native", r,
                "reported (≥ 0.5 expected)", r is not None and r >= 0.5)
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fio" and len(args) == 6:
        cmd_fio(*args)
    elif cmd == "meta" and len(args) == 4:
        cmd_meta(*args)
    elif cmd == "table" and len(args) >= 1:
        cmd_table(args[0], args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
