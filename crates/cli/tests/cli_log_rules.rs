//! Pin rules (S8.6/A2, A3), `smoothfs log` (S26.3) and `smoothfs
//! promote|demote` (S26.6) on real mounts, with `smoothfs controlplane`
//! at test intervals (planner and inventory every 2 s).

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const FAST_POLICY: &[&str] = &[
    "--policy",
    "smoothfs_planner_interval_seconds=2",
    "--policy",
    "smoothfs_inventory_interval_seconds=2",
    "--policy",
    "smoothfs_min_residency_seconds=0",
    "--policy",
    "smoothfs_movement_cooldown_seconds=0",
];

/// A foreground `smoothfs controlplane` for one pool socket, stopped with
/// SIGTERM (then SIGKILL) on drop.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, db: &Path, pool_uuid: &str) -> Daemon {
        let log = dir.join("daemon.log");
        let f = File::create(&log).unwrap();
        let socket = format!("/run/smoothfs/{pool_uuid}.sock");
        let api = dir.join("controlplane-test.sock");
        let mut args = vec![
            "controlplane".to_string(),
            "--db".into(),
            db.to_str().unwrap().into(),
            "--socket".into(),
            socket,
            "--api-socket".into(),
            api.to_str().unwrap().into(),
        ];
        args.extend(FAST_POLICY.iter().map(|s| s.to_string()));
        let child = Command::new(SMOOTHFS)
            .args(&args)
            .env("SMOOTHFS_LOG", "info,smoothfs_fs=warn")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = wait_with_deadline(&mut child, Duration::from_secs(20));
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
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}\n--- control plane log ---\n{}",
        daemon.log()
    );
}

