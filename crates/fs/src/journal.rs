//! The placement journal (SPEC S4.1, S4.2, S4.4, S4.5): an append-only log
//! of identity and movement records in 64 MiB segments on the meta tier.
//!
//! Owns the byte format of segments and records (drawn in `docs/formats.md`),
//! appending with the two durability classes (synchronous records are
//! `fdatasync`ed before [`Journal::append`]'s caller acknowledges anything;
//! group-committed ones are buffered and synced by [`Journal::sync`]),
//! reading the journal back at mount with torn-tail and corruption handling,
//! and deleting segments a checkpoint covers.
//!
//! It never interprets records: applying them to the identity index is
//! `index.rs`'s job, and deciding when to checkpoint is `placement.rs`'s.
//!
//! Invariant: every record in a segment other than the active one is durable
//! (rotation syncs the old segment before the first record of the new one is
//! written), so [`Journal::sync_to`] only ever has to sync the active file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::err;
use crate::error::{Error, Result};
use crate::oid::Oid;

/// First 8 bytes of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SMFJRNL1";
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 24;
pub const MIN_RECORD_LEN: usize = 32;
pub const MAX_RECORD_LEN: usize = 65536;
/// A new segment starts once the active one has reached this size.
pub const SEGMENT_ROLL_BYTES: u64 = 64 << 20;
/// Record flag bit 0: the record was written synchronously.
pub const FLAG_SYNC: u16 = 1;
/// Slot byte meaning "no slot".
pub const NO_SLOT: u8 = 0xFF;
/// Buffered group-commit bytes are handed to the kernel past this size.
const WRITE_BUFFER_BYTES: usize = 256 << 10;
const SEGMENT_MODE: u32 = 0o600;

/// Record type numbers (S4.1 item 4). Appended, never renumbered.
pub mod rtype {
    pub const PLACED: u16 = 1;
    pub const MOVE: u16 = 2;
    pub const LINK: u16 = 3;
    pub const UNLINK: u16 = 4;
    pub const RENAME: u16 = 5;
    pub const PIN: u16 = 6;
    pub const DIR_RENAME: u16 = 7;
    pub const GEN: u16 = 8;
    pub const CHECKPOINT: u16 = 9;
    pub const STAGE: u16 = 10;
}

/// One journal record. Field order is the payload order of S4.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Placed {
        oid: Oid,
        gen_: u32,
        kind: u8,
        slot: u8,
        policy_pin: u8,
        protocol_pin: u8,
        always_mediated: bool,
        lower_ino: u64,
        path: String,
    },
    Move {
        oid: Oid,
        state: u8,
        current_slot: u8,
        intended_slot: u8,
        transaction_seq: u64,
        reason: String,
    },
    Link {
        oid: Oid,
        path: String,
    },
    Unlink {
        oid: Oid,
        gen_: u32,
        remaining_links: u32,
        path: String,
    },
    Rename {
        oid: Oid,
        /// Encoded as 16 zero bytes when `None`.
        replaced: Option<Oid>,
        old_path: String,
        new_path: String,
    },
    Pin {
        oid: Oid,
        policy_pin: u8,
        protocol_pin: u8,
        always_mediated: bool,
    },
    DirRename {
        oid: Oid,
        tier_mask: u16,
        done_mask: u16,
        old_path: String,
        new_path: String,
    },
    Gen {
        oid: Oid,
        gen_: u32,
    },
    Checkpoint {
        checkpoint_seq: u64,
    },
    Stage {
        oid: Oid,
        /// 1 write-staged rehome, 2 range-staged, 0 cleared (S14).
        kind: u8,
        source_slot: u8,
    },
    /// A type this build does not know (S4.1 item 5): kept so it still
    /// advances seq, never applied.
    Unknown {
        rtype: u16,
        payload: Vec<u8>,
    },
}

impl Record {
    pub fn rtype(&self) -> u16 {
        match self {
            Record::Placed { .. } => rtype::PLACED,
            Record::Move { .. } => rtype::MOVE,
            Record::Link { .. } => rtype::LINK,
            Record::Unlink { .. } => rtype::UNLINK,
            Record::Rename { .. } => rtype::RENAME,
            Record::Pin { .. } => rtype::PIN,
            Record::DirRename { .. } => rtype::DIR_RENAME,
            Record::Gen { .. } => rtype::GEN,
            Record::Checkpoint { .. } => rtype::CHECKPOINT,
            Record::Stage { .. } => rtype::STAGE,
            Record::Unknown { rtype, .. } => *rtype,
        }
    }

