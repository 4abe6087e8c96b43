//! Typed requests to a pool's control socket (S20.4) for the commands the
//! worker and the operator CLI use: INSPECT, RESOLVE_PATH, STATUS,
//! MOVE_PLAN, MOVE_CUTOVER, MOVE_CLEANUP, MOVE_ABORT and REVOKE_MAPPINGS.
//!
//! Owns: building each request from typed arguments and decoding each reply
//! into a struct, so no other module touches attribute ids. Must never
//! retry or reinterpret an error reply: an errno from the data plane is
//! returned as [`smoothfs_uapi::Error::Remote`] for the caller to judge.

use std::path::{Path, PathBuf};

use smoothfs_uapi::Result;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::{AttrBuf, Attrs};
use smoothfs_uapi::error::WireError;
use smoothfs_uapi::event::{StatusItem, TierInfo, decode_list};
use smoothfs_uapi::ids::{Attr, Command, MovementState, ObjectKind, PinState, PolicyPin};
use uuid::Uuid;

/// FAILURE_REASON holds at most this many bytes (S20.6).
const FAILURE_REASON_MAX: usize = 255;

fn pool_attrs(pool: &Uuid) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, pool.as_bytes());
    a
}

fn object_attrs(pool: &Uuid, oid: &[u8; 16]) -> AttrBuf {
    let mut a = pool_attrs(pool);
    a.put_bytes(Attr::ObjectId, oid);
    a
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// An INSPECT reply (S20.4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    pub oid: [u8; 16],
    pub kind: ObjectKind,
    pub inode: u64,
    pub current_tier: u8,
    /// Equal to `current_tier` when no plan is in flight.
    pub intended_tier: u8,
    pub movement_state: MovementState,
    /// The effective pin (S8.1/2).
    pub pin_state: PinState,
    pub policy_pin: PolicyPin,
    /// Cutover generation.
    pub generation: u32,
    /// 0 when no plan is in flight.
    pub transaction_seq: u64,
    /// `None` when the data plane did not report one.
    pub write_seq: Option<u64>,
    pub range_staged: bool,
    pub rel_path: PathBuf,
    /// Root of the current tier.
    pub tier_path: PathBuf,
    /// Full path of the current lower file.
    pub lower_path: PathBuf,
    pub size_bytes: u64,
    pub mtime_ns: u64,
    pub nlink: u32,
    pub passthrough_handles: u32,
    pub mediated_handles: u32,
}

impl Inspection {
    pub fn decode(a: &Attrs<'_>) -> std::result::Result<Inspection, WireError> {
        let current_tier = a.require_u8(Attr::CurrentTier)?;
        let rel_path = a
            .get_path(Attr::RelPath)?
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let tier_path = a
            .get_path(Attr::TierPath)?
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let lower_path = match a.get_path(Attr::LowerPath)? {
            Some(p) => p.to_path_buf(),
            None if !tier_path.as_os_str().is_empty() && !rel_path.as_os_str().is_empty() => {
                tier_path.join(&rel_path)
            }
            None => PathBuf::new(),
        };
        Ok(Inspection {
            oid: a.require_id16(Attr::ObjectId)?,
            kind: ObjectKind::from_wire(a.require_u8(Attr::ObjectKind)?),
            inode: a.get_u64(Attr::Inode)?.unwrap_or(0),
            current_tier,
            intended_tier: a.get_u8(Attr::IntendedTier)?.unwrap_or(current_tier),
            movement_state: MovementState::from_wire(a.require_u8(Attr::MovementState)?),
            pin_state: PinState::from_wire(a.get_u8(Attr::PinState)?.unwrap_or(0)),
            policy_pin: PolicyPin::from_wire(a.get_u8(Attr::PolicyPin)?.unwrap_or(0)),
            generation: a.get_u32(Attr::Generation)?.unwrap_or(0),
            transaction_seq: a.get_u64(Attr::TransactionSeq)?.unwrap_or(0),
            write_seq: a.get_u64(Attr::WriteSeq)?,
            range_staged: a.get_u8(Attr::RangeStaged)?.unwrap_or(0) != 0,
            rel_path,
            tier_path,
            lower_path,
            size_bytes: a.get_u64(Attr::SizeBytes)?.unwrap_or(0),
            mtime_ns: a.get_u64(Attr::MtimeNs)?.unwrap_or(0),
            nlink: a.get_u32(Attr::Nlink)?.unwrap_or(1),
            passthrough_handles: a.get_u32(Attr::PassthroughHandles)?.unwrap_or(0),
            mediated_handles: a.get_u32(Attr::MediatedHandles)?.unwrap_or(0),
        })
    }
}

