//! Typed events (S20.5) and the entries of nested lists (TIERS, OBJECTS,
//! STATUS_ITEMS).
//!
//! Owns: the event structs, their encoders (used by the data plane) and
//! decoders (used by the control plane and `smoothfs events`). Must never
//! fail a stream because of something a newer peer may send: unknown event
//! ids decode as [`Event::Unknown`], unknown attributes are ignored, unknown
//! state and pin bytes decode as `failed` / `none` (S20.7/2). A malformed
//! known event (for example a heat blob whose length is not a multiple of
//! 56) is an error for that event only.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::codec::{AttrBuf, Attrs, MessageBuilder, decode_attrs, decode_frame};
use crate::error::{Error, WireError};
use crate::heat::{self, HeatRecord};
use crate::ids::{
    Attr, EventId, Flags, MovementState, ObjectKind, PinState, PolicyPin, TierCaps, TierState,
};

/// One tier as listed in TIERS (entry i + 1 is rank i).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierInfo {
    pub rank: u8,
    pub caps: TierCaps,
    /// The tier root.
    pub tier_path: PathBuf,
    /// The tier UUID string (TIER_ID).
    pub tier_id: String,
    pub state: TierState,
    /// The tier can back passthrough handles (S1.3/6).
    pub passthrough: bool,
}

impl TierInfo {
    pub fn encode(&self, w: &mut AttrBuf) {
        w.put_u8(Attr::TierRank, self.rank)
            .put_u32(Attr::TierCaps, self.caps.bits())
            .put_path(Attr::TierPath, &self.tier_path)
            .put_str(Attr::TierId, &self.tier_id)
            .put_u8(Attr::TierState, self.state.number())
            .put_bool(Attr::Passthrough, self.passthrough);
    }

    pub fn decode(a: &Attrs<'_>) -> Result<TierInfo, WireError> {
        Ok(TierInfo {
            rank: a.require_u8(Attr::TierRank)?,
            caps: TierCaps(a.require_u32(Attr::TierCaps)?),
            tier_path: a.require_path(Attr::TierPath)?.to_path_buf(),
            tier_id: a.get_str(Attr::TierId)?.unwrap_or_default().to_string(),
            state: TierState::from_wire(a.get_u8(Attr::TierState)?.unwrap_or(0)),
            passthrough: a.get_bool(Attr::Passthrough)?.unwrap_or(false),
        })
    }
}

/// One object as listed in OBJECTS (LIST_OBJECTS reply, S7.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEntry {
    pub oid: [u8; 16],
    pub kind: ObjectKind,
    pub current_tier: u8,
    pub movement_state: MovementState,
    pub pin_state: PinState,
    pub policy_pin: PolicyPin,
    pub mediated: bool,
    pub size_bytes: u64,
    pub mtime_ns: u64,
    pub nlink: u32,
    pub object_gen: u32,
    pub rel_path: PathBuf,
}

impl ObjectEntry {
    pub fn encode(&self, w: &mut AttrBuf) {
        w.put_bytes(Attr::ObjectId, &self.oid)
            .put_u8(Attr::ObjectKind, self.kind.number())
            .put_u8(Attr::CurrentTier, self.current_tier)
            .put_u8(Attr::MovementState, self.movement_state.number())
            .put_u8(Attr::PinState, self.pin_state.number())
            .put_u8(Attr::PolicyPin, self.policy_pin.number())
            .put_bool(Attr::Mediated, self.mediated)
            .put_u64(Attr::SizeBytes, self.size_bytes)
            .put_u64(Attr::MtimeNs, self.mtime_ns)
            .put_u32(Attr::Nlink, self.nlink)
            .put_u32(Attr::ObjectGen, self.object_gen)
            .put_path(Attr::RelPath, &self.rel_path);
    }

    pub fn decode(a: &Attrs<'_>) -> Result<ObjectEntry, WireError> {
        Ok(ObjectEntry {
            oid: a.require_id16(Attr::ObjectId)?,
            kind: ObjectKind::from_wire(a.require_u8(Attr::ObjectKind)?),
            current_tier: a.require_u8(Attr::CurrentTier)?,
            movement_state: MovementState::from_wire(a.require_u8(Attr::MovementState)?),
            pin_state: PinState::from_wire(a.get_u8(Attr::PinState)?.unwrap_or(0)),
            policy_pin: PolicyPin::from_wire(a.get_u8(Attr::PolicyPin)?.unwrap_or(0)),
            mediated: a.get_bool(Attr::Mediated)?.unwrap_or(false),
            size_bytes: a.require_u64(Attr::SizeBytes)?,
            mtime_ns: a.get_u64(Attr::MtimeNs)?.unwrap_or(0),
            nlink: a.get_u32(Attr::Nlink)?.unwrap_or(1),
            object_gen: a.get_u32(Attr::ObjectGen)?.unwrap_or(0),
            rel_path: a.require_path(Attr::RelPath)?.to_path_buf(),
        })
    }
}

