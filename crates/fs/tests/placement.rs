//! The placement facade (SPEC S3.5, S4.2, S4.3, S4.5, S8.3): replay,
//! normalisation of unfinished moves, durability across a real `kill -9`,
//! checkpoint compaction, renames and tombstones.

use std::path::Path;
use std::time::Instant;

use smoothfs_fs::index::Index;
use smoothfs_fs::journal::{NO_SLOT, Record};
use smoothfs_fs::oid::{Oid, OidMinter};
use smoothfs_fs::placement::{AttrSnapshot, ObjectRec, Placement, kind, state};

const POOL: [u8; 16] = [0x11; 16];

fn file(oid: Oid, slot: u8, ino: u64, path: &str) -> ObjectRec {
    ObjectRec::new(oid, kind::FILE, slot, ino, path)
}

fn dir(oid: Oid, path: &str) -> ObjectRec {
    ObjectRec::new(oid, kind::DIR, NO_SLOT, 0, path)
}

fn open(meta: &Path) -> (Placement, smoothfs_fs::placement::ReplayReport) {
    Placement::open(meta, POOL).unwrap()
}

#[test]
fn ten_thousand_applies_take_well_under_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (p, _) = open(tmp.path());
    let m = OidMinter::new();
    let oids: Vec<Oid> = (0..10_000).map(|_| m.mint()).collect();
    let t = Instant::now();
    for (i, oid) in oids.iter().enumerate() {
        p.placed(&file(*oid, 0, i as u64 + 10, &format!("d/f{i}"))).unwrap();
    }
    let el = t.elapsed();
    eprintln!("10k PLACED through Placement: {:?} ({:.0}/s)", el, 10_000.0 / el.as_secs_f64());
    p.close().unwrap();
    let t = Instant::now();
    let (p, _) = open(tmp.path());
    eprintln!("clean reopen: {:?}", t.elapsed());
    assert_eq!(p.children("d").len(), 10_000);
}