/// INSPECT(POOL_UUID, OBJECT_ID).
pub fn inspect(c: &mut Client, pool: &Uuid, oid: &[u8; 16]) -> Result<Inspection> {
    let reply = c.request(Command::Inspect, &object_attrs(pool, oid))?;
    Ok(Inspection::decode(&reply.attrs())?)
}

/// A RESOLVE_PATH reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub oid: [u8; 16],
    pub inode: u64,
    pub kind: ObjectKind,
    pub current_tier: u8,
}

/// RESOLVE_PATH(POOL_UUID, REL_PATH): `rel_path` is relative to the pool
/// root, without a leading `/`.
pub fn resolve_path(c: &mut Client, pool: &Uuid, rel_path: &Path) -> Result<Resolved> {
    let mut req = pool_attrs(pool);
    req.put_path(Attr::RelPath, rel_path);
    let reply = c.request(Command::ResolvePath, &req)?;
    let a = reply.attrs();
    Ok(Resolved {
        oid: a.require_id16(Attr::ObjectId)?,
        inode: a.get_u64(Attr::Inode)?.unwrap_or(0),
        kind: ObjectKind::from_wire(a.get_u8(Attr::ObjectKind)?.unwrap_or(0)),
        current_tier: a.require_u8(Attr::CurrentTier)?,
    })
}

/// A STATUS reply: status items and tiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    pub items: Vec<StatusItem>,
    /// In rank order as listed.
    pub tiers: Vec<TierInfo>,
}

impl PoolStatus {
    pub fn item(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.value.as_str())
    }

    pub fn tier(&self, rank: u8) -> Option<&TierInfo> {
        self.tiers.iter().find(|t| t.rank == rank)
    }
}

/// STATUS(POOL_UUID).
pub fn status(c: &mut Client, pool: &Uuid) -> Result<PoolStatus> {
    let reply = c.request(Command::Status, &pool_attrs(pool))?;
    let a = reply.attrs();
    Ok(PoolStatus {
        items: decode_list(&a, Attr::StatusItems, StatusItem::decode)?,
        tiers: decode_list(&a, Attr::Tiers, TierInfo::decode)?,
    })
}

/// An accepted MOVE_PLAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `<dest root>/.smoothfs/incoming/<oid hex>-<seq>`.
    pub staging_path: PathBuf,
    /// The current lower file, when reported.
    pub lower_path: Option<PathBuf>,
    pub movement_state: MovementState,
}

/// MOVE_PLAN(POOL_UUID, OBJECT_ID, INTENDED_TIER, TRANSACTION_SEQ[, FORCE]).
pub fn move_plan(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    intended_tier: u8,
    transaction_seq: u64,
    force: bool,
) -> Result<Plan> {
    let mut req = object_attrs(pool, oid);
    req.put_u8(Attr::IntendedTier, intended_tier)
        .put_u64(Attr::TransactionSeq, transaction_seq);
    if force {
        req.put_u8(Attr::Force, 1);
    }
    let reply = c.request(Command::MovePlan, &req)?;
    let a = reply.attrs();
    Ok(Plan {
        staging_path: a.require_path(Attr::StagingPath)?.to_path_buf(),
        lower_path: a.get_path(Attr::LowerPath)?.map(Path::to_path_buf),
        movement_state: MovementState::from_wire(
            a.get_u8(Attr::MovementState)?
                .unwrap_or(MovementState::PlanAccepted.number()),
        ),
    })
}

/// A successful MOVE_CUTOVER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cutover {
    /// The new cutover generation.
    pub generation: u32,
    pub current_tier: u8,
    pub lower_path: PathBuf,
}

