//! The wire codec: the 16-byte header and netlink-style TLV attributes
//! (S20.2), with per-attribute schema validation (S20.6).
//!
//! Owns: encoding ([`AttrBuf`], [`MessageBuilder`]), framing checks
//! ([`decode_message`], [`decode_request`], [`decode_reply`]) and typed,
//! width-checked attribute access ([`Attrs`], [`RawAttr`]). Must never panic,
//! allocate without bound or recurse without bound on any input: everything
//! here runs on bytes from an untrusted peer. Unknown attribute ids are
//! skipped (S20.7/2); known ones are checked against their schema before a
//! message is handed out, so a handler only sees well-formed attributes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, WireError};
use crate::heat::HEAT_RECORD_LEN;
use crate::ids::{
    ATTR_F_NESTED, ATTR_F_RESERVED, ATTR_ID_MASK, Attr, AttrType, Command, EventId, Flags,
    HEADER_LEN, MAX_MESSAGE_LEN, MessageId, PROTOCOL_VERSION,
};

/// Bytes of an attribute header (u16 len + u16 type).
pub const ATTR_HEADER_LEN: usize = 4;
/// Largest attribute payload a u16 length can describe.
pub const MAX_ATTR_PAYLOAD: usize = u16::MAX as usize - ATTR_HEADER_LEN;
/// Most heat records in one HEAT_SAMPLE_BLOB (S6.3/3).
pub const MAX_HEAT_RECORDS: usize = 256;
/// MOVE_PLAN gate 15 (S12.1): free space the destination tier must keep
/// beyond the object's size, or the plan is refused with ENOSPC. The
/// planner leaves the same margin, so it never plans a move this refuses.
pub const MOVE_PLAN_RESERVE_BYTES: u64 = 64 << 20;
/// How deep nested lists may go; the schema needs 1, the cap keeps a hostile
/// message from recursing the stack away.
const MAX_NESTING: usize = 4;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The fixed message header (S20.2/1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Length of the whole message, header included.
    pub length: u32,
    /// Command or event id.
    pub id: u16,
    pub flags: Flags,
    pub seq: u32,
    pub version: u8,
    /// Bytes 13..16; must be 0 at version 1.
    pub reserved: [u8; 3],
}

impl Header {
    /// Read the header fields without judging them. Fails only when fewer
    /// than 16 bytes are present.
    pub fn peek(buf: &[u8]) -> Result<Header, WireError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(WireError::invalid(format!(
                "message of {} bytes is shorter than the {HEADER_LEN}-byte header",
                buf.len()
            )));
        };
        Ok(Header {
            length: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            id: u16::from_le_bytes([h[4], h[5]]),
            flags: Flags(u16::from_le_bytes([h[6], h[7]])),
            seq: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            version: h[12],
            reserved: [h[13], h[14], h[15]],
        })
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.length.to_le_bytes());
        out[4..6].copy_from_slice(&self.id.to_le_bytes());
        out[6..8].copy_from_slice(&self.flags.bits().to_le_bytes());
        out[8..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12] = self.version;
        out[13..16].copy_from_slice(&self.reserved);
        out
    }

    pub fn message_id(&self) -> MessageId {
        MessageId::from_number(self.id)
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// An attribute sequence under construction. Puts never fail on the spot;
/// the first problem (an attribute over 64 KiB, a NUL inside a string) is
/// remembered and reported by [`AttrBuf::check`] / [`MessageBuilder::finish`],
/// so calls can be chained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrBuf {
    buf: Vec<u8>,
    error: Option<String>,
}

impl AttrBuf {
    pub fn new() -> AttrBuf {
        AttrBuf::default()
    }

