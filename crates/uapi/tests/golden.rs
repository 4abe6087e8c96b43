//! S20/A1: every command and event encodes to, and decodes from, a fixed
//! byte vector. The vectors are the contract: if one of these tests fails,
//! the wire format changed, which needs protocol version 2 (S20.7/3).
//!
//! To print the vectors after a deliberate, versioned change:
//! `GOLDEN_PRINT=1 cargo test -p smoothfs-uapi --test golden -- --nocapture`.

mod common;

use std::path::PathBuf;

use common::{OID, POOL, hex, pool_uuid, unhex};
use smoothfs_uapi::codec::{
    AttrBuf, MessageBuilder, decode_message, decode_reply, decode_request, encode_error_reply,
};
use smoothfs_uapi::event::{
    Event, HeatSample, MountReady, MoveState, ObjectEntry, ObjectRemoved, Spill, StatusItem,
    TierFault, TierInfo, TierResumed, decode_event, decode_list, fsid_for,
};
use smoothfs_uapi::heat::HeatRecord;
use smoothfs_uapi::ids::{
    Attr, Command, EventId, MovementState, ObjectKind, PinState, PolicyPin, TierCap, TierCaps,
    TierState,
};

fn check(name: &str, encoded: &[u8], expected_hex: &str) {
    // `SMOOTHFS_FUZZ_SEEDS=<dir>` writes every vector there as a seed for
    // the `decode_message` fuzz target (see docs/uapi.md).
    if let Some(dir) = std::env::var_os("SMOOTHFS_FUZZ_SEEDS") {
        let file = format!("{}-{}", name.replace(' ', "_"), encoded.len());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(file), encoded).unwrap();
    }
    if std::env::var_os("GOLDEN_PRINT").is_some() {
        println!("=== {name}\n{}", hex(encoded));
        return;
    }
    assert_eq!(
        hex(encoded),
        hex(&unhex(expected_hex)),
        "{name}: encoding differs from the fixed vector"
    );
}

/// One representative request per command (required attributes and the
/// interesting optional ones).
fn request_attrs(cmd: Command) -> AttrBuf {
    let mut a = AttrBuf::new();
    match cmd {
        Command::RegisterPool | Command::PolicyPush | Command::DirtyRanges => {}
        Command::MovePlan => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::ObjectId, &OID)
                .put_u8(Attr::IntendedTier, 1)
                .put_u64(Attr::TransactionSeq, 42)
                .put_u8(Attr::Force, 1);
        }
        Command::TierDown | Command::TierResume => {
            a.put_bytes(Attr::PoolUuid, &POOL).put_u8(Attr::TierRank, 1);
        }
        Command::Reconcile => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_str(Attr::ReconcileReason, "manual");
        }
        Command::Quiesce | Command::Reprobe | Command::Status => {
            a.put_bytes(Attr::PoolUuid, &POOL);
        }
        Command::Inspect | Command::RevokeMappings => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::ObjectId, &OID);
        }
        Command::MoveCutover => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::ObjectId, &OID)
                .put_u64(Attr::TransactionSeq, 42)
                .put_u64(Attr::WriteSeq, 7);
        }
        Command::Subscribe => {
            a.put_u64(
                Attr::EventMask,
                EventId::MoveState.mask_bit() | EventId::Spill.mask_bit(),
            );
        }
        Command::SetTunable => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_str(Attr::Name, "full_pct")
                .put_str(Attr::Value, "95");
        }
        Command::ListObjects => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::Cursor, &[0xc0, 0xff, 0xee])
                .put_u32(Attr::Limit, 1000)
                .put_u64(Attr::SinceSeq, 5)
                .put_u8(Attr::ObjectKind, ObjectKind::Regular.number());
        }
        Command::MoveAbort => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::ObjectId, &OID)
                .put_u64(Attr::TransactionSeq, 42)
                .put_str(Attr::FailureReason, "operator");
        }
        Command::MoveCleanup => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::ObjectId, &OID)
                .put_u64(Attr::TransactionSeq, 42);
        }
        Command::PinSet => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_bytes(Attr::ObjectId, &OID)
                .put_u8(Attr::PolicyPin, PolicyPin::PinHot.number());
        }
        Command::ResolvePath => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_str(Attr::RelPath, "a/b.txt");
        }
        Command::PruneDirs => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_u32(Attr::TierMask, 0x2)
                .put_str(Attr::RelPath, "a");
        }
        Command::Scrub => {
            a.put_bytes(Attr::PoolUuid, &POOL)
                .put_str(Attr::Name, "start");
        }
    }
    a
}