/// MOVE_CUTOVER(POOL_UUID, OBJECT_ID, TRANSACTION_SEQ[, WRITE_SEQ]).
pub fn move_cutover(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    transaction_seq: u64,
    write_seq: Option<u64>,
) -> Result<Cutover> {
    let mut req = object_attrs(pool, oid);
    req.put_u64(Attr::TransactionSeq, transaction_seq);
    if let Some(w) = write_seq {
        req.put_u64(Attr::WriteSeq, w);
    }
    let reply = c.request(Command::MoveCutover, &req)?;
    let a = reply.attrs();
    Ok(Cutover {
        generation: a.get_u32(Attr::Generation)?.unwrap_or(0),
        current_tier: a.require_u8(Attr::CurrentTier)?,
        lower_path: a
            .get_path(Attr::LowerPath)?
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    })
}

/// A MOVE_CLEANUP reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cleanup {
    pub movement_state: MovementState,
    /// 0 = source removed; otherwise why it was not (S9.2/3).
    pub cleanup_errno: u32,
}

/// MOVE_CLEANUP(POOL_UUID, OBJECT_ID, TRANSACTION_SEQ).
pub fn move_cleanup(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    transaction_seq: u64,
) -> Result<Cleanup> {
    let mut req = object_attrs(pool, oid);
    req.put_u64(Attr::TransactionSeq, transaction_seq);
    let reply = c.request(Command::MoveCleanup, &req)?;
    let a = reply.attrs();
    Ok(Cleanup {
        movement_state: MovementState::from_wire(
            a.get_u8(Attr::MovementState)?
                .unwrap_or(MovementState::Placed.number()),
        ),
        cleanup_errno: a.get_u32(Attr::CleanupErrno)?.unwrap_or(0),
    })
}

/// MOVE_ABORT(POOL_UUID, OBJECT_ID, TRANSACTION_SEQ[, FAILURE_REASON]); the
/// reason is cut to 255 bytes. Returns the object's state afterwards.
pub fn move_abort(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    transaction_seq: u64,
    reason: Option<&str>,
) -> Result<MovementState> {
    let mut req = object_attrs(pool, oid);
    req.put_u64(Attr::TransactionSeq, transaction_seq);
    if let Some(r) = reason {
        req.put_str(
            Attr::FailureReason,
            &truncate_utf8(r, FAILURE_REASON_MAX).replace('\0', " "),
        );
    }
    let reply = c.request(Command::MoveAbort, &req)?;
    Ok(MovementState::from_wire(
        reply
            .attrs()
            .get_u8(Attr::MovementState)?
            .unwrap_or(MovementState::Placed.number()),
    ))
}

/// REVOKE_MAPPINGS(POOL_UUID, OBJECT_ID): later opens become mediated.
/// Returns the passthrough handles still open.
pub fn revoke_mappings(c: &mut Client, pool: &Uuid, oid: &[u8; 16]) -> Result<u32> {
    let reply = c.request(Command::RevokeMappings, &object_attrs(pool, oid))?;
    Ok(reply
        .attrs()
        .get_u32(Attr::PassthroughHandles)?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspection_decodes_and_derives_lower_path() {
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::ObjectId, &[7; 16])
            .put_u8(Attr::ObjectKind, 1)
            .put_u8(Attr::CurrentTier, 0)
            .put_u8(Attr::MovementState, 1)
            .put_u8(Attr::PinState, 4)
            .put_u64(Attr::WriteSeq, 9)
            .put_u64(Attr::TransactionSeq, 33)
            .put_str(Attr::RelPath, "d/f")
            .put_str(Attr::TierPath, "/t0")
            .put_u32(Attr::Nlink, 1);
        let attrs = Attrs::parse(a.as_bytes()).unwrap();
        let i = Inspection::decode(&attrs).unwrap();
        assert_eq!(i.oid, [7; 16]);
        assert_eq!(i.kind, ObjectKind::Regular);
        assert_eq!(i.movement_state, MovementState::PlanAccepted);
        assert_eq!(i.pin_state, PinState::PinLease);
        assert_eq!(i.write_seq, Some(9));
        assert_eq!(i.transaction_seq, 33);
        assert_eq!(i.intended_tier, 0);
        assert_eq!(i.lower_path, PathBuf::from("/t0/d/f"));
    }

    #[test]
    fn failure_reason_is_cut_on_a_char_boundary() {
        let s = "é".repeat(200);
        let t = truncate_utf8(&s, 255);
        assert!(t.len() <= 255);
        assert_eq!(t.len(), 254);
        assert_eq!(truncate_utf8("short", 255), "short");
    }
}
