//! Movement on real mounts (SPEC S9, S11, S12, S13): the control-socket
//! commands driven by hand, with the staging copy made the way the worker
//! makes it (bytes + every xattr), so each data-plane step can be checked
//! in isolation — handle reissue, permission re-check, drain, the write_seq
//! guard, passthrough gates, and crash recovery at each movement state.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::event::Event;
use smoothfs_uapi::ids::{Attr, Command, EVENT_MASK_ALL};

fn client(pool: &Pool) -> Client {
    let uuid = uuid::Uuid::parse_str(pool.uuid()).expect("uuid");
    Client::connect_pool(&uuid).expect("connect to the pool's control socket")
}

fn base(pool: &Pool, oid: &[u8]) -> AttrBuf {
    let uuid = uuid::Uuid::parse_str(pool.uuid()).expect("uuid");
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, uuid.as_bytes())
        .put_bytes(Attr::ObjectId, oid);
    a
}

fn oid_of(path: &Path) -> Vec<u8> {
    get_xattr(path, "trusted.smoothfs.oid").expect("oid xattr through the mount")
}

/// errno of a failed request (0 on success).
fn errno_of<T>(r: &Result<T, smoothfs_uapi::Error>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

struct Inspect {
    state: u8,
    current: u8,
    write_seq: u64,
    generation: u32,
    passthrough: u32,
    mediated: u32,
    rel: String,
}

fn inspect(c: &mut Client, pool: &Pool, oid: &[u8]) -> Inspect {
    let r = c
        .request(Command::Inspect, &base(pool, oid))
        .expect("INSPECT");
    let a = r.attrs();
    Inspect {
        state: a.require_u8(Attr::MovementState).unwrap(),
        current: a.require_u8(Attr::CurrentTier).unwrap(),
        write_seq: a.require_u64(Attr::WriteSeq).unwrap(),
        generation: a.require_u32(Attr::Generation).unwrap(),
        passthrough: a.require_u32(Attr::PassthroughHandles).unwrap(),
        mediated: a.require_u32(Attr::MediatedHandles).unwrap(),
        rel: a.require_str(Attr::RelPath).unwrap().to_string(),
    }
}

/// Waits until the daemon has seen every close of `oid` (FUSE RELEASE is
/// sent after close(2) returns).
fn wait_no_handles(c: &mut Client, pool: &Pool, oid: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let i = inspect(c, pool, oid);
        if i.passthrough == 0 && i.mediated == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "handles still open: {} pt, {} med",
            i.passthrough,
            i.mediated
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// MOVE_PLAN; returns the staging path or the errno.
fn plan(c: &mut Client, pool: &Pool, oid: &[u8], dest: u8, seq: u64) -> Result<PathBuf, i32> {
    let mut a = base(pool, oid);
    a.put_u8(Attr::IntendedTier, dest)
        .put_u64(Attr::TransactionSeq, seq);
    match c.request(Command::MovePlan, &a) {
        Ok(r) => Ok(PathBuf::from(
            r.attrs().require_path(Attr::StagingPath).unwrap(),
        )),
        Err(e) => Err(e.errno()),
    }
}

fn cutover(c: &mut Client, pool: &Pool, oid: &[u8], seq: u64, ws: Option<u64>) -> i32 {
    let mut a = base(pool, oid);
    a.put_u64(Attr::TransactionSeq, seq);
    if let Some(w) = ws {
        a.put_u64(Attr::WriteSeq, w);
    }
    errno_of(&c.request(Command::MoveCutover, &a))
}

/// MOVE_CUTOVER on its own connection and thread (for a cutover the test
/// holds at a failpoint); joins to the errno.
fn cutover_in_thread(
    pool: &Pool,
    oid: &[u8],
    seq: u64,
    ws: Option<u64>,
) -> std::thread::JoinHandle<i32> {
    let uuid = uuid::Uuid::parse_str(pool.uuid()).expect("uuid");
    let oid = oid.to_vec();
    std::thread::spawn(move || {
        let mut c = Client::connect_pool(&uuid).expect("connect");
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::PoolUuid, uuid.as_bytes())
            .put_bytes(Attr::ObjectId, &oid)
            .put_u64(Attr::TransactionSeq, seq);
        if let Some(w) = ws {
            a.put_u64(Attr::WriteSeq, w);
        }
        errno_of(&c.request(Command::MoveCutover, &a))
    })
}

/// Two fresh ext4 tiers and a pool whose failpoint `fp` (an action taking
/// the gate file, e.g. `wait` or `2*wait`) holds until the returned gate
/// file exists.
fn gated_pool(fp: &str, action: &str) -> (LoopTier, LoopTier, Pool, PathBuf) {
    let t0 = LoopTier::new("ext4", 256);
    let t1 = LoopTier::new("ext4", 256);
    let gate = std::env::temp_dir().join(format!("smoothfs-gate-{fp}-{}", std::process::id()));
    let _ = fs::remove_file(&gate);
    let spec = format!("{fp}={action}({})", gate.display());
    let pool = Pool::mount_with_env(
        &[t0.path(), t1.path()],
        "",
        &[("SMOOTHFS_FAILPOINTS", spec.as_str())],
    );
    (t0, t1, pool, gate)
}

/// Wait (10 s at most) until INSPECT shows the object in movement `state`.
fn wait_for_state(c: &mut Client, pool: &Pool, oid: &[u8], state: u8) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while inspect(c, pool, oid).state != state {
        assert!(
            Instant::now() < deadline,
            "never reached movement state {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cleanup(c: &mut Client, pool: &Pool, oid: &[u8], seq: u64) -> i32 {
    let mut a = base(pool, oid);
    a.put_u64(Attr::TransactionSeq, seq);
    errno_of(&c.request(Command::MoveCleanup, &a))
}

/// What the worker does between plan and cutover: bytes + every xattr
/// (identity included) into the staging file, synced.
fn stage_copy(src_lower: &Path, staging: &Path) {
    fs::copy(src_lower, staging).expect("copy to staging");
    for name in list_xattr(src_lower).expect("list xattrs") {
        let v = get_xattr(src_lower, &name).expect("get xattr");
        set_xattr(staging, &name, &v).expect("set xattr on staging");
    }
    File::open(staging).unwrap().sync_all().unwrap();
}

/// No staging file in `incoming` and no switched source copy in `outgoing`.
fn staging_dir_empty(tier: &Path) -> bool {
    [".smoothfs/incoming", ".smoothfs/outgoing"]
        .iter()
        .all(|d| {
            fs::read_dir(tier.join(d))
                .map(|d| d.count() == 0)
                .unwrap_or(true)
        })
}

fn outgoing_count(tier: &Path) -> usize {
    fs::read_dir(tier.join(".smoothfs/outgoing"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn s11_a1_a3_nested_cutover_handle_follows_and_events() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let rel = "deep/tree/object.txt";
    fs::create_dir_all(p.mnt("deep/tree")).unwrap();
    let data = pattern(256 << 10, 7);
    write_synced(&p.mnt(rel), &data);
    let ino = ino_of(&p.mnt(rel));
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(&p.pool);
    let mut events = c.subscribe(EVENT_MASK_ALL).expect("subscribe");

    let staging = plan(&mut c, &p.pool, &oid, 1, 100).expect("plan accepted");
    // Opened after the plan: mediated (S12.1), read-write.
    let h = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.mnt(rel))
        .unwrap();
    let i = inspect(&mut c, &p.pool, &oid);
    assert_eq!((i.state, i.passthrough, i.mediated), (1, 0, 1));
    stage_copy(&p.t0.join(rel), &staging);
    assert_eq!(cutover(&mut c, &p.pool, &oid, 100, Some(i.write_seq)), 0);
    let i = inspect(&mut c, &p.pool, &oid);
    assert_eq!((i.state, i.current, i.generation), (7, 1, 1));
    assert_eq!(i.rel, rel, "REL_PATH unchanged");
    // A3: nested path kept on the destination.
    assert!(p.t1.join(rel).is_file(), "destination at the same rel_path");
    assert!(!p.t1.join("object.txt").exists());
    // The old source left the namespace at the switch (S11.2); it waits
    // in outgoing for cleanup.
    assert!(!p.t0.join(rel).exists(), "source copy out of the namespace");
    let retired: Vec<PathBuf> = fs::read_dir(p.t0.join(".smoothfs/outgoing"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(retired.len(), 1);
    // A1: out-of-band write to the old source is never visible.
    OpenOptions::new()
        .write(true)
        .open(&retired[0])
        .unwrap()
        .write_all_at(b"STALE SOURCE", 0)
        .unwrap();
    let mut got = vec![0u8; 16];
    h.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got[..], &data[..16], "reads hit the destination");
    h.write_all_at(b"AFTER-CUTOVER", 0).unwrap();
    h.set_len(200 << 10).unwrap();
    h.sync_all().unwrap();
    let dest = fs::read(p.t1.join(rel)).unwrap();
    assert_eq!(&dest[..13], b"AFTER-CUTOVER");
    assert_eq!(dest.len(), 200 << 10, "ftruncate reached the destination");
    assert_eq!(cleanup(&mut c, &p.pool, &oid, 100), 0);
    assert!(!p.t0.join(rel).exists(), "source copy removed by cleanup");
    assert!(!retired[0].exists(), "source copy removed by cleanup");
    drop(h);
    assert_eq!(ino_of(&p.mnt(rel)), ino, "inode number unchanged");
    let mut f = File::open(p.mnt(rel)).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(&all[..13], b"AFTER-CUTOVER");
    assert_eq!(&all[13..1000], &data[13..1000]);
    drop(f); // a passthrough handle would block the next plan (gate 14)
    wait_no_handles(&mut c, &p.pool, &oid);
    assert!(staging_dir_empty(p.t1.path()));
    // S9.2 item 2: every transition announced, in order.
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while states.len() < 5 && Instant::now() < deadline {
        if let Ok(ev) = events.recv_timeout(Duration::from_millis(500))
            && let Event::MoveState(m) = ev.event
        {
            states.push(m.movement_state.as_str().to_string());
        }
    }
    assert_eq!(
        states,
        [
            "plan_accepted",
            "cutover_in_progress",
            "switched",
            "cleanup_in_progress",
            "cleanup_complete"
        ]
    );
    // S9.4 A2: and back in the same mount.
    let staging = plan(&mut c, &p.pool, &oid, 0, 101).expect("plan back");
    stage_copy(&p.t1.join(rel), &staging);
    assert_eq!(cutover(&mut c, &p.pool, &oid, 101, None), 0);
    assert_eq!(cleanup(&mut c, &p.pool, &oid, 101), 0);
    assert_eq!(p.holders(rel), vec![0]);
    assert_eq!(fs::read(p.mnt(rel)).unwrap(), all);
}

#[test]
fn s11_a2_reissue_rechecks_permission_as_the_opener() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let rel = "shared.bin";
    write_synced(&p.mnt(rel), &pattern(64 << 10, 3));
    fs::set_permissions(p.mnt(rel), fs::Permissions::from_mode(0o644)).unwrap();
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(&p.pool);
    let staging = plan(&mut c, &p.pool, &oid, 1, 7).expect("plan");
    // Open as nobody on a thread whose fsuid/fsgid are nobody's.
    let path = p.mnt(rel);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
            libc::syscall(libc::SYS_setfsgid, 65534);
            libc::syscall(libc::SYS_setfsuid, 65534);
        }
        let f = File::open(&path).expect("nobody can open a 0644 file");
        rx.recv().unwrap();
        let mut buf = vec![0u8; 4096];
        let r = f.read_at(&mut buf, 0);
        done_tx.send(r.map_err(|e| e.raw_os_error())).unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    stage_copy(&p.t0.join(rel), &staging);
    assert_eq!(cutover(&mut c, &p.pool, &oid, 7, None), 0);
    fs::set_permissions(p.t1.join(rel), fs::Permissions::from_mode(0o000)).unwrap();
    tx.send(()).unwrap();
    let r = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    reader.join().unwrap();
    match r {
        Err(Some(e)) if e == libc::EACCES || e == libc::EPERM => {}
        other => panic!("expected EACCES/EPERM after the reissue, got {other:?}"),
    }
}

#[test]
fn s12_a3_s13_a4_passthrough_handles_gate_the_move() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let rel = "pt.bin";
    write_synced(&p.mnt(rel), &pattern(8192, 1));
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(&p.pool);
    let h = File::open(p.mnt(rel)).unwrap();
    let i = inspect(&mut c, &p.pool, &oid);
    if i.passthrough == 0 {
        eprintln!(
            "SKIPPED: kernel did not give a passthrough handle (mediated {})",
            i.mediated
        );
        assert!(!in_ci() || i.mediated == 1);
        return;
    }
    assert_eq!(plan(&mut c, &p.pool, &oid, 1, 1), Err(libc::EBUSY));
    let r = c
        .request(Command::RevokeMappings, &base(&p.pool, &oid))
        .expect("REVOKE_MAPPINGS");
    assert_eq!(r.attrs().require_u32(Attr::PassthroughHandles).unwrap(), 1);
    // While the passthrough handle is open, new opens join it (S13.1/4).
    let h2 = File::open(p.mnt(rel)).unwrap();
    assert_eq!(inspect(&mut c, &p.pool, &oid).passthrough, 2);
    drop(h2);
    drop(h);
    // RELEASE reaches the daemon asynchronously after close(2).
    wait_no_handles(&mut c, &p.pool, &oid);
    let _h3 = File::open(p.mnt(rel)).unwrap();
    let i = inspect(&mut c, &p.pool, &oid);
    assert_eq!(
        (i.passthrough, i.mediated),
        (0, 1),
        "revoked: later opens mediated"
    );
    assert!(plan(&mut c, &p.pool, &oid, 1, 2).is_ok());
}

#[test]
fn s11_a5_a6_writes_wait_for_the_cutover_and_the_drain_times_out() {
    if !require_root_and_fuse() {
        return;
    }
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let flag = scratch_dir("smoothfs-fp-");
    let hold = flag.path().join("release-cutover");
    let slow_flag = flag.path().join("slow-writes");
    let fp = format!(
        "cutover_after_drain=1*wait({});write_in_drain=sleepif({},4000)",
        hold.display(),
        slow_flag.display()
    );
    let pool = Pool::mount_with_env(
        &[t0.path(), t1.path()],
        "",
        &[("SMOOTHFS_FAILPOINTS", fp.as_str())],
    );
    let rel = "busy.bin";
    write_synced(&pool.join(rel), &pattern(64 << 10, 9));
    let oid = oid_of(&pool.join(rel));
    let mut c = client(&pool);
    let staging = plan(&mut c, &pool, &oid, 1, 1).expect("plan");
    let mut h = OpenOptions::new().write(true).open(pool.join(rel)).unwrap();
    stage_copy(&t0.join(rel), &staging);
    let ws = inspect(&mut c, &pool, &oid).write_seq;
    // A5: the cutover holds after the drain; a write issued now waits.
    let cut = cutover_in_thread(&pool, &oid, 1, Some(ws));
    std::thread::sleep(Duration::from_millis(300));
    let writer = std::thread::spawn(move || {
        h.seek(SeekFrom::Start(0)).unwrap();
        // 1st write: held by the cutover's drain.
        h.write_all(b"WRITTEN-DURING-CUTOVER").unwrap();
        h.sync_all().unwrap();
        h
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !writer.is_finished(),
        "the write waits while the cutover runs"
    );
    fs::write(&hold, b"go").unwrap();
    assert_eq!(cut.join().unwrap(), 0, "cutover succeeds");
    let mut h = writer.join().unwrap();
    assert_eq!(
        &fs::read(t1.join(rel)).unwrap()[..22],
        b"WRITTEN-DURING-CUTOVER",
        "the held write landed on the destination"
    );
    assert_eq!(cleanup(&mut c, &pool, &oid, 1), 0);
    // A6: a write stuck for 4 s (while slow_flag exists) vs a 1 s drain timeout.
    let mut a = AttrBuf::new();
    a.put_bytes(
        Attr::PoolUuid,
        uuid::Uuid::parse_str(pool.uuid()).unwrap().as_bytes(),
    )
    .put_str(Attr::Name, "cutover_drain_timeout_ms")
    .put_str(Attr::Value, "1000");
    c.request(Command::SetTunable, &a).expect("SET_TUNABLE");
    let staging = plan(&mut c, &pool, &oid, 0, 2).expect("plan back");
    stage_copy(&t1.join(rel), &staging);
    let ws = inspect(&mut c, &pool, &oid).write_seq;
    fs::write(&slow_flag, b"armed").unwrap();
    let slow = std::thread::spawn(move || {
        h.write_all(b"slow").unwrap();
        h
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(cutover(&mut c, &pool, &oid, 2, Some(ws)), libc::EBUSY);
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        inspect(&mut c, &pool, &oid).state,
        1,
        "back to plan_accepted"
    );
    let _h = slow.join().unwrap();
    fs::remove_file(&slow_flag).unwrap();
    // The write changed the source: copy again, new write_seq, success.
    let ws = inspect(&mut c, &pool, &oid).write_seq;
    fs::remove_file(&staging).unwrap();
    stage_copy(&t1.join(rel), &staging);
    assert_eq!(cutover(&mut c, &pool, &oid, 2, Some(ws)), 0);
}

/// Crash the daemon at failpoint `fp` during a 0 -> 1 move, remount, and
/// check the outcome: the file is on `expect_tier` only, bytes and inode
/// intact, no staging leftovers, state placed.
fn crash_at(fp: &str, expect_tier: usize) {
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let spec = format!("{fp}=crash");
    let mut pool = Pool::mount_with_env(
        &[t0.path(), t1.path()],
        "",
        &[("SMOOTHFS_FAILPOINTS", spec.as_str())],
    );
    let rel = "d1/d2/victim.bin";
    fs::create_dir_all(pool.join("d1/d2")).unwrap();
    let data = pattern(300_000, 11);
    write_synced(&pool.join(rel), &data);
    let ino = ino_of(&pool.join(rel));
    let oid = oid_of(&pool.join(rel));
    let mut c = client(&pool);
    if let Ok(staging) = plan(&mut c, &pool, &oid, 1, 5) {
        stage_copy(&t0.join(rel), &staging);
        let _ = cutover(&mut c, &pool, &oid, 5, None);
        let _ = cleanup(&mut c, &pool, &oid, 5);
    }
    drop(c);
    pool.wait_crashed(Duration::from_secs(10));
    pool.clear_env();
    pool.remount();
    let holders = tiers_holding(&[t0.path(), t1.path()], rel);
    assert_eq!(
        holders,
        vec![expect_tier],
        "{fp}: one copy, on the right tier"
    );
    assert_eq!(
        fs::read(pool.join(rel)).unwrap(),
        data,
        "{fp}: bytes intact"
    );
    assert_eq!(ino_of(&pool.join(rel)), ino, "{fp}: inode unchanged");
    assert!(staging_dir_empty(t0.path()) && staging_dir_empty(t1.path()));
    let mut c = client(&pool);
    let i = inspect(&mut c, &pool, &oid);
    assert_eq!((i.state, i.current as usize), (0, expect_tier), "{fp}");
    // And it can move again, once the reads above have released their
    // passthrough handles (RELEASE reaches the daemon after close(2)).
    wait_no_handles(&mut c, &pool, &oid);
    let dest = 1 - expect_tier as u8;
    let staging = plan(&mut c, &pool, &oid, dest, 6).expect("plan after recovery");
    stage_copy(&[t0.path(), t1.path()][expect_tier].join(rel), &staging);
    assert_eq!(cutover(&mut c, &pool, &oid, 6, None), 0);
    assert_eq!(cleanup(&mut c, &pool, &oid, 6), 0);
    assert_eq!(fs::read(pool.join(rel)).unwrap(), data);
}

#[test]
fn s19_crash_after_plan_rolls_back() {
    if !require_root_and_fuse() {
        return;
    }
    crash_at("plan_after_journal", 0);
}

#[test]
fn s19_crash_in_cutover_before_drain_rolls_back() {
    if !require_root_and_fuse() {
        return;
    }
    crash_at("cutover_before_drain", 0);
}

#[test]
fn s19_crash_after_rename_before_switch_rolls_back() {
    if !require_root_and_fuse() {
        return;
    }
    crash_at("cutover_before_switch_journal", 0);
}

#[test]
fn s19_crash_after_switch_rolls_forward() {
    if !require_root_and_fuse() {
        return;
    }
    crash_at("cutover_after_switch_journal", 1);
}

#[test]
fn s19_crash_after_the_source_left_the_namespace_rolls_forward() {
    if !require_root_and_fuse() {
        return;
    }
    crash_at("cutover_after_retire_source", 1);
}

#[test]
fn s19_crash_during_cleanup_rolls_forward() {
    if !require_root_and_fuse() {
        return;
    }
    crash_at("cleanup_before_remove", 1);
}

#[test]
fn s13_a3_shared_mapping_on_a_mediated_file_follows_the_move() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let rel = "mapped.bin";
    write_synced(&p.mnt(rel), &vec![b'.'; 16384]);
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(&p.pool);
    let mut a = base(&p.pool, &oid);
    a.put_bool(Attr::Mediated, true);
    c.request(Command::PinSet, &a).expect("PIN_SET MEDIATED");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.mnt(rel))
        .unwrap();
    let i = inspect(&mut c, &p.pool, &oid);
    assert_eq!((i.passthrough, i.mediated), (0, 1), "always_mediated");
    let len = 16384usize;
    let map = map_shared_rw(&f, len);
    let staging = plan(&mut c, &p.pool, &oid, 1, 1).expect("plan with a mediated mapping");
    stage_copy(&p.t0.join(rel), &staging);
    assert_eq!(cutover(&mut c, &p.pool, &oid, 1, None), 0);
    unsafe {
        std::ptr::copy_nonoverlapping(b"MAPPED-WRITE".as_ptr(), map.cast::<u8>(), 12);
        assert_eq!(libc::msync(map, len, libc::MS_SYNC), 0);
        libc::munmap(map, len);
    }
    drop(f);
    assert_eq!(cleanup(&mut c, &p.pool, &oid, 1), 0);
    let dest = fs::read(p.t1.join(rel)).unwrap();
    assert_eq!(
        &dest[..12],
        b"MAPPED-WRITE",
        "written back to the destination"
    );
    assert_eq!(p.holders(rel), vec![1]);
}

#[test]
fn s13_a5_concurrent_opens_never_mix_modes() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let rel = "contended.bin";
    write_synced(&p.mnt(rel), &pattern(4096, 4));
    let oid = oid_of(&p.mnt(rel));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..2 {
        let path = p.mnt(rel);
        let stop = std::sync::Arc::clone(&stop);
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while n < 2500 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let f = if w == 0 {
                    File::open(&path)
                } else {
                    OpenOptions::new().read(true).write(true).open(&path)
                }
                .unwrap();
                drop(f);
                n += 1;
            }
            n
        }));
    }
    let mut c = client(&p.pool);
    let mut samples = 0;
    // A REVOKE_MAPPINGS now and then forces the mediated rule for new opens.
    while workers.iter().any(|w| !w.is_finished()) {
        let i = inspect(&mut c, &p.pool, &oid);
        assert!(
            i.passthrough == 0 || i.mediated == 0,
            "modes mixed: {} passthrough, {} mediated",
            i.passthrough,
            i.mediated
        );
        samples += 1;
        if samples % 50 == 0 {
            let _ = c.request(Command::RevokeMappings, &base(&p.pool, &oid));
        }
        if samples % 75 == 0 {
            let mut r = AttrBuf::new();
            r.put_bytes(
                Attr::PoolUuid,
                uuid::Uuid::parse_str(p.pool.uuid()).unwrap().as_bytes(),
            );
            let _ = c.request(Command::Reconcile, &r);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 5000);
    assert!(samples > 10, "INSPECT sampled only {samples} times");
}