fn request_golden(cmd: Command) -> &'static str {
    match cmd {
        Command::RegisterPool => {
            "
            10 00 00 00 01 00 01 00 64 00 00 00 01 00 00 00
        "
        }
        Command::PolicyPush => {
            "
            10 00 00 00 02 00 01 00 65 00 00 00 01 00 00 00
        "
        }
        Command::MovePlan => {
            "
            54 00 00 00 03 00 01 00 66 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab 05 00 0c 00 01 00 00 00
            0c 00 0d 00 2a 00 00 00 00 00 00 00 05 00 14 00
            01 00 00 00
        "
        }
        Command::TierDown => {
            "
            2c 00 00 00 04 00 01 00 67 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 05 00 04 00 01 00 00 00
        "
        }
        Command::Reconcile => {
            "
            30 00 00 00 05 00 01 00 68 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 0b 00 11 00 6d 61 6e 75 61 6c 00 00
        "
        }
        Command::Quiesce => {
            "
            24 00 00 00 06 00 01 00 69 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff
        "
        }
        Command::Inspect => {
            "
            38 00 00 00 07 00 01 00 6a 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab
        "
        }
        Command::Reprobe => {
            "
            24 00 00 00 08 00 01 00 6b 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff
        "
        }
        Command::MoveCutover => {
            "
            50 00 00 00 0d 00 01 00 6c 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab 0c 00 0d 00 2a 00 00 00
            00 00 00 00 0c 00 17 00 07 00 00 00 00 00 00 00
        "
        }
        Command::RevokeMappings => {
            "
            38 00 00 00 0e 00 01 00 6d 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab
        "
        }
        Command::Subscribe => {
            "
            1c 00 00 00 10 00 01 00 6e 00 00 00 01 00 00 00
            0c 00 2a 00 00 88 00 00 00 00 00 00
        "
        }
        Command::Status => {
            "
            24 00 00 00 11 00 01 00 6f 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff
        "
        }
        Command::SetTunable => {
            "
            3c 00 00 00 12 00 01 00 70 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 0d 00 27 00 66 75 6c 6c 5f 70 63 74
            00 00 00 00 07 00 28 00 39 35 00 00
        "
        }
        Command::ListObjects => {
            "
            48 00 00 00 13 00 01 00 71 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 07 00 24 00 c0 ff ee 00 08 00 25 00
            e8 03 00 00 0c 00 2f 00 05 00 00 00 00 00 00 00
            05 00 22 00 01 00 00 00
        "
        }
        Command::MoveAbort => {
            "
            54 00 00 00 14 00 01 00 72 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab 0c 00 0d 00 2a 00 00 00
            00 00 00 00 0d 00 2d 00 6f 70 65 72 61 74 6f 72
            00 00 00 00
        "
        }
        Command::MoveCleanup => {
            "
            44 00 00 00 15 00 01 00 73 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab 0c 00 0d 00 2a 00 00 00
            00 00 00 00
        "
        }
        Command::PinSet => {
            "
            40 00 00 00 16 00 01 00 74 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
            8d ef 01 23 45 67 89 ab 05 00 1c 00 01 00 00 00
        "
        }
        Command::TierResume => {
            "
            2c 00 00 00 17 00 01 00 75 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 05 00 04 00 01 00 00 00
        "
        }
        Command::ResolvePath => {
            "
            30 00 00 00 18 00 01 00 76 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 0c 00 13 00 61 2f 62 2e 74 78 74 00
        "
        }
        Command::PruneDirs => {
            "
            34 00 00 00 19 00 01 00 77 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 08 00 31 00 02 00 00 00 06 00 13 00
            61 00 00 00
        "
        }
        Command::Scrub => {
            "
            30 00 00 00 1c 00 01 00 78 00 00 00 01 00 00 00
            14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
            cc dd ee ff 0a 00 27 00 73 74 61 72 74 00 00 00
        "
        }
        Command::DirtyRanges => {
            "
            10 00 00 00 1d 00 01 00 79 00 00 00 01 00 00 00
        "
        }
    }
}

