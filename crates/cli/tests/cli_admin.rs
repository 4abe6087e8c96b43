//! The administrative CLI on real mounts, JSON output parsed and checked:
//! `pin set|get` (S8.6), `quiesce` / `reconcile` (S15), `tier
//! list|down|resume` (S23), `tier evacuate` (S24, with interruptions),
//! `tunable get|set` and `scrub start|stop|status` (S4.6).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `smoothfs ARGS --pool POOL` to completion. Every command names its
/// pool: other tests mount pools of their own at the same time.
fn sf(pool: &str, args: &[&str]) -> Output {
    Command::new(SMOOTHFS)
        .args(args)
        .args(["--pool", pool])
        .stdin(Stdio::null())
        .output()
        .expect("run smoothfs")
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `smoothfs ARGS` that must exit 0 and print one JSON document.
#[track_caller]
fn sf_json(pool: &str, args: &[&str]) -> Value {
    let out = sf(pool, args);
    assert!(out.status.success(), "smoothfs {args:?}: {}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "smoothfs {args:?}: stdout is not JSON ({e}): {}",
            show(&out)
        )
    })
}

/// `smoothfs ARGS` that must fail with `code`; returns stderr.
#[track_caller]
fn sf_fails(pool: &str, args: &[&str], code: i32) -> String {
    let out = sf(pool, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "smoothfs {args:?}: {}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every line of stdout that parses as JSON.
fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Regular files on a tier lower, outside `.smoothfs` and `lost+found`.
fn lower_files(tier: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(tier.join(&rel)).unwrap().flatten() {
            let name = e.file_name();
            if rel.as_os_str().is_empty() && (name == ".smoothfs" || name == "lost+found") {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(rel.join(&name));
            } else if ft.is_file() {
                out.push(rel.join(&name));
            }
        }
    }
    out.sort();
    out
}

fn tier_of(list: &Value, rank: u64) -> &Value {
    list["tiers"]
        .as_array()
        .expect("tiers array")
        .iter()
        .find(|t| t["tier_rank"] == rank)
        .unwrap_or_else(|| panic!("no tier {rank} in {list}"))
}

// ---------------------------------------------------------------------------
// pin
// ---------------------------------------------------------------------------

#[test]
fn s8_6_a1_pin_set_get_and_remount() {
    if !require_root_and_fuse() {
        return;
    }
    let mut p = TwoTierPool::new("ext4", "ext4", "");
    let pn = &p.pool.name().to_string();
    let f = p.mnt("f");
    write_synced(&f, b"pinned");
    let fp = s(&f).to_string();

    let v = sf_json(pn, &["pin", "set", &fp, "hot", "--json"]);
    assert_eq!(v["pin_state"], "pin_hot", "{v}");
    assert_eq!(v["policy_pin"], "pin_hot", "{v}");
    assert_eq!(v["mediated"], false, "{v}");
    assert_eq!(v["rel_path"], "f");
    assert_eq!(v["object_id"].as_str().map(str::len), Some(32));
    let oid = v["object_id"].clone();
    assert_eq!(
        v["object_id"].as_str().unwrap(),
        hex(&lower_oid(&p.t0.join("f"))),
        "the OID is the file's own"
    );

    let g = sf_json(pn, &["pin", "get", &fp, "--json"]);
    assert_eq!(g["pin_state"], "pin_hot", "{g}");
    assert_eq!(g["policy_pin"], "pin_hot");
    assert_eq!(g["object_id"], oid);
    // The human form names the pins too.
    let out = sf(pn, &["pin", "get", &fp]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("pin_hot"));

    // Cold plus the mediated flag, then hot without it.
    let v = sf_json(pn, &["pin", "set", &fp, "cold", "--mediated", "--json"]);
    assert_eq!(
        (v["policy_pin"].as_str(), v["mediated"].as_bool()),
        (Some("pin_cold"), Some(true))
    );
    let v = sf_json(pn, &["pin", "set", &fp, "hot", "--no-mediated", "--json"]);
    assert_eq!(
        (v["policy_pin"].as_str(), v["mediated"].as_bool()),
        (Some("pin_hot"), Some(false))
    );

    // A hot-pinned file is not demoted (S8.2): the move is refused.
    let err = sf_fails(pn, &["move", "--to", "1", &fp], 2);
    assert!(err.contains("pin"), "{err}");

    // Persisted across remount (S8.3).
    p.pool.remount();
    let g = sf_json(pn, &["pin", "get", &fp, "--json"]);
    assert_eq!(g["pin_state"], "pin_hot", "after remount: {g}");
    assert_eq!(g["policy_pin"], "pin_hot");
    assert_eq!(g["object_id"], oid);

    let v = sf_json(pn, &["pin", "set", &fp, "none", "--json"]);
    assert_eq!(v["pin_state"], "none", "{v}");
    assert_eq!(
        sf_json(pn, &["pin", "get", &fp, "--json"])["policy_pin"],
        "none"
    );

    // Usage errors exit 1, a missing file 2 with a hint.
    let err = sf_fails(pn, &["pin", "set", &fp, "warm"], 1);
    assert!(err.contains("hot, cold or none"), "{err}");
    let out = sf(
        pn,
        &["pin", "set", &fp, "hot", "--mediated", "--no-mediated"],
    );
    assert!(!out.status.success(), "conflicting flags: {}", show(&out));
    let err = sf_fails(pn, &["pin", "get", s(&p.mnt("missing"))], 2);
    assert!(err.contains("ENOENT"), "{err}");
    let err = sf_fails(pn, &["pin", "get", s(p.pool.path())], 1);
    assert!(err.contains("root"), "{err}");
}

// ---------------------------------------------------------------------------
// quiesce / reconcile
// ---------------------------------------------------------------------------

#[test]
fn s15_quiesce_reconcile_and_prune() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pn = p.pool.name();
    let pool = p.pool.name().to_string();
    let f = p.mnt("data.bin");
    let data = pattern(200_000, 3);
    write_synced(&f, &data);

    let q = sf_json(pn, &["quiesce", "--json"]);
    assert_eq!(q["quiesced"], true, "{q}");
    assert_eq!(q["pool"], pool.as_str());
    assert!(q["waited_ms"].is_u64());
    let t = sf_json(pn, &["tunable", "get", "quiesced", "--json"]);
    assert_eq!(t["value"], 1, "{t}");
    // Repeating it is harmless (S15.1/3).
    sf_json(pn, &["quiesce", "--json"]);

    // No move while quiesced; I/O goes on.
    let err = sf_fails(pn, &["move", "--to", "1", s(&f)], 2);
    assert!(err.contains("EAGAIN"), "{err}");
    assert_eq!(fs::read(&f).unwrap(), data);
    // Evacuation refuses up front too.
    let err = sf_fails(pn, &["tier", "evacuate", "0"], 2);
    assert!(
        err.contains("quiesced") && err.contains("reconcile"),
        "{err}"
    );

    // Empty directories on both tiers: pruning removes the slower copies.
    fs::create_dir_all(p.mnt("a/b")).unwrap();
    fs::create_dir_all(p.t1.join("a/b")).unwrap();
    let r = sf_json(pn, &["reconcile", "--reason", "maint", "--prune", "--json"]);
    assert_eq!(r["reconciled"], true, "{r}");
    assert_eq!(r["reason"], "maint", "{r}");
    assert_eq!(r["quiesced"], false, "{r}");
    assert!(
        r["last_reconcile_at"].as_u64().unwrap() > 1_600_000_000,
        "{r}"
    );
    // Both copies of a/b and a/ on tier 1 (plus tier 1's empty lost+found,
    // which also exists on tier 0).
    assert!(r["prune"]["dirs_removed"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["prune"]["dirs_kept"].is_u64(), "{r}");
    assert!(r["prune"]["dirs_updated"].is_u64(), "{r}");
    assert!(!p.t1.join("a").exists(), "slow copies pruned");
    assert!(p.mnt("a/b").is_dir());

    let st = sf_json(pn, &["status", "--json"]);
    assert_eq!(st["last_reconcile_reason"], "maint", "{st}");
    assert_eq!(st["quiesced"], 0);

    // Moves work again.
    let out = sf(pn, &["move", "--to", "1", s(&f)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(p.holders("data.bin"), vec![1]);

    // A reason longer than 255 bytes is a usage error.
    let long = "x".repeat(256);
    sf_fails(pn, &["reconcile", "--reason", &long], 1);
}

/// S4.5 through the mount: a burst of creates takes light checkpoints on the
/// record count and a durable one within seconds; STATUS counts both.
#[test]
fn status_counts_light_and_durable_checkpoints() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pn = p.pool.name();
    fs::create_dir(p.mnt("burst")).unwrap();
    for i in 0..1000 {
        fs::File::create(p.mnt(format!("burst/f{i}"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = sf_json(pn, &["status", "--json"]);
        let all = st["journal_checkpoints_total"].as_u64().unwrap();
        let durable = st["journal_durable_checkpoints_total"].as_u64().unwrap();
        assert!(durable <= all, "{st}");
        // 1001 records: several checkpoints, at least one durable.
        if all >= 2 && durable >= 1 {
            break st;
        }
        assert!(Instant::now() < deadline, "no durable checkpoint: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(st["journal_flusher_errors"], 0, "{st}");
    assert_eq!(fs::read_dir(p.mnt("burst")).unwrap().count(), 1000);
}

// ---------------------------------------------------------------------------
// tier list / down / resume
// ---------------------------------------------------------------------------

#[test]
fn s23_tier_list_down_resume() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pn = p.pool.name();
    for (i, n) in ["x", "y", "z"].iter().enumerate() {
        write_synced(&p.mnt(n), &pattern(100_000 * (i + 1), i as u64));
    }
    let z = p.mnt("z");
    let zdata = fs::read(&z).unwrap();
    let out = sf(pn, &["move", "--to", "1", s(&z)]);
    assert!(out.status.success(), "{}", show(&out));

    let l = sf_json(pn, &["tier", "list", "--json"]);
    assert_eq!(l["pool"], p.pool.name());
    assert_eq!(l["tiers"].as_array().unwrap().len(), 2, "{l}");
    for (rank, objects, bytes) in [(0u64, 2u64, 300_000u64), (1, 1, 300_000)] {
        let t = tier_of(&l, rank);
        assert_eq!(t["tier_state"], "ok", "{t}");
        assert_eq!(
            t["tier_path"].as_str().unwrap(),
            s(p.tiers()[rank as usize]),
            "{t}"
        );
        let caps: Vec<&str> = t["tier_cap_names"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            caps.contains(&"xattr_trusted") && caps.contains(&"hardlink"),
            "{t}"
        );
        assert!(t["passthrough"].as_bool().is_some());
        let size = t["size_bytes"].as_u64().unwrap();
        let used = t["used_bytes"].as_u64().unwrap();
        assert!(size > 400 << 20 && used > 0 && used < size, "{t}");
        let fill = t["fill_pct"].as_f64().unwrap();
        assert!(fill > 0.0 && fill < 100.0, "{t}");
        assert_eq!(t["full_pct"], 98, "{t}");
        assert_eq!(t["objects"], objects, "{t}");
        assert_eq!(t["object_bytes"], bytes, "{t}");
        assert_eq!(t["objects_exact"], true);
    }
    // The human table has a row per tier.
    let out = sf(pn, &["tier", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("RANK") && text.contains("FULL_AT"), "{text}");
    assert!(text.contains(s(p.t1.path())), "{text}");

    // S23/A5 through the CLI: down → EIO until resume.
    let d = sf_json(pn, &["tier", "down", "1", "--json"]);
    assert_eq!(
        (d["tier_rank"].as_u64(), d["tier_state"].as_str()),
        (Some(1), Some("down")),
        "{d}"
    );
    assert_errno(fs::read(&z), libc::EIO, "read of a tier-1 file while down");
    assert_eq!(
        fs::read(p.mnt("x")).unwrap().len(),
        100_000,
        "tier 0 unaffected"
    );
    let l = sf_json(pn, &["tier", "list", "--no-objects", "--json"]);
    assert_eq!(tier_of(&l, 1)["tier_state"], "down", "{l}");
    assert!(tier_of(&l, 1).get("objects").is_none());
    let err = sf_fails(pn, &["tier", "evacuate", "1"], 2);
    assert!(err.contains("tier resume 1"), "{err}");

    let r = sf_json(pn, &["tier", "resume", "1", "--json"]);
    assert_eq!(r["tier_state"], "ok", "{r}");
    assert_eq!(fs::read(&z).unwrap(), zdata);

    // Bad ranks are usage errors.
    let err = sf_fails(pn, &["tier", "down", "7"], 1);
    assert!(err.contains("ranks 0-1"), "{err}");
    sf_fails(pn, &["tier", "resume", "x"], 1);
}

// ---------------------------------------------------------------------------
// tunable / scrub
// ---------------------------------------------------------------------------

#[test]
fn tunable_get_set_and_scrub_commands() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pn = p.pool.name();
    for i in 0..20 {
        write_synced(&p.mnt(format!("f{i}")), &pattern(1000, i));
    }
    let all = sf_json(pn, &["tunable", "get", "--json"]);
    let tunables: BTreeMap<String, Value> = all["tunables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    for name in [
        "scrub_rate",
        "cleanup_grace_s",
        "metadata_active_tier_mask",
        "write_staging_full_pct",
    ] {
        let t = tunables
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {all}"));
        assert_eq!(t["writable"], true, "{t}");
    }
    assert!(
        !tunables.contains_key("tier_count"),
        "only writable items by default"
    );
    let every = sf_json(pn, &["tunable", "get", "--all", "--json"]);
    assert!(
        every["tunables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "tier_count" && t["writable"] == false),
        "{every}"
    );

    let v = sf_json(pn, &["tunable", "set", "scrub_rate", "1234", "--json"]);
    assert_eq!(
        (v["name"].as_str(), v["value"].as_u64()),
        (Some("scrub_rate"), Some(1234)),
        "{v}"
    );
    let v = sf_json(pn, &["tunable", "get", "scrub_rate", "--json"]);
    assert_eq!(v["value"], 1234, "{v}");
    let v = sf_json(
        pn,
        &["tunable", "set", "metadata_active_tier_mask", "3", "--json"],
    );
    assert_eq!(v["value"], "0x3", "{v}");
    let out = sf(pn, &["tunable", "set", "cleanup_grace_s", "600"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "cleanup_grace_s = 600"
    );

    let err = sf_fails(pn, &["tunable", "set", "tier_count", "5"], 2);
    assert!(err.contains("EPERM") && err.contains("read-only"), "{err}");
    let err = sf_fails(pn, &["tunable", "set", "scrub_rate", "fast"], 2);
    assert!(err.contains("EINVAL"), "{err}");
    let err = sf_fails(pn, &["tunable", "get", "no_such_item"], 1);
    assert!(err.contains("tunable get --all"), "{err}");

    // Scrub.
    let st = sf_json(pn, &["scrub", "status", "--json"]);
    assert_eq!(st["action"], "status");
    assert!(st["scrub_state"].is_string(), "{st}");
    assert!(st["scrub_entries_done"].is_u64(), "{st}");
    let before = st["scrub_last_complete_at"].as_u64().unwrap_or(0);
    let st = sf_json(pn, &["scrub", "start", "--json"]);
    assert_eq!(st["action"], "start");
    assert!(
        ["running", "idle"].contains(&st["scrub_state"].as_str().unwrap()),
        "{st}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = sf_json(pn, &["scrub", "status", "--json"]);
        // The requested pass saw the 20 files (the one at mount saw none).
        if st["scrub_state"] == "idle" && st["scrub_entries_done"].as_u64().unwrap() >= 20 {
            assert!(
                st["scrub_last_complete_at"].as_u64().unwrap() >= before.max(1),
                "{st}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "scrub did not finish: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = sf_json(pn, &["scrub", "stop", "--json"]);
    assert_eq!(st["action"], "stop");
    assert!(
        ["stopped", "idle"].contains(&st["scrub_state"].as_str().unwrap()),
        "{st}"
    );
    let out = sf(pn, &["scrub", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("scrub_state"));
}

// ---------------------------------------------------------------------------
// tier evacuate (S24)
// ---------------------------------------------------------------------------

/// Mixed sizes, 0 B to 2 MiB: most small, every tenth up to 2 MiB.
fn evac_size(i: usize) -> usize {
    match i % 10 {
        0 => (i * 7919) % (2 << 20) + 1,
        1 => 0,
        _ => (i * 104_729) % (64 << 10),
    }
}

/// Spawn `smoothfs tier evacuate RANK --json`; wait until `stop_after`
/// files were moved, then send `signal`. Returns (exit code, events).
fn evacuate_interrupted(
    pn: &str,
    rank: &str,
    stop_after: u64,
    signal: i32,
) -> (Option<i32>, Vec<Value>) {
    let mut child = Command::new(SMOOTHFS)
        .args(["tier", "evacuate", rank, "--json", "--pool", pn])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evacuate");
    let pid = child.id() as i32;
    let stdout = child.stdout.take().unwrap();
    let mut events = Vec::new();
    let mut sent = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if !sent && v["event"] == "moved" && v["done"].as_u64().unwrap() >= stop_after {
            unsafe { libc::kill(pid, signal) };
            sent = true;
        }
        events.push(v);
    }
    let (status, killed) = wait_with_deadline(&mut child, Duration::from_secs(120));
    assert!(!killed, "evacuate did not stop after signal {signal}");
    assert!(
        sent,
        "the evacuation finished before {stop_after} moves: {events:?}"
    );
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    if signal == libc::SIGINT {
        assert!(err.contains("re-run"), "stderr: {err}");
    }
    (status.code(), events)
}

#[test]
fn s24_evacuate_1000_files_with_interruptions() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pn = p.pool.name();
    const N: usize = 1000;
    let mut want = BTreeMap::new();
    let mut inos = BTreeMap::new();
    let mut total = 0usize;
    for d in 0..10 {
        fs::create_dir_all(p.mnt(format!("d{d}/sub"))).unwrap();
    }
    for i in 0..N {
        let rel = format!("d{}/{}f{i}", i % 10, if i % 3 == 0 { "sub/" } else { "" });
        let data = pattern(evac_size(i), i as u64);
        total += data.len();
        fs::write(p.mnt(&rel), &data).unwrap();
        want.insert(rel, sha256_bytes(&data));
    }
    syncfs(p.pool.path());
    for rel in want.keys() {
        inos.insert(rel.clone(), ino_of(&p.mnt(rel)));
    }
    assert!(total > 50 << 20, "mixed sizes add up to {total} bytes");
    assert_eq!(lower_files(p.t0.path()).len(), N, "all on tier 0 first");

    // Objects per tier before.
    let l = sf_json(pn, &["tier", "list", "--json"]);
    assert_eq!(tier_of(&l, 0)["objects"], N as u64, "{l}");

    // Interrupted with SIGINT after ~1/3: the moves in flight are aborted.
    let (code, ev) = evacuate_interrupted(pn, "0", 300, libc::SIGINT);
    assert_eq!(code, Some(2), "interrupted runs exit 2: {:?}", ev.last());
    let start = ev
        .iter()
        .find(|e| e["event"] == "start")
        .expect("start event");
    assert_eq!(start["objects"], N as u64, "{start}");
    assert!(
        ["set", "unsupported"].contains(&start["create_disabled"].as_str().unwrap()),
        "{start}"
    );
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["result"], "interrupted", "{summary}");
    let moved1 = summary["objects_moved"].as_u64().unwrap();
    let left1 = lower_files(p.t0.path()).len();
    assert!(moved1 >= 300 && moved1 < N as u64, "{summary}");
    assert_eq!(left1 as u64, N as u64 - moved1, "moved files left tier 0");
    assert_eq!(lower_files(p.t1.path()).len() as u64, moved1);
    assert!(
        fs::read_dir(p.t1.join(".smoothfs/incoming")).map_or(0, |d| d.count()) == 0,
        "no staging file left behind after SIGINT"
    );

    // SIGKILL after ~2/3: nothing gets to clean up; the re-run recovers.
    let (code, ev) = evacuate_interrupted(pn, "0", 350, libc::SIGKILL);
    assert_eq!(code, None, "killed");
    let start = ev
        .iter()
        .find(|e| e["event"] == "start")
        .expect("start event");
    assert_eq!(
        start["objects"].as_u64().unwrap() as usize,
        left1,
        "resumed where it stopped"
    );
    let left2 = lower_files(p.t0.path()).len();
    assert!(left2 < left1 && left2 > 0, "{left2} of {left1}");
    // The killed run's in-flight journal is what the re-run recovers from.
    let journal = PathBuf::from(format!(
        "/run/smoothfs/evacuate-{}-tier0.inflight",
        p.pool.uuid()
    ));
    assert!(journal.exists(), "{} after SIGKILL", journal.display());

    // The re-run finishes the job.
    let out = sf(pn, &["tier", "evacuate", "0", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let ev = json_lines(&out.stdout);
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["result"], "complete", "{summary}");
    assert_eq!(summary["remaining_objects"], 0);
    assert_eq!(summary["remaining_regular_files"], 0);
    assert!(
        summary["blocked"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    assert!(
        lower_files(p.t0.path()).is_empty(),
        "tier 0 holds no regular file"
    );
    assert_eq!(lower_files(p.t1.path()).len(), N);
    assert!(
        fs::read_dir(p.t1.join(".smoothfs/incoming")).map_or(0, |d| d.count()) == 0,
        "no staging file left behind after SIGKILL"
    );
    assert!(
        !journal.exists(),
        "journal removed once nothing is in flight"
    );
    if let Some(r) = ev.iter().find(|e| e["event"] == "recovered") {
        assert!(
            r["plans_aborted"].is_u64() && r["cleanups_done"].is_u64(),
            "{r}"
        );
    }

    // Every file readable through the mount, same bytes, same st_ino.
    for (rel, sum) in &want {
        assert_eq!(&sha256_file(&p.mnt(rel)), sum, "{rel}");
        assert_eq!(ino_of(&p.mnt(rel)), inos[rel], "{rel} kept its st_ino");
        assert_eq!(p.holders(rel), vec![1], "{rel}");
    }
    let l = sf_json(pn, &["tier", "list", "--json"]);
    assert_eq!(tier_of(&l, 0)["objects"], 0, "{l}");
    assert_eq!(tier_of(&l, 1)["objects"], N as u64, "{l}");

    // Running it again is a no-op that succeeds.
    let v = sf(pn, &["tier", "evacuate", "0", "--json"]);
    assert!(v.status.success(), "{}", show(&v));
    let last = json_lines(&v.stdout).pop().unwrap();
    assert_eq!(
        (last["result"].as_str(), last["objects_moved"].as_u64()),
        (Some("complete"), Some(0))
    );
    // Cancel leaves the data where it is.
    let c = sf_json(pn, &["tier", "evacuate", "0", "--cancel", "--json"]);
    assert_eq!(c["event"], "cancelled", "{c}");
    assert_eq!(lower_files(p.t1.path()).len(), N);
}

#[test]
fn s24_evacuate_reports_pinned_files_and_refuses_without_room() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pn = p.pool.name();
    let names = ["a", "b", "c"];
    let mut sums = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        let data = pattern(8 << 20, i as u64 + 40);
        write_synced(&p.mnt(n), &data);
        sums.insert(*n, sha256_bytes(&data));
    }
    // A hot pin cannot leave tier 0 (there is no faster tier).
    let pinned = p.mnt("b");
    sf_json(pn, &["pin", "set", s(&pinned), "hot", "--json"]);
    let out = sf(pn, &["tier", "evacuate", "0", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("re-run"), "{err}");
    let summary = json_lines(&out.stdout).pop().unwrap();
    assert_eq!(summary["result"], "incomplete", "{summary}");
    assert_eq!(summary["objects_moved"], 2, "{summary}");
    let blocked = summary["blocked"].as_array().unwrap();
    assert_eq!(blocked.len(), 1, "{summary}");
    assert_eq!(blocked[0]["rel_path"], "b");
    assert!(
        blocked[0]["reason"].as_str().unwrap().contains("pin_hot"),
        "{summary}"
    );
    assert!(
        blocked[0]["hint"].as_str().unwrap().contains("pin set"),
        "{summary}"
    );
    assert_eq!(p.holders("b"), vec![0]);
    // Human output lists it with the reason.
    let out = sf(pn, &["tier", "evacuate", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("b: pin_hot"), "{text}");

    sf_json(pn, &["pin", "set", s(&pinned), "none", "--json"]);
    let out = sf(pn, &["tier", "evacuate", "0"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("holds no files"));
    for n in names {
        assert_eq!(p.holders(n), vec![1]);
        assert_eq!(sha256_file(&p.mnt(n)), sums[n]);
    }

    // Back to tier 0 with `--to`, then fill tier 0 so tier 1 cannot be
    // evacuated: refused up front, nothing moved.
    let out = sf(pn, &["tier", "evacuate", "1", "--to", "0", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(p.holders("a"), vec![0]);
    for n in ["a", "c"] {
        sf(pn, &["move", "--to", "1", s(&p.mnt(n))]);
    }
    fill_to_pct(p.t0.path(), 88);
    let out = sf(pn, &["tier", "evacuate", "1", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("insufficient capacity") && err.contains("free at least"),
        "{err}"
    );
    let ev = json_lines(&out.stdout);
    let refused = ev
        .iter()
        .find(|e| e["event"] == "refused")
        .expect("refused event");
    assert_eq!(refused["reason"], "insufficient capacity");
    assert!(
        refused["bytes_needed"].as_u64().unwrap() > refused["bytes_available"].as_u64().unwrap(),
        "{refused}"
    );
    assert_eq!(p.holders("a"), vec![1], "nothing moved");
    assert_eq!(p.holders("c"), vec![1]);
}

#[test]
fn cached_directory_listings_follow_changes_and_the_metadata_mask() {
    // Listings are cached by the kernel (FOPEN_CACHE_DIR): changes through
    // the mount and a metadata-mask change must still show at once.
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |_, t1| {
        fs::create_dir(t1.join("d")).unwrap();
        fs::write(t1.join("d/on1"), b"tier 1").unwrap();
    });
    let pn = p.pool.name();
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p.mnt(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("d"), ["on1"]);
    assert_eq!(names("d"), ["on1"], "a second listing (from the cache)");
    fs::write(p.mnt("d/new"), b"x").unwrap();
    assert_eq!(names("d"), ["new", "on1"], "a create shows at once");
    fs::rename(p.mnt("d/new"), p.mnt("d/renamed")).unwrap();
    assert_eq!(names("d"), ["on1", "renamed"], "a rename shows at once");
    fs::remove_file(p.mnt("d/renamed")).unwrap();
    assert_eq!(names("d"), ["on1"], "an unlink shows at once");
    // Tier 1 metadata-inactive: its names leave the listing, and come back.
    sf_json(
        pn,
        &["tunable", "set", "metadata_active_tier_mask", "1", "--json"],
    );
    assert_eq!(names("d"), Vec::<String>::new(), "tier 1 is masked");
    sf_json(
        pn,
        &["tunable", "set", "metadata_active_tier_mask", "3", "--json"],
    );
    assert_eq!(names("d"), ["on1"], "tier 1 is active again");
}