/// One NAME/VALUE pair of STATUS_ITEMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusItem {
    pub name: String,
    pub value: String,
}

impl StatusItem {
    pub fn encode(&self, w: &mut AttrBuf) {
        w.put_str(Attr::Name, &self.name)
            .put_str(Attr::Value, &self.value);
    }

    pub fn decode(a: &Attrs<'_>) -> Result<StatusItem, WireError> {
        Ok(StatusItem {
            name: a.require_str(Attr::Name)?.to_string(),
            value: a.require_str(Attr::Value)?.to_string(),
        })
    }
}

/// Decode every entry of the nested list `attr` with `f`; a missing list is
/// an empty one.
pub fn decode_list<T>(
    attrs: &Attrs<'_>,
    attr: Attr,
    f: impl Fn(&Attrs<'_>) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let Some(list) = attrs.get_list(attr)? else {
        return Ok(Vec::new());
    };
    list.map(|entry| f(&entry?)).collect()
}

fn pool_uuid(a: &Attrs<'_>) -> Result<Uuid, WireError> {
    a.require_id16(Attr::PoolUuid).map(Uuid::from_bytes)
}

/// MOUNT_READY: the first event on every subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountReady {
    pub pool_uuid: Uuid,
    pub pool_name: String,
    /// xxh32 of the UUID bytes, seed 0.
    pub fsid: u32,
    pub any_spill_since_mount: bool,
    /// Ordered by rank.
    pub tiers: Vec<TierInfo>,
    pub protocol_version: u32,
    pub journal_seq: u64,
}

/// HEAT_SAMPLE: up to 256 heat records (S6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeatSample {
    pub pool_uuid: Uuid,
    pub records: Vec<HeatRecord>,
}

/// MOVE_STATE: one data-plane movement transition (S9.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveState {
    pub pool_uuid: Uuid,
    pub oid: [u8; 16],
    pub movement_state: MovementState,
    pub transaction_seq: u64,
    pub current_tier: u8,
    pub intended_tier: u8,
    /// Present for `failed` only.
    pub failure_reason: Option<String>,
}

/// TIER_FAULT (S23).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierFault {
    pub pool_uuid: Uuid,
    pub pool_name: String,
    pub fsid: u32,
    pub any_spill_since_mount: bool,
    pub tier_rank: u8,
    pub tier_state: TierState,
    pub fault_errno: u32,
}

/// SPILL: a create or write landed on a slower tier than the first one
/// tried (S5.2, S5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spill {
    pub pool_uuid: Uuid,
    /// Always true in a SPILL (ANY_SPILL_SINCE_MOUNT = 1).
    pub any_spill_since_mount: bool,
    pub oid: [u8; 16],
    /// The first tier tried (wire: CURRENT_TIER).
    pub first_tier: u8,
    /// The tier used (wire: INTENDED_TIER).
    pub landed_tier: u8,
    pub size_bytes: u64,
    pub rel_path: PathBuf,
}

/// TIER_RESUMED (S23.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierResumed {
    pub pool_uuid: Uuid,
    pub tier_rank: u8,
    pub tier_state: TierState,
}

/// OBJECT_REMOVED: the last name of an object was removed (S7.4/2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRemoved {
    pub pool_uuid: Uuid,
    pub oid: [u8; 16],
    pub object_gen: u32,
}

/// An event of any kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    MountReady(MountReady),
    HeatSample(HeatSample),
    MoveState(MoveState),
    TierFault(TierFault),
    Spill(Spill),
    TierResumed(TierResumed),
    ObjectRemoved(ObjectRemoved),
    /// An event id this crate does not know; clients skip it (S20.7/2).
    Unknown(u16),
}

/// An event with its delivery header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// Per-connection event counter, from 1.
    pub seq: u32,
    /// Events were dropped before this one (LOSS).
    pub loss: bool,
    pub event: Event,
}