    /// The encoded attributes (padding included).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The first encoding problem, if any.
    pub fn check(&self) -> Result<(), Error> {
        match &self.error {
            Some(e) => Err(Error::Encode(e.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(msg);
        }
    }

    /// Append one attribute with a raw type (flags included) and payload.
    /// Use the typed puts for known attributes; this exists for forward
    /// compatibility tests and for ids this crate does not know yet.
    pub fn put_raw(&mut self, attr_type: u16, payload: &[u8]) -> &mut Self {
        if payload.len() > MAX_ATTR_PAYLOAD {
            self.fail(format!(
                "attribute type {attr_type:#06x} has a {}-byte payload; at most {MAX_ATTR_PAYLOAD} fit",
                payload.len()
            ));
            return self;
        }
        let len = (ATTR_HEADER_LEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&attr_type.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    pub fn put_u8(&mut self, attr: Attr, v: u8) -> &mut Self {
        self.put_raw(attr.number(), &[v])
    }

    pub fn put_bool(&mut self, attr: Attr, v: bool) -> &mut Self {
        self.put_u8(attr, u8::from(v))
    }

    pub fn put_u16(&mut self, attr: Attr, v: u16) -> &mut Self {
        self.put_raw(attr.number(), &v.to_le_bytes())
    }

    pub fn put_u32(&mut self, attr: Attr, v: u32) -> &mut Self {
        self.put_raw(attr.number(), &v.to_le_bytes())
    }

    pub fn put_u64(&mut self, attr: Attr, v: u64) -> &mut Self {
        self.put_raw(attr.number(), &v.to_le_bytes())
    }

    pub fn put_bytes(&mut self, attr: Attr, v: &[u8]) -> &mut Self {
        self.put_raw(attr.number(), v)
    }

    /// A string attribute: the bytes and a terminating NUL.
    pub fn put_str(&mut self, attr: Attr, v: &str) -> &mut Self {
        self.put_str_bytes(attr, v.as_bytes())
    }

    /// A path as a string attribute (paths need not be UTF-8).
    pub fn put_path(&mut self, attr: Attr, v: &Path) -> &mut Self {
        self.put_str_bytes(attr, v.as_os_str().as_bytes())
    }

    /// A string attribute from raw bytes; an interior NUL is an encode error.
    pub fn put_str_bytes(&mut self, attr: Attr, v: &[u8]) -> &mut Self {
        if v.contains(&0) {
            self.fail(format!("{attr} contains a NUL byte"));
            return self;
        }
        let mut payload = Vec::with_capacity(v.len() + 1);
        payload.extend_from_slice(v);
        payload.push(0);
        self.put_raw(attr.number(), &payload)
    }

    /// A nested attribute whose payload `f` writes.
    pub fn put_nested(&mut self, attr: Attr, f: impl FnOnce(&mut AttrBuf)) -> &mut Self {
        self.nested_raw(attr.number() | ATTR_F_NESTED, f)
    }

    fn nested_raw(&mut self, attr_type: u16, f: impl FnOnce(&mut AttrBuf)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&attr_type.to_le_bytes());
        f(self);
        let len = self.buf.len() - start;
        match u16::try_from(len) {
            Ok(len16) => self.buf[start..start + 2].copy_from_slice(&len16.to_le_bytes()),
            Err(_) => {
                self.buf.truncate(start);
                self.fail(format!(
                    "nested attribute type {attr_type:#06x} is {len} bytes; at most 65535 fit"
                ));
            }
        }
        self
    }

    /// A nested list: entry i has type i + 1 (NESTED) and is written by `f`.
    pub fn put_list<I, F>(&mut self, attr: Attr, items: I, mut f: F) -> &mut Self
    where
        I: IntoIterator,
        F: FnMut(&mut AttrBuf, I::Item),
    {
        self.put_nested(attr, |list| {
            for (i, item) in items.into_iter().enumerate() {
                let entry_type = match u16::try_from(i + 1) {
                    Ok(t) if t <= ATTR_ID_MASK => t,
                    _ => {
                        list.fail(format!("{attr} has more than {ATTR_ID_MASK} entries"));
                        return;
                    }
                };
                list.nested_raw(entry_type | ATTR_F_NESTED, |entry| f(entry, item));
            }
        })
    }
}

/// A whole message under construction: a header plus an [`AttrBuf`]
/// (reachable through `Deref`, so the `put_*` calls work on the builder).
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    id: u16,
    flags: Flags,
    seq: u32,
    attrs: AttrBuf,
}

impl MessageBuilder {
    pub fn new(id: u16, flags: Flags, seq: u32) -> MessageBuilder {
        MessageBuilder {
            id,
            flags,
            seq,
            attrs: AttrBuf::new(),
        }
    }

    pub fn request(cmd: Command, seq: u32) -> MessageBuilder {
        MessageBuilder::new(cmd.number(), Flags::REQUEST, seq)
    }

    /// A successful reply to `cmd` with the request's seq.
    pub fn reply(cmd: Command, seq: u32) -> MessageBuilder {
        MessageBuilder::new(cmd.number(), Flags::REPLY, seq)
    }

    pub fn event(event: EventId, seq: u32) -> MessageBuilder {
        MessageBuilder::new(event.number(), Flags::EVENT, seq)
    }

    pub fn with_attrs(mut self, attrs: AttrBuf) -> MessageBuilder {
        self.attrs = attrs;
        self
    }

    pub fn set_flags(&mut self, flags: Flags) -> &mut Self {
        self.flags = flags;
        self
    }

    /// The encoded message, or the first encoding problem.
    pub fn finish(&self) -> Result<Vec<u8>, Error> {
        encode_message(self.id, self.flags, self.seq, &self.attrs)
    }
}

impl std::ops::Deref for MessageBuilder {
    type Target = AttrBuf;
    fn deref(&self) -> &AttrBuf {
        &self.attrs
    }
}

impl std::ops::DerefMut for MessageBuilder {
    fn deref_mut(&mut self) -> &mut AttrBuf {
        &mut self.attrs
    }
}

/// Frame `attrs` behind a version-1 header.
pub fn encode_message(id: u16, flags: Flags, seq: u32, attrs: &AttrBuf) -> Result<Vec<u8>, Error> {
    attrs.check()?;
    let total = HEADER_LEN + attrs.len();
    if total > MAX_MESSAGE_LEN {
        return Err(Error::Encode(format!(
            "message of {total} bytes exceeds {MAX_MESSAGE_LEN}"
        )));
    }
    let header = Header {
        length: total as u32,
        id,
        flags,
        seq,
        version: PROTOCOL_VERSION,
        reserved: [0; 3],
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(attrs.as_bytes());
    Ok(out)
}

/// An error reply (S20.2/4): flags REPLY|ERROR, ERRNO and ERROR_MSG. The
/// message is cut to ERROR_MSG's 255-byte limit and NULs are replaced, so
/// this never fails.
pub fn encode_error_reply(seq: u32, id: u16, errno: i32, msg: &str) -> Vec<u8> {
    let mut text: String = msg.replace('\0', " ");
    if text.len() > 255 {
        let mut cut = 255;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let mut attrs = AttrBuf::new();
    attrs
        .put_u32(Attr::Errno, errno.unsigned_abs())
        .put_str(Attr::ErrorMsg, &text);
    let mut out = Vec::with_capacity(HEADER_LEN + attrs.len());
    let header = Header {
        length: (HEADER_LEN + attrs.len()) as u32,
        id,
        flags: Flags::REPLY | Flags::ERROR,
        seq,
        version: PROTOCOL_VERSION,
        reserved: [0; 3],
    };
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(attrs.as_bytes());
    out
}

impl WireError {
    /// This error as the error reply the server sends.
    pub fn to_reply(&self) -> Vec<u8> {
        encode_error_reply(self.seq, self.id, self.errno, &self.message)
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// One attribute as found in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttr<'a> {
    /// The type field, flags included.
    pub attr_type: u16,
    /// The payload, padding excluded.
    pub payload: &'a [u8],
}

impl<'a> RawAttr<'a> {
    /// The id (bits 0–13).
    pub fn id(&self) -> u16 {
        self.attr_type & ATTR_ID_MASK
    }

    pub fn is_nested(&self) -> bool {
        self.attr_type & ATTR_F_NESTED != 0
    }

    /// The known attribute this is, if any.
    pub fn attr(&self) -> Option<Attr> {
        Attr::from_number(self.id())
    }

    fn name(&self) -> String {
        match self.attr() {
            Some(a) => a.as_str().to_string(),
            None => format!("attribute {}", self.id()),
        }
    }

    fn fixed<const N: usize>(&self) -> Result<[u8; N], WireError> {
        <[u8; N]>::try_from(self.payload).map_err(|_| {
            WireError::invalid(format!(
                "{} has {} bytes, expected {N}",
                self.name(),
                self.payload.len()
            ))
        })
    }

    pub fn as_u8(&self) -> Result<u8, WireError> {
        self.fixed::<1>().map(|b| b[0])
    }

    pub fn as_u16(&self) -> Result<u16, WireError> {
        self.fixed::<2>().map(u16::from_le_bytes)
    }

    pub fn as_u32(&self) -> Result<u32, WireError> {
        self.fixed::<4>().map(u32::from_le_bytes)
    }

    pub fn as_u64(&self) -> Result<u64, WireError> {
        self.fixed::<8>().map(u64::from_le_bytes)
    }

    /// A 16-byte binary (POOL_UUID, OBJECT_ID).
    pub fn as_id16(&self) -> Result<[u8; 16], WireError> {
        self.fixed::<16>()
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.payload
    }

    /// A string's bytes: one trailing NUL stripped, no NUL inside.
    pub fn as_str_bytes(&self) -> Result<&'a [u8], WireError> {
        let bytes = match self.payload.split_last() {
            Some((0, rest)) => rest,
            _ => self.payload,
        };
        if bytes.contains(&0) {
            return Err(WireError::invalid(format!(
                "{} contains a NUL byte",
                self.name()
            )));
        }
        Ok(bytes)
    }

    /// A string that must be UTF-8.
    pub fn as_str(&self) -> Result<&'a str, WireError> {
        let bytes = self.as_str_bytes()?;
        std::str::from_utf8(bytes)
            .map_err(|_| WireError::invalid(format!("{} is not UTF-8", self.name())))
    }

    /// A string holding a path (any bytes but NUL).
    pub fn as_path(&self) -> Result<&'a Path, WireError> {
        self.as_str_bytes().map(|b| Path::new(OsStr::from_bytes(b)))
    }

    /// The payload as an attribute sequence (structure checked, schema not).
    pub fn as_nested(&self) -> Result<Attrs<'a>, WireError> {
        Attrs::parse(self.payload)
    }

    /// The entries of a nested list, each an attribute sequence.
    pub fn as_list(&self) -> Result<ListIter<'a>, WireError> {
        Ok(ListIter {
            inner: self.as_nested()?.iter(),
        })
    }
}

