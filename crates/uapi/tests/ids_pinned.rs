//! Every number in the contract, pinned (S20.7/1: append-only forever).
//! A failure here means a number changed: never fix it by editing the
//! table, fix the code.

use smoothfs_uapi::ids::*;

fn assert_table<T: Copy + std::fmt::Debug + PartialEq, N: Copy + std::fmt::Debug + PartialEq>(
    what: &str,
    all: &[T],
    table: &[(&str, N)],
    number: impl Fn(T) -> N,
    name: impl Fn(T) -> &'static str,
    from_number: impl Fn(N) -> Option<T>,
    from_name: impl Fn(&str) -> Option<T>,
) {
    assert_eq!(
        all.len(),
        table.len(),
        "{what}: every value is in the table"
    );
    for (v, (expected_name, expected_number)) in all.iter().copied().zip(table) {
        assert_eq!(name(v), *expected_name, "{what}: name of {v:?}");
        assert_eq!(
            number(v),
            *expected_number,
            "{what}: number of {expected_name}"
        );
        assert_eq!(
            from_number(*expected_number),
            Some(v),
            "{what}: {expected_name}"
        );
        assert_eq!(from_name(expected_name), Some(v), "{what}: {expected_name}");
        assert_eq!(
            from_name(&expected_name.to_ascii_uppercase()),
            Some(v),
            "{what}: names are case-insensitive"
        );
    }
}

#[test]
fn command_ids_are_pinned() {
    let table = [
        ("REGISTER_POOL", 1u16),
        ("POLICY_PUSH", 2),
        ("MOVE_PLAN", 3),
        ("TIER_DOWN", 4),
        ("RECONCILE", 5),
        ("QUIESCE", 6),
        ("INSPECT", 7),
        ("REPROBE", 8),
        ("MOVE_CUTOVER", 13),
        ("REVOKE_MAPPINGS", 14),
        ("SUBSCRIBE", 16),
        ("STATUS", 17),
        ("SET_TUNABLE", 18),
        ("LIST_OBJECTS", 19),
        ("MOVE_ABORT", 20),
        ("MOVE_CLEANUP", 21),
        ("PIN_SET", 22),
        ("TIER_RESUME", 23),
        ("RESOLVE_PATH", 24),
        ("PRUNE_DIRS", 25),
        ("SCRUB", 28),
        ("DIRTY_RANGES", 29),
    ];
    assert_table(
        "command",
        Command::ALL,
        &table,
        Command::number,
        Command::as_str,
        Command::from_number,
        Command::from_name,
    );
}

#[test]
fn event_ids_are_pinned() {
    let table = [
        ("MOUNT_READY", 9u16),
        ("HEAT_SAMPLE", 10),
        ("MOVE_STATE", 11),
        ("TIER_FAULT", 12),
        ("SPILL", 15),
        ("TIER_RESUMED", 26),
        ("OBJECT_REMOVED", 27),
    ];
    assert_table(
        "event",
        EventId::ALL,
        &table,
        EventId::number,
        EventId::as_str,
        EventId::from_number,
        EventId::from_name,
    );
    assert_eq!(EventId::MoveState.mask_bit(), 1 << 11);
    assert_eq!(EVENT_MASK_ALL, u64::MAX);
}

#[test]
fn commands_and_events_share_one_id_space_without_collisions() {
    let mut used = std::collections::BTreeSet::new();
    for c in Command::ALL {
        assert!(used.insert(c.number()), "{c} collides");
    }
    for e in EventId::ALL {
        assert!(used.insert(e.number()), "{e} collides");
    }
    // 1..=29 are all taken; 30 is the next free id.
    assert_eq!(used, (1..=29).collect());
    assert_eq!(NEXT_FREE_MESSAGE_ID, 30);
    assert_eq!(
        MessageId::from_number(9),
        MessageId::Event(EventId::MountReady)
    );
    assert_eq!(
        MessageId::from_number(3),
        MessageId::Command(Command::MovePlan)
    );
    assert_eq!(MessageId::from_number(30), MessageId::Unknown(30));
}

