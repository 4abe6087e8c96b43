//! `smoothfs move` (the worker, S10) on real mounts: metadata preserved
//! byte for byte, sparse files, reflink, source races caught before the
//! cutover, and the move's JSON report.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

fn smoothfs_move(path: &Path, to: u8, env: &[(&str, &str)]) -> (Output, Vec<Value>) {
    let out = std::process::Command::new(SMOOTHFS)
        .args(["move", "--json", "--to", &to.to_string()])
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run smoothfs move");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    (out, lines)
}

/// `smoothfs move` of `path` to tier `to`, which must succeed; returns its
/// JSON lines.
fn move_ok(path: &Path, to: u8) -> Vec<Value> {
    let (out, lines) = smoothfs_move(path, to, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

fn result_of(lines: &[Value]) -> (String, Value) {
    let last = lines.last().cloned().unwrap_or(Value::Null);
    (
        last.get("result")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        last,
    )
}

fn states(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.get("state").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn dump(path: &Path, tool: &str) -> String {
    let p = path.to_string_lossy().into_owned();
    let out = if tool == "getfattr" {
        cmd_ok("getfattr", &["-d", "-m", "-", "--absolute-names", &p])
    } else {
        cmd_ok("getfacl", &["-n", "--absolute-names", &p])
    };
    // Drop the "# file:" line, which names the path.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("# file:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn s10_a4_a5_move_preserves_metadata_and_reports_every_state() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let rel = "meta/keep.bin";
    fs::create_dir_all(p.mnt("meta")).unwrap();
    let data = pattern(3 << 20, 21);
    write_synced(&p.mnt(rel), &data);
    let m = p.mnt(rel);
    cmd_ok("chown", &["1000:1000", m.to_str().unwrap()]);
    fs::set_permissions(&m, fs::Permissions::from_mode(0o4750)).unwrap();
    set_xattr(&m, "user.x", b"1").unwrap();
    cmd_ok("setfacl", &["-m", "u:1001:r", m.to_str().unwrap()]);
    cmd_ok(
        "touch",
        &["-m", "-d", "2001-01-01 00:00:00", m.to_str().unwrap()],
    );
    let src = p.t0.join(rel);
    let before = fs::metadata(&src).unwrap();
    let (fattr, facl) = (dump(&src, "getfattr"), dump(&src, "getfacl"));
    let ino = ino_of(&m);
    let (out, lines) = smoothfs_move(&m, 1, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        states(&lines),
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
    let (res, last) = result_of(&lines);
    assert_eq!(res, "moved", "{last}");
    assert_eq!(p.holders(rel), vec![1]);
    let dst = p.t1.join(rel);
    let after = fs::metadata(&dst).unwrap();
    assert_eq!(after.mode(), before.mode(), "mode incl. setuid");
    assert_eq!((after.uid(), after.gid()), (1000, 1000));
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_eq!(
        dump(&dst, "getfattr"),
        fattr,
        "every xattr, identity included"
    );
    assert_eq!(dump(&dst, "getfacl"), facl);
    assert_eq!(fs::read(&m).unwrap(), data);
    assert_eq!(ino_of(&m), ino, "inode number unchanged");
    // Already there: unchanged, exit 0.
    let (out, lines) = smoothfs_move(&m, 1, &[]);
    assert!(out.status.success());
    assert_eq!(result_of(&lines).0, "unchanged");
    // Bad rank: usage error.
    let (out, _) = smoothfs_move(&m, 7, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rank"));
}

#[test]
fn s10_a6_sparse_file_stays_sparse() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let m = p.mnt("sparse.img");
    let f = fs::File::create(&m).unwrap();
    f.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pattern(1 << 20, 3), 512 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let src_blocks = fs::metadata(p.t0.join("sparse.img")).unwrap().blocks();
    let lines = move_ok(&m, 1);
    assert_eq!(result_of(&lines).0, "moved");
    let dst = fs::metadata(p.t1.join("sparse.img")).unwrap();
    assert_eq!(dst.len(), 1 << 30);
    assert!(
        dst.blocks() <= 2 * src_blocks,
        "{} > 2 x {src_blocks}",
        dst.blocks()
    );
    let mut got = vec![0u8; 1 << 20];
    let f = fs::File::open(&m).unwrap();
    f.read_exact_at(&mut got, 512 << 20).unwrap();
    assert_eq!(got, pattern(1 << 20, 3));
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got.iter().all(|b| *b == 0), "hole reads as zeros");
}

/// Pages of `path` resident in the page cache (mincore over a mapping).
fn resident_pages(path: &Path) -> usize {
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a private read-only mapping of a file nobody truncates
    // during the call; only mincore looks at it and it is unmapped below.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
        vec.iter().filter(|b| **b & 1 == 1).count()
    }
}

#[test]
fn s10_3_4_both_copies_leave_the_page_cache_after_a_move() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let m = p.mnt("cached.bin");
    let data = pattern(8 << 20, 4);
    write_synced(&m, &data);
    // Warm the source's pages, as a client reading it would.
    assert_eq!(fs::read(p.t0.join("cached.bin")).unwrap(), data);
    assert!(resident_pages(&p.t0.join("cached.bin")) > 0);
    let lines = move_ok(&m, 1);
    assert_eq!(result_of(&lines).0, "moved");
    // The destination was written, read back and renamed into place by
    // the cutover; none of its pages may stay cached (S10.3/4).
    let dst = p.t1.join("cached.bin");
    assert_eq!(resident_pages(&dst), 0, "destination pages still cached");
    assert_eq!(fs::read(&m).unwrap(), data);
}

#[test]
fn s10_a7_reflink_when_both_tiers_share_an_xfs() {
    if !require_root_and_fuse() {
        return;
    }
    let x = LoopTier::new("xfs", 512);
    let (a, b) = (x.join("fast"), x.join("slow"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let pool = Pool::mount(&[&a, &b], "");
    write_synced(&pool.join("r.bin"), &pattern(4 << 20, 8));
    let lines = move_ok(&pool.join("r.bin"), 1);
    let (res, last) = result_of(&lines);
    assert_eq!(res, "moved");
    assert_eq!(last["method"], "reflink", "{last}");
    assert!(b.join("r.bin").exists() && !a.join("r.bin").exists());
}

/// A `smoothfs move` to tier 1 held by a failpoint after its copy.
struct HeldMove {
    mover: std::thread::JoinHandle<(Output, Vec<Value>)>,
    /// Written to let the move go on.
    go: std::path::PathBuf,
    _flag: tempfile::TempDir,
}

impl HeldMove {
    /// Starts the move of `m` and returns once its staging file has
    /// appeared (copy verified) and half a second more has passed.
    fn start(p: &TwoTierPool, m: &Path) -> HeldMove {
        let flag = scratch_dir("smoothfs-flag-");
        let go = flag.path().join("go");
        let fp = format!("worker_after_copy=wait({})", go.display());
        let mover = {
            let m = m.to_path_buf();
            std::thread::spawn(move || {
                smoothfs_move(&m, 1, &[("SMOOTHFS_FAILPOINTS", fp.as_str())])
            })
        };
        let incoming = p.t1.join(".smoothfs/incoming");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no staging file appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        HeldMove {
            mover,
            go,
            _flag: flag,
        }
    }

    /// Lets the move go on; it must fail (exit 2) having caught the source
    /// racing. Returns its JSON lines.
    fn release_to_a_source_race(self) -> Vec<Value> {
        fs::write(&self.go, b"1").unwrap();
        let (out, lines) = self.mover.join().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let (res, last) = result_of(&lines);
        assert_eq!(res, "failed", "{last}");
        assert!(
            last["reason"]
                .as_str()
                .unwrap_or("")
                .contains("source raced"),
            "{last}"
        );
        lines
    }
}

#[test]
fn s10_a1_out_of_band_change_keeping_size_and_mtime_is_caught() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let m = p.mnt("race.bin");
    let data = pattern(1 << 20, 4);
    write_synced(&m, &data);
    let src = p.t0.join("race.bin");
    // Wait for the copy to finish (staging verified), then mutate the source.
    let held = HeldMove::start(&p, &m);
    let stamp = fs::metadata(&src).unwrap();
    let mut changed = data.clone();
    changed[1000] ^= 0xff;
    fs::write(&src, &changed).unwrap();
    let ts = format!("@{}.{:09}", stamp.mtime(), stamp.mtime_nsec());
    cmd_ok("touch", &["-m", "-d", &ts, src.to_str().unwrap()]);
    let lines = held.release_to_a_source_race();
    assert!(!states(&lines).contains(&"cutover_in_progress".to_string()));
    assert_eq!(p.holders("race.bin"), vec![0]);
    assert_eq!(
        fs::read_dir(p.t1.join(".smoothfs/incoming"))
            .unwrap()
            .count(),
        0,
        "staging removed"
    );
}

#[test]
fn s10_a2_write_through_the_mount_then_restored_still_fails() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let m = p.mnt("w.bin");
    let data = pattern(1 << 20, 5);
    write_synced(&m, &data);
    let held = HeldMove::start(&p, &m);
    // Write and restore the same bytes through the mount (mediated: planned).
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(&m).unwrap();
    f.write_all_at(b"XXXX", 0).unwrap();
    f.write_all_at(&data[..4], 0).unwrap();
    drop(f);
    held.release_to_a_source_race();
    assert_eq!(fs::read(&m).unwrap(), data);
    // The next attempt succeeds.
    let lines = move_ok(&m, 1);
    assert_eq!(result_of(&lines).0, "moved");
}

/// S26.5 A1: during a move, `smoothfs events` prints JSON lines whose
/// `event` values include MOVE_STATE with plan_accepted, cutover_in_progress,
/// switched, cleanup_in_progress and cleanup_complete.
#[test]
fn s26_5_a1_events_as_json_lines_during_a_move() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    write_synced(&p.mnt("ev.bin"), &pattern(256 << 10, 12));
    let events = std::process::Command::new(SMOOTHFS)
        .args(["events", "--pool", p.pool.name()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("smoothfs events");
    std::thread::sleep(std::time::Duration::from_millis(500));
    move_ok(&p.mnt("ev.bin"), 1);
    std::thread::sleep(std::time::Duration::from_millis(800));
    unsafe { libc::kill(events.id() as i32, libc::SIGTERM) };
    let got = events.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&got.stdout);
    let mut states = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v.get("ts").is_some() && v.get("pool").is_some(), "{line}");
        if v["event"] == "MOVE_STATE" {
            states.push(v["movement_state"].as_str().unwrap_or("").to_string());
        }
    }
    for s in [
        "plan_accepted",
        "cutover_in_progress",
        "switched",
        "cleanup_in_progress",
        "cleanup_complete",
    ] {
        assert!(
            states.iter().any(|x| x == s),
            "{s} missing in {states:?}\n{text}"
        );
    }
}
