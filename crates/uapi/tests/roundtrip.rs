//! Property tests: arbitrary well-formed attribute sets and events survive
//! encode -> decode unchanged, and arbitrary bytes never panic a decoder.

use std::path::PathBuf;

use proptest::prelude::*;
use smoothfs_uapi::codec::{
    AttrBuf, RawAttr, decode_message, decode_reply, decode_request, encode_message,
};
use smoothfs_uapi::event::{Event, MountReady, MoveState, Spill, TierInfo, decode_event};
use smoothfs_uapi::heat::{HeatRecord, encode_blob};
use smoothfs_uapi::ids::{
    Attr, AttrType, Command, Flags, MovementState, NEXT_FREE_ATTR_ID, TierCaps, TierState,
};

#[derive(Clone, Debug)]
enum Val {
    U8(u8),
    U32(u32),
    U64(u64),
    Bytes(Vec<u8>),
    Str(Vec<u8>),
    List(Vec<Vec<(u16, Val)>>),
}

fn string_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..=max.min(300))
}

fn leaf(attr: Attr) -> BoxedStrategy<Val> {
    match attr.attr_type() {
        AttrType::U8 => any::<u8>().prop_map(Val::U8).boxed(),
        AttrType::U32 => any::<u32>().prop_map(Val::U32).boxed(),
        AttrType::U64 => any::<u64>().prop_map(Val::U64).boxed(),
        AttrType::Binary(n) => proptest::collection::vec(any::<u8>(), n)
            .prop_map(Val::Bytes)
            .boxed(),
        AttrType::BinaryMax(n) => proptest::collection::vec(any::<u8>(), 0..=n)
            .prop_map(Val::Bytes)
            .boxed(),
        AttrType::String(max) => string_bytes(max).prop_map(Val::Str).boxed(),
        AttrType::HeatBlob => proptest::collection::vec(any::<[u8; 56]>(), 1..=4)
            .prop_map(|rs| {
                let records: Vec<HeatRecord> = rs.iter().map(HeatRecord::decode).collect();
                Val::Bytes(encode_blob(&records))
            })
            .boxed(),
        AttrType::NestedList => Just(Val::List(Vec::new())).boxed(),
    }
}

fn leaf_attr() -> impl Strategy<Value = Attr> {
    proptest::sample::select(
        Attr::ALL
            .iter()
            .copied()
            .filter(|a| a.attr_type() != AttrType::NestedList)
            .collect::<Vec<_>>(),
    )
}

fn leaf_pair() -> impl Strategy<Value = (u16, Val)> {
    prop_oneof![
        9 => leaf_attr().prop_flat_map(|a| leaf(a).prop_map(move |v| (a.number(), v))),
        // Unknown attributes ride along untouched.
        1 => (NEXT_FREE_ATTR_ID..0x3fff, proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(id, b)| (id, Val::Bytes(b))),
    ]
}

fn pair() -> impl Strategy<Value = (u16, Val)> {
    prop_oneof![
        8 => leaf_pair(),
        1 => (
            proptest::sample::select(vec![Attr::Tiers, Attr::Objects, Attr::StatusItems]),
            proptest::collection::vec(proptest::collection::vec(leaf_pair(), 0..6), 0..5),
        )
            .prop_map(|(a, entries)| (a.number(), Val::List(entries))),
    ]
}

fn put(buf: &mut AttrBuf, id: u16, v: &Val) {
    match v {
        Val::U8(x) => {
            buf.put_raw(id, &[*x]);
        }
        Val::U32(x) => {
            buf.put_raw(id, &x.to_le_bytes());
        }
        Val::U64(x) => {
            buf.put_raw(id, &x.to_le_bytes());
        }
        Val::Bytes(b) => {
            buf.put_raw(id, b);
        }
        Val::Str(s) => {
            let mut b = s.clone();
            b.push(0);
            buf.put_raw(id, &b);
        }
        Val::List(entries) => {
            let attr = Attr::from_number(id).unwrap();
            buf.put_list(attr, entries, |w, entry| {
                for (eid, ev) in entry {
                    put(w, *eid, ev);
                }
            });
        }
    }
}

fn check(raw: &RawAttr<'_>, id: u16, v: &Val) -> Result<(), TestCaseError> {
    prop_assert_eq!(raw.id(), id);
    match v {
        Val::U8(x) => prop_assert_eq!(raw.as_u8().unwrap(), *x),
        Val::U32(x) => prop_assert_eq!(raw.as_u32().unwrap(), *x),
        Val::U64(x) => prop_assert_eq!(raw.as_u64().unwrap(), *x),
        Val::Bytes(b) => prop_assert_eq!(raw.as_bytes(), &b[..]),
        Val::Str(s) => prop_assert_eq!(raw.as_str_bytes().unwrap(), &s[..]),
        Val::List(entries) => {
            prop_assert!(raw.is_nested());
            let got: Vec<_> = raw.as_list().unwrap().collect();
            prop_assert_eq!(got.len(), entries.len());
            for (g, entry) in got.into_iter().zip(entries) {
                let g = g.unwrap();
                let inner: Vec<RawAttr<'_>> = g.iter().collect();
                prop_assert_eq!(inner.len(), entry.len());
                for (r, (eid, ev)) in inner.iter().zip(entry) {
                    check(r, *eid, ev)?;
                }
            }
        }
    }
    Ok(())
}