fn json_of(args: &[&str]) -> Value {
    let out = cmd_ok(SMOOTHFS, args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {:?}", out.stdout))
}

/// `smoothfs pin get --json` → policy_pin.
fn policy_pin(path: &Path) -> String {
    let v = json_of(&["pin", "get", path.to_str().unwrap(), "--json"]);
    v["policy_pin"].as_str().unwrap_or_default().to_string()
}

fn write_small(path: &Path, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_synced(path, &pattern(64 << 10, seed));
}

/// S8.6/A2 and A3 through the control plane: rule `vm/**` hot pins every
/// file under vm/ (also one created later, by the next inventory sync),
/// not a file elsewhere; `media/` cold with `media/keep/` none leaves
/// media/keep unpinned; `pin rule rm` clears the pins the rule set; an
/// explicit pin is never touched.
#[test]
fn pin_rules_are_applied_by_the_control_plane_and_cleared_on_rm() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let vm = ["vm/a.img", "vm/sub/b.img", "vm/sub/deep/c.img"];
    for (i, rel) in vm.iter().enumerate() {
        write_small(&p.mnt(rel), i as u64);
    }
    write_small(&p.mnt("other/x.txt"), 10);
    write_small(&p.mnt("vmx/y.img"), 11);
    write_small(&p.mnt("media/m.mkv"), 12);
    write_small(&p.mnt("media/keep/k.mkv"), 13);
    // An explicit pin under a cold rule: stays hot (and on tier 0, so
    // nothing moves until the cold rule applies).
    write_small(&p.mnt("media/explicit.mkv"), 14);
    let explicit = p.mnt("media/explicit.mkv");
    cmd_ok(SMOOTHFS, &["pin", "set", explicit.to_str().unwrap(), "hot"]);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let cp = Daemon::start(dir.path(), &db, p.pool.uuid());
    let dbs = db.to_str().unwrap();
    let name = p.pool.name();
    // Rules are refused for bad input (exit 1).
    let bad = cmd(SMOOTHFS, &["pin", "rule", "add", "--db", dbs, "a[b", "hot"]);
    assert_eq!(bad.status.code(), Some(1));
    let bad = cmd(
        SMOOTHFS,
        &["pin", "rule", "add", "--db", dbs, "vm/", "warm"],
    );
    assert_eq!(bad.status.code(), Some(1));

    // The first add succeeds once the control plane registered the pool.
    let mut rule = Value::Null;
    wait_until(
        "the pool in the store",
        Duration::from_secs(30),
        &cp,
        || {
            if !db.exists() {
                return false;
            }
            let out = cmd(
                SMOOTHFS,
                &[
                    "pin", "rule", "add", "--db", dbs, "--pool", name, "vm/**", "hot", "--json",
                ],
            );
            if out.status.success() {
                rule = serde_json::from_slice(&out.stdout).unwrap();
            }
            out.status.success()
        },
    );
    let added = Instant::now();
    let vm_id = rule["id"].as_i64().unwrap();
    assert_eq!(rule["pin"], "pin_hot");
    assert_eq!(rule["pattern"], "vm/**");
    assert_eq!(rule["pool"], name);

    wait_until("vm/ files pinned hot", Duration::from_secs(60), &cp, || {
        vm.iter().all(|rel| policy_pin(&p.mnt(rel)) == "pin_hot")
    });
    eprintln!("rule applied after {:?}", added.elapsed());
    assert_eq!(policy_pin(&p.mnt("other/x.txt")), "none");
    assert_eq!(policy_pin(&p.mnt("vmx/y.img")), "none");
    // INSPECT POLICY_PIN 1 (pin_hot).
    let v = json_of(&["inspect", p.mnt(vm[0]).to_str().unwrap(), "--json"]);
    assert!(v.to_string().contains("pin_hot"), "{v}");

    // A file created later gets the pin by the next inventory sync.
    write_small(&p.mnt("vm/later.img"), 20);
    wait_until(
        "vm/later.img pinned hot",
        Duration::from_secs(60),
        &cp,
        || policy_pin(&p.mnt("vm/later.img")) == "pin_hot",
    );

    // Removing the rule clears the pins it set, and only those.
    let rm = json_of(&[
        "pin",
        "rule",
        "rm",
        &vm_id.to_string(),
        "--db",
        dbs,
        "--json",
    ]);
    assert_eq!(rm["removed"], true);
    let gone = cmd(
        SMOOTHFS,
        &["pin", "rule", "rm", &vm_id.to_string(), "--db", dbs],
    );
    assert_eq!(gone.status.code(), Some(2));
    wait_until("vm/ pins cleared", Duration::from_secs(60), &cp, || {
        vm.iter()
            .chain(["vm/later.img"].iter())
            .all(|rel| policy_pin(&p.mnt(rel)) == "none")
    });

    // S8.6/A3: `media/` cold and `media/keep/` none.
    let media = json_of(&[
        "pin", "rule", "add", "--db", dbs, "--pool", name, "media/", "cold", "--json",
    ]);
    let keep = json_of(&[
        "pin",
        "rule",
        "add",
        "--db",
        dbs,
        "--pool",
        name,
        "media/keep/",
        "none",
        "--json",
    ]);
    let list = json_of(&["pin", "rule", "list", "--db", dbs, "--pool", name, "--json"]);
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [media["id"].as_i64().unwrap(), keep["id"].as_i64().unwrap()]
    );
    wait_until(
        "media/ files pinned cold",
        Duration::from_secs(60),
        &cp,
        || policy_pin(&p.mnt("media/m.mkv")) == "pin_cold",
    );
    assert_eq!(policy_pin(&p.mnt("media/keep/k.mkv")), "none", "S8.6/A3");
    assert_eq!(
        policy_pin(&explicit),
        "pin_hot",
        "an explicit pin beats the rule"
    );
    // The cold file is demoted by the planner; let that finish.
    wait_until("media/m.mkv demoted", Duration::from_secs(60), &cp, || {
        p.holders("media/m.mkv") == [1]
    });
}