/// S2.5 item 4: the daemon dies after renaming a directory on one tier of
/// two; the next mount finishes the rename on the other tier (the copy
/// still at the old path carries the directory's OID).
#[test]
fn s2_5_item4_interrupted_directory_rename_is_finished_at_mount() {
    if !require_root_and_fuse() {
        return;
    }
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let mut pool = Pool::mount_with_env(
        &[t0.path(), t1.path()],
        "",
        &[("SMOOTHFS_FAILPOINTS", "dir_rename_between_tiers=crash")],
    );
    fs::create_dir(pool.join("d")).unwrap();
    write_synced(&pool.join("d/fast.txt"), b"on tier 0");
    write_synced(&pool.join("d/slow.txt"), b"on tier 1");
    let out = cmd(
        SMOOTHFS,
        &[
            "move",
            "--to",
            "1",
            pool.join("d/slow.txt").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t0.join("d").is_dir() && t1.join("d").is_dir());
    let dir_ino = ino_of(&pool.join("d"));
    // The rename renames the slowest copy first, then crashes.
    let _ = fs::rename(pool.join("d"), pool.join("e"));
    pool.wait_crashed(Duration::from_secs(10));
    assert!(t1.join("e").is_dir() && t0.join("d").is_dir(), "half done");
    pool.clear_env();
    pool.remount();
    assert!(
        !t0.join("d").exists() && !t1.join("d").exists(),
        "old name gone"
    );
    assert!(
        t0.join("e").is_dir() && t1.join("e").is_dir(),
        "renamed on both tiers"
    );
    assert_eq!(fs::read(pool.join("e/fast.txt")).unwrap(), b"on tier 0");
    assert_eq!(fs::read(pool.join("e/slow.txt")).unwrap(), b"on tier 1");
    assert_eq!(ino_of(&pool.join("e")), dir_ino, "directory identity kept");
    // A later mount does not redo anything: a new "d" stays where it is.
    fs::create_dir(pool.join("d")).unwrap();
    pool.remount();
    assert!(pool.join("d").is_dir() && pool.join("e/fast.txt").is_file());
}

/// S11.2: an unlink while the cutover waits for the drain is not undone by
/// the switch. Before, the staging copy was renamed in after the unlink and
/// the file came back on the destination tier.
#[test]
fn s11_unlink_while_the_cutover_waits_is_not_undone() {
    if !require_root_and_fuse() {
        return;
    }
    let (t0, t1, pool, gate) = gated_pool("cutover_before_drain", "wait");
    let rel = "d/gone.bin";
    fs::create_dir_all(pool.join("d")).unwrap();
    write_synced(&pool.join(rel), &pattern(100_000, 3));
    let oid = oid_of(&pool.join(rel));
    let mut c = client(&pool);
    let staging = plan(&mut c, &pool, &oid, 1, 7).expect("plan");
    stage_copy(&t0.join(rel), &staging);
    // A reader keeps the inode (and the daemon's node) alive across the
    // unlink, as a client with the file open does; opened after the plan,
    // its handle is mediated and does not block the cutover.
    let reader = File::open(pool.join(rel)).unwrap();
    let cut = cutover_in_thread(&pool, &oid, 7, None);
    // The cutover is parked before its drain, in cutover_in_progress.
    wait_for_state(&mut c, &pool, &oid, 6);
    fs::remove_file(pool.join(rel)).expect("unlink during the cutover");
    File::create(&gate).unwrap();
    let errno = cut.join().unwrap();
    let _ = fs::remove_file(&gate);
    assert_eq!(
        errno,
        libc::ENOENT,
        "the switch refuses an object that lost its name"
    );
    assert!(!pool.join(rel).exists(), "the unlinked file came back");
    let mut back = Vec::new();
    (&reader).read_to_end(&mut back).unwrap();
    assert_eq!(
        back,
        pattern(100_000, 3),
        "the open unlinked file still reads"
    );
    drop(reader);
    assert!(fs::read_dir(pool.join("d")).unwrap().next().is_none());
    assert!(tiers_holding(&[t0.path(), t1.path()], rel).is_empty());
    assert!(staging_dir_empty(t0.path()) && staging_dir_empty(t1.path()));
}

/// S11.2: from the switch on, the source copy is out of the namespace
/// (in `.smoothfs/outgoing` until cleanup). Before, it stayed at its name
/// until cleanup: a file created there in that window was opened as the
/// moving object and deleted by the cleanup (the logrotate pattern), a
/// rename back onto the name was a no-op, and listings saw it.
#[test]
fn s11_the_source_copy_leaves_the_namespace_at_the_switch() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pool = &p.pool;
    fs::create_dir_all(p.mnt("logs")).unwrap();
    let old = pattern(200_000, 5);
    write_synced(&p.mnt("logs/app.log"), &old);
    let ino = ino_of(&p.mnt("logs/app.log"));
    let oid = oid_of(&p.mnt("logs/app.log"));
    let mut c = client(pool);
    let staging = plan(&mut c, pool, &oid, 1, 3).expect("plan");
    stage_copy(&p.lower("logs/app.log"), &staging);
    assert_eq!(cutover(&mut c, pool, &oid, 3, None), 0);
    // Switched, not cleaned up: one copy in the namespace, the source in
    // outgoing.
    assert_eq!(p.holders("logs/app.log"), vec![1]);
    assert_eq!(outgoing_count(p.t0.path()), 1);
    // Rotate: rename away, a new file at the old name.
    fs::rename(p.mnt("logs/app.log"), p.mnt("logs/app.log.1")).unwrap();
    let new = pattern(50_000, 6);
    write_synced(&p.mnt("logs/app.log"), &new);
    // Rename back and forth over the name.
    fs::rename(p.mnt("logs/app.log.1"), p.mnt("logs/app.log.2")).unwrap();
    let mut names: Vec<String> = fs::read_dir(p.mnt("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app.log", "app.log.2"]);
    assert_eq!(cleanup(&mut c, pool, &oid, 3), 0);
    assert_eq!(outgoing_count(p.t0.path()), 0);
    assert_eq!(fs::read(p.mnt("logs/app.log")).unwrap(), new);
    assert_eq!(fs::read(p.mnt("logs/app.log.2")).unwrap(), old);
    assert_eq!(ino_of(&p.mnt("logs/app.log.2")), ino);
    assert_eq!(p.holders("logs/app.log.2"), vec![1]);
    assert_eq!(p.holders("logs/app.log"), vec![0]);
}

