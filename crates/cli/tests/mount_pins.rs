//! Pins on real mounts (SPEC S8): persistence across remount, the volatile
//! lease, FORCE over a lease with the kernel lease broken at cutover, and
//! the automatic cleanup after `cleanup_grace_s` (S9.4 A4).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use common::*;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::ids::{Attr, Command};

fn client(pool: &Pool) -> Client {
    Client::connect_pool(&uuid::Uuid::parse_str(pool.uuid()).unwrap()).unwrap()
}

fn base(pool: &Pool, oid: &[u8]) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.put_bytes(
        Attr::PoolUuid,
        uuid::Uuid::parse_str(pool.uuid()).unwrap().as_bytes(),
    )
    .put_bytes(Attr::ObjectId, oid);
    a
}

fn oid_of(p: &Path) -> Vec<u8> {
    get_xattr(p, "trusted.smoothfs.oid").unwrap()
}

fn pins(c: &mut Client, pool: &Pool, oid: &[u8]) -> (u8, u8, u8) {
    let r = c.request(Command::Inspect, &base(pool, oid)).unwrap();
    let a = r.attrs();
    (
        a.require_u8(Attr::PinState).unwrap(),
        a.require_u8(Attr::PolicyPin).unwrap(),
        a.require_u8(Attr::MovementState).unwrap(),
    )
}

fn stage_copy(src: &Path, staging: &Path) {
    fs::copy(src, staging).unwrap();
    for n in list_xattr(src).unwrap() {
        set_xattr(staging, &n, &get_xattr(src, &n).unwrap()).unwrap();
    }
}

fn plan(
    c: &mut Client,
    pool: &Pool,
    oid: &[u8],
    dest: u8,
    seq: u64,
    force: bool,
) -> Result<PathBuf, i32> {
    let mut a = base(pool, oid);
    a.put_u8(Attr::IntendedTier, dest)
        .put_u64(Attr::TransactionSeq, seq);
    if force {
        a.put_bool(Attr::Force, true);
    }
    c.request(Command::MovePlan, &a)
        .map(|r| PathBuf::from(r.attrs().require_path(Attr::StagingPath).unwrap()))
        .map_err(|e| e.errno())
}

#[test]
fn s8_3_a1_a2_pins_persist_and_the_lease_does_not() {
    if !require_root_and_fuse() {
        return;
    }
    let mut p = TwoTierPool::new("ext4", "ext4", "");
    for n in ["f", "g", "h"] {
        write_synced(&p.mnt(n), n.as_bytes());
    }
    let (f, g, h) = (
        oid_of(&p.mnt("f")),
        oid_of(&p.mnt("g")),
        oid_of(&p.mnt("h")),
    );
    let mut c = client(&p.pool);
    let mut a = base(&p.pool, &f);
    a.put_u8(Attr::PolicyPin, 1);
    let r = c.request(Command::PinSet, &a).expect("PIN_SET hot");
    assert_eq!(r.attrs().require_u8(Attr::PolicyPin).unwrap(), 1);
    set_xattr(&p.mnt("g"), "trusted.smoothfs.lun", &[1]).unwrap();
    set_xattr(&p.mnt("h"), "trusted.smoothfs.lease", &[1]).unwrap();
    assert_eq!(pins(&mut c, &p.pool, &h).0, 4);
    drop(c);
    p.pool.remount();
    let mut c = client(&p.pool);
    assert_eq!(pins(&mut c, &p.pool, &f).1, 1, "pin_hot survives");
    assert_eq!(pins(&mut c, &p.pool, &g).0, 5, "pin_lun survives");
    assert_eq!(
        get_xattr(&p.mnt("h"), "trusted.smoothfs.lease").unwrap(),
        vec![0]
    );
    assert_eq!(pins(&mut c, &p.pool, &h).0, 0, "no lease after remount");
    // A3 of S8.4: never listed.
    let names = list_xattr(&p.mnt("g")).unwrap();
    assert!(names.iter().all(|n| !n.contains("smoothfs")), "{names:?}");
    // pin_hot: a demotion is refused, pin_lun refuses everything.
    assert_eq!(plan(&mut c, &p.pool, &f, 1, 1, false), Err(libc::EBUSY));
    assert_eq!(plan(&mut c, &p.pool, &g, 1, 2, true), Err(libc::EBUSY));
}

#[test]
fn s8_5_a1_a2_forced_move_breaks_the_lease() {
    if !require_root_and_fuse() {
        return;
    }
    // Mediated handles, as with smbd in mediated_comm.
    let p = TwoTierPool::new("ext4", "ext4", "passthrough=off");
    write_synced(&p.mnt("doc.txt"), b"leased document");
    let oid = oid_of(&p.mnt("doc.txt"));
    set_xattr(&p.mnt("doc.txt"), "trusted.smoothfs.lease", &[1]).unwrap();
    let mut c = client(&p.pool);
    assert_eq!(plan(&mut c, &p.pool, &oid, 1, 1, false), Err(libc::EBUSY));
    // A lease holder through the mount, waiting for SIGIO.
    let script = r#"
import fcntl, os, signal, sys, time
got = []
signal.signal(signal.SIGIO, lambda *a: got.append(1))
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
print("leased", flush=True)
t = time.time()
while not got and time.time() - t < 20:
    time.sleep(0.05)
print("SIGIO" if got else "timeout", flush=True)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"#;
    let mut child = Proc::new("python3")
        .args(["-c", script])
        .arg(p.mnt("doc.txt"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "leased");
    let staging = plan(&mut c, &p.pool, &oid, 1, 2, true).expect("FORCE is accepted over a lease");
    stage_copy(&p.t0.join("doc.txt"), &staging);
    let mut a = base(&p.pool, &oid);
    a.put_u64(Attr::TransactionSeq, 2);
    let t = Instant::now();
    c.request(Command::MoveCutover, &a).expect("cutover");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "SIGIO", "the lease holder is notified");
    assert!(t.elapsed() < Duration::from_secs(5));
    let _ = child.wait();
    assert_eq!(
        get_xattr(&p.mnt("doc.txt"), "trusted.smoothfs.lease").unwrap(),
        vec![0]
    );
    assert_eq!(fs::read(p.mnt("doc.txt")).unwrap(), b"leased document");
}

#[test]
fn s9_4_a4_switched_object_is_cleaned_after_the_grace() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    write_synced(&p.mnt("g.bin"), &pattern(50_000, 2));
    let oid = oid_of(&p.mnt("g.bin"));
    let mut c = client(&p.pool);
    let mut a = AttrBuf::new();
    a.put_bytes(
        Attr::PoolUuid,
        uuid::Uuid::parse_str(p.pool.uuid()).unwrap().as_bytes(),
    )
    .put_str(Attr::Name, "cleanup_grace_s")
    .put_str(Attr::Value, "2");
    c.request(Command::SetTunable, &a).unwrap();
    let staging = plan(&mut c, &p.pool, &oid, 1, 9, false).unwrap();
    stage_copy(&p.t0.join("g.bin"), &staging);
    let mut a = base(&p.pool, &oid);
    a.put_u64(Attr::TransactionSeq, 9);
    c.request(Command::MoveCutover, &a).unwrap();
    assert_eq!(pins(&mut c, &p.pool, &oid).2, 7);
    let deadline = Instant::now() + Duration::from_secs(6);
    while pins(&mut c, &p.pool, &oid).2 != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        pins(&mut c, &p.pool, &oid).2,
        0,
        "placed after cleanup_grace_s"
    );
    assert_eq!(p.holders("g.bin"), vec![1], "source copy gone");
}