#[test]
fn attribute_ids_and_types_are_pinned() {
    use AttrType::*;
    let table: [(&str, u16, AttrType); 54] = [
        ("POOL_UUID", 1, Binary(16)),
        ("POOL_NAME", 2, String(63)),
        ("FSID", 3, U32),
        ("TIER_RANK", 4, U8),
        ("TIER_CAPS", 5, U32),
        ("TIER_PATH", 6, String(4095)),
        ("TIER_ID", 7, String(64)),
        ("OBJECT_ID", 8, Binary(16)),
        ("GENERATION", 9, U32),
        ("MOVEMENT_STATE", 10, U8),
        ("CURRENT_TIER", 11, U8),
        ("INTENDED_TIER", 12, U8),
        ("TRANSACTION_SEQ", 13, U64),
        ("PIN_STATE", 14, U8),
        ("HEAT_SAMPLE_BLOB", 15, HeatBlob),
        ("CHECKPOINT_SEQ", 16, U64),
        ("RECONCILE_REASON", 17, String(255)),
        ("TIERS", 18, NestedList),
        ("REL_PATH", 19, String(4095)),
        ("FORCE", 20, U8),
        ("SIZE_BYTES", 21, U64),
        ("ANY_SPILL_SINCE_MOUNT", 22, U8),
        ("WRITE_SEQ", 23, U64),
        ("RANGE_STAGED", 24, U8),
        ("ERRNO", 25, U32),
        ("ERROR_MSG", 26, String(255)),
        ("LOWER_PATH", 27, String(4095)),
        ("POLICY_PIN", 28, U8),
        ("OBJECT_GEN", 29, U32),
        ("NLINK", 30, U32),
        ("PASSTHROUGH_HANDLES", 31, U32),
        ("MEDIATED_HANDLES", 32, U32),
        ("INODE", 33, U64),
        ("OBJECT_KIND", 34, U8),
        ("STAGING_PATH", 35, String(4095)),
        ("CURSOR", 36, BinaryMax(64)),
        ("LIMIT", 37, U32),
        ("OBJECTS", 38, NestedList),
        ("NAME", 39, String(64)),
        ("VALUE", 40, String(255)),
        ("STATUS_ITEMS", 41, NestedList),
        ("EVENT_MASK", 42, U64),
        ("TIER_STATE", 43, U8),
        ("FAULT_ERRNO", 44, U32),
        ("FAILURE_REASON", 45, String(255)),
        ("HARDLINK_GROUP", 46, U8),
        ("SINCE_SEQ", 47, U64),
        ("MTIME_NS", 48, U64),
        ("TIER_MASK", 49, U32),
        ("PROTOCOL_VERSION", 50, U32),
        ("CLEANUP_ERRNO", 51, U32),
        ("JOURNAL_SEQ", 52, U64),
        ("MEDIATED", 53, U8),
        ("PASSTHROUGH", 54, U8),
    ];
    let names: Vec<(&str, u16)> = table.iter().map(|(n, id, _)| (*n, *id)).collect();
    assert_table(
        "attribute",
        Attr::ALL,
        &names,
        Attr::number,
        Attr::as_str,
        Attr::from_number,
        Attr::from_name,
    );
    for (attr, (name, _, ty)) in Attr::ALL.iter().zip(&table) {
        assert_eq!(attr.attr_type(), *ty, "type of {name}");
    }
    assert_eq!(NEXT_FREE_ATTR_ID, 55);
    assert_eq!(Attr::from_number(55), None);
}

#[test]
fn framing_constants_are_pinned() {
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(HEADER_LEN, 16);
    assert_eq!(MAX_MESSAGE_LEN, 1_048_576);
    assert_eq!(Flags::REQUEST.bits(), 0x1);
    assert_eq!(Flags::REPLY.bits(), 0x2);
    assert_eq!(Flags::EVENT.bits(), 0x4);
    assert_eq!(Flags::ERROR.bits(), 0x8);
    assert_eq!(Flags::LOSS.bits(), 0x10);
    assert_eq!(ATTR_F_NESTED, 0x8000);
    assert_eq!(ATTR_F_RESERVED, 0x4000);
    assert_eq!(ATTR_ID_MASK, 0x3fff);
}

#[test]
fn movement_states_are_pinned() {
    let table = [
        ("placed", 0u8),
        ("plan_accepted", 1),
        ("destination_reserved", 2),
        ("copy_in_progress", 3),
        ("copy_complete", 4),
        ("copy_verified", 5),
        ("cutover_in_progress", 6),
        ("switched", 7),
        ("cleanup_in_progress", 8),
        ("cleanup_complete", 9),
        ("failed", 10),
        ("stale", 11),
    ];
    assert_table(
        "movement state",
        MovementState::ALL,
        &table,
        MovementState::number,
        MovementState::as_str,
        MovementState::from_number,
        MovementState::from_name,
    );
}