/// A named metadata change made through the mount.
type MetaChange = (&'static str, fn(&Path));

/// Metadata set after the plan (mode, owner, times, xattrs) may be missing
/// from the staging copy: the cutover refuses (ESTALE), the source keeps
/// everything, and a new move carries it. Before, the move succeeded and
/// the changes were lost.
#[test]
fn s11_metadata_changed_after_the_plan_fails_the_cutover() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pool = &p.pool;
    let rel = "meta.bin";
    let data = pattern(80_000, 8);
    write_synced(&p.mnt(rel), &data);
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(pool);
    let changes: [MetaChange; 3] = [
        ("chmod", |f| {
            fs::set_permissions(f, fs::Permissions::from_mode(0o600)).unwrap()
        }),
        ("setxattr", |f| set_xattr(f, "user.tag", b"v2").unwrap()),
        ("utimes", |f| {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(t)
                .unwrap()
        }),
    ];
    for (seq, (what, change)) in (10u64..).zip(changes) {
        let staging = plan(&mut c, pool, &oid, 1, seq).expect("plan");
        stage_copy(&p.lower(rel), &staging);
        change(&p.mnt(rel));
        wait_no_handles(&mut c, pool, &oid);
        assert_eq!(
            cutover(&mut c, pool, &oid, seq, None),
            libc::ESTALE,
            "{what} after the plan"
        );
        let i = inspect(&mut c, pool, &oid);
        assert_eq!(
            (i.state, i.current),
            (0, 0),
            "{what}: back to placed on the source"
        );
        assert_eq!(p.holders(rel), vec![0]);
        assert!(staging_dir_empty(p.t1.path()));
    }
    // A move planned after the changes carries them.
    let staging = plan(&mut c, pool, &oid, 1, 20).expect("plan");
    stage_copy(&p.lower(rel), &staging);
    assert_eq!(cutover(&mut c, pool, &oid, 20, None), 0);
    assert_eq!(cleanup(&mut c, pool, &oid, 20), 0);
    let md = fs::metadata(p.mnt(rel)).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(get_xattr(&p.mnt(rel), "user.tag").unwrap(), b"v2");
    // (Times are not checked here: stage_copy copies bytes and xattrs only.)
    assert_eq!(fs::read(p.mnt(rel)).unwrap(), data);
}

