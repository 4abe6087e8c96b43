//! Heat sampling on real mounts (SPEC S6): HEAT_SAMPLE records for mediated
//! reads (measured) and passthrough reads (estimated at release), drained
//! on RECONCILE.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use smoothfs_uapi::client::{Client, EventStream};
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::event::Event;
use smoothfs_uapi::heat::HeatRecord;
use smoothfs_uapi::ids::{Attr, Command, EVENT_MASK_ALL};

fn reconcile(pool: &Pool) {
    let uuid = uuid::Uuid::parse_str(pool.uuid()).unwrap();
    let mut c = Client::connect_pool(&uuid).unwrap();
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, uuid.as_bytes())
        .put_str(Attr::ReconcileReason, "heat test");
    c.request(Command::Reconcile, &a).expect("RECONCILE");
}

/// Records for `oid` from the HEAT_SAMPLE events received within `wait`.
fn records_for(ev: &mut EventStream, oid: &[u8], wait: Duration) -> Vec<HeatRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match ev.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => {
                if let Event::HeatSample(h) = e.event {
                    out.extend(h.records.into_iter().filter(|r| r.oid[..] == oid[..]));
                }
            }
            Err(_) => {
                if !out.is_empty() {
                    break;
                }
            }
        }
    }
    out
}

fn read_all(path: &std::path::Path) -> usize {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v.len()
}

#[test]
fn s6_3_a1_a2_mediated_read_is_measured_exactly() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "passthrough=off");
    let uuid = uuid::Uuid::parse_str(p.pool.uuid()).unwrap();
    let c = Client::connect_pool(&uuid).unwrap();
    let mut ev = c.subscribe(EVENT_MASK_ALL).unwrap();
    let n = 300_000usize;
    write_synced(&p.mnt("hot.bin"), &pattern(n, 5));
    let oid = get_xattr(&p.mnt("hot.bin"), "trusted.smoothfs.oid").unwrap();
    reconcile(&p.pool);
    let w = records_for(&mut ev, &oid, Duration::from_secs(3));
    assert_eq!(w.iter().map(|r| r.write_bytes_delta).sum::<u64>(), n as u64);
    assert_eq!(read_all(&p.mnt("hot.bin")), n);
    reconcile(&p.pool);
    let r = records_for(&mut ev, &oid, Duration::from_secs(3));
    assert_eq!(r.len(), 1, "one record per drain: {r:?}");
    assert_eq!(r[0].read_bytes_delta, n as u64);
    assert_eq!(r[0].open_count_delta, 1);
    assert_eq!(r[0].write_bytes_delta, 0);
    assert!(r[0].last_access_ns > 0 && r[0].sample_window_ns > 0);
    // A2: three opens, then nothing for it in the following drain.
    for _ in 0..3 {
        drop(File::open(p.mnt("hot.bin")).unwrap());
    }
    reconcile(&p.pool);
    let r = records_for(&mut ev, &oid, Duration::from_secs(3));
    assert_eq!(r.iter().map(|r| r.open_count_delta).sum::<u32>(), 3);
    reconcile(&p.pool);
    assert!(records_for(&mut ev, &oid, Duration::from_secs(2)).is_empty());
}

#[test]
fn s6_3_a4_passthrough_cat_is_estimated() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "heat_interval_ms=1000");
    let uuid = uuid::Uuid::parse_str(p.pool.uuid()).unwrap();
    let c = Client::connect_pool(&uuid).unwrap();
    let mut ev = c.subscribe(EVENT_MASK_ALL).unwrap();
    write_synced(&p.mnt("big.bin"), &pattern(2 << 20, 6));
    let oid = get_xattr(&p.mnt("big.bin"), "trusted.smoothfs.oid").unwrap();
    // Let the write's record go out with the periodic drain.
    let _ = records_for(&mut ev, &oid, Duration::from_secs(3));
    let out = cmd_ok("cat", &[p.mnt("big.bin")]);
    assert_eq!(out.stdout.len(), 2 << 20);
    // No RECONCILE: the periodic drain (1 s) sends it.
    let r = records_for(&mut ev, &oid, Duration::from_secs(5));
    assert!(
        r.iter().map(|r| r.open_count_delta).sum::<u32>() >= 1,
        "{r:?}"
    );
    assert!(
        r.iter().map(|r| r.read_bytes_delta).sum::<u64>() >= 2 << 20,
        "{r:?}"
    );
    let status = cmd_ok(SMOOTHFS, &["status", "--json", "--pool", p.pool.name()]);
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(s.contains("heat_records_sent_total"), "{s}");
    let _ = fs::metadata(p.mnt("big.bin"));
}

/// S20.5 / S7.4 item 2: removing the last name of an object emits
/// OBJECT_REMOVED with its OID; removing one of two hard links does not.
#[test]
fn object_removed_on_last_unlink() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let uuid = uuid::Uuid::parse_str(p.pool.uuid()).unwrap();
    let mut ev = Client::connect_pool(&uuid)
        .unwrap()
        .subscribe(EVENT_MASK_ALL)
        .unwrap();
    write_synced(&p.mnt("gone.bin"), b"x");
    let oid = get_xattr(&p.mnt("gone.bin"), "trusted.smoothfs.oid").unwrap();
    fs::hard_link(p.mnt("gone.bin"), p.mnt("other-name")).unwrap();
    fs::remove_file(p.mnt("gone.bin")).unwrap();
    fs::remove_file(p.mnt("other-name")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut removed = 0;
    while Instant::now() < deadline {
        if let Ok(e) = ev.recv_timeout(Duration::from_millis(200))
            && let Event::ObjectRemoved(r) = e.event
            && r.oid[..] == oid[..]
        {
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "exactly one OBJECT_REMOVED, at the last name");
}
