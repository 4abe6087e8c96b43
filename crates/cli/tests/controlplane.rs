//! The control plane end to end on real mounts (S7, S9, S10, S15, S19,
//! S22, S26.6): `smoothfs up` promotes a file that is read repeatedly
//! (S26.6/A1); `smoothfs controlplane` demotes untouched files from a
//! nearly full fast tier until it is under target, with contents, inode
//! numbers and open handles intact (S22.4/5); a control plane killed in the
//! middle of a copy and restarted rolls the move back and completes it, with
//! nothing lost or duplicated and the movement log in order (S19.2, S9.3);
//! PRUNE_DIRS at discovery removes empty duplicate directories (S15.3/A1).
//!
//! Test intervals: planner every 2 s, residency and cooldown 0, heat drained
//! every second (`heat_interval_ms=1000`).

mod common;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use smoothfs_control::store::{LogQuery, Store};
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::ids::{Attr, Command as UapiCommand, MovementState};

const FAST_POLICY: &[&str] = &[
    "--policy",
    "smoothfs_planner_interval_seconds=2",
    "--policy",
    "smoothfs_min_residency_seconds=0",
    "--policy",
    "smoothfs_movement_cooldown_seconds=0",
    "--policy",
    "smoothfs_metrics_listen=127.0.0.1:0",
];

