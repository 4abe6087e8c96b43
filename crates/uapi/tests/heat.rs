//! S6.3: the 56-byte heat record and HEAT_SAMPLE_BLOB splitting.

mod common;

use common::{OID, hex, unhex};
use proptest::prelude::*;
use smoothfs_uapi::heat::{HEAT_RECORD_LEN, HeatRecord, decode_blob, encode_blob, split_blobs};

fn sample() -> HeatRecord {
    HeatRecord {
        oid: OID,
        open_count_delta: 3,
        read_bytes_delta: 0x0102_0304_0506_0708,
        write_bytes_delta: 4096,
        last_access_ns: 1_700_000_000_123_456_789,
        sample_window_ns: 30_000_000_000,
    }
}

/// S6.3/A5: the layout against a fixed vector.
const SAMPLE: &str = "
    01 8f 3a 5c 7e 10 7a bc 8d ef 01 23 45 67 89 ab
    03 00 00 00 00 00 00 00 08 07 06 05 04 03 02 01
    00 10 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17
    00 ac 23 fc 06 00 00 00
";

#[test]
fn record_layout_matches_the_fixed_vector() {
    assert_eq!(HEAT_RECORD_LEN, 56);
    assert_eq!(hex(&sample().encode()), hex(&unhex(SAMPLE)));
    assert_eq!(HeatRecord::from_slice(&unhex(SAMPLE)).unwrap(), sample());
}

#[test]
fn reserved_word_is_ignored_on_decode() {
    let mut bytes = sample().encode();
    bytes[20..24].copy_from_slice(&[0xff; 4]);
    assert_eq!(HeatRecord::decode(&bytes), sample());
}

#[test]
fn from_slice_needs_exactly_56_bytes() {
    assert_eq!(
        HeatRecord::from_slice(&[0; 55]).unwrap_err().errno,
        libc::EINVAL
    );
    assert_eq!(
        HeatRecord::from_slice(&[0; 57]).unwrap_err().errno,
        libc::EINVAL
    );
}

#[test]
fn blob_length_rules() {
    assert!(decode_blob(&[]).is_err(), "zero records");
    assert!(decode_blob(&[0; 57]).is_err());
    assert!(decode_blob(&vec![0; 56 * 257]).is_err());
    assert_eq!(decode_blob(&vec![0; 56 * 256]).unwrap().len(), 256);
}

#[test]
fn a_drain_is_split_into_events_of_at_most_256_records() {
    // S6.3/A3 shape: 10,000 records -> 40 blobs, the last one partial.
    let records: Vec<HeatRecord> = (0..10_000u32)
        .map(|i| HeatRecord {
            open_count_delta: i,
            ..sample()
        })
        .collect();
    let blobs: Vec<Vec<u8>> = split_blobs(&records).collect();
    assert_eq!(blobs.len(), 40);
    assert!(blobs.iter().all(|b| b.len() <= 256 * 56));
    let back: Vec<HeatRecord> = blobs.iter().flat_map(|b| decode_blob(b).unwrap()).collect();
    assert_eq!(back, records);
    assert_eq!(split_blobs(&[]).count(), 0, "an empty drain sends nothing");
}

fn arb_record() -> impl Strategy<Value = HeatRecord> {
    (
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(oid, o, r, w, l, s)| HeatRecord {
            oid,
            open_count_delta: o,
            read_bytes_delta: r,
            write_bytes_delta: w,
            last_access_ns: l,
            sample_window_ns: s,
        })
}

proptest! {
    #[test]
    fn record_round_trips(r in arb_record()) {
        prop_assert_eq!(HeatRecord::decode(&r.encode()), r);
    }

    #[test]
    fn blob_round_trips(records in proptest::collection::vec(arb_record(), 1..=256)) {
        let blob = encode_blob(&records);
        prop_assert_eq!(blob.len(), records.len() * 56);
        prop_assert_eq!(decode_blob(&blob).unwrap(), records);
    }

    #[test]
    fn decode_blob_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = decode_blob(&bytes);
    }
}
