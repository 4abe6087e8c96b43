//! S20.2/5 and S20.6: every kind of malformed input gets its errno, with
//! the request's seq where the header was readable, and never a panic.

mod common;

use common::{OID, POOL};
use smoothfs_uapi::codec::{
    AttrBuf, MessageBuilder, decode_message, decode_request, encode_message,
};
use smoothfs_uapi::error::WireError;
use smoothfs_uapi::ids::{
    ATTR_F_NESTED, ATTR_F_RESERVED, Attr, Command, EventId, Flags, MAX_MESSAGE_LEN,
};

const SEQ: u32 = 0x0102_0304;

fn inspect() -> Vec<u8> {
    let mut m = MessageBuilder::request(Command::Inspect, SEQ);
    m.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::ObjectId, &OID);
    m.finish().unwrap()
}

fn request_with(attrs: &AttrBuf) -> Vec<u8> {
    encode_message(Command::Inspect.number(), Flags::REQUEST, SEQ, attrs).unwrap()
}

fn refused(bytes: &[u8]) -> WireError {
    match decode_request(bytes) {
        Ok(r) => panic!("accepted malformed request {r:?}"),
        Err(e) => e,
    }
}

fn set_len(bytes: &mut [u8]) {
    let len = bytes.len() as u32;
    bytes[0..4].copy_from_slice(&len.to_le_bytes());
}

#[test]
fn well_formed_inspect_is_accepted() {
    let bytes = inspect();
    let req = decode_request(&bytes).unwrap();
    assert_eq!(req.command, Command::Inspect);
    assert_eq!(req.seq(), SEQ);
}

#[test]
fn truncated_header_is_einval_with_seq_zero() {
    let bytes = inspect();
    for n in 0..16 {
        let e = refused(&bytes[..n]);
        assert_eq!(e.errno, libc::EINVAL, "{n} bytes");
        assert_eq!(e.seq, 0, "header unreadable, so seq 0");
    }
}

#[test]
fn length_mismatch_is_einval_with_the_seq() {
    let mut bytes = inspect();
    bytes[0] += 4;
    let e = refused(&bytes);
    assert_eq!((e.errno, e.seq), (libc::EINVAL, SEQ));
    // A datagram cut short is the same mismatch.
    let bytes = inspect();
    let e = refused(&bytes[..bytes.len() - 4]);
    assert_eq!((e.errno, e.seq), (libc::EINVAL, SEQ));
}

#[test]
fn message_over_one_mib_is_emsgsize() {
    let mut bytes = inspect();
    bytes.resize(MAX_MESSAGE_LEN + 4, 0);
    set_len(&mut bytes);
    let e = refused(&bytes);
    assert_eq!((e.errno, e.seq), (libc::EMSGSIZE, SEQ));
    // A header claiming more than 1 MiB on a small datagram.
    let mut bytes = inspect();
    bytes[0..4].copy_from_slice(&((MAX_MESSAGE_LEN as u32) + 1).to_le_bytes());
    assert_eq!(refused(&bytes).errno, libc::EMSGSIZE);
    // Exactly 1 MiB is legal framing (the filler is an unknown attribute).
    let mut a = AttrBuf::new();
    let filler = MAX_MESSAGE_LEN - 16 - 20 - 20;
    let mut left = filler;
    a.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::ObjectId, &OID);
    while left > 0 {
        let chunk = left.min(60_000);
        a.put_raw(300, &vec![0u8; chunk - 4]);
        left -= chunk;
    }
    let bytes = request_with(&a);
    assert_eq!(bytes.len(), MAX_MESSAGE_LEN);
    assert!(decode_request(&bytes).is_ok());
}

#[test]
fn unknown_version_is_eprotonosupport() {
    // S20/A4: version 2.
    let mut bytes = inspect();
    bytes[12] = 2;
    let e = refused(&bytes);
    assert_eq!((e.errno, e.seq), (libc::EPROTONOSUPPORT, SEQ));
    bytes[12] = 0;
    assert_eq!(refused(&bytes).errno, libc::EPROTONOSUPPORT);
}

#[test]
fn unknown_command_id_is_eopnotsupp() {
    // S20/A4: command id 200.
    let bytes = encode_message(200, Flags::REQUEST, SEQ, &AttrBuf::new()).unwrap();
    let e = refused(&bytes);
    assert_eq!((e.errno, e.seq, e.id), (libc::EOPNOTSUPP, SEQ, 200));
    // Gaps in the id space are unknown too; 30 is the next free id.
    for id in [0u16, 30, 99, u16::MAX] {
        let bytes = encode_message(id, Flags::REQUEST, SEQ, &AttrBuf::new()).unwrap();
        assert_eq!(refused(&bytes).errno, libc::EOPNOTSUPP, "id {id}");
    }
}