#[test]
fn every_command_request_matches_its_fixed_vector() {
    for (i, cmd) in Command::ALL.iter().copied().enumerate() {
        let seq = 100 + i as u32;
        let attrs = request_attrs(cmd);
        let bytes = MessageBuilder::request(cmd, seq)
            .with_attrs(attrs.clone())
            .finish()
            .unwrap();
        check(cmd.as_str(), &bytes, request_golden(cmd));
        if std::env::var_os("GOLDEN_PRINT").is_some() {
            continue;
        }
        let wire = unhex(request_golden(cmd));
        let req = decode_request(&wire).unwrap();
        assert_eq!(req.command, cmd);
        assert_eq!(req.seq(), seq);
        assert_eq!(req.attrs.as_bytes(), attrs.as_bytes(), "{cmd}");
    }
}

#[test]
fn move_plan_vector_decodes_to_its_fields() {
    let wire = unhex(request_golden(Command::MovePlan));
    let req = decode_request(&wire).unwrap();
    assert_eq!(req.attrs.require_id16(Attr::PoolUuid).unwrap(), POOL);
    assert_eq!(req.attrs.require_id16(Attr::ObjectId).unwrap(), OID);
    assert_eq!(req.attrs.require_u8(Attr::IntendedTier).unwrap(), 1);
    assert_eq!(req.attrs.require_u64(Attr::TransactionSeq).unwrap(), 42);
    assert_eq!(req.attrs.get_bool(Attr::Force).unwrap(), Some(true));
    assert_eq!(req.attrs.get_u64(Attr::WriteSeq).unwrap(), None);
}

const ERROR_REPLY: &str = "
    2c 00 00 00 03 00 0a 00 07 00 00 00 01 00 00 00
    08 00 19 00 10 00 00 00 14 00 1a 00 70 69 6e 6e
    65 64 3a 20 70 69 6e 5f 6c 75 6e 00
";