/// A listing that reads the tiers while a file moves from tier 1 to tier 0
/// lists it: the listing reads tier 0 before the switch and tier 1 after
/// it (held there by a failpoint), so it saw the name on neither, and is
/// taken again. Before, the name was missing from that listing.
#[test]
fn s2_3_a_listing_overlapping_a_switch_still_lists_the_file() {
    if !require_root_and_fuse() {
        return;
    }
    // The 2nd tier read of the first listing (tier 1) waits for the gate.
    let (t0, t1, pool, gate) = gated_pool("list_dir_tier", "2*wait");
    // Created directly on the tiers (no listing of the directory yet); the
    // directory on both, so the listing reads both.
    fs::create_dir_all(t0.join("dir")).unwrap();
    fs::create_dir_all(t1.join("dir")).unwrap();
    fs::write(t1.join("dir/moving.bin"), pattern(50_000, 4)).unwrap();
    let oid = oid_of(&pool.join("dir/moving.bin"));
    let mut c = client(&pool);
    wait_no_handles(&mut c, &pool, &oid);
    let dir = pool.join("dir");
    let lister = std::thread::spawn(move || {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    });
    std::thread::sleep(Duration::from_millis(300));
    // The listing has read tier 0 and waits before tier 1: move 1 -> 0.
    let staging = plan(&mut c, &pool, &oid, 0, 2).expect("plan");
    stage_copy(&t1.join("dir/moving.bin"), &staging);
    assert_eq!(cutover(&mut c, &pool, &oid, 2, None), 0);
    assert_eq!(cleanup(&mut c, &pool, &oid, 2), 0);
    File::create(&gate).unwrap();
    let names = lister.join().unwrap();
    let _ = fs::remove_file(&gate);
    assert_eq!(names, ["moving.bin"]);
}