/// One request to a control plane's API socket (S26.6/3).
fn api_call(api: &Path, op: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(api).unwrap();
    s.write_all(format!("{{\"op\":\"{op}\",\"args\":{{}}}}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// GET /metrics from the daemon behind `api` (S26.2).
fn metrics_text(api: &Path) -> String {
    use std::io::Write;
    let v = api_call(api, "move_status");
    let addr = v["result"]["metrics_listen"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics endpoint: {v}"))
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A foreground `smoothfs controlplane` or `smoothfs up`, stopped with
/// SIGTERM (then SIGKILL) on drop.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn spawn(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daemon.log");
        let f = File::create(&log).unwrap();
        let child = Command::new(SMOOTHFS)
            .args(args)
            .env("SMOOTHFS_LOG", "info,smoothfs_fs=warn")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// `smoothfs controlplane` for exactly one pool socket.
    fn controlplane(db: &Path, pool_uuid: &str, api: &Path, extra: &[&str]) -> Daemon {
        let socket = format!("/run/smoothfs/{pool_uuid}.sock");
        let mut args = vec![
            "controlplane",
            "--db",
            db.to_str().unwrap(),
            "--socket",
            &socket,
            "--api-socket",
            api.to_str().unwrap(),
        ];
        args.extend_from_slice(FAST_POLICY);
        args.extend_from_slice(extra);
        Daemon::spawn(&args)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM and wait; panics (with the log) if it takes longer than
    /// `timeout`.
    fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let (status, killed) = wait_with_deadline(&mut child, timeout);
        assert!(
            !killed,
            "daemon did not stop within {timeout:?}\n{}",
            self.log()
        );
        status
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let (_, killed) = wait_with_deadline(&mut child, Duration::from_secs(20));
            if killed {
                eprintln!("harness: control plane killed after SIGTERM timeout");
            }
        }
        if std::thread::panicking() {
            eprintln!("--- control plane log ---\n{}--- end ---", self.log());
        }
    }
}

fn wait_until(what: &str, timeout: Duration, daemon: &Daemon, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}\n--- control plane log ---\n{}",
        daemon.log()
    );
}

fn oid_of(path: &Path) -> [u8; 16] {
    get_xattr(path, "trusted.smoothfs.oid")
        .unwrap()
        .try_into()
        .unwrap()
}

/// No staging leftovers on any tier.
fn incoming_empty(tiers: &[&Path]) -> bool {
    tiers.iter().all(|t| {
        fs::read_dir(t.join(".smoothfs/incoming"))
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(true)
    })
}

/// S26.6/A1: `smoothfs up` gives a working pool in which a file on tier 1
/// that is read repeatedly is promoted to tier 0 without any other
/// command; SIGTERM stops the control plane and unmounts; a second `up`
/// reads the UUID from the tier markers; `up` refuses a directory that is
/// already a mount.
#[test]
fn up_promotes_a_file_read_repeatedly_and_stops_cleanly() {
    if !require_root_and_fuse() {
        return;
    }
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let data = pattern(8 << 20, 11);
    // Out of band on the slow tier: the mount's scrub indexes it.
    fs::write(t1.join("hot.bin"), &data).unwrap();
    let mnt = scratch_dir("smoothfs-up-");
    let name = format!("up{}", std::process::id());
    let tiers = format!("{}:{}", t0.path().display(), t1.path().display());
    let mut args = vec![
        "up",
        "--pool",
        &name,
        "--tiers",
        &tiers,
        "--mountpoint",
        mnt.path().to_str().unwrap(),
        "-o",
        "heat_interval_ms=1000",
    ];
    args.extend_from_slice(FAST_POLICY);
    let _guard = MountGuard {
        path: mnt.path().to_path_buf(),
        needle: mnt.path().to_string_lossy().into_owned(),
    };
    let mut up = Daemon::spawn(&args);
    wait_until("the mount", Duration::from_secs(20), &up, || {
        fstype_at(mnt.path()).as_deref() == Some(FSTYPE)
    });
    let db = t0.join(".smoothfs/control.db");
    wait_until("the store", Duration::from_secs(10), &up, || db.exists());
    let hot = mnt.path().join("hot.bin");
    let ino = ino_of(&hot);

    // A mounted directory is refused.
    let (code, _, err) = cmd_timeout(SMOOTHFS, &args, Duration::from_secs(20));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("already a mount point"), "{err}");

    // Read it until it is promoted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut buf = Vec::new();
        File::open(&hot).unwrap().read_to_end(&mut buf).unwrap();
        assert_eq!(buf.len(), data.len());
        if tiers_holding(&[t0.path(), t1.path()], "hot.bin") == [0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hot.bin was not promoted; holders {:?}\n{}",
            tiers_holding(&[t0.path(), t1.path()], "hot.bin"),
            up.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(sha256_file(&hot), sha256_bytes(&data));
    assert_eq!(ino_of(&hot), ino, "inode number unchanged by the move");
    let st = Store::open(&db).unwrap();
    let row = st.object(&oid_of(&hot)).unwrap().unwrap();
    assert_eq!(row.last_committed_cutover_gen, 1);
    let out = up.log();
    assert!(out.contains("new; stored in the tier markers"), "{out}");
    assert!(out.contains("next: "), "{out}");

    // SIGTERM: control plane first, then the unmount.
    let status = up.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", up.log());
    assert!(mounts_at(mnt.path()).is_empty(), "still mounted");
    assert!(up.log().contains("control plane stopped"));

    // Again: the UUID comes from the markers; the store is kept.
    let mut up2 = Daemon::spawn(&args);
    wait_until("the second mount", Duration::from_secs(20), &up2, || {
        up2.log().contains("control plane running")
    });
    assert!(
        up2.log().contains("read from the tier markers"),
        "{}",
        up2.log()
    );
    assert_eq!(sha256_file(&hot), sha256_bytes(&data));
    up2.signal(libc::SIGINT);
    let status = up2.stop(Duration::from_secs(20));
    assert!(status.success(), "{}", up2.log());
    assert!(mounts_at(mnt.path()).is_empty());
}

/// S22.4/5 on a real mount: tier 0 at 93 % (soft pressure, target 90,
/// fill hysteresis 5) sheds untouched files to tier 1 until it is under
/// target, not all of them; every file keeps its bytes, inode number and
/// open (mediated) handles; `move status` and `plan --dry-run --json`
/// answer while it runs.
#[test]
fn controlplane_demotes_untouched_files_until_the_fast_tier_is_under_target() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "passthrough=off,heat_interval_ms=1000");
    let n = 10;
    let mut files = Vec::new();
    for i in 0..n {
        let rel = format!("dir/f{i}.bin");
        let data = pattern(8 << 20, 100 + i as u64);
        fs::create_dir_all(p.mnt("dir")).unwrap();
        write_synced(&p.mnt(&rel), &data);
        let ino = ino_of(&p.mnt(&rel));
        let handle = File::open(p.mnt(&rel)).unwrap();
        files.push((rel, sha256_bytes(&data), ino, handle));
    }
    assert!(files.iter().all(|(rel, ..)| p.holders(rel) == [0]));
    fill_to_pct(p.t0.path(), 93);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let api = dir.path().join("controlplane-test.sock");
    let mut cp = Daemon::controlplane(&db, p.pool.uuid(), &api, &[]);
    let on_tier1 = |files: &[(String, String, u64, File)]| {
        files
            .iter()
            .filter(|(rel, ..)| p.holders(rel) == [1])
            .count()
    };
    wait_until("a first demotion", Duration::from_secs(60), &cp, || {
        on_tier1(&files) > 0
    });
    let status = |api: &Path| -> serde_json::Value {
        let out = cmd_ok(
            SMOOTHFS,
            &[
                "move",
                "status",
                "--json",
                "--api-socket",
                api.to_str().unwrap(),
            ],
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // `move status` and the dry run answer while the daemon runs.
    let v = status(&api);
    assert!(v["running"].is_array() && v["queued"].is_array(), "{v}");
    let plan = cmd_ok(
        SMOOTHFS,
        &[
            "plan",
            "--dry-run",
            "--all",
            "--json",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(n), "{v}");
    // Settled: nothing queued or running and no new demotion for three
    // planner ticks.
    let mut last = (on_tier1(&files), Instant::now());
    wait_until(
        "the demotions to settle",
        Duration::from_secs(60),
        &cp,
        || {
            let now = on_tier1(&files);
            let v = status(&api);
            let idle =
                v["running"] == serde_json::json!([]) && v["queued"] == serde_json::json!([]);
            if now != last.0 || !idle {
                last = (now, Instant::now());
            }
            last.1.elapsed() >= Duration::from_secs(6)
        },
    );
    // Open handles keep the old lower files allocated until their next use
    // reopens the destination (mediated reissue, S11.5): use them all.
    for (rel, sum, _, handle) in &mut files {
        handle.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        handle.read_to_end(&mut all).unwrap();
        assert_eq!(sha256_bytes(&all), *sum, "{rel} through its open handle");
    }
    syncfs(p.t0.path());
    let used = used_pct(p.t0.path());
    assert!(used < 90.0, "tier 0 at {used:.1}%\n{}", cp.log());
    let demoted: Vec<String> = files
        .iter()
        .filter(|(rel, ..)| p.holders(rel) == [1])
        .map(|(rel, ..)| rel.clone())
        .collect();
    assert!(
        !demoted.is_empty() && demoted.len() < n,
        "demoted {demoted:?}; tier 0 at {used:.1}%\n{}",
        cp.log()
    );
    for (rel, sum, ino, handle) in &mut files {
        assert_eq!(p.holders(&*rel).len(), 1, "{rel} on exactly one tier");
        assert_eq!(sha256_file(&p.mnt(&*rel)), *sum, "{rel}");
        assert_eq!(ino_of(&p.mnt(&*rel)), *ino, "{rel}");
        // The handle opened before the move still reads the whole file.
        let mut all = vec![0u8; 8 << 20];
        handle.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(
            sha256_bytes(&all),
            *sum,
            "{rel} by pread on its open handle"
        );
    }
    assert!(incoming_empty(&p.tiers()));
    // S26.2/A1: the moves are counted on the metrics endpoint.
    let m = metrics_text(&api);
    let line = format!(
        "smoothfs_moves_total{{pool=\"{}\",result=\"success\"}} {}",
        p.pool.name(),
        demoted.len()
    );
    assert!(m.contains(&line), "{line} missing from\n{m}");
    assert!(m.contains("smoothfs_tier_fill_ratio{"), "{m}");
    assert!(m.contains("smoothfs_pool_spill_creates_total{"), "{m}");
    // Every tick that planned the moves above is timed.
    let ticks: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("smoothfs_planner_tick_seconds_count "))
        .unwrap_or_else(|| panic!("no tick count in\n{m}"))
        .trim()
        .parse()
        .unwrap();
    assert!(ticks >= 1, "{m}");
    let reader = Store::open(&db).unwrap();
    for rel in &demoted {
        let row = reader.object(&oid_of(&p.mnt(rel))).unwrap().unwrap();
        assert_eq!(row.movement_state, MovementState::Placed);
        let log = reader
            .movement_log(&LogQuery {
                object_id: Some(row.object_id),
                ..LogQuery::default()
            })
            .unwrap();
        assert_eq!(log[0].to_state, MovementState::CleanupComplete);
        assert_eq!(
            log[0].payload,
            serde_json::json!({"detail": "old source removed"})
        );
    }
    let status = cp.stop(Duration::from_secs(10));
    assert!(status.success(), "{}", cp.log());
}

fn set_policy_pin_cold(pool: &Pool, oid: &[u8; 16]) {
    let uuid = uuid::Uuid::parse_str(pool.uuid()).unwrap();
    let mut c = Client::connect_pool(&uuid).unwrap();
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, uuid.as_bytes())
        .put_bytes(Attr::ObjectId, oid)
        .put_u8(Attr::PolicyPin, 2);
    c.request(UapiCommand::PinSet, &a)
        .expect("PIN_SET pin_cold");
}