fn path_from(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

fn arb_tier() -> impl Strategy<Value = TierInfo> {
    (
        any::<u8>(),
        any::<u32>(),
        string_bytes(100),
        "[a-z0-9-]{0,36}",
        0u8..3,
        any::<bool>(),
    )
        .prop_map(|(rank, caps, path, tier_id, state, passthrough)| TierInfo {
            rank,
            caps: TierCaps(caps),
            tier_path: path_from(path),
            tier_id,
            state: TierState::from_wire(state),
            passthrough,
        })
}

fn arb_event() -> impl Strategy<Value = Event> {
    let uuid = any::<[u8; 16]>().prop_map(uuid::Uuid::from_bytes);
    prop_oneof![
        (
            uuid.clone(),
            "[ -~]{0,63}",
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec(arb_tier(), 0..8),
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(
                |(pool_uuid, pool_name, fsid, spill, tiers, v, j)| Event::MountReady(MountReady {
                    pool_uuid,
                    pool_name,
                    fsid,
                    any_spill_since_mount: spill,
                    tiers,
                    protocol_version: v,
                    journal_seq: j,
                })
            ),
        (
            uuid.clone(),
            any::<[u8; 16]>(),
            0u8..12,
            any::<u64>(),
            any::<u8>(),
            any::<u8>(),
            proptest::option::of("[ -~]{0,255}")
        )
            .prop_map(|(pool_uuid, oid, st, seq, c, i, reason)| Event::MoveState(
                MoveState {
                    pool_uuid,
                    oid,
                    movement_state: MovementState::from_wire(st),
                    transaction_seq: seq,
                    current_tier: c,
                    intended_tier: i,
                    failure_reason: reason,
                }
            )),
        (
            uuid,
            any::<[u8; 16]>(),
            any::<u8>(),
            any::<u8>(),
            any::<u64>(),
            string_bytes(4095)
        )
            .prop_map(|(pool_uuid, oid, f, l, size, path)| Event::Spill(Spill {
                pool_uuid,
                any_spill_since_mount: true,
                oid,
                first_tier: f,
                landed_tier: l,
                size_bytes: size,
                rel_path: path_from(path),
            })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_attribute_sets_round_trip(
        attrs in proptest::collection::vec(pair(), 0..24),
        seq in any::<u32>(),
        cmd in proptest::sample::select(Command::ALL.to_vec()),
    ) {
        let mut buf = AttrBuf::new();
        for (id, v) in &attrs {
            put(&mut buf, *id, v);
        }
        prop_assert!(buf.check().is_ok());
        let bytes = encode_message(cmd.number(), Flags::REQUEST, seq, &buf).unwrap();
        prop_assert_eq!(bytes.len() % 4, 0);
        let req = decode_request(&bytes).unwrap();
        prop_assert_eq!(req.command, cmd);
        prop_assert_eq!(req.seq(), seq);
        let raws: Vec<RawAttr<'_>> = req.attrs.iter().collect();
        prop_assert_eq!(raws.len(), attrs.len());
        for (raw, (id, v)) in raws.iter().zip(&attrs) {
            check(raw, *id, v)?;
        }
    }

    #[test]
    fn arbitrary_events_round_trip(ev in arb_event(), seq in any::<u32>(), loss in any::<bool>()) {
        let bytes = ev.encode(seq, loss).unwrap();
        let got = decode_event(&bytes).unwrap();
        prop_assert_eq!(got.seq, seq);
        prop_assert_eq!(got.loss, loss);
        prop_assert_eq!(got.event, ev);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_message(&bytes);
        let _ = decode_reply(&bytes);
        let _ = decode_event(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        id in 0u16..40,
        flags in 0u16..32,
    ) {
        let mut bytes = Vec::with_capacity(16 + body.len());
        bytes.extend_from_slice(&((16 + body.len()) as u32).to_le_bytes());
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(&[1, 0, 0, 0]);
        bytes.extend_from_slice(&body);
        match decode_request(&bytes) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(e.errno > 0);
                prop_assert_eq!(e.seq, 7);
            }
        }
        let _ = decode_event(&bytes);
        let _ = decode_reply(&bytes);
    }
}