#[test]
fn event_id_sent_as_request_is_einval() {
    for ev in EventId::ALL {
        let bytes = encode_message(ev.number(), Flags::REQUEST, SEQ, &AttrBuf::new()).unwrap();
        let e = refused(&bytes);
        assert_eq!((e.errno, e.seq), (libc::EINVAL, SEQ), "{ev}");
    }
}

#[test]
fn request_flags_other_than_request_are_einval() {
    for flags in [
        Flags::NONE,
        Flags::REPLY,
        Flags::EVENT,
        Flags::REQUEST | Flags::ERROR,
        Flags(0x1 | 0x100),
    ] {
        let bytes = encode_message(Command::Status.number(), flags, SEQ, &AttrBuf::new()).unwrap();
        assert_eq!(refused(&bytes).errno, libc::EINVAL, "{flags:?}");
    }
}

#[test]
fn nonzero_reserved_header_bytes_are_einval() {
    let mut bytes = inspect();
    bytes[15] = 1;
    assert_eq!(refused(&bytes).errno, libc::EINVAL);
}

#[test]
fn three_byte_transaction_seq_is_einval() {
    // S20/A4.
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::TransactionSeq, &[1, 2, 3]);
    let e = refused(&request_with(&a));
    assert_eq!((e.errno, e.seq), (libc::EINVAL, SEQ));
    assert!(e.message.contains("TRANSACTION_SEQ"), "{}", e.message);
}

#[test]
fn every_integer_attribute_rejects_every_wrong_width() {
    use smoothfs_uapi::ids::AttrType;
    for attr in Attr::ALL.iter().copied() {
        let width = match attr.attr_type() {
            AttrType::U8 => 1,
            AttrType::U32 => 4,
            AttrType::U64 => 8,
            _ => continue,
        };
        for wrong in 0..=9usize {
            let mut a = AttrBuf::new();
            a.put_bytes(attr, &vec![0u8; wrong]);
            let bytes = request_with(&a);
            let r = decode_request(&bytes);
            if wrong == width {
                assert!(r.is_ok(), "{attr} with {wrong} bytes");
            } else {
                assert_eq!(
                    r.unwrap_err().errno,
                    libc::EINVAL,
                    "{attr} with {wrong} bytes"
                );
            }
        }
    }
}

#[test]
fn typed_accessors_check_width() {
    let mut a = AttrBuf::new();
    a.put_u32(Attr::Fsid, 7);
    let bytes = request_with(&a);
    let req = decode_request(&bytes).unwrap();
    let raw = req.attrs.get(Attr::Fsid).unwrap();
    assert_eq!(raw.as_u32().unwrap(), 7);
    assert_eq!(raw.as_u8().unwrap_err().errno, libc::EINVAL);
    assert_eq!(raw.as_u16().unwrap_err().errno, libc::EINVAL);
    assert_eq!(raw.as_u64().unwrap_err().errno, libc::EINVAL);
    assert_eq!(raw.as_id16().unwrap_err().errno, libc::EINVAL);
    assert_eq!(
        req.attrs
            .require_u64(Attr::TransactionSeq)
            .unwrap_err()
            .errno,
        libc::EINVAL,
        "missing required attribute"
    );
}

#[test]
fn binary_attributes_need_their_exact_length() {
    for len in [0usize, 15, 17, 32] {
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::PoolUuid, &vec![7u8; len]);
        assert_eq!(
            refused(&request_with(&a)).errno,
            libc::EINVAL,
            "POOL_UUID {len}"
        );
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::ObjectId, &vec![7u8; len]);
        assert_eq!(
            refused(&request_with(&a)).errno,
            libc::EINVAL,
            "OBJECT_ID {len}"
        );
    }
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::Cursor, &[1u8; 64]);
    assert!(decode_request(&request_with(&a)).is_ok());
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::Cursor, &[1u8; 65]);
    assert_eq!(
        refused(&request_with(&a)).errno,
        libc::EINVAL,
        "CURSOR over 64"
    );
}