#[test]
fn error_reply_matches_its_fixed_vector() {
    let bytes = encode_error_reply(
        7,
        Command::MovePlan.number(),
        libc::EBUSY,
        "pinned: pin_lun",
    );
    check("error reply", &bytes, ERROR_REPLY);
    if std::env::var_os("GOLDEN_PRINT").is_some() {
        return;
    }
    match decode_reply(&unhex(ERROR_REPLY)) {
        Err(smoothfs_uapi::Error::Remote { errno, message }) => {
            assert_eq!(errno, libc::EBUSY);
            assert_eq!(message, "pinned: pin_lun");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn tiers() -> Vec<TierInfo> {
    let caps = TierCaps::REQUIRED.with(TierCap::DirectIo);
    vec![
        TierInfo {
            rank: 0,
            caps,
            tier_path: PathBuf::from("/mnt/nvme"),
            tier_id: "5b0c1f6e-0000-4000-8000-000000000000".into(),
            state: TierState::Ok,
            passthrough: true,
        },
        TierInfo {
            rank: 1,
            caps: caps.with(TierCap::Reflink),
            tier_path: PathBuf::from("/mnt/hdd"),
            tier_id: "5b0c1f6e-0000-4000-8000-000000000001".into(),
            state: TierState::Faulted,
            passthrough: false,
        },
    ]
}

const STATUS_REPLY: &str = "
    10 01 00 00 11 00 02 00 09 00 00 00 01 00 00 00
    3c 00 29 80 1c 00 01 80 10 00 27 00 6a 6f 75 72
    6e 61 6c 5f 73 65 71 00 07 00 28 00 31 32 00 00
    1c 00 02 80 0d 00 27 00 66 75 6c 6c 5f 70 63 74
    00 00 00 00 07 00 28 00 39 38 00 00 c4 00 12 80
    60 00 01 80 05 00 04 00 00 00 00 00 08 00 05 00
    f3 01 00 00 0e 00 06 00 2f 6d 6e 74 2f 6e 76 6d
    65 00 00 00 29 00 07 00 35 62 30 63 31 66 36 65
    2d 30 30 30 30 2d 34 30 30 30 2d 38 30 30 30 2d
    30 30 30 30 30 30 30 30 30 30 30 30 00 00 00 00
    05 00 2b 00 00 00 00 00 05 00 36 00 01 00 00 00
    60 00 02 80 05 00 04 00 01 00 00 00 08 00 05 00
    f3 21 00 00 0d 00 06 00 2f 6d 6e 74 2f 68 64 64
    00 00 00 00 29 00 07 00 35 62 30 63 31 66 36 65
    2d 30 30 30 30 2d 34 30 30 30 2d 38 30 30 30 2d
    30 30 30 30 30 30 30 30 30 30 30 31 00 00 00 00
    05 00 2b 00 01 00 00 00 05 00 36 00 00 00 00 00
";

#[test]
fn status_reply_with_nested_lists_matches_its_fixed_vector() {
    let items = vec![
        StatusItem {
            name: "journal_seq".into(),
            value: "12".into(),
        },
        StatusItem {
            name: "full_pct".into(),
            value: "98".into(),
        },
    ];
    let mut m = MessageBuilder::reply(Command::Status, 9);
    m.put_list(Attr::StatusItems, &items, |w, it| it.encode(w))
        .put_list(Attr::Tiers, &tiers(), |w, t| t.encode(w));
    let bytes = m.finish().unwrap();
    check("STATUS reply", &bytes, STATUS_REPLY);
    if std::env::var_os("GOLDEN_PRINT").is_some() {
        return;
    }
    let wire = unhex(STATUS_REPLY);
    let msg = decode_reply(&wire).unwrap();
    assert_eq!(
        decode_list(&msg.attrs, Attr::StatusItems, StatusItem::decode).unwrap(),
        items
    );
    assert_eq!(
        decode_list(&msg.attrs, Attr::Tiers, TierInfo::decode).unwrap(),
        tiers()
    );
}

const LIST_OBJECTS_REPLY: &str = "
    a8 00 00 00 13 00 02 00 0a 00 00 00 01 00 00 00
    84 00 26 80 80 00 01 80 14 00 08 00 01 8f 3a 5c
    7e 10 7a bc 8d ef 01 23 45 67 89 ab 05 00 22 00
    01 00 00 00 05 00 0b 00 01 00 00 00 05 00 0a 00
    00 00 00 00 05 00 0e 00 05 00 00 00 05 00 1c 00
    02 00 00 00 05 00 35 00 01 00 00 00 0c 00 15 00
    00 00 00 40 00 00 00 00 0c 00 30 00 00 00 2a 36
    fe 9c 97 17 08 00 1e 00 01 00 00 00 08 00 1d 00
    03 00 00 00 10 00 13 00 76 6d 2f 64 69 73 6b 2e
    69 6d 67 00 08 00 24 00 01 02 03 04 0c 00 34 00
    4d 00 00 00 00 00 00 00
";

#[test]
fn list_objects_reply_matches_its_fixed_vector() {
    let objects = vec![ObjectEntry {
        oid: OID,
        kind: ObjectKind::Regular,
        current_tier: 1,
        movement_state: MovementState::Placed,
        pin_state: PinState::PinLun,
        policy_pin: PolicyPin::PinCold,
        mediated: true,
        size_bytes: 1 << 30,
        mtime_ns: 1_700_000_000_000_000_000,
        nlink: 1,
        object_gen: 3,
        rel_path: PathBuf::from("vm/disk.img"),
    }];
    let mut m = MessageBuilder::reply(Command::ListObjects, 10);
    m.put_list(Attr::Objects, &objects, |w, o| o.encode(w))
        .put_bytes(Attr::Cursor, &[1, 2, 3, 4])
        .put_u64(Attr::JournalSeq, 77);
    let bytes = m.finish().unwrap();
    check("LIST_OBJECTS reply", &bytes, LIST_OBJECTS_REPLY);
    if std::env::var_os("GOLDEN_PRINT").is_some() {
        return;
    }
    let wire = unhex(LIST_OBJECTS_REPLY);
    let msg = decode_message(&wire).unwrap();
    assert_eq!(
        decode_list(&msg.attrs, Attr::Objects, ObjectEntry::decode).unwrap(),
        objects
    );
    assert_eq!(msg.attrs.get_bytes(Attr::Cursor), Some(&[1u8, 2, 3, 4][..]));
}

fn events() -> Vec<(Event, &'static str)> {
    let pool_uuid = pool_uuid();
    vec![
        (
            Event::MountReady(MountReady {
                pool_uuid,
                pool_name: "pool-a".into(),
                fsid: fsid_for(&pool_uuid),
                any_spill_since_mount: true,
                tiers: tiers(),
                protocol_version: 1,
                journal_seq: 1234,
            }),
            "
                18 01 00 00 09 00 04 00 01 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 0b 00 02 00 70 6f 6f 6c 2d 61 00 00
                08 00 03 00 3f ca d4 a9 05 00 16 00 01 00 00 00
                c4 00 12 80 60 00 01 80 05 00 04 00 00 00 00 00
                08 00 05 00 f3 01 00 00 0e 00 06 00 2f 6d 6e 74
                2f 6e 76 6d 65 00 00 00 29 00 07 00 35 62 30 63
                31 66 36 65 2d 30 30 30 30 2d 34 30 30 30 2d 38
                30 30 30 2d 30 30 30 30 30 30 30 30 30 30 30 30
                00 00 00 00 05 00 2b 00 00 00 00 00 05 00 36 00
                01 00 00 00 60 00 02 80 05 00 04 00 01 00 00 00
                08 00 05 00 f3 21 00 00 0d 00 06 00 2f 6d 6e 74
                2f 68 64 64 00 00 00 00 29 00 07 00 35 62 30 63
                31 66 36 65 2d 30 30 30 30 2d 34 30 30 30 2d 38
                30 30 30 2d 30 30 30 30 30 30 30 30 30 30 30 31
                00 00 00 00 05 00 2b 00 01 00 00 00 05 00 36 00
                00 00 00 00 08 00 32 00 01 00 00 00 0c 00 34 00
                d2 04 00 00 00 00 00 00
            ",
        ),
        (
            Event::HeatSample(HeatSample {
                pool_uuid,
                records: vec![HeatRecord {
                    oid: OID,
                    open_count_delta: 3,
                    read_bytes_delta: 2_097_152,
                    write_bytes_delta: 4096,
                    last_access_ns: 1_700_000_000_123_456_789,
                    sample_window_ns: 30_000_000_000,
                }],
            }),
            "
                60 00 00 00 0a 00 04 00 02 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 3c 00 0f 00 01 8f 3a 5c 7e 10 7a bc
                8d ef 01 23 45 67 89 ab 03 00 00 00 00 00 00 00
                00 00 20 00 00 00 00 00 00 10 00 00 00 00 00 00
                15 cd 85 3d fe 9c 97 17 00 ac 23 fc 06 00 00 00
            ",
        ),
        (
            Event::MoveState(MoveState {
                pool_uuid,
                oid: OID,
                movement_state: MovementState::Switched,
                transaction_seq: 42,
                current_tier: 1,
                intended_tier: 1,
                failure_reason: None,
            }),
            "
                5c 00 00 00 0b 00 04 00 03 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
                8d ef 01 23 45 67 89 ab 05 00 0a 00 07 00 00 00
                0c 00 0d 00 2a 00 00 00 00 00 00 00 05 00 0b 00
                01 00 00 00 05 00 0c 00 01 00 00 00
            ",
        ),
        (
            Event::MoveState(MoveState {
                pool_uuid,
                oid: OID,
                movement_state: MovementState::Failed,
                transaction_seq: 43,
                current_tier: 0,
                intended_tier: 1,
                failure_reason: Some("write_seq mismatch".into()),
            }),
            "
                74 00 00 00 0b 00 04 00 04 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
                8d ef 01 23 45 67 89 ab 05 00 0a 00 0a 00 00 00
                0c 00 0d 00 2b 00 00 00 00 00 00 00 05 00 0b 00
                00 00 00 00 05 00 0c 00 01 00 00 00 17 00 2d 00
                77 72 69 74 65 5f 73 65 71 20 6d 69 73 6d 61 74
                63 68 00 00
            ",
        ),
        (
            Event::TierFault(TierFault {
                pool_uuid,
                pool_name: "pool-a".into(),
                fsid: fsid_for(&pool_uuid),
                any_spill_since_mount: false,
                tier_rank: 1,
                tier_state: TierState::Faulted,
                fault_errno: libc::EIO as u32,
            }),
            "
                58 00 00 00 0c 00 04 00 05 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 0b 00 02 00 70 6f 6f 6c 2d 61 00 00
                08 00 03 00 3f ca d4 a9 05 00 16 00 00 00 00 00
                05 00 04 00 01 00 00 00 05 00 2b 00 01 00 00 00
                08 00 2c 00 05 00 00 00
            ",
        ),
        (
            Event::Spill(Spill {
                pool_uuid,
                any_spill_since_mount: true,
                oid: OID,
                first_tier: 0,
                landed_tier: 1,
                size_bytes: 123_456,
                rel_path: PathBuf::from("dir/new.bin"),
            }),
            "
                6c 00 00 00 0f 00 04 00 06 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 05 00 16 00 01 00 00 00 14 00 08 00
                01 8f 3a 5c 7e 10 7a bc 8d ef 01 23 45 67 89 ab
                05 00 0b 00 00 00 00 00 05 00 0c 00 01 00 00 00
                0c 00 15 00 40 e2 01 00 00 00 00 00 10 00 13 00
                64 69 72 2f 6e 65 77 2e 62 69 6e 00
            ",
        ),
        (
            Event::TierResumed(TierResumed {
                pool_uuid,
                tier_rank: 1,
                tier_state: TierState::Ok,
            }),
            "
                34 00 00 00 1a 00 04 00 07 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 05 00 04 00 01 00 00 00 05 00 2b 00
                00 00 00 00
            ",
        ),
        (
            Event::ObjectRemoved(ObjectRemoved {
                pool_uuid,
                oid: OID,
                object_gen: 5,
            }),
            "
                40 00 00 00 1b 00 04 00 08 00 00 00 01 00 00 00
                14 00 01 00 00 11 22 33 44 55 66 77 88 99 aa bb
                cc dd ee ff 14 00 08 00 01 8f 3a 5c 7e 10 7a bc
                8d ef 01 23 45 67 89 ab 08 00 1d 00 05 00 00 00
            ",
        ),
    ]
}

#[test]
fn every_event_matches_its_fixed_vector() {
    let mut seen = std::collections::BTreeSet::new();
    for (i, (event, golden)) in events().into_iter().enumerate() {
        let seq = 1 + i as u32;
        let bytes = event.encode(seq, false).unwrap();
        check(event.name(), &bytes, golden);
        seen.insert(event.id());
        if std::env::var_os("GOLDEN_PRINT").is_some() {
            continue;
        }
        let got = decode_event(&unhex(golden)).unwrap();
        assert_eq!(got.seq, seq);
        assert!(!got.loss);
        assert_eq!(got.event, event);
    }
    let all: std::collections::BTreeSet<u16> = EventId::ALL.iter().map(|e| e.number()).collect();
    assert_eq!(seen, all, "every event id has a fixed vector");
}