    /// The durability class of S4.2: movement, replacing rename, dir
    /// rename, generation, pin (and staging state) are synchronous.
    pub fn is_sync(&self) -> bool {
        match self {
            Record::Move { .. }
            | Record::Pin { .. }
            | Record::DirRename { .. }
            | Record::Gen { .. }
            | Record::Stage { .. } => true,
            Record::Rename { replaced, .. } => replaced.is_some(),
            _ => false,
        }
    }

    /// Appends the payload bytes (unpadded) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Record::Placed {
                oid,
                gen_,
                kind,
                slot,
                policy_pin,
                protocol_pin,
                always_mediated,
                lower_ino,
                path,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&gen_.to_le_bytes());
                out.extend_from_slice(&[
                    *kind,
                    *slot,
                    *policy_pin,
                    *protocol_pin,
                    u8::from(*always_mediated),
                ]);
                out.extend_from_slice(&lower_ino.to_le_bytes());
                put_str(out, path)?;
            }
            Record::Move {
                oid,
                state,
                current_slot,
                intended_slot,
                transaction_seq,
                reason,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&[*state, *current_slot, *intended_slot]);
                out.extend_from_slice(&transaction_seq.to_le_bytes());
                put_str(out, reason)?;
            }
            Record::Link { oid, path } => {
                out.extend_from_slice(&oid.0);
                put_str(out, path)?;
            }
            Record::Unlink {
                oid,
                gen_,
                remaining_links,
                path,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&gen_.to_le_bytes());
                out.extend_from_slice(&remaining_links.to_le_bytes());
                put_str(out, path)?;
            }
            Record::Rename {
                oid,
                replaced,
                old_path,
                new_path,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&replaced.unwrap_or(Oid::ROOT).0);
                put_str(out, old_path)?;
                put_str(out, new_path)?;
            }
            Record::Pin {
                oid,
                policy_pin,
                protocol_pin,
                always_mediated,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&[*policy_pin, *protocol_pin, u8::from(*always_mediated)]);
            }
            Record::DirRename {
                oid,
                tier_mask,
                done_mask,
                old_path,
                new_path,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&tier_mask.to_le_bytes());
                out.extend_from_slice(&done_mask.to_le_bytes());
                put_str(out, old_path)?;
                put_str(out, new_path)?;
            }
            Record::Gen { oid, gen_ } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&gen_.to_le_bytes());
            }
            Record::Checkpoint { checkpoint_seq } => {
                out.extend_from_slice(&checkpoint_seq.to_le_bytes())
            }
            Record::Stage {
                oid,
                kind,
                source_slot,
            } => {
                out.extend_from_slice(&oid.0);
                out.extend_from_slice(&[*kind, *source_slot]);
            }
            Record::Unknown { payload, .. } => out.extend_from_slice(payload),
        }
        Ok(())
    }

    /// Decodes a payload (padding after the last field is ignored).
    pub fn decode_payload(rtype: u16, payload: &[u8]) -> Result<Record> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let rec = match rtype {
            rtype::PLACED => Record::Placed {
                oid: r.oid()?,
                gen_: r.u32()?,
                kind: r.u8()?,
                slot: r.u8()?,
                policy_pin: r.u8()?,
                protocol_pin: r.u8()?,
                always_mediated: r.u8()? != 0,
                lower_ino: r.u64()?,
                path: r.str()?,
            },
            rtype::MOVE => Record::Move {
                oid: r.oid()?,
                state: r.u8()?,
                current_slot: r.u8()?,
                intended_slot: r.u8()?,
                transaction_seq: r.u64()?,
                reason: r.str()?,
            },
            rtype::LINK => Record::Link {
                oid: r.oid()?,
                path: r.str()?,
            },
            rtype::UNLINK => Record::Unlink {
                oid: r.oid()?,
                gen_: r.u32()?,
                remaining_links: r.u32()?,
                path: r.str()?,
            },
            rtype::RENAME => {
                let oid = r.oid()?;
                let replaced = r.oid()?;
                Record::Rename {
                    oid,
                    replaced: (!replaced.is_root()).then_some(replaced),
                    old_path: r.str()?,
                    new_path: r.str()?,
                }
            }
            rtype::PIN => Record::Pin {
                oid: r.oid()?,
                policy_pin: r.u8()?,
                protocol_pin: r.u8()?,
                always_mediated: r.u8()? != 0,
            },
            rtype::DIR_RENAME => Record::DirRename {
                oid: r.oid()?,
                tier_mask: r.u16()?,
                done_mask: r.u16()?,
                old_path: r.str()?,
                new_path: r.str()?,
            },
            rtype::GEN => Record::Gen {
                oid: r.oid()?,
                gen_: r.u32()?,
            },
            rtype::CHECKPOINT => Record::Checkpoint {
                checkpoint_seq: r.u64()?,
            },
            rtype::STAGE => Record::Stage {
                oid: r.oid()?,
                kind: r.u8()?,
                source_slot: r.u8()?,
            },
            other => Record::Unknown {
                rtype: other,
                payload: payload.to_vec(),
            },
        };
        Ok(rec)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| err!(libc::ENAMETOOLONG, "journal string of {} bytes", s.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| {
            err!(
                libc::EINVAL,
                "journal payload truncated at byte {}",
                self.pos
            )
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(arr(self.take(4)?)))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(arr(self.take(8)?)))
    }
    fn oid(&mut self) -> Result<Oid> {
        Ok(Oid(arr(self.take(16)?)))
    }
    fn str(&mut self) -> Result<String> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| err!(libc::EINVAL, "journal path is not UTF-8"))
    }
}