#[test]
fn strings_over_their_limit_are_einval() {
    let cases = [
        (Attr::PoolName, 63),
        (Attr::TierPath, 4095),
        (Attr::TierId, 64),
        (Attr::ReconcileReason, 255),
        (Attr::RelPath, 4095),
        (Attr::ErrorMsg, 255),
        (Attr::LowerPath, 4095),
        (Attr::StagingPath, 4095),
        (Attr::Name, 64),
        (Attr::Value, 255),
        (Attr::FailureReason, 255),
    ];
    for (attr, max) in cases {
        let mut a = AttrBuf::new();
        a.put_str(attr, &"x".repeat(max));
        assert!(decode_request(&request_with(&a)).is_ok(), "{attr} at {max}");
        // Receivers also accept a string without its NUL.
        let mut a = AttrBuf::new();
        a.put_bytes(attr, "x".repeat(max).as_bytes());
        assert!(
            decode_request(&request_with(&a)).is_ok(),
            "{attr} without NUL"
        );
        let mut a = AttrBuf::new();
        a.put_str(attr, &"x".repeat(max + 1));
        assert_eq!(
            refused(&request_with(&a)).errno,
            libc::EINVAL,
            "{attr} over {max}"
        );
    }
}

#[test]
fn interior_nul_in_a_string_is_einval() {
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::RelPath, b"a\0b\0");
    assert_eq!(refused(&request_with(&a)).errno, libc::EINVAL);
    // And the encoder refuses to write one.
    let mut a = AttrBuf::new();
    a.put_str(Attr::RelPath, "a\0b");
    assert!(a.check().is_err());
}

#[test]
fn heat_blob_must_be_1_to_256_records_of_56_bytes() {
    for (len, ok) in [
        (0usize, false),
        (55, false),
        (56, true),
        (57, false),
        (112, true),
        (56 * 256, true),
        (56 * 257, false),
        (100, false),
    ] {
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::HeatSampleBlob, &vec![0u8; len]);
        let bytes = request_with(&a);
        let r = decode_message(&bytes);
        assert_eq!(r.is_ok(), ok, "blob of {len} bytes");
        if !ok {
            assert_eq!(r.unwrap_err().errno, libc::EINVAL);
        }
    }
}

#[test]
fn attribute_running_past_the_end_is_einval() {
    let mut bytes = inspect();
    // The last attribute (OBJECT_ID, 20 bytes) claims 24.
    let at = bytes.len() - 20;
    bytes[at] = 24;
    let e = refused(&bytes);
    assert_eq!((e.errno, e.seq), (libc::EINVAL, SEQ));
}

#[test]
fn attribute_shorter_than_its_header_is_einval() {
    let mut bytes = inspect();
    let at = bytes.len() - 20;
    bytes[at] = 3;
    assert_eq!(refused(&bytes).errno, libc::EINVAL);
}

#[test]
fn misaligned_trailing_bytes_are_einval() {
    let mut bytes = inspect();
    bytes.extend_from_slice(&[0, 0]);
    set_len(&mut bytes);
    assert_eq!(refused(&bytes).errno, libc::EINVAL);
    // An attribute whose padding is missing at the end of the message.
    let mut bytes = encode_message(3, Flags::REQUEST, SEQ, &AttrBuf::new()).unwrap();
    bytes.extend_from_slice(&[5, 0, 20, 0, 1]);
    set_len(&mut bytes);
    assert_eq!(refused(&bytes).errno, libc::EINVAL);
}

#[test]
fn nonzero_padding_is_einval() {
    let mut a = AttrBuf::new();
    a.put_u8(Attr::Force, 1);
    let mut bytes = request_with(&a);
    let last = bytes.len() - 1;
    bytes[last] = 0xff;
    assert_eq!(refused(&bytes).errno, libc::EINVAL);
}

#[test]
fn reserved_type_bit_is_einval() {
    let mut a = AttrBuf::new();
    a.put_raw(Attr::Force.number() | ATTR_F_RESERVED, &[1]);
    assert_eq!(refused(&request_with(&a)).errno, libc::EINVAL);
}

#[test]
fn nested_bit_on_a_scalar_attribute_is_einval() {
    let mut a = AttrBuf::new();
    a.put_raw(Attr::Force.number() | ATTR_F_NESTED, &[1]);
    assert_eq!(refused(&request_with(&a)).errno, libc::EINVAL);
}

