//! S20.5 / S20.7 event decoding: S20/A1 (MOUNT_READY and SPILL payloads),
//! S20/A7 (unknown event ids and attributes are ignored) and the decoding
//! rules for unknown states, pins and bad heat blobs.

mod common;

use std::path::PathBuf;

use common::{OID, POOL, pool_uuid};
use smoothfs_uapi::codec::{AttrBuf, MessageBuilder, encode_message};
use smoothfs_uapi::event::{Event, MountReady, MoveState, Spill, TierInfo, decode_event, fsid_for};
use smoothfs_uapi::heat::HeatRecord;
use smoothfs_uapi::ids::{ATTR_F_NESTED, Attr, EventId, Flags, MovementState, TierCaps, TierState};

fn mount_ready(pool_name: &str, spill: bool) -> Event {
    Event::MountReady(MountReady {
        pool_uuid: pool_uuid(),
        pool_name: pool_name.into(),
        fsid: fsid_for(&pool_uuid()),
        any_spill_since_mount: spill,
        tiers: vec![TierInfo {
            rank: 0,
            caps: TierCaps::REQUIRED,
            tier_path: PathBuf::from("/t0"),
            tier_id: String::new(),
            state: TierState::Ok,
            passthrough: true,
        }],
        protocol_version: 1,
        journal_seq: 0,
    })
}

#[test]
fn mount_ready_carries_pool_name_and_spill_flag() {
    // S20/A1.
    let bytes = mount_ready("pool-a", true).encode(1, false).unwrap();
    let got = decode_event(&bytes).unwrap();
    let Event::MountReady(m) = got.event else {
        panic!("expected MOUNT_READY, got {got:?}");
    };
    assert_eq!(m.pool_name, "pool-a");
    assert!(m.any_spill_since_mount);
    assert_eq!(m.pool_uuid, pool_uuid());
    assert_eq!(m.tiers.len(), 1);
    assert_eq!(got.seq, 1);
}

#[test]
fn spill_carries_oid_tiers_and_size() {
    // S20/A1: an OID, tiers 0 -> 1 and 123456 bytes.
    let spill = Event::Spill(Spill {
        pool_uuid: pool_uuid(),
        any_spill_since_mount: true,
        oid: OID,
        first_tier: 0,
        landed_tier: 1,
        size_bytes: 123_456,
        rel_path: PathBuf::from("x"),
    });
    let got = decode_event(&spill.encode(5, false).unwrap()).unwrap();
    let Event::Spill(s) = got.event else {
        panic!("expected SPILL, got {got:?}");
    };
    assert_eq!(s.oid, OID);
    assert_eq!((s.first_tier, s.landed_tier), (0, 1));
    assert_eq!(s.size_bytes, 123_456);
    assert!(s.any_spill_since_mount);
}

#[test]
fn fsid_is_xxh32_of_the_uuid_bytes_with_seed_0() {
    assert_eq!(fsid_for(&pool_uuid()), xxhash_rust::xxh32::xxh32(&POOL, 0));
    // Fixed value, so a change of hash or seed is caught.
    assert_eq!(
        fsid_for(&uuid::Uuid::nil()),
        xxhash_rust::xxh32::xxh32(&[0u8; 16], 0)
    );
}

#[test]
fn unknown_event_id_decodes_as_unknown() {
    // S20/A7: event id 99.
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, &POOL).put_raw(7, &[0xff; 3]);
    let bytes = encode_message(99, Flags::EVENT, 3, &a).unwrap();
    let got = decode_event(&bytes).unwrap();
    assert_eq!(got.event, Event::Unknown(99));
    assert_eq!(got.seq, 3);
}

fn move_state_with_attr_200() -> Vec<u8> {
    let mut m = MessageBuilder::event(EventId::MoveState, 4);
    m.put_bytes(Attr::PoolUuid, &POOL)
        .put_raw(200, b"future")
        .put_bytes(Attr::ObjectId, &OID)
        .put_u8(
            Attr::MovementState,
            MovementState::CutoverInProgress.number(),
        )
        .put_raw(200 | ATTR_F_NESTED, &[1, 2, 3, 4])
        .put_u64(Attr::TransactionSeq, 42)
        .put_u8(Attr::CurrentTier, 0)
        .put_u8(Attr::IntendedTier, 1);
    m.finish().unwrap()
}

#[test]
fn unknown_attribute_inside_move_state_is_ignored() {
    // S20/A7: attribute 200 inside MOVE_STATE.
    let got = decode_event(&move_state_with_attr_200()).unwrap();
    assert_eq!(
        got.event,
        Event::MoveState(MoveState {
            pool_uuid: pool_uuid(),
            oid: OID,
            movement_state: MovementState::CutoverInProgress,
            transaction_seq: 42,
            current_tier: 0,
            intended_tier: 1,
            failure_reason: None,
        })
    );
}

#[test]
fn unknown_movement_state_in_move_state_decodes_as_failed() {
    let mut m = MessageBuilder::event(EventId::MoveState, 1);
    m.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::ObjectId, &OID)
        .put_u8(Attr::MovementState, 77)
        .put_u64(Attr::TransactionSeq, 1)
        .put_u8(Attr::CurrentTier, 0)
        .put_u8(Attr::IntendedTier, 1);
    let Event::MoveState(s) = decode_event(&m.finish().unwrap()).unwrap().event else {
        panic!()
    };
    assert_eq!(s.movement_state, MovementState::Failed);
}

#[test]
fn heat_blob_not_a_multiple_of_56_is_an_error_for_that_event() {
    let mut m = MessageBuilder::event(EventId::HeatSample, 2);
    m.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::HeatSampleBlob, &[0u8; 57]);
    let e = decode_event(&m.finish().unwrap()).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert_eq!(e.seq, 2);
    // The next, well-formed event still decodes.
    let mut m = MessageBuilder::event(EventId::HeatSample, 3);
    m.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::HeatSampleBlob, &HeatRecord::default().encode());
    assert!(decode_event(&m.finish().unwrap()).is_ok());
}

#[test]
fn missing_pool_uuid_or_short_pool_uuid_is_an_error() {
    let mut m = MessageBuilder::event(EventId::ObjectRemoved, 1);
    m.put_bytes(Attr::ObjectId, &OID);
    assert_eq!(
        decode_event(&m.finish().unwrap()).unwrap_err().errno,
        libc::EINVAL
    );
    let mut m = MessageBuilder::event(EventId::ObjectRemoved, 1);
    m.put_bytes(Attr::PoolUuid, &POOL[..15])
        .put_bytes(Attr::ObjectId, &OID);
    assert_eq!(
        decode_event(&m.finish().unwrap()).unwrap_err().errno,
        libc::EINVAL
    );
}

#[test]
fn loss_flag_is_reported() {
    let bytes = mount_ready("p", false).encode(9, true).unwrap();
    let got = decode_event(&bytes).unwrap();
    assert!(got.loss);
    assert_eq!(
        u16::from_le_bytes([bytes[6], bytes[7]]),
        (Flags::EVENT | Flags::LOSS).bits()
    );
}

#[test]
fn a_reply_is_not_an_event() {
    let bytes = MessageBuilder::reply(smoothfs_uapi::ids::Command::Status, 1)
        .finish()
        .unwrap();
    assert_eq!(decode_event(&bytes).unwrap_err().errno, libc::EINVAL);
}

#[test]
fn unknown_event_cannot_be_encoded() {
    assert!(Event::Unknown(99).encode(1, false).is_err());
    assert_eq!(Event::Unknown(99).name(), "UNKNOWN");
    assert_eq!(mount_ready("p", false).name(), "MOUNT_READY");
}
