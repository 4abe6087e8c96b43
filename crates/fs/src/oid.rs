//! Object identity (S3.1–S3.3): the 16-byte OID in UUIDv7 layout, the
//! generation, and the inode number derived from the OID.
//!
//! Owns minting and the OID -> st_ino mapping. Never touches a lower file:
//! reading and writing the identity xattrs is the namespace's job.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lower xattr holding the 16 OID bytes.
pub const XATTR_OID: &str = "trusted.smoothfs.oid";
/// Lower xattr holding the generation, u32 LE.
pub const XATTR_GEN: &str = "trusted.smoothfs.gen";
/// Prefix reserved for smoothfs (S3.4).
pub const XATTR_RESERVED_PREFIX: &str = "trusted.smoothfs.";

/// Inode number (and FUSE node id) of the pool root.
pub const ROOT_INO: u64 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Oid(pub [u8; 16]);

impl Oid {
    /// The root directory's OID: all zero bytes.
    pub const ROOT: Oid = Oid([0; 16]);

    pub fn is_root(&self) -> bool {
        *self == Oid::ROOT
    }

    /// `st_ino` = xxh64(oid, seed 0) with bit 63 set; the root is 1 (S3.2).
    pub fn ino(&self) -> u64 {
        if self.is_root() {
            return ROOT_INO;
        }
        xxhash_rust::xxh64::xxh64(&self.0, 0) | (1u64 << 63)
    }

    pub fn from_slice(b: &[u8]) -> Option<Oid> {
        <[u8; 16]>::try_from(b).ok().map(Oid)
    }

    /// Accepts 32 hex digits or the dashed 36-character form, any case.
    pub fn parse(s: &str) -> Option<Oid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || (s.len() != 32 && s.len() != 36) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Oid(out))
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.hex())
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Mints OIDs in RFC 9562 version-7 layout. The 12-bit sequence counter
/// keeps OIDs minted within one millisecond increasing in byte order.
#[derive(Debug, Default)]
pub struct OidMinter {
    /// (unix_ms << 12) | seq of the last OID handed out.
    last: AtomicU64,
}

impl OidMinter {
    pub fn new() -> Self {
        OidMinter {
            last: AtomicU64::new(0),
        }
    }

    pub fn mint(&self) -> Oid {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Claim the next (ms, seq) pair strictly greater than the last one;
        // when the counter of a millisecond overflows we borrow the next ms.
        let mut cur = self.last.load(Ordering::Relaxed);
        let claimed = loop {
            let candidate = (now_ms << 12).max(cur + 1);
            match self.last.compare_exchange_weak(
                cur,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break candidate,
                Err(actual) => cur = actual,
            }
        };
        let ms = claimed >> 12;
        let seq = (claimed & 0xfff) as u16;
        let mut b = [0u8; 16];
        b[0..6].copy_from_slice(&ms.to_be_bytes()[2..8]);
        b[6] = 0x70 | ((seq >> 8) as u8 & 0x0f);
        b[7] = seq as u8;
        let random: [u8; 8] = rand::random();
        b[8] = 0x80 | (random[0] & 0x3f);
        b[9..16].copy_from_slice(&random[1..8]);
        Oid(b)
    }
}

/// `trusted.smoothfs.fileid`: u64 LE st_ino ‖ u32 LE generation (S3.4).
pub fn fileid(oid: &Oid, gen_: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&oid.ino().to_le_bytes());
    out[8..].copy_from_slice(&gen_.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_oid_has_version_7_and_variant_10() {
        let oid = OidMinter::new().mint();
        assert_eq!(oid.0[6] >> 4, 7);
        assert_eq!(oid.0[8] >> 6, 0b10);
    }

    #[test]
    fn oids_increase_in_byte_order_and_are_distinct() {
        let m = OidMinter::new();
        let oids: Vec<Oid> = (0..100_000).map(|_| m.mint()).collect();
        for w in oids.windows(2) {
            // Bytes 0..8 carry (ms, seq); they strictly increase.
            assert!(w[0].0[..8] < w[1].0[..8], "{:?} !< {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn root_is_inode_1_and_others_have_bit_63() {
        assert_eq!(Oid::ROOT.ino(), 1);
        let oid = OidMinter::new().mint();
        assert_ne!(oid.ino() & (1 << 63), 0);
    }

    #[test]
    fn parse_accepts_both_text_forms() {
        let oid = OidMinter::new().mint();
        assert_eq!(Oid::parse(&oid.hex()), Some(oid));
        let h = oid.hex().to_uppercase();
        let dashed = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        assert_eq!(Oid::parse(&dashed), Some(oid));
        assert_eq!(Oid::parse("xyz"), None);
    }

    #[test]
    fn fileid_is_ino_then_gen() {
        let oid = OidMinter::new().mint();
        let f = fileid(&oid, 7);
        assert_eq!(u64::from_le_bytes(f[..8].try_into().unwrap()), oid.ino());
        assert_eq!(&f[8..], &7u32.to_le_bytes());
    }
}