/// open(O_TRUNC) truncates the lower as it opens: it counts as a data
/// change (S11.3), so a move planned before it does not cut over to the
/// untruncated copy. Before, the move switched and the truncation was lost.
#[test]
fn s11_open_with_o_trunc_during_a_move_is_not_lost() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pool = &p.pool;
    let rel = "trunc.bin";
    write_synced(&p.mnt(rel), &pattern(120_000, 2));
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(pool);
    wait_no_handles(&mut c, pool, &oid);
    let ws = inspect(&mut c, pool, &oid).write_seq;
    let staging = plan(&mut c, pool, &oid, 1, 4).expect("plan");
    stage_copy(&p.lower(rel), &staging);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p.mnt(rel))
        .unwrap();
    f.write_all(b"short").unwrap();
    drop(f);
    wait_no_handles(&mut c, pool, &oid);
    assert_eq!(cutover(&mut c, pool, &oid, 4, Some(ws)), libc::ESTALE);
    assert_eq!(p.holders(rel), vec![0]);
    assert_eq!(fs::read(p.mnt(rel)).unwrap(), b"short");
}

/// A plan whose worker is gone (a `smoothfs move` killed mid-copy, no
/// control plane running it) is aborted by `smoothfs move abort` in the
/// data plane: placed again, staging removed, movable again. Before, it
/// stayed `plan_accepted` until a remount and the abort said ENOENT.
#[test]
fn s9_6_move_abort_clears_a_plan_left_by_a_dead_worker() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let pool = &p.pool;
    let rel = "orphan.bin";
    let data = pattern(90_000, 12);
    write_synced(&p.mnt(rel), &data);
    let oid = oid_of(&p.mnt(rel));
    let mut c = client(pool);
    let staging = plan(&mut c, pool, &oid, 1, 9).expect("plan");
    fs::write(&staging, b"partial copy").unwrap();
    let out = std::process::Command::new(SMOOTHFS)
        .args(["move", "abort"])
        .arg(p.mnt(rel))
        .args(["--api-socket", "/nonexistent/controlplane.sock"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("aborted in the data plane"), "{stdout}");
    let i = inspect(&mut c, pool, &oid);
    assert_eq!((i.state, i.current), (0, 0));
    assert!(!staging.exists());
    assert_eq!(fs::read(p.mnt(rel)).unwrap(), data);
    // Nothing to abort now: the command says so (no control plane).
    let again = std::process::Command::new(SMOOTHFS)
        .args(["move", "abort"])
        .arg(p.mnt(rel))
        .args(["--api-socket", "/nonexistent/controlplane.sock"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    // And it moves again.
    let staging = plan(&mut c, pool, &oid, 1, 10).expect("plan after the abort");
    stage_copy(&p.lower(rel), &staging);
    assert_eq!(cutover(&mut c, pool, &oid, 10, None), 0);
    assert_eq!(cleanup(&mut c, pool, &oid, 10), 0);
    assert_eq!(fs::read(p.mnt(rel)).unwrap(), data);
}

/// A rename over a file whose cutover waits for the drain: the renamed
/// file keeps the name and its bytes. Before, the switch renamed the
/// moving file's copy in and sent the renamed one to quarantine as
/// "foreign", so `mv f g` returned 0 and g held the old bytes.
#[test]
fn s11_rename_over_a_file_in_cutover_keeps_the_renamed_file() {
    if !require_root_and_fuse() {
        return;
    }
    let (t0, t1, pool, gate) = gated_pool("cutover_before_drain", "wait");
    // f on tier 1 (created there directly), g on tier 0 moving to tier 1.
    fs::write(t1.join("f"), b"NEW data of f").unwrap();
    write_synced(&pool.join("g"), b"OLD data of g");
    let f_ino = ino_of(&pool.join("f"));
    let oid = oid_of(&pool.join("g"));
    let mut c = client(&pool);
    let staging = plan(&mut c, &pool, &oid, 1, 3).expect("plan");
    stage_copy(&t0.join("g"), &staging);
    let reader = File::open(pool.join("g")).unwrap(); // mediated, keeps the node
    let cut = cutover_in_thread(&pool, &oid, 3, None);
    wait_for_state(&mut c, &pool, &oid, 6);
    fs::rename(pool.join("f"), pool.join("g")).expect("rename over the moving file");
    File::create(&gate).unwrap();
    let errno = cut.join().unwrap();
    let _ = fs::remove_file(&gate);
    assert_eq!(errno, libc::ENOENT, "the replaced object's cutover fails");
    drop(reader);
    assert_eq!(fs::read(pool.join("g")).unwrap(), b"NEW data of f");
    assert_eq!(ino_of(&pool.join("g")), f_ino);
    assert!(!pool.join("f").exists());
    assert_eq!(tiers_holding(&[t0.path(), t1.path()], "g"), vec![1]);
    assert!(
        fs::read_dir(t1.join(".smoothfs/quarantine"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "nothing quarantined"
    );
    assert!(staging_dir_empty(t0.path()) && staging_dir_empty(t1.path()));
}
