//! Helpers shared by the integration tests.
#![allow(dead_code)]

use uuid::Uuid;

/// The pool UUID every fixed vector uses.
pub const POOL: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
/// The object id every fixed vector uses (UUIDv7 layout).
pub const OID: [u8; 16] = [
    0x01, 0x8f, 0x3a, 0x5c, 0x7e, 0x10, 0x7a, 0xbc, 0x8d, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
];

pub fn pool_uuid() -> Uuid {
    Uuid::from_bytes(POOL)
}

/// Parse hex, ignoring whitespace and `|` separators.
pub fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Hex in lines of 16 bytes, the way the fixed vectors are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