/// S19.2 end to end: the control plane is SIGKILLed while it copies (a
/// throttled demotion of a `pin_cold` file) and restarted: recovery rolls
/// the move back (MOVE_ABORT, staging removed), the planner moves it
/// again, and the file ends on exactly one tier with the same bytes; the
/// movement log is one unbroken chain of transitions.
#[test]
fn controlplane_killed_mid_copy_rolls_back_and_completes_after_restart() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let data = pattern(24 << 20, 7);
    write_synced(&p.mnt("big.bin"), &data);
    let oid = oid_of(&p.mnt("big.bin"));
    let ino = ino_of(&p.mnt("big.bin"));
    set_policy_pin_cold(&p.pool, &oid);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let api = dir.path().join("controlplane-test.sock");
    let mut cp = Daemon::controlplane(
        &db,
        p.pool.uuid(),
        &api,
        &["--policy", "smoothfs_move_bandwidth_bytes_per_s=2097152"],
    );
    let reader = Store::open(&db).unwrap();
    let copying = |st: &Store| {
        st.object(&oid)
            .ok()
            .flatten()
            .is_some_and(|r| r.movement_state == MovementState::CopyInProgress)
    };
    wait_until("the copy to start", Duration::from_secs(30), &cp, || {
        copying(&reader)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(copying(&reader), "the copy should still run (2 MiB/s)");
    cp.kill9();
    assert!(
        !incoming_empty(&p.tiers()),
        "a staging file is left by the kill"
    );

    let mut cp = Daemon::controlplane(
        &db,
        p.pool.uuid(),
        &api,
        &["--policy", "smoothfs_move_bandwidth_bytes_per_s=0"],
    );
    wait_until("the move to complete", Duration::from_secs(60), &cp, || {
        reader.object(&oid).ok().flatten().is_some_and(|r| {
            r.movement_state == MovementState::Placed && r.last_committed_cutover_gen == 1
        })
    });
    assert_eq!(p.holders("big.bin"), [1], "on exactly one tier");
    assert_eq!(sha256_file(&p.mnt("big.bin")), sha256_bytes(&data));
    assert_eq!(ino_of(&p.mnt("big.bin")), ino);
    assert!(incoming_empty(&p.tiers()));
    let mut log = reader
        .movement_log(&LogQuery {
            object_id: Some(oid),
            limit: 500,
            ..LogQuery::default()
        })
        .unwrap();
    log.reverse();
    let states: Vec<&str> = log.iter().map(|r| r.to_state.as_str()).collect();
    // One unbroken chain: each row starts where the previous one ended.
    let mut prev = MovementState::Placed;
    for r in &log {
        assert_eq!(r.from_state, Some(prev), "{states:?}");
        prev = r.to_state;
    }
    let rollback = log
        .iter()
        .position(|r| r.payload["recovered"] == "recovered: rolled back from copy_in_progress")
        .unwrap_or_else(|| panic!("no rollback row: {states:?}"));
    assert_eq!(
        &states[..rollback + 1],
        [
            "plan_accepted",
            "destination_reserved",
            "copy_in_progress",
            "placed"
        ]
    );
    assert_eq!(
        &states[rollback + 1..],
        [
            "plan_accepted",
            "destination_reserved",
            "copy_in_progress",
            "copy_complete",
            "copy_verified",
            "cutover_in_progress",
            "switched",
            "cleanup_in_progress",
            "cleanup_complete"
        ]
    );
    assert!(
        log[rollback + 1].transaction_seq > log[0].transaction_seq,
        "the transaction seq grows across restarts"
    );
    let status = cp.stop(Duration::from_secs(10));
    assert!(status.success(), "{}", cp.log());
}

/// S15.3/A1 through the control plane's PRUNE_DIRS at discovery: an empty
/// directory duplicated on the slow tier is removed deepest first, a
/// non-empty one is kept, one that exists only on the slow tier is kept.
#[test]
fn discovery_prunes_empty_duplicate_directories() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |t0, t1| {
        fs::create_dir_all(t0.join("a/b")).unwrap();
        fs::create_dir_all(t0.join("c")).unwrap();
        fs::create_dir_all(t1.join("a/b")).unwrap();
        fs::create_dir_all(t1.join("c")).unwrap();
        fs::write(t1.join("c/f"), b"keep").unwrap();
        fs::create_dir_all(t1.join("spill-only")).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let api = dir.path().join("controlplane-test.sock");
    let mut cp = Daemon::controlplane(&db, p.pool.uuid(), &api, &[]);
    wait_until(
        "the slow tier's empty a/ to go",
        Duration::from_secs(30),
        &cp,
        || !p.t1.join("a").exists(),
    );
    assert!(p.t0.join("a/b").is_dir());
    assert!(p.t1.join("c/f").is_file());
    assert!(p.t1.join("spill-only").is_dir());
    assert_eq!(fs::read(p.mnt("c/f")).unwrap(), b"keep");
    let status = cp.stop(Duration::from_secs(10));
    assert!(status.success(), "{}", cp.log());
}

/// S9.6/A1 with the CLI: `smoothfs move abort PATH` during a throttled copy
/// returns within 2 s with the object `placed` on its tier, the staging
/// file gone and the bytes unchanged; `smoothfs move retry PATH` lets the
/// planner take it again at once; SIGTERM during that copy stops the daemon
/// cleanly and records the abort (S9.6, clean shutdown).
#[test]
fn move_abort_and_retry_through_the_control_api() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let data = pattern(24 << 20, 9);
    write_synced(&p.mnt("slow.bin"), &data);
    let oid = oid_of(&p.mnt("slow.bin"));
    set_policy_pin_cold(&p.pool, &oid);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let api = dir.path().join("controlplane-test.sock");
    let mut cp = Daemon::controlplane(
        &db,
        p.pool.uuid(),
        &api,
        &["--policy", "smoothfs_move_bandwidth_bytes_per_s=1048576"],
    );
    let reader = Store::open(&db).unwrap();
    let state = || reader.object(&oid).ok().flatten().map(|r| r.movement_state);
    wait_until("the copy to start", Duration::from_secs(30), &cp, || {
        state() == Some(MovementState::CopyInProgress)
    });
    let api_s = api.to_str().unwrap();
    let path = p.mnt("slow.bin");
    let path_s = path.to_str().unwrap();
    let st = cmd_ok(SMOOTHFS, &["move", "status", "--api-socket", api_s]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("slow.bin") && text.contains("copy_in_progress"),
        "{text}"
    );

    let t = Instant::now();
    let out = cmd_ok(SMOOTHFS, &["move", "abort", path_s, "--api-socket", api_s]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "abort took {:?}",
        t.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("aborted"),
        "{out:?}"
    );
    let row = reader.object(&oid).unwrap().unwrap();
    assert_eq!(row.movement_state, MovementState::Placed);
    assert_eq!(row.attempts, 0);
    assert!(row.next_attempt_at.is_some(), "held off for the cooldown");
    assert!(incoming_empty(&p.tiers()));
    assert_eq!(p.holders("slow.bin"), [0]);
    assert_eq!(sha256_file(&path), sha256_bytes(&data));
    let last = &reader
        .movement_log(&LogQuery {
            object_id: Some(oid),
            ..LogQuery::default()
        })
        .unwrap()[0];
    assert_eq!(last.to_state, MovementState::Failed);
    assert_eq!(last.payload["reason"], "aborted by operator");
    // Nothing to abort now.
    let (code, _, err) = cmd_timeout(
        SMOOTHFS,
        &["move", "abort", path_s, "--api-socket", api_s],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ENOENT"), "{err}");

    // Retry: planned again at once.
    cmd_ok(SMOOTHFS, &["move", "retry", path_s, "--api-socket", api_s]);
    wait_until("the second copy", Duration::from_secs(30), &cp, || {
        state() == Some(MovementState::CopyInProgress)
    });
    // SIGTERM mid-copy: the copy is cancelled, the plan aborted, the row
    // placed, and the daemon exits 0.
    let status = cp.stop(Duration::from_secs(10));
    assert!(status.success(), "{}", cp.log());
    let row = reader.object(&oid).unwrap().unwrap();
    assert_eq!(row.movement_state, MovementState::Placed);
    assert_eq!(row.attempts, 0);
    assert!(incoming_empty(&p.tiers()));
    assert_eq!(p.holders("slow.bin"), [0]);
    assert_eq!(sha256_file(&path), sha256_bytes(&data));
    let uuid = uuid::Uuid::parse_str(p.pool.uuid()).unwrap();
    let mut c = Client::connect_pool(&uuid).unwrap();
    let i = smoothfs_control::dataplane::inspect(&mut c, &uuid, &oid).unwrap();
    assert_eq!(i.movement_state, MovementState::Placed);
    assert_eq!(i.current_tier, 0);
}
