//! Journal format and damage handling (SPEC S4.1, S4.4): every record type
//! against the fixed vectors of docs/formats.md, torn tails, corruption and
//! garbage.

use std::fs;
use std::path::{Path, PathBuf};

use smoothfs_fs::journal::{
    FLAG_SYNC, Frame, Journal, Record, decode_frame, encode_frame, encode_segment_header,
    segment_file_name,
};
use smoothfs_fs::oid::Oid;
use smoothfs_fs::placement::{ObjectRec, Placement, kind};

const POOL: [u8; 16] = [0xAB; 16];

fn oid_a() -> Oid {
    Oid::parse("00112233445566778899aabbccddeeff").unwrap()
}

fn oid_b() -> Oid {
    Oid::parse("ffeeddccbbaa99887766554433221100").unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (seq, record, the exact bytes) — the same vectors as docs/formats.md.
fn vectors() -> Vec<(u64, Record, &'static str)> {
    let a = oid_a();
    vec![
        (
            1,
            Record::Placed {
                oid: a,
                gen_: 1,
                kind: 1,
                slot: 0,
                policy_pin: 1,
                protocol_pin: 5,
                always_mediated: true,
                lower_ino: 0x0102030405060708,
                path: "a/b".into(),
            },
            "40000000dc042fe00100000000000000010000000000000000112233445566778899aabbccddeeff01000000010001050108070605040302010300612f620000",
        ),
        (
            2,
            Record::Move {
                oid: a,
                state: 7,
                current_slot: 0,
                intended_slot: 1,
                transaction_seq: 42,
                reason: "ok".into(),
            },
            "3800000034be2f0a0200000000000000020001000000000000112233445566778899aabbccddeeff0700012a0000000000000002006f6b00",
        ),
        (
            3,
            Record::Link {
                oid: a,
                path: "c".into(),
            },
            "30000000ff4417760300000000000000030000000000000000112233445566778899aabbccddeeff0100630000000000",
        ),
        (
            4,
            Record::Unlink {
                oid: a,
                gen_: 1,
                remaining_links: 1,
                path: "c".into(),
            },
            "380000009437c2a50400000000000000040000000000000000112233445566778899aabbccddeeff01000000010000000100630000000000",
        ),
        (
            5,
            Record::Rename {
                oid: a,
                replaced: Some(oid_b()),
                old_path: "a/b".into(),
                new_path: "d".into(),
            },
            "4000000023d688c90500000000000000050001000000000000112233445566778899aabbccddeeffffeeddccbbaa998877665544332211000300612f62010064",
        ),
        (
            6,
            Record::Pin {
                oid: a,
                policy_pin: 2,
                protocol_pin: 0,
                always_mediated: false,
            },
            "30000000504d6d680600000000000000060001000000000000112233445566778899aabbccddeeff0200000000000000",
        ),
        (
            7,
            Record::DirRename {
                oid: a,
                tier_mask: 3,
                done_mask: 1,
                old_path: "x".into(),
                new_path: "y".into(),
            },
            "380000001f1159030700000000000000070001000000000000112233445566778899aabbccddeeff03000100010078010079000000000000",
        ),
        (
            8,
            Record::Gen { oid: a, gen_: 2 },
            "30000000255350380800000000000000080001000000000000112233445566778899aabbccddeeff0200000000000000",
        ),
        (
            9,
            Record::Checkpoint { checkpoint_seq: 8 },
            "2000000026b145c7090000000000000009000000000000000800000000000000",
        ),
        (
            10,
            Record::Stage {
                oid: a,
                kind: 1,
                source_slot: 1,
            },
            "30000000b505364e0a000000000000000a0001000000000000112233445566778899aabbccddeeff0101000000000000",
        ),
        (
            11,
            Record::Unknown {
                rtype: 99,
                payload: vec![1, 2, 3, 0, 0, 0, 0, 0],
            },
            "20000000d4184e450b0000000000000063000000000000000102030000000000",
        ),
    ]
}

#[test]
fn every_record_type_encodes_and_decodes_byte_for_byte() {
    for (seq, rec, bytes) in vectors() {
        let flags = if rec.is_sync() { FLAG_SYNC } else { 0 };
        if !matches!(rec, Record::Unknown { .. }) {
            let mut out = Vec::new();
            encode_frame(seq, flags, &rec, &mut out).unwrap();
            assert_eq!(hex(&out), bytes, "encoding of type {}", rec.rtype());
        }
        let frame = decode_frame(&unhex(bytes)).unwrap();
        assert_eq!(
            frame,
            Frame {
                seq,
                flags,
                len: bytes.len() / 2,
                record: rec.clone()
            },
            "decoding {bytes}"
        );
    }
}

#[test]
fn unknown_record_type_is_read_and_advances_seq() {
    // An unknown type (3 payload bytes, padded) encodes like any other.
    let mut out = Vec::new();
    encode_frame(
        11,
        0,
        &Record::Unknown {
            rtype: 99,
            payload: vec![1, 2, 3],
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(hex(&out), vectors()[10].2);
}

#[test]
fn segment_header_layout() {
    assert_eq!(
        hex(&encode_segment_header(&POOL, 1)),
        "534d464a524e4c31abababababababababababababababab0100000000000000"
    );
    assert_eq!(segment_file_name(1), "0000000000000001.jnl");
}

#[test]
fn sync_durability_class_follows_s4_2() {
    let a = oid_a();
    assert!(
        !Record::Link {
            oid: a,
            path: "x".into()
        }
        .is_sync()
    );
    assert!(
        !Record::Rename {
            oid: a,
            replaced: None,
            old_path: "x".into(),
            new_path: "y".into()
        }
        .is_sync()
    );
    assert!(
        Record::Rename {
            oid: a,
            replaced: Some(oid_b()),
            old_path: "x".into(),
            new_path: "y".into()
        }
        .is_sync()
    );
    assert!(Record::Gen { oid: a, gen_: 1 }.is_sync());
}

fn read_all(dir: &Path) -> (Vec<(u64, Record)>, smoothfs_fs::journal::ScanReport) {
    let mut got = Vec::new();
    let (j, report) = Journal::open(dir, POOL, 1, |seq, rec| {
        got.push((seq, rec));
        Ok(())
    })
    .unwrap();
    drop(j);
    (got, report)
}

#[test]
fn journal_reads_back_what_it_wrote_including_unknown_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    {
        let (j, _) = Journal::open(&dir, POOL, 1, |_, _| Ok(())).unwrap();
        for (_, rec, _) in vectors() {
            j.append(&rec, rec.is_sync()).unwrap();
        }
        j.sync().unwrap();
        assert_eq!(j.last_seq(), 11);
    }
    let (got, report) = read_all(&dir);
    assert_eq!(got.len(), 11);
    assert_eq!(report.torn_tail_truncations, 0);
    assert!(!report.degraded);
    for ((seq, rec), (vseq, vrec, _)) in got.iter().zip(vectors()) {
        assert_eq!(*seq, vseq);
        assert_eq!(*rec, vrec);
    }
    let meta = fs::metadata(dir.join("0000000000000001.jnl")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

fn place(p: &Placement, path: &str, n: u8) -> Oid {
    let oid = Oid([n; 16]);
    p.placed(&ObjectRec::new(oid, kind::FILE, 0, 1000 + n as u64, path))
        .unwrap();
    oid
}

/// Places f1..=f10 without a checkpoint and leaves the journal as a crash
/// would (records synced, index not checkpointed).
fn ten_objects_then_crash(meta: &Path) {
    let (p, _) = Placement::open(meta, POOL).unwrap();
    for n in 1..=10u8 {
        place(&p, &format!("f{n}"), n);
    }
    p.sync().unwrap();
    p.simulate_crash();
}

#[test]
fn torn_journal_tail_still_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path();
    ten_objects_then_crash(meta);
    let seg = segment(&meta.join("journal"));
    let len = fs::metadata(&seg).unwrap().len();
    // The last record (f10's PLACED) is 48 bytes; cut in its middle.
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);

    let (p, report) = Placement::open(meta, POOL).unwrap();
    assert_eq!(report.torn_tail_truncations, 1);
    assert!(!report.degraded);
    assert_eq!(p.counters().torn_tail_truncations, 1);
    for n in 1..=9u8 {
        let rec = p
            .by_path(&format!("f{n}"))
            .unwrap_or_else(|| panic!("f{n} lost"));
        assert_eq!(rec.oid, Oid([n; 16]));
    }
    // New records continue the seq after the cut and survive a reopen.
    place(&p, "after", 42);
    p.close().unwrap();
    let (p, report) = Placement::open(meta, POOL).unwrap();
    assert_eq!(report.torn_tail_truncations, 0);
    assert_eq!(p.by_path("after").unwrap().oid, Oid([42; 16]));
}

#[test]
fn corrupt_journal_mounts_degraded_and_sets_bytes_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path();
    ten_objects_then_crash(meta);
    let seg = segment(&meta.join("journal"));
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].copy_from_slice(&[0x5A; 16]);
    fs::write(&seg, &bytes).unwrap();

    let (p, report) = Placement::open(meta, POOL).unwrap();
    assert!(report.degraded);
    assert!(report.corrupt_records >= 1);
    assert!(p.counters().degraded);
    let aside: Vec<_> = fs::read_dir(meta.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("corrupt-") && n.ends_with(".bin"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    // The records before the damage still resolve.
    assert_eq!(p.by_path("f1").unwrap().oid, Oid([1; 16]));
    p.close().unwrap();
    // A second mount finds a clean journal.
    let (_p, report) = Placement::open(meta, POOL).unwrap();
    assert!(!report.degraded);
    assert_eq!(report.corrupt_records, 0);
}

#[test]
fn corruption_counts_every_record_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    {
        let (j, _) = Journal::open(&dir, POOL, 1, |_, _| Ok(())).unwrap();
        for n in 0..10u8 {
            j.append(
                &Record::Gen {
                    oid: Oid([n; 16]),
                    gen_: n as u32,
                },
                false,
            )
            .unwrap();
        }
        j.sync().unwrap();
    }
    // GEN records are 48 bytes; damage the 4th record's CRC.
    let seg = dir.join("0000000000000001.jnl");
    let mut bytes = fs::read(&seg).unwrap();
    bytes[32 + 3 * 48 + 30] ^= 0xFF;
    fs::write(&seg, &bytes).unwrap();
    let (got, report) = read_all(&dir);
    assert_eq!(got.len(), 3);
    assert_eq!(report.corrupt_records, 7);
    assert!(report.degraded);
    assert_eq!(fs::metadata(&seg).unwrap().len(), 32 + 3 * 48);
    let aside = &report.set_aside[0];
    assert_eq!(fs::read(aside).unwrap(), bytes[32 + 3 * 48..]);
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("corrupt-0000000000000004-")
    );
}

