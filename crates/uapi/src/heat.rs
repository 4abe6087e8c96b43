//! The 56-byte HEAT_SAMPLE record (S6.3) and HEAT_SAMPLE_BLOB handling.
//!
//! Owns: the record layout and splitting a drain into blobs of at most 256
//! records. Must never: change the layout (that needs protocol version 2,
//! S20.7/3) or accept a blob whose length is not a multiple of 56.

use crate::codec::MAX_HEAT_RECORDS;
use crate::error::WireError;

/// Size of one heat record on the wire.
pub const HEAT_RECORD_LEN: usize = 56;

/// One object's activity since its previous drain (S6.3/1).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 16 | oid |
/// | 16 | 4 | open_count_delta (u32 LE) |
/// | 20 | 4 | reserved, 0 |
/// | 24 | 8 | read_bytes_delta (u64 LE) |
/// | 32 | 8 | write_bytes_delta (u64 LE) |
/// | 40 | 8 | last_access_ns (u64 LE) |
/// | 48 | 8 | sample_window_ns (u64 LE) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeatRecord {
    pub oid: [u8; 16],
    /// Opens since the last drain; saturates at u32::MAX, the rest is
    /// carried to the next record (S6.3/2).
    pub open_count_delta: u32,
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
    pub last_access_ns: u64,
    /// now − this object's previous drain (or its first activity).
    pub sample_window_ns: u64,
}

fn u64_at(b: &[u8; HEAT_RECORD_LEN], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

impl HeatRecord {
    pub fn encode(&self) -> [u8; HEAT_RECORD_LEN] {
        let mut out = [0u8; HEAT_RECORD_LEN];
        out[0..16].copy_from_slice(&self.oid);
        out[16..20].copy_from_slice(&self.open_count_delta.to_le_bytes());
        // 20..24 reserved, zero.
        out[24..32].copy_from_slice(&self.read_bytes_delta.to_le_bytes());
        out[32..40].copy_from_slice(&self.write_bytes_delta.to_le_bytes());
        out[40..48].copy_from_slice(&self.last_access_ns.to_le_bytes());
        out[48..56].copy_from_slice(&self.sample_window_ns.to_le_bytes());
        out
    }

    /// Decode one record. The reserved word is ignored so a later sender
    /// may use it without breaking this receiver.
    pub fn decode(b: &[u8; HEAT_RECORD_LEN]) -> HeatRecord {
        let mut oid = [0u8; 16];
        oid.copy_from_slice(&b[0..16]);
        HeatRecord {
            oid,
            open_count_delta: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            read_bytes_delta: u64_at(b, 24),
            write_bytes_delta: u64_at(b, 32),
            last_access_ns: u64_at(b, 40),
            sample_window_ns: u64_at(b, 48),
        }
    }

    /// Decode one record from a slice that must be exactly 56 bytes.
    pub fn from_slice(b: &[u8]) -> Result<HeatRecord, WireError> {
        let arr = <&[u8; HEAT_RECORD_LEN]>::try_from(b).map_err(|_| {
            WireError::invalid(format!(
                "heat record has {} bytes, expected {HEAT_RECORD_LEN}",
                b.len()
            ))
        })?;
        Ok(HeatRecord::decode(arr))
    }
}

/// Decode a HEAT_SAMPLE_BLOB: n × 56 bytes with 1 ≤ n ≤ 256 (S20.6).
pub fn decode_blob(blob: &[u8]) -> Result<Vec<HeatRecord>, WireError> {
    if !blob.len().is_multiple_of(HEAT_RECORD_LEN) {
        return Err(WireError::invalid(format!(
            "HEAT_SAMPLE_BLOB has {} bytes, not a multiple of {HEAT_RECORD_LEN}",
            blob.len()
        )));
    }
    let n = blob.len() / HEAT_RECORD_LEN;
    if !(1..=MAX_HEAT_RECORDS).contains(&n) {
        return Err(WireError::invalid(format!(
            "HEAT_SAMPLE_BLOB holds {n} records, expected 1 to {MAX_HEAT_RECORDS}"
        )));
    }
    blob.chunks_exact(HEAT_RECORD_LEN)
        .map(HeatRecord::from_slice)
        .collect()
}

/// Encode records back to back. The caller keeps to 1..=256 records per
/// blob; [`split_blobs`] does that for a whole drain.
pub fn encode_blob(records: &[HeatRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * HEAT_RECORD_LEN);
    for r in records {
        out.extend_from_slice(&r.encode());
    }
    out
}

/// Split a drain into blobs of at most 256 records, one per HEAT_SAMPLE
/// event (S6.3/3). An empty drain gives no blobs (no event is sent).
pub fn split_blobs(records: &[HeatRecord]) -> impl Iterator<Item = Vec<u8>> + '_ {
    records.chunks(MAX_HEAT_RECORDS).map(encode_blob)
}