/// A structurally valid attribute sequence. Lookups return the first
/// attribute with the asked id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// An empty sequence.
    pub const EMPTY: Attrs<'static> = Attrs { buf: &[] };

    /// Check the TLV structure of `buf`: every attribute at least 4 bytes,
    /// inside the buffer, padded with zeros to 4 bytes, bit 14 clear.
    pub fn parse(buf: &'a [u8]) -> Result<Attrs<'a>, WireError> {
        let mut off = 0usize;
        while off < buf.len() {
            let Some(head) = buf.get(off..off + ATTR_HEADER_LEN) else {
                return Err(WireError::invalid(format!(
                    "{} trailing bytes at offset {off} are not an attribute",
                    buf.len() - off
                )));
            };
            let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let attr_type = u16::from_le_bytes([head[2], head[3]]);
            if len < ATTR_HEADER_LEN {
                return Err(WireError::invalid(format!(
                    "attribute at offset {off} has length {len} < 4"
                )));
            }
            let padded = align4(len);
            let Some(padding) = buf.get(off + len..off + padded) else {
                return Err(WireError::invalid(format!(
                    "attribute type {attr_type:#06x} at offset {off} (length {len}) runs past the end ({} bytes)",
                    buf.len()
                )));
            };
            if padding.iter().any(|b| *b != 0) {
                return Err(WireError::invalid(format!(
                    "attribute type {attr_type:#06x} at offset {off} has non-zero padding"
                )));
            }
            if attr_type & ATTR_F_RESERVED != 0 {
                return Err(WireError::invalid(format!(
                    "attribute type {attr_type:#06x} at offset {off} sets reserved bit 14"
                )));
            }
            off += padded;
        }
        Ok(Attrs { buf })
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    pub fn iter(&self) -> AttrIter<'a> {
        AttrIter { buf: self.buf }
    }

    pub fn get(&self, attr: Attr) -> Option<RawAttr<'a>> {
        self.iter().find(|a| a.id() == attr.number())
    }

    pub fn contains(&self, attr: Attr) -> bool {
        self.get(attr).is_some()
    }

    fn typed<T>(
        &self,
        attr: Attr,
        f: impl FnOnce(&RawAttr<'a>) -> Result<T, WireError>,
    ) -> Result<Option<T>, WireError> {
        self.get(attr).map(|a| f(&a)).transpose()
    }

    pub fn get_u8(&self, attr: Attr) -> Result<Option<u8>, WireError> {
        self.typed(attr, RawAttr::as_u8)
    }

    pub fn get_bool(&self, attr: Attr) -> Result<Option<bool>, WireError> {
        Ok(self.get_u8(attr)?.map(|v| v != 0))
    }

    pub fn get_u32(&self, attr: Attr) -> Result<Option<u32>, WireError> {
        self.typed(attr, RawAttr::as_u32)
    }

    pub fn get_u64(&self, attr: Attr) -> Result<Option<u64>, WireError> {
        self.typed(attr, RawAttr::as_u64)
    }

    pub fn get_id16(&self, attr: Attr) -> Result<Option<[u8; 16]>, WireError> {
        self.typed(attr, RawAttr::as_id16)
    }

    pub fn get_bytes(&self, attr: Attr) -> Option<&'a [u8]> {
        self.get(attr).map(|a| a.payload)
    }

    pub fn get_str(&self, attr: Attr) -> Result<Option<&'a str>, WireError> {
        self.typed(attr, RawAttr::as_str)
    }

    pub fn get_path(&self, attr: Attr) -> Result<Option<&'a Path>, WireError> {
        self.typed(attr, RawAttr::as_path)
    }

    pub fn get_list(&self, attr: Attr) -> Result<Option<ListIter<'a>>, WireError> {
        self.typed(attr, RawAttr::as_list)
    }

    pub fn require(&self, attr: Attr) -> Result<RawAttr<'a>, WireError> {
        self.get(attr)
            .ok_or_else(|| WireError::invalid(format!("missing required attribute {attr}")))
    }

    pub fn require_u8(&self, attr: Attr) -> Result<u8, WireError> {
        self.require(attr)?.as_u8()
    }

    pub fn require_bool(&self, attr: Attr) -> Result<bool, WireError> {
        Ok(self.require_u8(attr)? != 0)
    }

    pub fn require_u32(&self, attr: Attr) -> Result<u32, WireError> {
        self.require(attr)?.as_u32()
    }

    pub fn require_u64(&self, attr: Attr) -> Result<u64, WireError> {
        self.require(attr)?.as_u64()
    }

    pub fn require_id16(&self, attr: Attr) -> Result<[u8; 16], WireError> {
        self.require(attr)?.as_id16()
    }

    pub fn require_str(&self, attr: Attr) -> Result<&'a str, WireError> {
        self.require(attr)?.as_str()
    }

    pub fn require_path(&self, attr: Attr) -> Result<&'a Path, WireError> {
        self.require(attr)?.as_path()
    }

    pub fn require_list(&self, attr: Attr) -> Result<ListIter<'a>, WireError> {
        self.require(attr)?.as_list()
    }

    /// Check every known attribute against the S20.6 schema, recursing into
    /// nested lists. Unknown ids are skipped.
    pub fn validate(&self) -> Result<(), WireError> {
        self.validate_at(0)
    }

    fn validate_at(&self, depth: usize) -> Result<(), WireError> {
        for raw in self.iter() {
            let Some(attr) = raw.attr() else { continue };
            let ty = attr.attr_type();
            if raw.is_nested() && ty != AttrType::NestedList {
                return Err(WireError::invalid(format!(
                    "{attr} is not a nested attribute but has the NESTED bit"
                )));
            }
            validate_payload(attr, ty, &raw, depth)?;
        }
        Ok(())
    }
}