#[test]
fn wrong_pool_uuid_segment_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    {
        let (j, _) = Journal::open(&dir, [1; 16], 1, |_, _| Ok(())).unwrap();
        j.append(&Record::Checkpoint { checkpoint_seq: 0 }, true)
            .unwrap();
    }
    let (got, report) = read_all(&dir);
    assert!(got.is_empty());
    assert!(report.degraded);
    assert_eq!(report.corrupt_records, 1);
}

#[test]
fn journal_of_random_bytes_still_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path();
    let dir = meta.join("journal");
    fs::create_dir_all(&dir).unwrap();
    let junk: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    fs::write(dir.join("0000000000000001.jnl"), &junk).unwrap();
    let (p, report) = Placement::open(meta, POOL).unwrap();
    assert!(report.degraded);
    let oid = place(&p, "new", 7);
    p.close().unwrap();
    let (p, report) = Placement::open(meta, POOL).unwrap();
    assert!(!report.degraded);
    assert_eq!(p.by_path("new").unwrap().oid, oid);
}

#[test]
fn random_bytes_after_a_valid_header_still_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path();
    let dir = meta.join("journal");
    fs::create_dir_all(&dir).unwrap();
    let mut bytes = encode_segment_header(&POOL, 1).to_vec();
    bytes.extend((0..4096).map(|_| rand::random::<u8>()));
    fs::write(dir.join("0000000000000001.jnl"), &bytes).unwrap();
    let (p, _report) = Placement::open(meta, POOL).unwrap();
    place(&p, "x", 1);
    p.close().unwrap();
}

#[test]
fn segment_torn_at_creation_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    {
        let (j, _) = Journal::open(&dir, POOL, 1, |_, _| Ok(())).unwrap();
        j.append(
            &Record::Gen {
                oid: oid_a(),
                gen_: 1,
            },
            true,
        )
        .unwrap();
    }
    // A crash while the next segment's header was being written.
    fs::write(
        dir.join(segment_file_name(2)),
        &encode_segment_header(&POOL, 2)[..10],
    )
    .unwrap();
    let (got, report) = read_all(&dir);
    assert_eq!(got.len(), 1);
    assert_eq!(report.torn_tail_truncations, 1);
    assert!(!report.degraded);
}

#[test]
fn unreadable_journal_fails_open_with_eio() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    fs::create_dir_all(&dir).unwrap();
    // A directory where a segment should be: reading it is an I/O error.
    fs::create_dir(dir.join(segment_file_name(1))).unwrap();
    let err = Journal::open(&dir, POOL, 1, |_, _| Ok(())).err().unwrap();
    assert_eq!(err.errno, libc::EIO);
}