#[test]
fn malformed_nested_list_entries_are_einval() {
    // An entry whose inner attribute has the wrong width.
    let mut a = AttrBuf::new();
    a.put_nested(Attr::Tiers, |l| {
        l.put_raw(1 | ATTR_F_NESTED, &[]);
        l.put_raw(
            2 | ATTR_F_NESTED,
            &[5, 0, 4, 0, 0, 0, 0, 0, 8, 0, 5, 0, 1, 2, 3, 4],
        );
    });
    assert!(decode_request(&request_with(&a)).is_ok());
    let mut a = AttrBuf::new();
    a.put_nested(Attr::Tiers, |l| {
        l.put_raw(1 | ATTR_F_NESTED, &[6, 0, 4, 0, 0, 0, 0, 0]);
    });
    assert_eq!(refused(&request_with(&a)).errno, libc::EINVAL);
    // An entry whose payload is not an attribute sequence at all.
    let mut a = AttrBuf::new();
    a.put_nested(Attr::StatusItems, |l| {
        l.put_raw(1 | ATTR_F_NESTED, &[0xff, 0xff]);
    });
    assert_eq!(refused(&request_with(&a)).errno, libc::EINVAL);
}

#[test]
fn deeply_nested_lists_are_refused_not_recursed() {
    // TIERS inside TIERS inside ... 2000 levels: must be EINVAL, not a
    // stack overflow.
    let mut payload: Vec<u8> = Vec::new();
    for _ in 0..2000 {
        let mut next = Vec::new();
        let entry_len = (4 + payload.len()) as u16;
        let list_len = 4 + entry_len;
        next.extend_from_slice(&list_len.to_le_bytes());
        next.extend_from_slice(&(Attr::Tiers.number() | ATTR_F_NESTED).to_le_bytes());
        next.extend_from_slice(&entry_len.to_le_bytes());
        next.extend_from_slice(&(1 | ATTR_F_NESTED).to_le_bytes());
        next.extend_from_slice(&payload);
        payload = next;
        if payload.len() > 60_000 {
            break;
        }
    }
    let mut bytes = encode_message(7, Flags::REQUEST, SEQ, &AttrBuf::new()).unwrap();
    bytes.extend_from_slice(&payload);
    set_len(&mut bytes);
    assert_eq!(refused(&bytes).errno, libc::EINVAL);
}

#[test]
fn unknown_attributes_are_ignored() {
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, &POOL)
        .put_raw(200, &[1, 2, 3])
        .put_raw(201 | ATTR_F_NESTED, &[0xde, 0xad])
        .put_bytes(Attr::ObjectId, &OID);
    let bytes = request_with(&a);
    let req = decode_request(&bytes).unwrap();
    assert_eq!(req.attrs.require_id16(Attr::ObjectId).unwrap(), OID);
    assert_eq!(req.attrs.iter().count(), 4);
}

#[test]
fn first_of_duplicate_attributes_wins() {
    let mut a = AttrBuf::new();
    a.put_u64(Attr::TransactionSeq, 1)
        .put_u64(Attr::TransactionSeq, 2);
    let bytes = request_with(&a);
    let req = decode_request(&bytes).unwrap();
    assert_eq!(req.attrs.require_u64(Attr::TransactionSeq).unwrap(), 1);
}

#[test]
fn every_refusal_becomes_a_decodable_error_reply() {
    let mut bytes = inspect();
    bytes[12] = 2;
    let e = refused(&bytes);
    let reply = e.to_reply();
    match smoothfs_uapi::codec::decode_reply(&reply) {
        Err(smoothfs_uapi::Error::Remote { errno, message }) => {
            assert_eq!(errno, libc::EPROTONOSUPPORT);
            assert!(message.contains("version 2"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let msg = decode_message(&reply).unwrap();
    assert_eq!(msg.header.seq, SEQ);
    assert_eq!(msg.header.id, Command::Inspect.number());
    assert_eq!(msg.header.flags, Flags::REPLY | Flags::ERROR);
}

#[test]
fn error_reply_message_is_cut_to_255_bytes() {
    let long = "é".repeat(300);
    let reply = smoothfs_uapi::codec::encode_error_reply(1, 7, libc::EIO, &long);
    let msg = decode_message(&reply).unwrap();
    let text = msg.attrs.require_str(Attr::ErrorMsg).unwrap();
    assert!(text.len() <= 255);
    assert!(text.chars().all(|c| c == 'é'));
}

#[test]
fn encoder_refuses_oversized_attributes_and_messages() {
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::Cursor, &vec![0u8; 70_000]);
    assert!(a.check().is_err());
    let mut a = AttrBuf::new();
    a.put_list(Attr::StatusItems, 0..2000, |w, i| {
        w.put_str(Attr::Name, &format!("item-{i:040}"));
    });
    assert!(
        a.check().is_err(),
        "a nested list over 64 KiB cannot be framed"
    );
    let mut a = AttrBuf::new();
    for _ in 0..20 {
        a.put_raw(300, &vec![0u8; 60_000]);
    }
    assert!(encode_message(7, Flags::REQUEST, 1, &a).is_err());
}