/// Copies a slice whose length the caller has already checked.
fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// Length of the framed record for a payload of `payload_len` bytes.
fn frame_len(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len)
        .div_ceil(8)
        .max(MIN_RECORD_LEN / 8)
        * 8
}

/// Appends one framed record (header, payload, zero padding) to `out`.
pub fn encode_frame(seq: u64, flags: u16, rec: &Record, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.resize(start + RECORD_HEADER_LEN, 0);
    if let Err(e) = rec.encode_payload(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = frame_len(out.len() - start - RECORD_HEADER_LEN);
    if len > MAX_RECORD_LEN {
        out.truncate(start);
        return Err(err!(
            libc::ENAMETOOLONG,
            "journal record of {len} bytes exceeds {MAX_RECORD_LEN}"
        ));
    }
    out.resize(start + len, 0);
    let frame = &mut out[start..];
    frame[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    frame[8..16].copy_from_slice(&seq.to_le_bytes());
    frame[16..18].copy_from_slice(&rec.rtype().to_le_bytes());
    frame[18..20].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32c::crc32c(&frame[8..len]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A record read back from a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    pub flags: u16,
    pub len: usize,
    pub record: Record,
}

/// Why bytes at some offset are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or than `len` says.
    Incomplete,
    /// `len` outside 32..=65536 or not a multiple of 8.
    BadLen,
    BadCrc,
    /// CRC is right but a known type's payload does not parse.
    BadPayload,
}

/// Decodes the record at the start of `buf` (which may extend beyond it).
pub fn decode_frame(buf: &[u8]) -> std::result::Result<Frame, FrameError> {
    let len = frame_crc_ok(buf)?;
    let frame = &buf[..len];
    let seq = u64::from_le_bytes(arr(&frame[8..16]));
    let rt = u16::from_le_bytes([frame[16], frame[17]]);
    let flags = u16::from_le_bytes([frame[18], frame[19]]);
    let record = Record::decode_payload(rt, &frame[RECORD_HEADER_LEN..])
        .map_err(|_| FrameError::BadPayload)?;
    Ok(Frame {
        seq,
        flags,
        len,
        record,
    })
}

/// Checks length and CRC only; returns the record length.
fn frame_crc_ok(buf: &[u8]) -> std::result::Result<usize, FrameError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes(arr(&buf[0..4])) as usize;
    if !(MIN_RECORD_LEN..=MAX_RECORD_LEN).contains(&len) || !len.is_multiple_of(8) {
        return Err(FrameError::BadLen);
    }
    if len > buf.len() {
        return Err(FrameError::Incomplete);
    }
    let crc = u32::from_le_bytes(arr(&buf[4..8]));
    if crc32c::crc32c(&buf[8..len]) != crc {
        return Err(FrameError::BadCrc);
    }
    Ok(len)
}

/// Counts the plausible records (length and CRC right) in `buf`,
/// resynchronising on 8-byte boundaries after garbage.
fn count_valid_frames(buf: &[u8]) -> u64 {
    let mut pos = 0;
    let mut n = 0;
    while pos + MIN_RECORD_LEN <= buf.len() {
        match frame_crc_ok(&buf[pos..]) {
            Ok(len) => {
                n += 1;
                pos += len;
            }
            Err(_) => pos += 8,
        }
    }
    n
}

/// The 32-byte segment header.
pub fn encode_segment_header(pool_uuid: &[u8; 16], first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..24].copy_from_slice(pool_uuid);
    h[24..32].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// `0000000000000001.jnl`
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:016x}.jnl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".jnl")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn eio(context: String, e: std::io::Error) -> Error {
    // S4.4 item 4: reading the meta tier failing is the one reason a mount
    // fails, and it fails with EIO whatever the underlying errno was.
    let mut out = Error::io(context, e);
    out.errno = libc::EIO;
    out
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync journal directory {}", dir.display()), e))
}