fn validate_payload(
    attr: Attr,
    ty: AttrType,
    raw: &RawAttr<'_>,
    depth: usize,
) -> Result<(), WireError> {
    let len = raw.payload.len();
    match ty {
        AttrType::U8 => raw.as_u8().map(drop),
        AttrType::U32 => raw.as_u32().map(drop),
        AttrType::U64 => raw.as_u64().map(drop),
        AttrType::Binary(n) if len != n => Err(WireError::invalid(format!(
            "{attr} has {len} bytes, expected {n}"
        ))),
        AttrType::Binary(_) => Ok(()),
        AttrType::BinaryMax(n) if len > n => Err(WireError::invalid(format!(
            "{attr} has {len} bytes, at most {n} allowed"
        ))),
        AttrType::BinaryMax(_) => Ok(()),
        AttrType::String(max) => {
            let s = raw.as_str_bytes()?;
            if s.len() > max {
                return Err(WireError::invalid(format!(
                    "{attr} is {} bytes long, at most {max} allowed",
                    s.len()
                )));
            }
            Ok(())
        }
        AttrType::HeatBlob => {
            if !len.is_multiple_of(HEAT_RECORD_LEN) {
                return Err(WireError::invalid(format!(
                    "{attr} has {len} bytes, not a multiple of {HEAT_RECORD_LEN}"
                )));
            }
            let n = len / HEAT_RECORD_LEN;
            if !(1..=MAX_HEAT_RECORDS).contains(&n) {
                return Err(WireError::invalid(format!(
                    "{attr} holds {n} records, expected 1 to {MAX_HEAT_RECORDS}"
                )));
            }
            Ok(())
        }
        AttrType::NestedList => {
            if depth >= MAX_NESTING {
                return Err(WireError::invalid(format!(
                    "{attr} is nested more than {MAX_NESTING} levels deep"
                )));
            }
            for entry in raw.as_list()? {
                entry?.validate_at(depth + 1)?;
            }
            Ok(())
        }
    }
}