impl Event {
    /// The wire id.
    pub fn id(&self) -> u16 {
        match self {
            Event::MountReady(_) => EventId::MountReady.number(),
            Event::HeatSample(_) => EventId::HeatSample.number(),
            Event::MoveState(_) => EventId::MoveState.number(),
            Event::TierFault(_) => EventId::TierFault.number(),
            Event::Spill(_) => EventId::Spill.number(),
            Event::TierResumed(_) => EventId::TierResumed.number(),
            Event::ObjectRemoved(_) => EventId::ObjectRemoved.number(),
            Event::Unknown(id) => *id,
        }
    }

    /// The spec name (`MOVE_STATE`), or `UNKNOWN`.
    pub fn name(&self) -> &'static str {
        EventId::from_number(self.id()).map_or("UNKNOWN", EventId::as_str)
    }

    /// Encode as an event message with the given per-connection seq.
    /// [`Event::Unknown`] cannot be encoded.
    pub fn encode(&self, seq: u32, loss: bool) -> Result<Vec<u8>, Error> {
        let Some(id) = EventId::from_number(self.id()) else {
            return Err(Error::Encode(format!("unknown event id {}", self.id())));
        };
        let mut m = MessageBuilder::event(id, seq);
        if loss {
            m.set_flags(Flags::EVENT | Flags::LOSS);
        }
        match self {
            Event::MountReady(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_str(Attr::PoolName, &e.pool_name)
                    .put_u32(Attr::Fsid, e.fsid)
                    .put_bool(Attr::AnySpillSinceMount, e.any_spill_since_mount)
                    .put_list(Attr::Tiers, &e.tiers, |w, t| t.encode(w))
                    .put_u32(Attr::ProtocolVersion, e.protocol_version)
                    .put_u64(Attr::JournalSeq, e.journal_seq);
            }
            Event::HeatSample(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_bytes(Attr::HeatSampleBlob, &heat::encode_blob(&e.records));
            }
            Event::MoveState(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_bytes(Attr::ObjectId, &e.oid)
                    .put_u8(Attr::MovementState, e.movement_state.number())
                    .put_u64(Attr::TransactionSeq, e.transaction_seq)
                    .put_u8(Attr::CurrentTier, e.current_tier)
                    .put_u8(Attr::IntendedTier, e.intended_tier);
                if let Some(reason) = &e.failure_reason {
                    m.put_str(Attr::FailureReason, reason);
                }
            }
            Event::TierFault(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_str(Attr::PoolName, &e.pool_name)
                    .put_u32(Attr::Fsid, e.fsid)
                    .put_bool(Attr::AnySpillSinceMount, e.any_spill_since_mount)
                    .put_u8(Attr::TierRank, e.tier_rank)
                    .put_u8(Attr::TierState, e.tier_state.number())
                    .put_u32(Attr::FaultErrno, e.fault_errno);
            }
            Event::Spill(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_bool(Attr::AnySpillSinceMount, e.any_spill_since_mount)
                    .put_bytes(Attr::ObjectId, &e.oid)
                    .put_u8(Attr::CurrentTier, e.first_tier)
                    .put_u8(Attr::IntendedTier, e.landed_tier)
                    .put_u64(Attr::SizeBytes, e.size_bytes)
                    .put_path(Attr::RelPath, &e.rel_path);
            }
            Event::TierResumed(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_u8(Attr::TierRank, e.tier_rank)
                    .put_u8(Attr::TierState, e.tier_state.number());
            }
            Event::ObjectRemoved(e) => {
                m.put_bytes(Attr::PoolUuid, e.pool_uuid.as_bytes())
                    .put_bytes(Attr::ObjectId, &e.oid)
                    .put_u32(Attr::ObjectGen, e.object_gen);
            }
            Event::Unknown(_) => {}
        }
        m.finish()
    }

    /// Decode the attributes of a known event id.
    pub fn decode_attrs(id: EventId, a: &Attrs<'_>) -> Result<Event, WireError> {
        Ok(match id {
            EventId::MountReady => Event::MountReady(MountReady {
                pool_uuid: pool_uuid(a)?,
                pool_name: a.require_str(Attr::PoolName)?.to_string(),
                fsid: a.require_u32(Attr::Fsid)?,
                any_spill_since_mount: a.get_bool(Attr::AnySpillSinceMount)?.unwrap_or(false),
                tiers: decode_list(a, Attr::Tiers, TierInfo::decode)?,
                protocol_version: a.get_u32(Attr::ProtocolVersion)?.unwrap_or(1),
                journal_seq: a.get_u64(Attr::JournalSeq)?.unwrap_or(0),
            }),
            EventId::HeatSample => Event::HeatSample(HeatSample {
                pool_uuid: pool_uuid(a)?,
                records: heat::decode_blob(a.require(Attr::HeatSampleBlob)?.as_bytes())?,
            }),
            EventId::MoveState => Event::MoveState(MoveState {
                pool_uuid: pool_uuid(a)?,
                oid: a.require_id16(Attr::ObjectId)?,
                movement_state: MovementState::from_wire(a.require_u8(Attr::MovementState)?),
                transaction_seq: a.require_u64(Attr::TransactionSeq)?,
                current_tier: a.require_u8(Attr::CurrentTier)?,
                intended_tier: a.require_u8(Attr::IntendedTier)?,
                failure_reason: a.get_str(Attr::FailureReason)?.map(str::to_string),
            }),
            EventId::TierFault => Event::TierFault(TierFault {
                pool_uuid: pool_uuid(a)?,
                pool_name: a.get_str(Attr::PoolName)?.unwrap_or_default().to_string(),
                fsid: a.get_u32(Attr::Fsid)?.unwrap_or(0),
                any_spill_since_mount: a.get_bool(Attr::AnySpillSinceMount)?.unwrap_or(false),
                tier_rank: a.require_u8(Attr::TierRank)?,
                tier_state: TierState::from_wire(a.require_u8(Attr::TierState)?),
                fault_errno: a.get_u32(Attr::FaultErrno)?.unwrap_or(0),
            }),
            EventId::Spill => Event::Spill(Spill {
                pool_uuid: pool_uuid(a)?,
                any_spill_since_mount: a.get_bool(Attr::AnySpillSinceMount)?.unwrap_or(true),
                oid: a.require_id16(Attr::ObjectId)?,
                first_tier: a.require_u8(Attr::CurrentTier)?,
                landed_tier: a.require_u8(Attr::IntendedTier)?,
                size_bytes: a.get_u64(Attr::SizeBytes)?.unwrap_or(0),
                rel_path: a
                    .get_path(Attr::RelPath)?
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            }),
            EventId::TierResumed => Event::TierResumed(TierResumed {
                pool_uuid: pool_uuid(a)?,
                tier_rank: a.require_u8(Attr::TierRank)?,
                tier_state: TierState::from_wire(a.get_u8(Attr::TierState)?.unwrap_or(0)),
            }),
            EventId::ObjectRemoved => Event::ObjectRemoved(ObjectRemoved {
                pool_uuid: pool_uuid(a)?,
                oid: a.require_id16(Attr::ObjectId)?,
                object_gen: a.get_u32(Attr::ObjectGen)?.unwrap_or(0),
            }),
        })
    }
}