/// What reading the journal at open found (S4.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Records handed to the visitor (all seqs, also those a checkpoint covers).
    pub records_read: u64,
    pub torn_tail_truncations: u64,
    pub corrupt_records: u64,
    pub degraded: bool,
    /// `corrupt-<seq>-<unixtime>.bin` files written by this open.
    pub set_aside: Vec<PathBuf>,
    /// Highest seq found (0 when the journal is empty).
    pub last_seq: u64,
}

struct KeptSegment {
    first_seq: u64,
    /// Bytes in the file after any truncation (header included).
    len: u64,
    /// Highest seq in the segment; `first_seq - 1` when it holds none.
    last_seq: u64,
}

struct Writer {
    dir: PathBuf,
    pool_uuid: [u8; 16],
    file: Arc<File>,
    /// First seqs of every live segment, ascending; the last is active.
    segments: Vec<u64>,
    /// Bytes of the active segment already handed to the kernel.
    written_len: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    next_seq: u64,
    /// Highest seq handed to the kernel.
    written_seq: u64,
}

impl Writer {
    fn active_path(&self) -> PathBuf {
        let first = self.segments.last().copied().unwrap_or(1);
        self.dir.join(segment_file_name(first))
    }

    /// Hands the buffered records to the kernel. On failure the buffer is
    /// kept and the next flush rewrites it at the same offset.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.written_len)
            .map_err(|e| {
                Error::io(
                    format!("write placement journal {}", self.active_path().display()),
                    e,
                )
            })?;
        self.written_len += self.buf.len() as u64;
        self.buf.clear();
        self.written_seq = self.next_seq - 1;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.written_len + self.buf.len() as u64
    }

    /// Syncs the active segment and starts a new one at `next_seq`.
    fn rotate(&mut self) -> Result<()> {
        self.flush()?;
        self.file.sync_data().map_err(|e| {
            Error::io(
                format!(
                    "fdatasync placement journal {}",
                    self.active_path().display()
                ),
                e,
            )
        })?;
        let first = self.next_seq;
        let file = create_segment(&self.dir, &self.pool_uuid, first)?;
        self.file = Arc::new(file);
        self.segments.push(first);
        self.written_len = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }
}

fn create_segment(dir: &Path, pool_uuid: &[u8; 16], first_seq: u64) -> Result<File> {
    let path = dir.join(segment_file_name(first_seq));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(SEGMENT_MODE)
        .open(&path)
        .map_err(|e| Error::io(format!("create journal segment {}", path.display()), e))?;
    file.write_all(&encode_segment_header(pool_uuid, first_seq))
        .and_then(|_| file.sync_data())
        .map_err(|e| {
            Error::io(
                format!("write journal segment header {}", path.display()),
                e,
            )
        })?;
    sync_dir(dir)?;
    Ok(file)
}