/// Iterator over the attributes of a structurally valid sequence.
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttr<'a>;

    fn next(&mut self) -> Option<RawAttr<'a>> {
        // The sequence was checked by `Attrs::parse`; the guards below only
        // make a logic error end iteration instead of panicking.
        let head = self.buf.get(..ATTR_HEADER_LEN)?;
        let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
        let attr_type = u16::from_le_bytes([head[2], head[3]]);
        let payload = self.buf.get(ATTR_HEADER_LEN..len)?;
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some(RawAttr { attr_type, payload })
    }
}

/// Iterator over the entries of a nested list; each entry is parsed (and
/// may be malformed) on the way.
#[derive(Clone, Debug)]
pub struct ListIter<'a> {
    inner: AttrIter<'a>,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = Result<Attrs<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|entry| entry.as_nested())
    }
}

/// A decoded message: its header and its validated attributes.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub header: Header,
    pub attrs: Attrs<'a>,
}

/// A decoded request the data plane can act on.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub header: Header,
    pub command: Command,
    pub attrs: Attrs<'a>,
}

impl Request<'_> {
    pub fn seq(&self) -> u32 {
        self.header.seq
    }

    /// A reply builder for this request (same command, same seq).
    pub fn reply(&self) -> MessageBuilder {
        MessageBuilder::reply(self.command, self.header.seq)
    }

    /// The error reply for this request.
    pub fn error_reply(&self, errno: i32, msg: &str) -> Vec<u8> {
        encode_error_reply(self.header.seq, self.command.number(), errno, msg)
    }
}