/// Decode one event message. An unknown event id gives [`Event::Unknown`]
/// without looking at its attributes; a malformed known event is an error
/// for that event only.
pub fn decode_event(buf: &[u8]) -> Result<ReceivedEvent, WireError> {
    let (header, body) = decode_frame(buf)?;
    if !header.flags.contains(Flags::EVENT) {
        return Err(WireError::invalid(format!(
            "expected an event, got id {} with flags {:#06x}",
            header.id,
            header.flags.bits()
        ))
        .at(header.seq, header.id));
    }
    let loss = header.flags.contains(Flags::LOSS);
    let Some(id) = EventId::from_number(header.id) else {
        return Ok(ReceivedEvent {
            seq: header.seq,
            loss,
            event: Event::Unknown(header.id),
        });
    };
    let attrs = decode_attrs(&header, body)?;
    let event = Event::decode_attrs(id, &attrs).map_err(|e| {
        let e = e.at(header.seq, header.id);
        WireError {
            message: format!("{id}: {}", e.message),
            ..e
        }
    })?;
    Ok(ReceivedEvent {
        seq: header.seq,
        loss,
        event,
    })
}

/// FSID as MOUNT_READY and TIER_FAULT carry it: xxh32 of the 16 UUID bytes,
/// seed 0 (S20.6).
pub fn fsid_for(pool_uuid: &Uuid) -> u32 {
    xxhash_rust::xxh32::xxh32(pool_uuid.as_bytes(), 0)
}