#[test]
fn unknown_movement_state_byte_decodes_as_failed() {
    for n in 12..=u8::MAX {
        assert_eq!(MovementState::from_wire(n), MovementState::Failed);
    }
    assert_eq!(MovementState::from_wire(7), MovementState::Switched);
}

#[test]
fn pins_are_pinned() {
    let table = [
        ("none", 0u8),
        ("pin_hot", 1),
        ("pin_cold", 2),
        ("pin_hardlink", 3),
        ("pin_lease", 4),
        ("pin_lun", 5),
    ];
    assert_table(
        "pin",
        PinState::ALL,
        &table,
        PinState::number,
        PinState::as_str,
        PinState::from_number,
        PinState::from_name,
    );
    let policy = [("none", 0u8), ("pin_hot", 1), ("pin_cold", 2)];
    assert_table(
        "policy pin",
        PolicyPin::ALL,
        &policy,
        PolicyPin::number,
        PolicyPin::as_str,
        PolicyPin::from_number,
        PolicyPin::from_name,
    );
    for p in PolicyPin::ALL {
        assert_eq!(p.as_pin_state().number(), p.number());
    }
    assert_eq!(PinState::PinHot.slot(), Some(PinSlot::Policy));
    assert_eq!(PinState::PinCold.slot(), Some(PinSlot::Policy));
    assert_eq!(PinState::PinHardlink.slot(), Some(PinSlot::Derived));
    assert_eq!(PinState::PinLease.slot(), Some(PinSlot::Protocol));
    assert_eq!(PinState::PinLun.slot(), Some(PinSlot::Protocol));
    assert_eq!(PinState::None.slot(), None);
}

#[test]
fn unknown_pin_byte_decodes_as_none() {
    for n in 6..=u8::MAX {
        assert_eq!(PinState::from_wire(n), PinState::None);
    }
    for n in 3..=u8::MAX {
        assert_eq!(PolicyPin::from_wire(n), PolicyPin::None);
    }
    assert_eq!(PinState::from_wire(5), PinState::PinLun);
}

#[test]
fn tier_states_and_object_kinds_are_pinned() {
    let states = [("ok", 0u8), ("faulted", 1), ("down", 2)];
    assert_table(
        "tier state",
        TierState::ALL,
        &states,
        TierState::number,
        TierState::as_str,
        TierState::from_number,
        TierState::from_name,
    );
    assert_eq!(TierState::from_wire(9), TierState::Faulted);
    let kinds = [
        ("regular", 1u8),
        ("directory", 2),
        ("symlink", 3),
        ("other", 4),
    ];
    assert_table(
        "object kind",
        ObjectKind::ALL,
        &kinds,
        ObjectKind::number,
        ObjectKind::as_str,
        ObjectKind::from_number,
        ObjectKind::from_name,
    );
    assert_eq!(ObjectKind::from_wire(0), ObjectKind::Other);
}

#[test]
fn tier_caps_bits_are_pinned() {
    let table = [
        ("xattr_user", 0u8),
        ("xattr_trusted", 1),
        ("xattr_security", 2),
        ("posix_acl", 3),
        ("rename_atomic", 4),
        ("hardlink", 5),
        ("mmap_coherent", 6),
        ("direct_io", 7),
        ("fsync_durable", 8),
        ("sparse_seek", 9),
        ("inode_generation", 10),
        ("quota_user", 11),
        ("quota_project", 12),
        ("reflink", 13),
        ("copy_file_range", 14),
        ("fscrypt", 15),
    ];
    assert_table(
        "tier cap",
        TierCap::ALL,
        &table,
        TierCap::number,
        TierCap::as_str,
        TierCap::from_number,
        TierCap::from_name,
    );
    assert_eq!(TierCaps::REQUIRED.bits(), 0x173);
    let required: TierCaps = [
        TierCap::XattrUser,
        TierCap::XattrTrusted,
        TierCap::RenameAtomic,
        TierCap::Hardlink,
        TierCap::MmapCoherent,
        TierCap::FsyncDurable,
    ]
    .into_iter()
    .collect();
    assert_eq!(required, TierCaps::REQUIRED);
    assert!(TierCaps::REQUIRED.missing_required().is_empty());
    assert_eq!(
        TierCaps(0x171).missing_required(),
        vec![TierCap::XattrTrusted],
        "a vfat-like tier lacks xattr_trusted"
    );
    assert_eq!(TierCaps(0x3).names(), vec!["xattr_user", "xattr_trusted"]);
}