/// `smoothfs promote|demote` step one tier and refuse at the ends (exit
/// 2); `smoothfs log --json` lists the control plane's moves newest first
/// with the S26.3 fields, and `--before-id` pages through them once.
#[test]
fn promote_demote_and_log_paging() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let f = p.mnt("f.bin");
    let data = pattern(1 << 20, 3);
    write_synced(&f, &data);
    let fs_ = f.to_str().unwrap();
    assert_eq!(p.holders("f.bin"), [0]);

    let up = cmd(SMOOTHFS, &["promote", fs_]);
    assert_eq!(up.status.code(), Some(2), "{up:?}");
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("fastest"),
        "{up:?}"
    );
    let out = cmd_ok(SMOOTHFS, &["demote", fs_, "--json"]);
    let last: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["result"], "moved", "{last}");
    assert_eq!(p.holders("f.bin"), [1]);
    let down = cmd(SMOOTHFS, &["demote", fs_]);
    assert_eq!(down.status.code(), Some(2), "{down:?}");
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("slowest"),
        "{down:?}"
    );
    cmd_ok(SMOOTHFS, &["promote", fs_]);
    assert_eq!(p.holders("f.bin"), [0]);
    assert_eq!(sha256_file(&f), sha256_bytes(&data));

    // Two explicit pin_cold files: the control plane demotes them (nine
    // log rows each).
    let cold = ["c1.bin", "c2.bin"];
    for (i, rel) in cold.iter().enumerate() {
        write_synced(&p.mnt(rel), &pattern(256 << 10, 40 + i as u64));
        cmd_ok(
            SMOOTHFS,
            &["pin", "set", p.mnt(rel).to_str().unwrap(), "cold"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let cp = Daemon::start(dir.path(), &db, p.pool.uuid());
    let dbs = db.to_str().unwrap();
    wait_until("both files on tier 1", Duration::from_secs(60), &cp, || {
        cold.iter().all(|rel| p.holders(rel) == [1])
    });
    wait_until(
        "both demotions logged",
        Duration::from_secs(60),
        &cp,
        || {
            cold.iter().all(|rel| p.holders(rel) == [1])
                && db.exists()
                && json_of(&["log", "--db", dbs, "--json"])
                    .as_array()
                    .is_some_and(|a| {
                        a.iter()
                            .filter(|r| r["to_state"] == "cleanup_complete")
                            .count()
                            == 2
                    })
        },
    );

    let all = json_of(&["log", "--db", dbs, "--json", "--limit", "500"]);
    let all = all.as_array().unwrap().clone();
    assert!(all.len() >= 18, "{all:?}");
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for key in [
        "id",
        "object_id",
        "path",
        "transaction_seq",
        "from_state",
        "to_state",
        "source_tier",
        "dest_tier",
        "payload",
        "written_at",
    ] {
        assert!(all[0].get(key).is_some(), "{key} missing: {}", all[0]);
    }
    assert_eq!(all[0]["to_state"], "cleanup_complete");

    // Pages of 5 with --before-id return every row once, in order.
    let mut paged: Vec<i64> = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut args = vec!["log", "--db", dbs, "--json", "--limit", "5"];
        let b;
        if let Some(id) = before {
            b = id.to_string();
            args.extend(["--before-id", b.as_str()]);
        }
        let page = json_of(&args);
        let page = page.as_array().unwrap();
        assert!(page.len() <= 5);
        if page.is_empty() {
            break;
        }
        paged.extend(page.iter().map(|r| r["id"].as_i64().unwrap()));
        before = paged.last().copied();
    }
    assert_eq!(paged, ids);

    // Filters: --path and --oid give one object's rows; --since in the
    // future gives none; the human table names the path.
    let by_path = json_of(&[
        "log",
        "--db",
        dbs,
        "--json",
        "--path",
        p.mnt("c1.bin").to_str().unwrap(),
    ]);
    let by_path = by_path.as_array().unwrap();
    assert_eq!(by_path.len(), 9, "{by_path:?}");
    assert!(by_path.iter().all(|r| r["path"] == "c1.bin"));
    let oid = by_path[0]["object_id"].as_str().unwrap();
    let by_oid = json_of(&["log", "--db", dbs, "--json", "--oid", oid]);
    assert_eq!(by_oid.as_array().map(Vec::len), Some(9));
    let none = json_of(&[
        "log",
        "--db",
        dbs,
        "--json",
        "--since",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(none, Value::Array(vec![]));
    let text = cmd_ok(SMOOTHFS, &["log", "--db", dbs, "--pool", p.pool.name()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("c2.bin") && text.contains("cleanup_complete"),
        "{text}"
    );
    let bad = cmd(SMOOTHFS, &["log", "--db", dbs, "--since", "someday"]);
    assert_eq!(bad.status.code(), Some(1));
    drop(cp);
}