/// The open journal. Appends are serialised by an internal lock; syncs of
/// concurrent callers are coalesced (one `fdatasync` covers every record
/// written before it started).
pub struct Journal {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Serialises `fdatasync` calls so a second caller can find its record
    /// already covered by the first caller's sync.
    sync_lock: Mutex<()>,
    durable_seq: AtomicU64,
    last_seq: AtomicU64,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, handing every record
    /// found to `visit` in seq order, repairing torn tails and setting
    /// corruption aside (S4.4). `min_next_seq` is one past the index's
    /// checkpoint seq: new records never reuse a seq the index has covered.
    ///
    /// Fails only when the directory cannot be read or repaired (EIO) or
    /// `visit` fails.
    pub fn open(
        dir: &Path,
        pool_uuid: [u8; 16],
        min_next_seq: u64,
        mut visit: impl FnMut(u64, Record) -> Result<()>,
    ) -> Result<(Journal, ScanReport)> {
        fs::create_dir_all(dir)
            .map_err(|e| eio(format!("create journal directory {}", dir.display()), e))?;
        let mut segs = list_segments(dir)?;
        segs.sort_unstable();
        let mut report = ScanReport::default();
        let mut kept: Vec<KeptSegment> = Vec::new();
        let mut expected: Option<u64> = None;
        let now = unix_now();

        for (i, &first) in segs.iter().enumerate() {
            let path = dir.join(segment_file_name(first));
            let bytes = fs::read(&path)
                .map_err(|e| eio(format!("read journal segment {}", path.display()), e))?;
            let later = &segs[i + 1..];
            let header_ok = bytes.len() >= SEGMENT_HEADER_LEN
                && &bytes[0..8] == SEGMENT_MAGIC
                && bytes[8..24] == pool_uuid
                && u64::from_le_bytes(arr(&bytes[24..32])) == first
                && expected.is_none_or(|e| e == first);
            if !header_ok {
                if bytes.len() < SEGMENT_HEADER_LEN && later.is_empty() {
                    // A crash while a segment was being created.
                    tracing::warn!(segment = %path.display(), "removing journal segment with a torn header");
                    fs::remove_file(&path)
                        .map_err(|e| eio(format!("remove {}", path.display()), e))?;
                    report.torn_tail_truncations += 1;
                } else {
                    let lost_here = if bytes.len() > SEGMENT_HEADER_LEN {
                        count_valid_frames(&bytes[SEGMENT_HEADER_LEN..]).max(1)
                    } else {
                        1
                    };
                    let seq = expected.unwrap_or(first);
                    set_aside_rest(
                        dir,
                        &path,
                        &bytes,
                        0,
                        seq,
                        later,
                        now,
                        lost_here,
                        &mut report,
                    )?;
                }
                break;
            }

            let mut off = SEGMENT_HEADER_LEN;
            let mut seq = first;
            let mut stopped = false;
            while off < bytes.len() {
                match decode_frame(&bytes[off..]) {
                    Ok(frame) if frame.seq == seq => {
                        off += frame.len;
                        visit(seq, frame.record)?;
                        report.records_read += 1;
                        seq += 1;
                    }
                    _ => {
                        let after = count_valid_frames(bytes.get(off + 8..).unwrap_or(&[]));
                        if after == 0 && later.is_empty() {
                            tracing::warn!(segment = %path.display(), offset = off, seq, "truncating torn journal tail");
                            truncate_file(&path, off as u64)?;
                            report.torn_tail_truncations += 1;
                        } else {
                            set_aside_rest(
                                dir,
                                &path,
                                &bytes,
                                off,
                                seq,
                                later,
                                now,
                                1 + after,
                                &mut report,
                            )?;
                        }
                        stopped = true;
                        break;
                    }
                }
            }
            kept.push(KeptSegment {
                first_seq: first,
                len: off as u64,
                last_seq: seq - 1,
            });
            expected = Some(seq);
            if stopped {
                break;
            }
        }

        let journal_next = kept.last().map(|k| k.last_seq + 1);
        report.last_seq = journal_next.map(|n| n - 1).unwrap_or(0);
        if let Some(first) = kept.first()
            && first.first_seq > min_next_seq
        {
            // Records between the checkpoint and the oldest segment are gone.
            tracing::error!(
                first_seq = first.first_seq,
                checkpoint_next = min_next_seq,
                "placement journal corrupted: segments missing after the checkpoint"
            );
            report.degraded = true;
        }
        let next_seq = journal_next.unwrap_or(1).max(min_next_seq).max(1);
        // Segments whose records the checkpoint already covers and that
        // cannot continue at next_seq are dropped: every record in them is
        // at or below the checkpoint.
        if journal_next.is_some_and(|n| n != next_seq) {
            for k in kept.drain(..) {
                let p = dir.join(segment_file_name(k.first_seq));
                fs::remove_file(&p)
                    .map_err(|e| eio(format!("remove covered segment {}", p.display()), e))?;
            }
        }

        let (file, written_len) = match kept.last() {
            Some(k) => {
                let p = dir.join(segment_file_name(k.first_seq));
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .map_err(|e| eio(format!("open journal segment {}", p.display()), e))?;
                (f, k.len)
            }
            None => (
                create_segment(dir, &pool_uuid, next_seq)?,
                SEGMENT_HEADER_LEN as u64,
            ),
        };
        let mut segments: Vec<u64> = kept.iter().map(|k| k.first_seq).collect();
        if segments.is_empty() {
            segments.push(next_seq);
        }
        let writer = Writer {
            dir: dir.to_path_buf(),
            pool_uuid,
            file: Arc::new(file),
            segments,
            written_len,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            next_seq,
            written_seq: next_seq - 1,
        };
        let journal = Journal {
            dir: dir.to_path_buf(),
            writer: Mutex::new(writer),
            sync_lock: Mutex::new(()),
            durable_seq: AtomicU64::new(next_seq - 1),
            last_seq: AtomicU64::new(next_seq - 1),
        };
        Ok((journal, report))
    }