/// Check the framing (S20.2/1, /5) and return the header and attribute
/// bytes (structure not yet checked). Errors carry the header's seq and id
/// once those are readable.
pub fn decode_frame(buf: &[u8]) -> Result<(Header, &[u8]), WireError> {
    let header = Header::peek(buf)?;
    let at = |e: WireError| e.at(header.seq, header.id);
    if buf.len() > MAX_MESSAGE_LEN || header.length as usize > MAX_MESSAGE_LEN {
        return Err(at(WireError::new(
            libc::EMSGSIZE,
            format!(
                "message of {} bytes (header says {}) exceeds {MAX_MESSAGE_LEN}",
                buf.len(),
                header.length
            ),
        )));
    }
    if header.version != PROTOCOL_VERSION {
        return Err(at(WireError::new(
            libc::EPROTONOSUPPORT,
            format!(
                "protocol version {} is not supported (this side speaks {PROTOCOL_VERSION})",
                header.version
            ),
        )));
    }
    if header.length as usize != buf.len() {
        return Err(at(WireError::invalid(format!(
            "header length {} does not match the {}-byte datagram",
            header.length,
            buf.len()
        ))));
    }
    if header.reserved != [0; 3] {
        return Err(at(WireError::invalid("reserved header bytes are not zero")));
    }
    Ok((header, &buf[HEADER_LEN..]))
}

