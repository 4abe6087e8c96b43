//! Tier faults on real mounts (SPEC S23): TIER_DOWN/TIER_RESUME, a fault
//! from the health check (a failpoint stands in for a device-mapper error
//! table, which this machine's kernel lacks), plans aborted by a fault, and
//! a different filesystem at the tier path never resuming.

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use smoothfs_uapi::client::{Client, EventStream};
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::event::Event;
use smoothfs_uapi::ids::{Attr, Command, EVENT_MASK_ALL};

fn pool_attrs(pool: &Pool) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.put_bytes(
        Attr::PoolUuid,
        uuid::Uuid::parse_str(pool.uuid()).unwrap().as_bytes(),
    );
    a
}

fn client(pool: &Pool) -> Client {
    Client::connect_pool(&uuid::Uuid::parse_str(pool.uuid()).unwrap()).unwrap()
}

fn tier_cmd(c: &mut Client, pool: &Pool, cmd: Command, rank: u8) -> Result<u8, i32> {
    let mut a = pool_attrs(pool);
    a.put_u8(Attr::TierRank, rank);
    c.request(cmd, &a)
        .map(|r| r.attrs().require_u8(Attr::TierState).unwrap())
        .map_err(|e| e.errno())
}

fn set_tunable(c: &mut Client, pool: &Pool, name: &str, value: &str) {
    let mut a = pool_attrs(pool);
    a.put_str(Attr::Name, name).put_str(Attr::Value, value);
    c.request(Command::SetTunable, &a).expect("SET_TUNABLE");
}

/// Waits for a TIER_FAULT (resumed = false) or TIER_RESUMED for `rank`.
fn wait_tier_event(ev: &mut EventStream, rank: u8, resumed: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(e) = ev.recv_timeout(Duration::from_millis(200)) {
            match e.event {
                Event::TierFault(f) if !resumed && f.tier_rank == rank => return true,
                Event::TierResumed(r) if resumed && r.tier_rank == rank => return true,
                _ => {}
            }
        }
    }
    false
}