    /// Appends `rec` and returns its seq. A synchronous record is flagged
    /// as such but NOT yet durable: the caller must [`Journal::sync_to`]
    /// its seq before acknowledging (done outside the caller's own locks so
    /// one `fdatasync` can cover many writers).
    pub fn append(&self, rec: &Record, sync: bool) -> Result<u64> {
        let mut w = self.writer.lock();
        if w.size() >= SEGMENT_ROLL_BYTES {
            w.rotate()?;
            self.durable_seq.fetch_max(w.written_seq, Ordering::AcqRel);
        }
        let seq = w.next_seq;
        encode_frame(seq, if sync { FLAG_SYNC } else { 0 }, rec, &mut w.buf)?;
        w.next_seq += 1;
        self.last_seq.store(seq, Ordering::Release);
        if sync || w.buf.len() >= WRITE_BUFFER_BYTES {
            w.flush()?;
        }
        Ok(seq)
    }

    /// Makes every record up to `seq` durable.
    pub fn sync_to(&self, seq: u64) -> Result<()> {
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _one_syncer = self.sync_lock.lock();
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let (file, upto, path) = {
            let mut w = self.writer.lock();
            w.flush()?;
            (Arc::clone(&w.file), w.written_seq, w.active_path())
        };
        file.sync_data()
            .map_err(|e| Error::io(format!("fdatasync placement journal {}", path.display()), e))?;
        self.durable_seq.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Makes every record appended so far durable.
    pub fn sync(&self) -> Result<()> {
        self.sync_to(self.last_seq())
    }

    /// Seq of the last record appended (0 when none ever was).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// Records appended but not yet durable.
    pub fn pending(&self) -> u64 {
        self.last_seq().saturating_sub(self.durable_seq())
    }

    /// Starts a new segment if the active one holds more than `bytes`
    /// (used at checkpoints so the covered part can be deleted).
    pub fn rotate_if_larger(&self, bytes: u64) -> Result<()> {
        let mut w = self.writer.lock();
        if w.size() > bytes && w.size() > SEGMENT_HEADER_LEN as u64 {
            w.rotate()?;
            self.durable_seq.fetch_max(w.written_seq, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Deletes every segment whose records are all at or below
    /// `checkpoint_seq` (S4.5 item 2). The active segment is never deleted.
    /// Returns how many were deleted.
    pub fn compact(&self, checkpoint_seq: u64) -> Result<usize> {
        let mut w = self.writer.lock();
        let mut keep_from = 0;
        // Segment i's last seq is segment i+1's first seq minus one.
        while keep_from + 1 < w.segments.len() && w.segments[keep_from + 1] - 1 <= checkpoint_seq {
            keep_from += 1;
        }
        for first in w.segments.drain(..keep_from) {
            let p = self.dir.join(segment_file_name(first));
            fs::remove_file(&p).map_err(|e| {
                Error::io(format!("remove covered journal segment {}", p.display()), e)
            })?;
        }
        Ok(keep_from)
    }

    /// Paths of the live segments, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let w = self.writer.lock();
        w.segments
            .iter()
            .map(|f| self.dir.join(segment_file_name(*f)))
            .collect()
    }

    /// Drops buffered records that never reached the kernel: what a
    /// `kill -9` does to them. For crash tests only.
    #[doc(hidden)]
    pub fn discard_unwritten(&self) {
        let mut w = self.writer.lock();
        w.buf.clear();
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir)
        .map_err(|e| eio(format!("read journal directory {}", dir.display()), e))?;
    for entry in rd {
        let entry =
            entry.map_err(|e| eio(format!("read journal directory {}", dir.display()), e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push(first);
        }
    }
    Ok(out)
}

fn truncate_file(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| eio(format!("open {}", path.display()), e))?;
    f.set_len(len)
        .and_then(|_| f.sync_all())
        .map_err(|e| eio(format!("truncate journal segment {}", path.display()), e))
}

/// Corruption (S4.4 items 2, 3): copies `bytes[off..]` of the segment at
/// `path` to `corrupt-<seq>-<now>.bin`, cuts it from the segment (removing
/// the segment when nothing valid stays), and sets every later segment
/// aside whole, since replay stops at the bad record.
#[allow(clippy::too_many_arguments)]
fn set_aside_rest(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    off: usize,
    seq: u64,
    later: &[u64],
    now: u64,
    lost_here: u64,
    report: &mut ScanReport,
) -> Result<()> {
    let mut lost = lost_here;
    let aside = dir.join(format!("corrupt-{seq:016x}-{now}.bin"));
    write_new_file(&aside, &bytes[off..])?;
    report.set_aside.push(aside.clone());
    if off == 0 {
        fs::remove_file(path)
            .map_err(|e| eio(format!("remove corrupt segment {}", path.display()), e))?;
    } else {
        truncate_file(path, off as u64)?;
    }
    for &first in later {
        let p = dir.join(segment_file_name(first));
        let b =
            fs::read(&p).map_err(|e| eio(format!("read journal segment {}", p.display()), e))?;
        lost += count_valid_frames(b.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]));
        let dst = dir.join(format!("corrupt-{first:016x}-{now}.bin"));
        fs::rename(&p, &dst)
            .map_err(|e| eio(format!("set aside journal segment {}", p.display()), e))?;
        report.set_aside.push(dst);
    }
    sync_dir(dir).map_err(|mut e| {
        e.errno = libc::EIO;
        e
    })?;
    tracing::error!(
        segment = %path.display(),
        offset = off,
        seq,
        records_lost = lost,
        set_aside = %aside.display(),
        "placement journal corrupted"
    );
    report.corrupt_records += lost;
    report.degraded = true;
    Ok(())
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(SEGMENT_MODE)
        .open(path)
        .map_err(|e| eio(format!("create {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| eio(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_is_padded_to_8_and_at_least_32() {
        assert_eq!(frame_len(0), 32);
        assert_eq!(frame_len(8), 32);
        assert_eq!(frame_len(9), 40);
        assert_eq!(frame_len(16), 40);
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(1), "0000000000000001.jnl");
        assert_eq!(parse_segment_name("0000000000000001.jnl"), Some(1));
        assert_eq!(parse_segment_name("corrupt-1-2.bin"), None);
        assert_eq!(parse_segment_name("00000000000000g1.jnl"), None);
    }

    #[test]
    fn corrupted_byte_is_detected_by_crc() {
        let mut buf = Vec::new();
        encode_frame(5, 0, &Record::Checkpoint { checkpoint_seq: 4 }, &mut buf).unwrap();
        assert!(decode_frame(&buf).is_ok());
        buf[30] ^= 1;
        assert_eq!(decode_frame(&buf), Err(FrameError::BadCrc));
        assert_eq!(decode_frame(&buf[..20]), Err(FrameError::Incomplete));
    }
}