/// Parse and schema-check the attribute bytes that follow `header`.
pub fn decode_attrs<'a>(header: &Header, body: &'a [u8]) -> Result<Attrs<'a>, WireError> {
    let attrs = Attrs::parse(body).map_err(|e| e.at(header.seq, header.id))?;
    attrs.validate().map_err(|e| e.at(header.seq, header.id))?;
    Ok(attrs)
}

/// Decode any message: framing plus attribute structure and schema. The id
/// and flags are not judged.
pub fn decode_message(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let (header, body) = decode_frame(buf)?;
    let attrs = decode_attrs(&header, body)?;
    Ok(Message { header, attrs })
}

/// Decode a request as the data plane receives it. Errors carry the errno
/// S20.2/5 assigns and the seq to answer with; send them back with
/// [`WireError::to_reply`].
pub fn decode_request(buf: &[u8]) -> Result<Request<'_>, WireError> {
    let (header, body) = decode_frame(buf)?;
    let at = |e: WireError| e.at(header.seq, header.id);
    let command = match header.message_id() {
        MessageId::Command(c) => c,
        MessageId::Event(e) => {
            return Err(at(WireError::invalid(format!(
                "{e} (id {}) is an event, not a request",
                header.id
            ))));
        }
        MessageId::Unknown(n) => {
            return Err(at(WireError::new(
                libc::EOPNOTSUPP,
                format!("unknown command id {n}"),
            )));
        }
    };
    if header.flags != Flags::REQUEST {
        return Err(at(WireError::invalid(format!(
            "request flags are {:#06x}, expected REQUEST (0x0001)",
            header.flags.bits()
        ))));
    }
    let attrs = decode_attrs(&header, body)?;
    Ok(Request {
        header,
        command,
        attrs,
    })
}

/// Decode a reply as the client receives it. An error reply becomes
/// [`Error::Remote`] with its ERRNO and ERROR_MSG.
pub fn decode_reply(buf: &[u8]) -> Result<Message<'_>, Error> {
    let msg = decode_message(buf)?;
    let flags = msg.header.flags;
    if !flags.contains(Flags::REPLY) {
        return Err(WireError::invalid(format!(
            "expected a reply, got flags {:#06x}",
            flags.bits()
        ))
        .at(msg.header.seq, msg.header.id)
        .into());
    }
    if flags.contains(Flags::ERROR) {
        let errno = msg.attrs.get_u32(Attr::Errno)?.unwrap_or(libc::EIO as u32);
        let message = msg
            .attrs
            .get(Attr::ErrorMsg)
            .map(|a| String::from_utf8_lossy(a.as_str_bytes().unwrap_or(a.payload)).into_owned())
            .unwrap_or_default();
        // An error reply always means failure: a missing, zero or
        // out-of-range ERRNO is reported as EIO rather than as success.
        let errno = match i32::try_from(errno) {
            Ok(e) if e > 0 => e,
            _ => libc::EIO,
        };
        return Err(Error::Remote { errno, message });
    }
    Ok(msg)
}