/// A file on tier 1 (moved there with `smoothfs move`) and one on tier 0.
fn two_files(p: &TwoTierPool) -> (Vec<u8>, Vec<u8>) {
    let slow = pattern(200_000, 1);
    let fast = pattern(100_000, 2);
    write_synced(&p.mnt("slow.bin"), &slow);
    write_synced(&p.mnt("fast.bin"), &fast);
    let out = cmd(
        SMOOTHFS,
        &["move", "--to", "1", p.mnt("slow.bin").to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.holders("slow.bin"), vec![1]);
    (slow, fast)
}

fn names(p: &TwoTierPool) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p.mnt(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn s23_a5_tier_down_until_resume() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let (slow, fast) = two_files(&p);
    let mut c = client(&p.pool);
    let mut ev = client(&p.pool).subscribe(EVENT_MASK_ALL).unwrap();
    assert_eq!(tier_cmd(&mut c, &p.pool, Command::TierDown, 1), Ok(2));
    assert!(
        wait_tier_event(&mut ev, 1, false, Duration::from_secs(5)),
        "TIER_FAULT"
    );
    let e = fs::read(p.mnt("slow.bin")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "tier-1 file: EIO");
    assert!(names(&p).contains(&"slow.bin".to_string()), "still listed");
    assert_eq!(
        fs::read(p.mnt("fast.bin")).unwrap(),
        fast,
        "tier 0 unaffected"
    );
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(p.mnt("fast.bin"))
        .unwrap();
    f.write_all(b"more").unwrap();
    drop(f);
    write_synced(&p.mnt("new.bin"), b"new");
    assert_eq!(p.holders("new.bin"), vec![0]);
    assert_eq!(
        fs::remove_file(p.mnt("slow.bin"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    let status = cmd_ok(SMOOTHFS, &["status", "--json", "--pool", p.pool.name()]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["tier_faults_total"], 1, "{v}");
    // A move touching the tier is refused with EIO.
    let oid = get_xattr(&p.mnt("fast.bin"), "trusted.smoothfs.oid").unwrap();
    let mut a = pool_attrs(&p.pool);
    a.put_bytes(Attr::ObjectId, &oid)
        .put_u8(Attr::IntendedTier, 1)
        .put_u64(Attr::TransactionSeq, 1);
    assert_eq!(
        c.request(Command::MovePlan, &a).unwrap_err().errno(),
        libc::EIO
    );
    assert_eq!(tier_cmd(&mut c, &p.pool, Command::TierResume, 1), Ok(0));
    assert!(
        wait_tier_event(&mut ev, 1, true, Duration::from_secs(5)),
        "TIER_RESUMED"
    );
    assert_eq!(fs::read(p.mnt("slow.bin")).unwrap(), slow);
}

#[test]
fn s23_a1_a2_a3_health_fault_aborts_plans_and_resumes() {
    if !require_root_and_fuse() {
        return;
    }
    let flags = scratch_dir("smoothfs-fault-");
    let flag = flags.path().join("fail-tier-1");
    let fp = format!("tier_health_1=errorif({},5)", flag.display());
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let pool = Pool::mount_with_env(
        &[t0.path(), t1.path()],
        "",
        &[("SMOOTHFS_FAILPOINTS", fp.as_str())],
    );
    let p = TwoTierPoolView {
        pool: &pool,
        t: [t0.path().to_path_buf(), t1.path().to_path_buf()],
    };
    let slow = pattern(150_000, 3);
    write_synced(&pool.join("slow.bin"), &slow);
    let out = cmd(
        SMOOTHFS,
        &["move", "--to", "1", pool.join("slow.bin").to_str().unwrap()],
    );
    assert!(out.status.success());
    let moving = pattern(300_000, 4);
    write_synced(&pool.join("moving.bin"), &moving);
    let mut c = client(&pool);
    set_tunable(&mut c, &pool, "tier_health_interval_ms", "200");
    let mut ev = client(&pool).subscribe(EVENT_MASK_ALL).unwrap();
    // A2: a plan 0 -> 1 in flight when tier 1 fails.
    let oid = get_xattr(&pool.join("moving.bin"), "trusted.smoothfs.oid").unwrap();
    let mut a = pool_attrs(&pool);
    a.put_bytes(Attr::ObjectId, &oid)
        .put_u8(Attr::IntendedTier, 1)
        .put_u64(Attr::TransactionSeq, 42);
    let r = c.request(Command::MovePlan, &a).expect("plan");
    let staging = PathBuf::from(r.attrs().require_path(Attr::StagingPath).unwrap());
    fs::copy(t0.join("moving.bin"), &staging).unwrap();
    fs::write(&flag, b"fail").unwrap();
    assert!(
        wait_tier_event(&mut ev, 1, false, Duration::from_secs(5)),
        "TIER_FAULT"
    );
    // A1
    assert_eq!(
        fs::read(pool.join("slow.bin")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert!(p.names().contains(&"slow.bin".to_string()));
    // A2: the plan was aborted: placed on tier 0, staging gone, bytes intact.
    let mut a = pool_attrs(&pool);
    a.put_bytes(Attr::ObjectId, &oid);
    let i = c.request(Command::Inspect, &a).unwrap();
    assert_eq!(i.attrs().require_u8(Attr::MovementState).unwrap(), 0);
    assert_eq!(i.attrs().require_u8(Attr::CurrentTier).unwrap(), 0);
    assert!(!staging.exists());
    assert_eq!(fs::read(pool.join("moving.bin")).unwrap(), moving);
    // A3: the device comes back: resumes by itself (3 passing checks).
    fs::remove_file(&flag).unwrap();
    assert!(
        wait_tier_event(&mut ev, 1, true, Duration::from_secs(20)),
        "TIER_RESUMED"
    );
    assert_eq!(fs::read(pool.join("slow.bin")).unwrap(), slow);
}

struct TwoTierPoolView<'a> {
    pool: &'a Pool,
    t: [PathBuf; 2],
}

impl TwoTierPoolView<'_> {
    fn names(&self) -> Vec<String> {
        let _ = &self.t;
        fs::read_dir(self.pool.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

#[test]
fn s23_a4_a_different_filesystem_at_the_tier_path_never_resumes() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let (_slow, _fast) = two_files(&p);
    let other = LoopTier::new("ext4", 256);
    let mut c = client(&p.pool);
    set_tunable(&mut c, &p.pool, "tier_health_interval_ms", "200");
    let mut ev = client(&p.pool).subscribe(EVENT_MASK_ALL).unwrap();
    let t1 = p.t1.path().to_path_buf();
    cmd_ok("umount", &["-l", t1.to_str().unwrap()]);
    cmd_ok(
        "mount",
        &[
            "--bind",
            other.path().to_str().unwrap(),
            t1.to_str().unwrap(),
        ],
    );
    assert!(
        wait_tier_event(&mut ev, 1, false, Duration::from_secs(5)),
        "TIER_FAULT"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        tier_cmd(&mut c, &p.pool, Command::TierResume, 1),
        Err(libc::EINVAL),
        "identity mismatch"
    );
    assert_eq!(
        fs::read(p.mnt("slow.bin")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert!(!wait_tier_event(&mut ev, 1, true, Duration::from_secs(1)));
}
