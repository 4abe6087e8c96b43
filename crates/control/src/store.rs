//! The control plane's SQLite store (SPEC S22.1): pools and tiers, one row
//! per object, the append-only movement log, pin rules, evacuation jobs and
//! `control_plane_config`.
//!
//! Owns: the schema and its forward-only migrations (`user_version`), the
//! row-level effect of every control-plane movement transition (S9.3), the
//! retry schedule on failure (S9.5), pool registration on discovery
//! (S22.2/2–4), inventory sync (S7.4), the transaction seq (S10.1/2) and
//! the timestamp format (S22.1/4). Must never: change a row's movement
//! state without appending exactly the log row S9.3 asks for in the same
//! transaction, update or reorder movement-log rows, or open a store whose
//! schema is newer than this build knows.
//!
//! One writer: a [`Store`] owns one connection; the daemon serialises its
//! use. Writes that must not interleave with another process's (pool
//! registration, migrations) take SQLite's write lock up front
//! (`BEGIN IMMEDIATE`).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use smoothfs_uapi::event::{MountReady, ObjectEntry};
use smoothfs_uapi::ids::{MovementState, ObjectKind, PinState, PolicyPin};
use uuid::Uuid;

use crate::config::PolicyConfig;
use crate::heat;
use crate::planner::{Blocker, PlanObject};

/// The schema version this build writes; `user_version` of a current store.
pub const SCHEMA_VERSION: u32 = 1;

/// Default store location (S22.1/1).
pub const DEFAULT_PATH: &str = "/var/lib/smoothfs/smoothfs.db";

/// Movement-log page size: default and cap (S26.3).
pub const LOG_PAGE_DEFAULT: usize = 100;
pub const LOG_PAGE_MAX: usize = 500;

/// A refusal is logged at most once per object per this many seconds
/// (S9.3/4).
pub const DEFERRAL_LOG_INTERVAL_SECS: u64 = 3600;

/// `stale` rows are deleted this long after they became stale (S7.4/3).
pub const STALE_RETENTION_SECS: u64 = 7 * 86400;

/// Migrations, in order: entry i takes `user_version` i to i + 1. Never
/// edit a released entry; append a new one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

/// Version 1: the S22.1 schema.
const SCHEMA_V1: &str = r#"
CREATE TABLE placement_domains (
    id           TEXT PRIMARY KEY NOT NULL,
    backend_kind TEXT NOT NULL DEFAULT 'smoothfs'
);

CREATE TABLE tier_targets (
    id                 TEXT PRIMARY KEY NOT NULL,
    name               TEXT NOT NULL,
    placement_domain   TEXT NOT NULL REFERENCES placement_domains(id),
    backend_kind       TEXT NOT NULL DEFAULT 'smoothfs',
    rank               INTEGER NOT NULL CHECK (rank BETWEEN 0 AND 7),
    target_fill_pct    INTEGER NOT NULL DEFAULT 90 CHECK (target_fill_pct BETWEEN 1 AND 100),
    full_threshold_pct INTEGER NOT NULL DEFAULT 98 CHECK (full_threshold_pct BETWEEN 1 AND 100),
    backing_ref        TEXT NOT NULL DEFAULT '',
    UNIQUE (placement_domain, rank)
);
CREATE INDEX tier_targets_domain_kind_rank
    ON tier_targets(placement_domain, backend_kind, rank);

CREATE TABLE managed_namespaces (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    placement_domain TEXT NOT NULL REFERENCES placement_domains(id),
    backend_kind     TEXT NOT NULL DEFAULT 'smoothfs',
    backend_ref      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX managed_namespaces_kind_ref ON managed_namespaces(backend_kind, backend_ref);
CREATE INDEX managed_namespaces_kind_name ON managed_namespaces(backend_kind, name);

CREATE TABLE smoothfs_objects (
    object_id                  TEXT PRIMARY KEY NOT NULL
        CHECK (length(object_id) = 32 AND object_id NOT GLOB '*[^0-9a-f]*'),
    namespace_id               TEXT NOT NULL REFERENCES managed_namespaces(id),
    current_tier_id            TEXT NOT NULL REFERENCES tier_targets(id),
    intended_tier_id           TEXT NULL REFERENCES tier_targets(id),
    movement_state             TEXT NOT NULL DEFAULT 'placed' CHECK (movement_state IN (
        'placed', 'plan_accepted', 'destination_reserved', 'copy_in_progress',
        'copy_complete', 'copy_verified', 'cutover_in_progress', 'switched',
        'cleanup_in_progress', 'cleanup_complete', 'failed', 'stale')),
    pin_state                  TEXT NOT NULL DEFAULT 'none' CHECK (pin_state IN (
        'none', 'pin_hot', 'pin_cold', 'pin_hardlink', 'pin_lease', 'pin_lun')),
    policy_pin                 TEXT NOT NULL DEFAULT 'none'
        CHECK (policy_pin IN ('none', 'pin_hot', 'pin_cold')),
    pin_origin                 TEXT NOT NULL DEFAULT '',
    mediated                   INTEGER NOT NULL DEFAULT 0 CHECK (mediated IN (0, 1)),
    transaction_seq            INTEGER NOT NULL DEFAULT 0 CHECK (transaction_seq >= 0),
    last_committed_cutover_gen INTEGER NOT NULL DEFAULT 0,
    object_gen                 INTEGER NOT NULL DEFAULT 0,
    size_bytes                 INTEGER NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    mtime_ns                   INTEGER NOT NULL DEFAULT 0,
    failure_reason             TEXT NOT NULL DEFAULT '',
    deferred_reason            TEXT NOT NULL DEFAULT '',
    attempts                   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at            TEXT NULL,
    ewma_value                 REAL DEFAULT 0.0,
    last_heat_sample_at        TEXT NULL,
    last_movement_at           TEXT NULL,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    rel_path                   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX smoothfs_objects_namespace ON smoothfs_objects(namespace_id);
CREATE INDEX smoothfs_objects_namespace_path ON smoothfs_objects(namespace_id, rel_path);
CREATE INDEX smoothfs_objects_namespace_tier ON smoothfs_objects(namespace_id, current_tier_id);
CREATE INDEX smoothfs_objects_namespace_active ON smoothfs_objects(namespace_id, movement_state)
    WHERE movement_state NOT IN ('placed', 'stale');

CREATE TABLE smoothfs_movement_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id       TEXT NOT NULL,
    namespace_id    TEXT NOT NULL DEFAULT '',
    transaction_seq INTEGER NOT NULL DEFAULT 0,
    from_state      TEXT NULL,
    to_state        TEXT NOT NULL,
    source_tier     TEXT NOT NULL DEFAULT '',
    dest_tier       TEXT NOT NULL DEFAULT '',
    payload_json    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload_json)),
    written_at      TEXT NOT NULL
);
CREATE INDEX smoothfs_movement_log_object ON smoothfs_movement_log(object_id, id);
CREATE INDEX smoothfs_movement_log_written ON smoothfs_movement_log(written_at);
CREATE TRIGGER smoothfs_movement_log_append_only
    BEFORE UPDATE ON smoothfs_movement_log
    BEGIN SELECT RAISE(ABORT, 'smoothfs_movement_log is append-only'); END;

CREATE TABLE smoothfs_pin_rules (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace_id TEXT NOT NULL REFERENCES managed_namespaces(id),
    pattern      TEXT NOT NULL CHECK (pattern != ''),
    pin          TEXT NOT NULL CHECK (pin IN ('none', 'pin_hot', 'pin_cold')),
    mediated     INTEGER NOT NULL DEFAULT 0 CHECK (mediated IN (0, 1)),
    created_at   TEXT NOT NULL
);

CREATE TABLE smoothfs_evacuations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace_id    TEXT NOT NULL REFERENCES managed_namespaces(id),
    tier_id         TEXT NOT NULL REFERENCES tier_targets(id),
    state           TEXT NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'paused', 'complete', 'cancelled')),
    objects_total   INTEGER NOT NULL DEFAULT 0,
    objects_done    INTEGER NOT NULL DEFAULT 0,
    objects_blocked INTEGER NOT NULL DEFAULT 0,
    bytes_total     INTEGER NOT NULL DEFAULT 0,
    bytes_done      INTEGER NOT NULL DEFAULT 0,
    reason          TEXT NOT NULL DEFAULT '',
    started_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT NULL
);

CREATE TABLE control_plane_config (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
"#;

// ---------------------------------------------------------------------------
// Timestamps (S22.1/4)
// ---------------------------------------------------------------------------

/// A UTC instant with nanosecond resolution, stored as RFC 3339 text with
/// nine fractional digits (`2025-01-02T03:04:05.123456789Z`). Stored stamps
/// of that form sort as text in time order, which the log retention and
/// `--since` queries rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const NANOS_PER_SEC: i64 = 1_000_000_000;

impl Timestamp {
    /// 1970-01-01T00:00:00Z. Also what an unparsable stored time reads as
    /// where the spec says it "counts as old enough" (S22.4/8).
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub const fn from_unix_nanos(ns: i64) -> Timestamp {
        Timestamp(ns)
    }

    pub const fn from_unix_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(NANOS_PER_SEC))
    }

    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// This instant plus `secs` seconds, saturating.
    pub fn add_secs(self, secs: u64) -> Timestamp {
        let ns = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_SEC);
        Timestamp(self.0.saturating_add(ns))
    }

    /// This instant minus `secs` seconds, saturating.
    pub fn sub_secs(self, secs: u64) -> Timestamp {
        let ns = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_SEC);
        Timestamp(self.0.saturating_sub(ns))
    }

    /// Seconds from `earlier` to this instant (negative when `earlier` is
    /// later).
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (i128::from(self.0) - i128::from(earlier.0)) as f64 / NANOS_PER_SEC as f64
    }

    /// RFC 3339, UTC, nine fractional digits.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC);
        let days = secs.div_euclid(86400);
        let sod = secs.rem_euclid(86400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }

    /// Parse RFC 3339 (`T` or space between date and time, optional
    /// fraction of any length, `Z` or a `±HH:MM` offset) and the legacy
    /// `YYYY-MM-DD HH:MM:SS` (no zone: UTC). Surrounding whitespace is
    /// ignored.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.trim().as_bytes();
        if b.len() < 19 {
            return None;
        }
        let year = digits(b, 0, 4)?;
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let min = digits(b, 14, 2)?;
        let sec = digits(b, 17, 2)?;
        if b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                if i - start < 9 {
                    nanos = nanos * 10 + i64::from(c - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return None;
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
        let mut offset = 0i64;
        match b.get(i) {
            None => {}
            Some(b'Z' | b'z') => i += 1,
            Some(&sign @ (b'+' | b'-')) => {
                let oh = digits(b, i + 1, 2)?;
                let mut j = i + 3;
                if b.get(j) == Some(&b':') {
                    j += 1;
                }
                let om = digits(b, j, 2)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                offset = (oh * 3600 + om * 60) * if sign == b'-' { -1 } else { 1 };
                i = j + 2;
            }
            Some(_) => return None,
        }
        if i != b.len() {
            return None;
        }
        let secs =
            days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset;
        Some(Timestamp(
            secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)?,
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A stored time as the planner reads it: NULL is `None`; an unparsable
/// value counts as long ago (S22.4/8).
fn stamp_or_epoch(s: Option<&str>) -> Option<Timestamp> {
    s.map(|s| Timestamp::parse(s).unwrap_or(Timestamp::UNIX_EPOCH))
}

// ---------------------------------------------------------------------------
// Object ids
// ---------------------------------------------------------------------------

/// The store form of an OID: 32 lowercase hex digits.
pub fn oid_hex(oid: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in oid {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parse 32 hex digits (either case) into an OID.
pub fn parse_oid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut oid = [0u8; 16];
    for (i, out) in oid.iter_mut().enumerate() {
        *out = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(oid)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("opening store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("creating the store directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "store schema version {found} is newer than this smoothfs supports ({supported}); \
         run a newer smoothfs or restore a store backup made by this version"
    )]
    FutureSchema { found: i64, supported: u32 },
    #[error("migrating the store to schema version {version}: {source}")]
    Migration {
        version: u32,
        source: rusqlite::Error,
    },
    #[error("no object {0} in the store")]
    NoSuchObject(String),
    #[error("object {oid}: {transition} is not allowed from {from}")]
    InvalidTransition {
        oid: String,
        from: MovementState,
        transition: Transition,
    },
    #[error("pool {pool}: {message}")]
    Discovery { pool: String, message: String },
    #[error("store row is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Transitions (S9.3)
// ---------------------------------------------------------------------------

/// A control-plane change of an object's movement state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// One step of a move (S9.3/1), `plan_accepted` … `cleanup_complete`.
    Step(MovementState),
    /// A failure before the switch (S9.3/3).
    Fail,
    /// A refusal: the row stays or returns to `placed` (S9.3/4).
    Defer,
    /// `smoothfs move abort` (S9.6/2).
    Abort,
    /// W12: back to `placed` on the destination (S10.2/12).
    Finalise,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transition::Step(s) => write!(f, "a move to {s}"),
            Transition::Fail => f.write_str("recording a failure"),
            Transition::Defer => f.write_str("recording a refusal"),
            Transition::Abort => f.write_str("an operator abort"),
            Transition::Finalise => f.write_str("finalising a move"),
        }
    }
}

impl Transition {
    /// Whether a row in `from` may take this transition.
    pub fn allowed_from(self, from: MovementState) -> bool {
        use MovementState::*;
        let before_switch = matches!(
            from,
            Placed
                | Failed
                | PlanAccepted
                | DestinationReserved
                | CopyInProgress
                | CopyComplete
                | CopyVerified
                | CutoverInProgress
        );
        match self {
            Transition::Step(to) => match to {
                PlanAccepted => matches!(from, Placed | Failed),
                DestinationReserved => from == PlanAccepted,
                CopyInProgress => from == DestinationReserved,
                CopyComplete => from == CopyInProgress,
                CopyVerified => from == CopyComplete,
                CutoverInProgress => from == CopyVerified,
                Switched => from == CutoverInProgress,
                CleanupInProgress => from == Switched,
                CleanupComplete => from == CleanupInProgress,
                Placed | Failed | Stale => false,
            },
            Transition::Fail | Transition::Defer => before_switch,
            Transition::Abort => matches!(
                from,
                PlanAccepted | DestinationReserved | CopyInProgress | CopyComplete | CopyVerified
            ),
            Transition::Finalise => matches!(from, Switched | CleanupInProgress | CleanupComplete),
        }
    }
}

// ---------------------------------------------------------------------------
// Row types
// ---------------------------------------------------------------------------

/// One `tier_targets` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierTarget {
    pub id: String,
    pub name: String,
    pub rank: u8,
    pub target_fill_pct: u8,
    pub full_threshold_pct: u8,
    /// The tier's lower directory.
    pub backing_ref: String,
}

/// A registered pool: its namespace row and its tiers, ordered by rank
/// (contiguous from 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRecord {
    pub namespace_id: String,
    pub name: String,
    pub placement_domain: String,
    /// The pool UUID string (may be empty for an operator-made row that
    /// was never discovered).
    pub backend_ref: String,
    pub tiers: Vec<TierTarget>,
}

impl PoolRecord {
    pub fn tier(&self, rank: u8) -> Option<&TierTarget> {
        self.tiers.get(usize::from(rank))
    }

    pub fn tier_by_id(&self, id: &str) -> Option<&TierTarget> {
        self.tiers.iter().find(|t| t.id == id)
    }

    pub fn rank_of(&self, tier_id: &str) -> Option<u8> {
        self.tier_by_id(tier_id).map(|t| t.rank)
    }
}

/// One tier as a MOUNT_READY lists it; an empty path means "not given".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredTier {
    pub rank: u8,
    pub path: PathBuf,
}

/// What discovery knows about a mounted pool (S22.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolDiscovery {
    pub uuid: Uuid,
    pub name: String,
    pub tiers: Vec<DiscoveredTier>,
}

impl From<&MountReady> for PoolDiscovery {
    fn from(m: &MountReady) -> PoolDiscovery {
        PoolDiscovery {
            uuid: m.pool_uuid,
            name: m.pool_name.clone(),
            tiers: m
                .tiers
                .iter()
                .map(|t| DiscoveredTier {
                    rank: t.rank,
                    path: t.tier_path.clone(),
                })
                .collect(),
        }
    }
}

/// One `smoothfs_objects` row. Times are the stored text (NULL = `None`);
/// see [`Timestamp::parse`].
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectRow {
    pub object_id: [u8; 16],
    pub namespace_id: String,
    pub current_tier_id: String,
    pub intended_tier_id: Option<String>,
    pub movement_state: MovementState,
    /// The effective pin (S8.1/2).
    pub pin_state: PinState,
    pub policy_pin: PolicyPin,
    pub pin_origin: String,
    pub mediated: bool,
    pub transaction_seq: u64,
    pub last_committed_cutover_gen: u64,
    pub object_gen: u64,
    pub size_bytes: u64,
    pub mtime_ns: u64,
    pub failure_reason: String,
    pub deferred_reason: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub ewma_value: Option<f64>,
    pub last_heat_sample_at: Option<String>,
    pub last_movement_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub rel_path: String,
}

impl ObjectRow {
    /// Heat as of `now` (S7.2).
    pub fn heat_now(&self, now: Timestamp, half_life_secs: f64) -> f64 {
        heat::heat_now(
            self.ewma_value.unwrap_or(0.0),
            self.last_heat_sample_at
                .as_deref()
                .and_then(Timestamp::parse),
            now,
            half_life_secs,
        )
    }
}

const OBJECT_COLUMNS: &str = "object_id, namespace_id, current_tier_id, intended_tier_id, \
     movement_state, pin_state, policy_pin, pin_origin, mediated, transaction_seq, \
     last_committed_cutover_gen, object_gen, size_bytes, mtime_ns, failure_reason, \
     deferred_reason, attempts, next_attempt_at, ewma_value, last_heat_sample_at, \
     last_movement_at, created_at, updated_at, rel_path";

fn conversion_error(idx: usize, what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        Type::Text,
        format!("{what} {value:?} is not valid").into(),
    )
}

fn text_at<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(idx)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn opt_text_at<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<Option<&'r str>> {
    row.get_ref(idx)?
        .as_str_or_null()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn u64_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    Ok(v.max(0) as u64)
}

fn oid_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 16]> {
    let s = text_at(row, idx)?;
    parse_oid(s).ok_or_else(|| conversion_error(idx, "object id", s))
}

// The store holds the exact lowercase names (CHECK constraints), so the
// common ones are matched directly before the case-insensitive lookup.

fn state_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<MovementState> {
    let s = text_at(row, idx)?;
    match s {
        "placed" => Ok(MovementState::Placed),
        "failed" => Ok(MovementState::Failed),
        _ => MovementState::from_name(s).ok_or_else(|| conversion_error(idx, "movement state", s)),
    }
}

fn pin_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<PinState> {
    let s = text_at(row, idx)?;
    match s {
        "none" => Ok(PinState::None),
        _ => PinState::from_name(s).ok_or_else(|| conversion_error(idx, "pin", s)),
    }
}

fn policy_pin_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<PolicyPin> {
    let s = text_at(row, idx)?;
    match s {
        "none" => Ok(PolicyPin::None),
        _ => PolicyPin::from_name(s).ok_or_else(|| conversion_error(idx, "policy pin", s)),
    }
}

fn object_from_row(r: &Row<'_>) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        object_id: oid_at(r, 0)?,
        namespace_id: r.get(1)?,
        current_tier_id: r.get(2)?,
        intended_tier_id: r.get(3)?,
        movement_state: state_at(r, 4)?,
        pin_state: pin_at(r, 5)?,
        policy_pin: policy_pin_at(r, 6)?,
        pin_origin: r.get(7)?,
        mediated: r.get::<_, i64>(8)? != 0,
        transaction_seq: u64_at(r, 9)?,
        last_committed_cutover_gen: u64_at(r, 10)?,
        object_gen: u64_at(r, 11)?,
        size_bytes: u64_at(r, 12)?,
        mtime_ns: u64_at(r, 13)?,
        failure_reason: r.get(14)?,
        deferred_reason: r.get(15)?,
        attempts: u64_at(r, 16)?.min(u64::from(u32::MAX)) as u32,
        next_attempt_at: r.get(17)?,
        ewma_value: r.get(18)?,
        last_heat_sample_at: r.get(19)?,
        last_movement_at: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
        rel_path: r.get(23)?,
    })
}

/// A row to create for an object the store has not seen (S7.3 after
/// INSPECT, or inventory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewObject {
    pub oid: [u8; 16],
    pub namespace_id: String,
    pub current_tier_id: String,
    pub rel_path: String,
    pub size_bytes: u64,
    pub mtime_ns: u64,
    pub pin_state: PinState,
    pub policy_pin: PolicyPin,
    pub mediated: bool,
    pub object_gen: u32,
}

/// What one inventory page did (S7.4/1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InventoryStats {
    /// Rows created (ewma 0, never sampled).
    pub created: usize,
    /// `placed` or `failed` rows refreshed.
    pub updated: usize,
    /// `stale` rows whose object is listed again.
    pub revived: usize,
    /// Rows whose size or mtime changed, so `attempts` went back to 0
    /// (S9.5/2).
    pub attempts_reset: usize,
    /// Rows left alone because a move is in flight.
    pub in_flight: usize,
    /// Entries that are not regular files.
    pub not_regular: usize,
    /// Entries on a rank the pool record does not have.
    pub unknown_tier: usize,
}

/// The plan a transition belongs to (S10.1): its seq and tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveRef<'a> {
    pub transaction_seq: u64,
    pub source_tier_id: &'a str,
    pub dest_tier_id: &'a str,
    /// W4's relative path, stored at `plan_accepted`; empty = unchanged.
    pub rel_path: &'a str,
}

/// The retry schedule after a failure (S9.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureSchedule {
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    /// `attempts` reached `smoothfs_retry_max_attempts`: the row waits for
    /// `smoothfs move retry` or a size/mtime change.
    pub exhausted: bool,
    pub log_id: i64,
}

/// What recording a refusal did (S9.3/4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferral {
    pub next_attempt_at: Timestamp,
    /// The log row appended, if any (none when this object's last refusal
    /// was logged less than an hour ago and nothing else changed).
    pub log_id: Option<i64>,
}

/// What recovery (S19.2) concluded about one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Row `placed` on its current tier, intended NULL.
    RolledBack { reason: String },
    /// Row `placed` on its intended tier: `last_movement_at` = now,
    /// cutover gen + 1.
    Forwarded { reason: String },
    /// The object is gone: row `stale`.
    Gone { reason: String },
    /// A `failed` row keeps its schedule but points at the data plane's
    /// current tier.
    FailedOn { tier_id: String },
}

/// One movement-log row (S26.3).
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    pub id: i64,
    pub object_id: String,
    pub namespace_id: String,
    /// The object's current path, when its row still exists.
    pub path: Option<String>,
    pub transaction_seq: u64,
    pub from_state: Option<MovementState>,
    pub to_state: MovementState,
    pub source_tier: String,
    pub dest_tier: String,
    pub payload: serde_json::Value,
    pub written_at: String,
}

impl LogRow {
    /// The `smoothfs log --json` form (S26.3).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object_id": self.object_id,
            "path": self.path,
            "transaction_seq": self.transaction_seq,
            "from_state": self.from_state.map(|s| s.as_str()),
            "to_state": self.to_state.as_str(),
            "source_tier": self.source_tier,
            "dest_tier": self.dest_tier,
            "payload": self.payload,
            "written_at": self.written_at,
        })
    }
}

/// A movement-log query: newest first, optionally filtered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    pub namespace_id: Option<String>,
    pub object_id: Option<[u8; 16]>,
    pub to_state: Option<MovementState>,
    /// Rows written at or after this time.
    pub since: Option<Timestamp>,
    /// Rows with a smaller id (paging backwards).
    pub before_id: Option<i64>,
    /// Capped at [`LOG_PAGE_MAX`]; 0 means [`LOG_PAGE_DEFAULT`].
    pub limit: usize,
}

impl Default for LogQuery {
    fn default() -> LogQuery {
        LogQuery {
            namespace_id: None,
            object_id: None,
            to_state: None,
            since: None,
            before_id: None,
            limit: LOG_PAGE_DEFAULT,
        }
    }
}

/// One `smoothfs_pin_rules` row (S8.6/2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRule {
    pub id: i64,
    pub namespace_id: String,
    pub pattern: String,
    pub pin: PolicyPin,
    pub mediated: bool,
    pub created_at: String,
}

/// `smoothfs_evacuations.state` (S24.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvacuationState {
    Running,
    Paused,
    Complete,
    Cancelled,
}

impl EvacuationState {
    pub fn as_str(self) -> &'static str {
        match self {
            EvacuationState::Running => "running",
            EvacuationState::Paused => "paused",
            EvacuationState::Complete => "complete",
            EvacuationState::Cancelled => "cancelled",
        }
    }

    pub fn from_name(s: &str) -> Option<EvacuationState> {
        [
            EvacuationState::Running,
            EvacuationState::Paused,
            EvacuationState::Complete,
            EvacuationState::Cancelled,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// Complete and cancelled jobs are finished.
    pub fn is_finished(self) -> bool {
        matches!(self, EvacuationState::Complete | EvacuationState::Cancelled)
    }
}

/// Progress counters of an evacuation job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvacuationProgress {
    pub objects_total: u64,
    pub objects_done: u64,
    pub objects_blocked: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

/// One `smoothfs_evacuations` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvacuationRow {
    pub id: i64,
    pub namespace_id: String,
    pub tier_id: String,
    pub state: EvacuationState,
    pub progress: EvacuationProgress,
    pub reason: String,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn payload(pairs: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// The control plane's store: one SQLite connection.
pub struct Store {
    conn: Connection,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.conn.path())
            .finish()
    }
}

impl Store {
    /// Open (creating if needed) the store at `path` and bring its schema
    /// up to [`SCHEMA_VERSION`]. A store written by a newer smoothfs is
    /// refused with [`StoreError::FutureSchema`].
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn)
    }

    /// A private in-memory store (tests, dry runs).
    pub fn open_in_memory() -> Result<Store> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(journal_mode = %mode, "store: WAL journal mode is not available");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // 64 MiB of page cache: inventory and planning walk every row of a
        // pool, and its indexes do not fit SQLite's 8 MiB default.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// The connection, for modules of this crate that run their own
    /// statements (heat ingest).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    // -- pools ---------------------------------------------------------------

    /// The pool registered for this UUID or name, without changing
    /// anything (S22.2/2 lookup order).
    pub fn find_pool(&self, uuid: &Uuid, name: &str) -> Result<Option<PoolRecord>> {
        let Some(ns) = find_namespace(&self.conn, &uuid.to_string(), name)? else {
            return Ok(None);
        };
        Ok(Some(load_pool(&self.conn, ns)?))
    }

    /// The pool whose namespace id is `namespace_id`.
    pub fn pool(&self, namespace_id: &str) -> Result<Option<PoolRecord>> {
        let ns = self
            .conn
            .query_row(
                "SELECT id, name, placement_domain, backend_ref FROM managed_namespaces \
                 WHERE id = ?1",
                [namespace_id],
                namespace_from_row,
            )
            .optional()?;
        ns.map(|ns| load_pool(&self.conn, ns)).transpose()
    }

    /// Every `smoothfs` namespace, by id.
    pub fn pools(&self) -> Result<Vec<PoolRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, placement_domain, backend_ref FROM managed_namespaces \
             WHERE backend_kind = 'smoothfs' ORDER BY id",
        )?;
        let rows: Vec<NamespaceRow> = stmt
            .query_map([], namespace_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|ns| load_pool(&self.conn, ns))
            .collect()
    }

    /// Discovery of a mounted pool (S22.2/2–4): find its namespace by UUID,
    /// then by name, or register it (placement domain, one `tier<rank>`
    /// row per tier, namespace named after the pool with the UUID as
    /// `backend_ref`); then refresh each listed tier's `backing_ref` from
    /// the event and check every rank 0..n has a lower directory. On error
    /// nothing is written.
    pub fn register_pool(&mut self, d: &PoolDiscovery) -> Result<PoolRecord> {
        let uuid = d.uuid.to_string();
        let fail = |message: String| StoreError::Discovery {
            pool: if d.name.is_empty() {
                uuid.clone()
            } else {
                format!("{} ({uuid})", d.name)
            },
            message,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ns = match find_namespace(&tx, &uuid, &d.name)? {
            Some(mut ns) => {
                if ns.backend_ref.is_empty() {
                    tx.execute(
                        "UPDATE managed_namespaces SET backend_ref = ?2 WHERE id = ?1",
                        params![ns.id, uuid],
                    )?;
                    ns.backend_ref = uuid.clone();
                }
                ns
            }
            None => {
                if d.tiers.is_empty() {
                    return Err(fail("the pool has no tiers".into()));
                }
                let domain = Uuid::new_v4().to_string();
                let id = Uuid::new_v4().to_string();
                let name = if d.name.is_empty() { &uuid } else { &d.name };
                tx.execute(
                    "INSERT INTO placement_domains (id, backend_kind) VALUES (?1, 'smoothfs')",
                    [&domain],
                )?;
                tx.execute(
                    "INSERT INTO managed_namespaces \
                     (id, name, placement_domain, backend_kind, backend_ref) \
                     VALUES (?1, ?2, ?3, 'smoothfs', ?4)",
                    params![id, name, domain, uuid],
                )?;
                tracing::info!(pool = %name, uuid = %uuid, namespace = %id, "store: pool registered");
                NamespaceRow {
                    id,
                    name: name.clone(),
                    placement_domain: domain,
                    backend_ref: uuid.clone(),
                }
            }
        };
        for t in &d.tiers {
            if t.rank > 7 {
                return Err(fail(format!("tier rank {} is out of range 0-7", t.rank)));
            }
            let path = t.path.to_string_lossy();
            if path.is_empty() {
                // The stored backing_ref must do; checked below, together
                // with ranks that have a row but no path.
                if !tier_row_exists(&tx, &ns.placement_domain, t.rank)? {
                    return Err(fail(format!(
                        "tier rank {} has no lower directory: no tier_targets row \
                         and MOUNT_READY gave no TIER_PATH",
                        t.rank
                    )));
                }
                continue;
            }
            let updated = tx.execute(
                "UPDATE tier_targets SET backing_ref = ?3 \
                 WHERE placement_domain = ?1 AND rank = ?2 AND backing_ref != ?3",
                params![ns.placement_domain, t.rank, path],
            )?;
            if !tier_row_exists(&tx, &ns.placement_domain, t.rank)? {
                tx.execute(
                    "INSERT INTO tier_targets \
                     (id, name, placement_domain, backend_kind, rank, backing_ref) \
                     VALUES (?1, ?2, ?3, 'smoothfs', ?4, ?5)",
                    params![
                        Uuid::new_v4().to_string(),
                        format!("tier{}", t.rank),
                        ns.placement_domain,
                        t.rank,
                        path
                    ],
                )?;
            } else if updated > 0 {
                tracing::info!(rank = t.rank, path = %path, "store: tier path refreshed");
            }
        }
        let pool = load_pool(&tx, ns)?;
        if pool.tiers.is_empty() {
            return Err(fail("the pool has no tiers".into()));
        }
        for (i, t) in pool.tiers.iter().enumerate() {
            if usize::from(t.rank) != i {
                return Err(fail(format!(
                    "tier ranks are not contiguous from 0 (rank {i} is missing)"
                )));
            }
            if t.backing_ref.is_empty() {
                return Err(fail(format!(
                    "tier rank {i} has no lower directory: backing_ref is empty \
                     and MOUNT_READY gave no TIER_PATH"
                )));
            }
        }
        tx.commit()?;
        Ok(pool)
    }

    /// Set a tier's fill thresholds (`target_fill_pct`, `full_threshold_pct`).
    pub fn set_tier_thresholds(&mut self, tier_id: &str, target: u8, full: u8) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE tier_targets SET target_fill_pct = ?2, full_threshold_pct = ?3 WHERE id = ?1",
            params![tier_id, target, full],
        )? > 0)
    }

    // -- objects -------------------------------------------------------------

    pub fn object(&self, oid: &[u8; 16]) -> Result<Option<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM smoothfs_objects WHERE object_id = ?1"
        ))?;
        Ok(stmt.query_row([oid_hex(oid)], object_from_row).optional()?)
    }

    /// The non-stale row with this path in this namespace.
    pub fn object_by_path(&self, namespace_id: &str, rel_path: &str) -> Result<Option<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM smoothfs_objects \
             WHERE namespace_id = ?1 AND rel_path = ?2 AND movement_state != 'stale' \
             ORDER BY updated_at DESC LIMIT 1"
        ))?;
        Ok(stmt
            .query_row([namespace_id, rel_path], object_from_row)
            .optional()?)
    }

    /// Rows of a namespace in OID order, `limit` at a time after `after`
    /// (for paging), optionally only those in `state`.
    pub fn objects(
        &self,
        namespace_id: &str,
        state: Option<MovementState>,
        after: Option<&[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM smoothfs_objects \
             WHERE namespace_id = ?1 AND (?2 IS NULL OR movement_state = ?2) \
             AND object_id > ?3 ORDER BY object_id LIMIT ?4"
        ))?;
        let after = after.map(oid_hex).unwrap_or_default();
        let rows = stmt.query_map(
            params![
                namespace_id,
                state.map(|s| s.as_str()),
                after,
                sql_u64(limit as u64)
            ],
            object_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Rows recovery must look at (S19.2/1): neither `placed` nor `stale`.
    pub fn recovery_rows(&self, namespace_id: &str) -> Result<Vec<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM smoothfs_objects \
             WHERE namespace_id = ?1 AND movement_state NOT IN ('placed', 'stale') \
             ORDER BY object_id"
        ))?;
        let rows = stmt.query_map([namespace_id], object_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Row count per movement state of a namespace.
    pub fn state_counts(&self, namespace_id: &str) -> Result<Vec<(MovementState, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT movement_state, count(*) FROM smoothfs_objects \
             WHERE namespace_id = ?1 GROUP BY movement_state",
        )?;
        let rows = stmt.query_map([namespace_id], |r| Ok((state_at(r, 0)?, u64_at(r, 1)?)))?;
        let mut out: Vec<(MovementState, u64)> = rows.collect::<rusqlite::Result<_>>()?;
        out.sort();
        Ok(out)
    }

    /// Create a `placed` row (ewma 0, never sampled), or revive a `stale`
    /// row with the same OID. Returns whether a row was written; an
    /// existing live row is left alone.
    pub fn insert_object(&mut self, o: &NewObject, now: Timestamp) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = insert_object_tx(&tx, o, &now.to_rfc3339())?;
        tx.commit()?;
        Ok(n)
    }

    /// Apply one LIST_OBJECTS page (S7.4/1) in one transaction: create rows
    /// for regular files without one, refresh tier, path, size, mtime and
    /// pins of `placed` and `failed` rows (resetting `attempts` when size or
    /// mtime changed, S9.5/2), revive `stale` rows that are listed again,
    /// and leave rows with a move in flight alone.
    pub fn sync_inventory_page(
        &mut self,
        pool: &PoolRecord,
        entries: &[ObjectEntry],
        now: Timestamp,
    ) -> Result<InventoryStats> {
        let now_s = now.to_rfc3339();
        let mut stats = InventoryStats::default();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut select = tx.prepare_cached(
                "SELECT movement_state, size_bytes, mtime_ns, attempts FROM smoothfs_objects \
                 WHERE object_id = ?1",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE smoothfs_objects SET current_tier_id = ?2, rel_path = ?3, \
                 size_bytes = ?4, mtime_ns = ?5, pin_state = ?6, policy_pin = ?7, \
                 mediated = ?8, object_gen = ?9, updated_at = ?10, \
                 attempts = CASE WHEN ?11 THEN 0 ELSE attempts END, \
                 next_attempt_at = CASE WHEN ?11 THEN NULL ELSE next_attempt_at END \
                 WHERE object_id = ?1",
            )?;
            for e in entries {
                if e.kind != ObjectKind::Regular {
                    stats.not_regular += 1;
                    continue;
                }
                let Some(tier) = pool.tier(e.current_tier) else {
                    stats.unknown_tier += 1;
                    continue;
                };
                let oid = oid_hex(&e.oid);
                let existing = select
                    .query_row([&oid], |r| {
                        Ok((state_at(r, 0)?, u64_at(r, 1)?, u64_at(r, 2)?, u64_at(r, 3)?))
                    })
                    .optional()?;
                let rel_path = e.rel_path.to_string_lossy();
                match existing {
                    None | Some((MovementState::Stale, ..)) => {
                        let new = NewObject {
                            oid: e.oid,
                            namespace_id: pool.namespace_id.clone(),
                            current_tier_id: tier.id.clone(),
                            rel_path: rel_path.into_owned(),
                            size_bytes: e.size_bytes,
                            mtime_ns: e.mtime_ns,
                            pin_state: e.pin_state,
                            policy_pin: e.policy_pin,
                            mediated: e.mediated,
                            object_gen: e.object_gen,
                        };
                        insert_object_tx(&tx, &new, &now_s)?;
                        if existing.is_some() {
                            stats.revived += 1;
                        } else {
                            stats.created += 1;
                        }
                    }
                    Some((
                        MovementState::Placed | MovementState::Failed,
                        size,
                        mtime,
                        attempts,
                    )) => {
                        let changed = size != e.size_bytes || mtime != e.mtime_ns;
                        let reset = changed && attempts > 0;
                        update.execute(params![
                            oid,
                            tier.id,
                            rel_path,
                            sql_u64(e.size_bytes),
                            sql_u64(e.mtime_ns),
                            e.pin_state.as_str(),
                            e.policy_pin.as_str(),
                            e.mediated,
                            e.object_gen,
                            now_s,
                            reset
                        ])?;
                        stats.updated += 1;
                        stats.attempts_reset += usize::from(reset);
                    }
                    Some(_) => stats.in_flight += 1,
                }
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    /// After a full listing: mark `stale` every `placed` or `failed` row of
    /// the namespace whose OID was not listed (S7.4/1). Rows with a move in
    /// flight are left to the worker and recovery. Returns the count.
    pub fn mark_unlisted_stale(
        &mut self,
        namespace_id: &str,
        listed: &HashSet<[u8; 16]>,
        now: Timestamp,
    ) -> Result<usize> {
        let now_s = now.to_rfc3339();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let missing: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT object_id FROM smoothfs_objects \
                 WHERE namespace_id = ?1 AND movement_state IN ('placed', 'failed')",
            )?;
            let mut rows = stmt.query([namespace_id])?;
            let mut missing = Vec::new();
            while let Some(r) = rows.next()? {
                let oid = oid_at(r, 0)?;
                if !listed.contains(&oid) {
                    missing.push(oid_hex(&oid));
                }
            }
            missing
        };
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE smoothfs_objects SET movement_state = 'stale', intended_tier_id = NULL, \
                 updated_at = ?2 WHERE object_id = ?1",
            )?;
            for oid in &missing {
                stmt.execute(params![oid, now_s])?;
            }
        }
        tx.commit()?;
        Ok(missing.len())
    }

    /// OBJECT_REMOVED (S7.4/2): the row becomes `stale` whatever its state.
    /// Returns false when there is no live row.
    pub fn mark_stale(&mut self, oid: &[u8; 16], now: Timestamp) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE smoothfs_objects SET movement_state = 'stale', intended_tier_id = NULL, \
             updated_at = ?2 WHERE object_id = ?1 AND movement_state != 'stale'",
            params![oid_hex(oid), now.to_rfc3339()],
        )? > 0)
    }

    /// Delete `stale` rows that became stale before `cutoff` (S7.4/3; the
    /// caller passes now − [`STALE_RETENTION_SECS`]). Their log rows stay.
    pub fn delete_stale_rows(&mut self, cutoff: Timestamp) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM smoothfs_objects WHERE movement_state = 'stale' AND updated_at < ?1",
            [cutoff.to_rfc3339()],
        )?)
    }

    /// Record the pins and mediated flag the data plane reports (PIN_SET
    /// reply, INSPECT). `origin` is `explicit`, `rule` or ''.
    pub fn set_pins(
        &mut self,
        oid: &[u8; 16],
        pin_state: PinState,
        policy_pin: PolicyPin,
        origin: &str,
        mediated: bool,
        now: Timestamp,
    ) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE smoothfs_objects SET pin_state = ?2, policy_pin = ?3, pin_origin = ?4, \
             mediated = ?5, updated_at = ?6 WHERE object_id = ?1",
            params![
                oid_hex(oid),
                pin_state.as_str(),
                policy_pin.as_str(),
                origin,
                mediated,
                now.to_rfc3339()
            ],
        )? > 0)
    }

    /// The planner's view of a pool (S22.3/2): every non-stale row with its
    /// tier rank and heat as of `now` (S7.2). Rows on a tier the pool
    /// record does not list are skipped. A `placed` row whose refusal
    /// backoff is running carries the refusal as a [`Blocker`] when the
    /// deferred reason names one. The caller sets
    /// [`PlanObject::in_flight`] for queued plans.
    pub fn planning_objects(
        &self,
        pool: &PoolRecord,
        now: Timestamp,
        half_life_secs: f64,
    ) -> Result<Vec<PlanObject>> {
        // A table scan (`+namespace_id` keeps SQLite off the namespace
        // index): the pool's rows are most of the table, and walking the
        // index costs a row lookup per entry.
        let mut stmt = self.conn.prepare_cached(
            "SELECT object_id, current_tier_id, movement_state, pin_state, policy_pin, \
             size_bytes, attempts, next_attempt_at, ewma_value, last_heat_sample_at, \
             last_movement_at, created_at, deferred_reason FROM smoothfs_objects \
             WHERE +namespace_id = ?1 AND movement_state != 'stale'",
        )?;
        let mut rows = stmt.query([&pool.namespace_id])?;
        let mut out = Vec::with_capacity(1024);
        while let Some(r) = rows.next()? {
            let tier_id = text_at(r, 1)?;
            let Some(tier) = pool.tiers.iter().find(|t| t.id == tier_id) else {
                continue;
            };
            let state = state_at(r, 2)?;
            let last_sample = opt_text_at(r, 9)?;
            let ewma = match r.get_ref(8)? {
                ValueRef::Real(v) => v,
                ValueRef::Integer(v) => v as f64,
                _ => 0.0,
            };
            // S7.1/2: an unparsable sample stamp means "no decay" for the
            // heat, and "long ago" for idle demotion.
            let sampled = last_sample.map(Timestamp::parse);
            let heat = heat::heat_now(ewma, sampled.flatten(), now, half_life_secs);
            let next_attempt_at = stamp_or_epoch(opt_text_at(r, 7)?);
            let blocker = if next_attempt_at.is_some_and(|t| t > now) {
                Blocker::from_deferred_reason(text_at(r, 12)?)
            } else {
                None
            };
            out.push(PlanObject {
                oid: oid_at(r, 0)?,
                tier: tier.rank,
                heat,
                size_bytes: u64_at(r, 5)?,
                policy_pin: policy_pin_at(r, 4)?,
                pin: pin_at(r, 3)?,
                state,
                attempts: u64_at(r, 6)?.min(u64::from(u32::MAX)) as u32,
                next_attempt_at,
                created_at: stamp_or_epoch(Some(text_at(r, 11)?)),
                last_movement_at: stamp_or_epoch(opt_text_at(r, 10)?),
                last_heat_sample_at: sampled.map(|t| t.unwrap_or(Timestamp::UNIX_EPOCH)),
                in_flight: false,
                blocker,
            });
        }
        Ok(out)
    }

    // -- movement ------------------------------------------------------------

    /// The next transaction seq for a pool (S10.1/2): one more than the
    /// largest seq in its rows and its log. The daemon calls this once per
    /// pool and counts up in memory.
    pub fn next_transaction_seq(&self, namespace_id: &str) -> Result<u64> {
        let max: Option<i64> = self.conn.query_row(
            "SELECT max(m) FROM ( \
               SELECT max(transaction_seq) AS m FROM smoothfs_objects WHERE namespace_id = ?1 \
               UNION ALL \
               SELECT max(transaction_seq) FROM smoothfs_movement_log WHERE namespace_id = ?1)",
            [namespace_id],
            |r| r.get(0),
        )?;
        Ok(max.unwrap_or(0).max(0) as u64 + 1)
    }

    /// Opens the transaction of a move step at `now` for `oid`, if the
    /// row's state allows `t`.
    fn begin_step(&mut self, oid: &[u8; 16], t: Transition, now: Timestamp) -> Result<Step<'_>> {
        let now = now.to_rfc3339();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (from, namespace) = check_transition(&tx, oid, t)?;
        Ok(Step {
            tx,
            from,
            namespace,
            hex: oid_hex(oid),
            now,
        })
    }

    /// One step of a move (S9.3/1–2): updates the row and appends exactly
    /// one log row in one transaction. `plan_accepted` also stores the
    /// seq, the intended tier and W4's path and clears the deferred
    /// reason; `switched` makes the destination current. `detail` (if any)
    /// goes into the log payload. Returns the log row id.
    pub fn set_state(
        &mut self,
        oid: &[u8; 16],
        state: MovementState,
        mv: &MoveRef<'_>,
        detail: &str,
        now: Timestamp,
    ) -> Result<i64> {
        let step = self.begin_step(oid, Transition::Step(state), now)?;
        let (tx, hex, now_s) = (&step.tx, &step.hex, &step.now);
        match state {
            MovementState::PlanAccepted => {
                tx.execute(
                    "UPDATE smoothfs_objects SET movement_state = ?2, intended_tier_id = ?3, \
                     transaction_seq = ?4, deferred_reason = '', \
                     rel_path = CASE WHEN ?5 = '' THEN rel_path ELSE ?5 END, updated_at = ?6 \
                     WHERE object_id = ?1",
                    params![
                        hex,
                        state.as_str(),
                        mv.dest_tier_id,
                        sql_u64(mv.transaction_seq),
                        mv.rel_path,
                        now_s
                    ],
                )?;
            }
            MovementState::Switched => {
                tx.execute(
                    "UPDATE smoothfs_objects SET movement_state = ?2, current_tier_id = ?3, \
                     updated_at = ?4 WHERE object_id = ?1",
                    params![hex, state.as_str(), mv.dest_tier_id, now_s],
                )?;
            }
            _ => {
                tx.execute(
                    "UPDATE smoothfs_objects SET movement_state = ?2, updated_at = ?3 \
                     WHERE object_id = ?1",
                    params![hex, state.as_str(), now_s],
                )?;
            }
        }
        let body = if detail.is_empty() {
            "{}".to_string()
        } else {
            payload(&[("detail", detail)])
        };
        let id = step.log(mv, state, &body)?;
        step.tx.commit()?;
        Ok(id)
    }

    /// A failure before the switch (S9.3/3, S9.5/1): row `failed` on its
    /// current tier, intended NULL, `failure_reason`, `attempts` + 1 and
    /// `next_attempt_at` = now + the retry delay; one `failed` log row.
    pub fn record_failure(
        &mut self,
        oid: &[u8; 16],
        mv: &MoveRef<'_>,
        reason: &str,
        policy: &PolicyConfig,
        now: Timestamp,
    ) -> Result<FailureSchedule> {
        let step = self.begin_step(oid, Transition::Fail, now)?;
        let attempts: i64 = step.tx.query_row(
            "SELECT attempts FROM smoothfs_objects WHERE object_id = ?1",
            [&step.hex],
            |r| r.get(0),
        )?;
        let attempts = u32::try_from(attempts.max(0) + 1).unwrap_or(u32::MAX);
        let next = now.add_secs(policy.retry_delay_secs(attempts));
        step.tx.execute(
            "UPDATE smoothfs_objects SET movement_state = 'failed', intended_tier_id = NULL, \
             failure_reason = ?2, attempts = ?3, next_attempt_at = ?4, updated_at = ?5 \
             WHERE object_id = ?1",
            params![step.hex, reason, attempts, next.to_rfc3339(), step.now],
        )?;
        let log_id = step.log(mv, MovementState::Failed, &payload(&[("reason", reason)]))?;
        step.tx.commit()?;
        Ok(FailureSchedule {
            attempts,
            next_attempt_at: next,
            exhausted: policy.attempts_exhausted(attempts),
            log_id,
        })
    }

    /// A refusal (S9.3/4, S9.5/3): row `placed` on its current tier with
    /// `deferred_reason`, intended NULL, `next_attempt_at` = now +
    /// `busy_retry_secs`, `attempts` unchanged. Appends one log row
    /// `<from>`→`placed` with payload `{"deferred":"<reason>"}`; a
    /// `placed`→`placed` row only if this object's last one is an hour old.
    pub fn record_deferral(
        &mut self,
        oid: &[u8; 16],
        mv: &MoveRef<'_>,
        reason: &str,
        busy_retry_secs: u64,
        now: Timestamp,
    ) -> Result<Deferral> {
        let step = self.begin_step(oid, Transition::Defer, now)?;
        let next = now.add_secs(busy_retry_secs);
        step.tx.execute(
            "UPDATE smoothfs_objects SET movement_state = 'placed', intended_tier_id = NULL, \
             deferred_reason = ?2, next_attempt_at = ?3, updated_at = ?4 WHERE object_id = ?1",
            params![step.hex, reason, next.to_rfc3339(), step.now],
        )?;
        let log = if step.from == MovementState::Placed {
            let last: Option<String> = step
                .tx
                .query_row(
                    "SELECT written_at FROM smoothfs_movement_log \
                     WHERE object_id = ?1 AND from_state = 'placed' AND to_state = 'placed' \
                     ORDER BY id DESC LIMIT 1",
                    [&step.hex],
                    |r| r.get(0),
                )
                .optional()?;
            let recent = last
                .as_deref()
                .and_then(Timestamp::parse)
                .is_some_and(|t| now.secs_since(t) < DEFERRAL_LOG_INTERVAL_SECS as f64);
            !recent
        } else {
            true
        };
        let log_id = if log {
            let body = payload(&[("deferred", reason)]);
            Some(step.log(mv, MovementState::Placed, &body)?)
        } else {
            None
        };
        step.tx.commit()?;
        Ok(Deferral {
            next_attempt_at: next,
            log_id,
        })
    }

    /// `smoothfs move abort` (S9.6/2): one `failed` log row with `reason`,
    /// row `placed` on its current tier, intended NULL, `next_attempt_at`
    /// = now + `retry_after_secs`, no attempt counted.
    pub fn record_abort(
        &mut self,
        oid: &[u8; 16],
        mv: &MoveRef<'_>,
        reason: &str,
        retry_after_secs: u64,
        now: Timestamp,
    ) -> Result<i64> {
        let step = self.begin_step(oid, Transition::Abort, now)?;
        step.tx.execute(
            "UPDATE smoothfs_objects SET movement_state = 'placed', intended_tier_id = NULL, \
             failure_reason = ?2, next_attempt_at = ?3, updated_at = ?4 WHERE object_id = ?1",
            params![
                step.hex,
                reason,
                now.add_secs(retry_after_secs).to_rfc3339(),
                step.now
            ],
        )?;
        let id = step.log(mv, MovementState::Failed, &payload(&[("reason", reason)]))?;
        step.tx.commit()?;
        Ok(id)
    }

    /// W12's finalisation (S10.2/12): `placed` on the destination, intended
    /// NULL, `last_movement_at` = now, cutover gen + 1, failure and
    /// deferred reasons cleared, `attempts` 0, no retry time. No log row
    /// (S9.3/2).
    pub fn finalise_move(
        &mut self,
        oid: &[u8; 16],
        mv: &MoveRef<'_>,
        now: Timestamp,
    ) -> Result<()> {
        let step = self.begin_step(oid, Transition::Finalise, now)?;
        step.tx.execute(
            "UPDATE smoothfs_objects SET movement_state = 'placed', current_tier_id = ?2, \
             intended_tier_id = NULL, last_movement_at = ?3, \
             last_committed_cutover_gen = last_committed_cutover_gen + 1, \
             failure_reason = '', deferred_reason = '', attempts = 0, next_attempt_at = NULL, \
             updated_at = ?3 WHERE object_id = ?1",
            params![step.hex, mv.dest_tier_id, step.now],
        )?;
        step.tx.commit()?;
        Ok(())
    }

    /// `smoothfs move retry` (S9.5/2): `attempts` 0 and no retry time, so
    /// the planner considers the row (still `failed`, with its reason) at
    /// the next tick. Returns false for an unknown OID.
    pub fn reset_attempts(&mut self, oid: &[u8; 16], now: Timestamp) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE smoothfs_objects SET attempts = 0, next_attempt_at = NULL, updated_at = ?2 \
             WHERE object_id = ?1",
            params![oid_hex(oid), now.to_rfc3339()],
        )? > 0)
    }

    /// Apply recovery's conclusion for one row (S19.2/2). Rolling back or
    /// forwarding appends one log row `<state>`→`placed` with payload
    /// `{"recovered":"<reason>"}`; `Gone` one `<state>`→`stale` row.
    pub fn recover_row(&mut self, oid: &[u8; 16], action: &Recovery, now: Timestamp) -> Result<()> {
        let now_s = now.to_rfc3339();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM smoothfs_objects WHERE object_id = ?1"
            ))?;
            stmt.query_row([oid_hex(oid)], object_from_row)
                .optional()?
                .ok_or_else(|| StoreError::NoSuchObject(oid_hex(oid)))?
        };
        let hex = oid_hex(oid);
        let intended = row.intended_tier_id.clone().unwrap_or_default();
        let mv = MoveRef {
            transaction_seq: row.transaction_seq,
            source_tier_id: &row.current_tier_id,
            dest_tier_id: &intended,
            rel_path: "",
        };
        // ?1 the OID, ?2 the reason, ?3 now.
        let (update, to, reason) = match action {
            Recovery::RolledBack { reason } => (
                "UPDATE smoothfs_objects SET movement_state = 'placed', \
                 intended_tier_id = NULL, failure_reason = ?2, updated_at = ?3 \
                 WHERE object_id = ?1",
                MovementState::Placed,
                reason,
            ),
            Recovery::Forwarded { reason } => {
                if row.intended_tier_id.is_none() {
                    return Err(StoreError::Corrupt(format!(
                        "object {hex}: cannot forward a row without an intended tier"
                    )));
                }
                (
                    "UPDATE smoothfs_objects SET movement_state = 'placed', \
                     current_tier_id = intended_tier_id, intended_tier_id = NULL, \
                     last_movement_at = ?3, \
                     last_committed_cutover_gen = last_committed_cutover_gen + 1, \
                     failure_reason = ?2, attempts = 0, next_attempt_at = NULL, updated_at = ?3 \
                     WHERE object_id = ?1",
                    MovementState::Placed,
                    reason,
                )
            }
            Recovery::Gone { reason } => (
                "UPDATE smoothfs_objects SET movement_state = 'stale', \
                 intended_tier_id = NULL, failure_reason = ?2, updated_at = ?3 \
                 WHERE object_id = ?1",
                MovementState::Stale,
                reason,
            ),
            Recovery::FailedOn { tier_id } => {
                tx.execute(
                    "UPDATE smoothfs_objects SET current_tier_id = ?2, updated_at = ?3 \
                     WHERE object_id = ?1",
                    params![hex, tier_id, now_s],
                )?;
                tx.commit()?;
                return Ok(());
            }
        };
        tx.execute(update, params![hex, reason, now_s])?;
        let body = payload(&[("recovered", reason)]);
        append_log(
            &tx,
            &hex,
            &row.namespace_id,
            &mv,
            Some(row.movement_state),
            to,
            &body,
            &now_s,
        )?;
        tx.commit()?;
        Ok(())
    }

    // -- movement log --------------------------------------------------------

    /// Movement-log rows, newest first (S26.3).
    pub fn movement_log(&self, q: &LogQuery) -> Result<Vec<LogRow>> {
        let limit = match q.limit {
            0 => LOG_PAGE_DEFAULT,
            n => n.min(LOG_PAGE_MAX),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.id, l.object_id, l.namespace_id, o.rel_path, l.transaction_seq, \
             l.from_state, l.to_state, l.source_tier, l.dest_tier, l.payload_json, l.written_at \
             FROM smoothfs_movement_log AS l \
             LEFT JOIN smoothfs_objects AS o ON o.object_id = l.object_id \
             WHERE (?1 IS NULL OR l.namespace_id = ?1) \
               AND (?2 IS NULL OR l.object_id = ?2) \
               AND (?3 IS NULL OR l.to_state = ?3) \
               AND (?4 IS NULL OR l.written_at >= ?4) \
               AND (?5 IS NULL OR l.id < ?5) \
             ORDER BY l.id DESC LIMIT ?6",
        )?;
        let rows = stmt.query_map(
            params![
                q.namespace_id,
                q.object_id.as_ref().map(oid_hex),
                q.to_state.map(|s| s.as_str()),
                q.since.map(Timestamp::to_rfc3339),
                q.before_id,
                sql_u64(limit as u64)
            ],
            |r| {
                let payload_text = text_at(r, 9)?;
                let payload = serde_json::from_str(payload_text)
                    .map_err(|_| conversion_error(9, "payload", payload_text))?;
                let from_state = match opt_text_at(r, 5)? {
                    None => None,
                    Some(s) => Some(
                        MovementState::from_name(s)
                            .ok_or_else(|| conversion_error(5, "movement state", s))?,
                    ),
                };
                Ok(LogRow {
                    id: r.get(0)?,
                    object_id: r.get(1)?,
                    namespace_id: r.get(2)?,
                    path: r.get(3)?,
                    transaction_seq: u64_at(r, 4)?,
                    from_state,
                    to_state: state_at(r, 6)?,
                    source_tier: r.get(7)?,
                    dest_tier: r.get(8)?,
                    payload,
                    written_at: r.get(10)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Delete log rows written before `cutoff` (S22.1/6; the caller passes
    /// now − `smoothfs_log_retention_days`).
    pub fn delete_log_before(&mut self, cutoff: Timestamp) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM smoothfs_movement_log WHERE written_at < ?1",
            [cutoff.to_rfc3339()],
        )?)
    }

    // -- config --------------------------------------------------------------

    pub fn config_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM control_plane_config WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Store a raw pair (no validation; see [`Store::set_policy_value`]).
    pub fn config_set(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO control_plane_config (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    pub fn config_unset(&mut self, key: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM control_plane_config WHERE key = ?1", [key])?
            > 0)
    }

    /// Every stored pair, by key.
    pub fn config_pairs(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM control_plane_config ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Validate a policy value and store it under its canonical key
    /// (`smoothfs config set`). Nothing is stored when it is refused.
    pub fn set_policy_value(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Result<(), crate::config::ConfigError>> {
        let mut probe = PolicyConfig::default();
        if let Err(e) = probe.set(key, value) {
            return Ok(Err(e));
        }
        let canonical = crate::config::canonical_key(key).unwrap_or(key);
        self.config_set(canonical, value.trim())?;
        Ok(Ok(()))
    }

    /// The policy from `control_plane_config` with a warning per refused
    /// pair (S22.1/5).
    pub fn load_policy(&self) -> Result<(PolicyConfig, Vec<String>)> {
        Ok(PolicyConfig::from_pairs(&self.config_pairs()?))
    }

    // -- pin rules -----------------------------------------------------------

    pub fn add_pin_rule(
        &mut self,
        namespace_id: &str,
        pattern: &str,
        pin: PolicyPin,
        mediated: bool,
        now: Timestamp,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO smoothfs_pin_rules (namespace_id, pattern, pin, mediated, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                namespace_id,
                pattern,
                pin.as_str(),
                mediated,
                now.to_rfc3339()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Rules of one namespace (or all), by id (= oldest first).
    pub fn pin_rules(&self, namespace_id: Option<&str>) -> Result<Vec<PinRule>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, namespace_id, pattern, pin, mediated, created_at FROM smoothfs_pin_rules \
             WHERE ?1 IS NULL OR namespace_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([namespace_id], |r| {
            Ok(PinRule {
                id: r.get(0)?,
                namespace_id: r.get(1)?,
                pattern: r.get(2)?,
                pin: policy_pin_at(r, 3)?,
                mediated: r.get::<_, i64>(4)? != 0,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn remove_pin_rule(&mut self, id: i64) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM smoothfs_pin_rules WHERE id = ?1", [id])?
            > 0)
    }

    // -- evacuations ---------------------------------------------------------

    /// Start an evacuation job (S24.1/3) in state `running`.
    pub fn start_evacuation(
        &mut self,
        namespace_id: &str,
        tier_id: &str,
        now: Timestamp,
    ) -> Result<i64> {
        let now_s = now.to_rfc3339();
        self.conn.execute(
            "INSERT INTO smoothfs_evacuations (namespace_id, tier_id, state, started_at, updated_at) \
             VALUES (?1, ?2, 'running', ?3, ?3)",
            params![namespace_id, tier_id, now_s],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Update a job's state, counters and reason; a finished state sets
    /// `finished_at`.
    pub fn update_evacuation(
        &mut self,
        id: i64,
        state: EvacuationState,
        progress: &EvacuationProgress,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let now_s = now.to_rfc3339();
        Ok(self.conn.execute(
            "UPDATE smoothfs_evacuations SET state = ?2, objects_total = ?3, objects_done = ?4, \
             objects_blocked = ?5, bytes_total = ?6, bytes_done = ?7, reason = ?8, \
             updated_at = ?9, finished_at = CASE WHEN ?10 THEN ?9 ELSE NULL END WHERE id = ?1",
            params![
                id,
                state.as_str(),
                sql_u64(progress.objects_total),
                sql_u64(progress.objects_done),
                sql_u64(progress.objects_blocked),
                sql_u64(progress.bytes_total),
                sql_u64(progress.bytes_done),
                reason,
                now_s,
                state.is_finished()
            ],
        )? > 0)
    }

    /// Jobs of one namespace (or all), by id; `unfinished_only` keeps
    /// `running` and `paused` ones (what a restart resumes).
    pub fn evacuations(
        &self,
        namespace_id: Option<&str>,
        unfinished_only: bool,
    ) -> Result<Vec<EvacuationRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, namespace_id, tier_id, state, objects_total, objects_done, \
             objects_blocked, bytes_total, bytes_done, reason, started_at, updated_at, finished_at \
             FROM smoothfs_evacuations \
             WHERE (?1 IS NULL OR namespace_id = ?1) \
               AND (NOT ?2 OR state IN ('running', 'paused')) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![namespace_id, unfinished_only], |r| {
            let state_text = text_at(r, 3)?;
            Ok(EvacuationRow {
                id: r.get(0)?,
                namespace_id: r.get(1)?,
                tier_id: r.get(2)?,
                state: EvacuationState::from_name(state_text)
                    .ok_or_else(|| conversion_error(3, "evacuation state", state_text))?,
                progress: EvacuationProgress {
                    objects_total: u64_at(r, 4)?,
                    objects_done: u64_at(r, 5)?,
                    objects_blocked: u64_at(r, 6)?,
                    bytes_total: u64_at(r, 7)?,
                    bytes_done: u64_at(r, 8)?,
                },
                reason: r.get(9)?,
                started_at: r.get(10)?,
                updated_at: r.get(11)?,
                finished_at: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found < 0 || found > i64::from(SCHEMA_VERSION) {
        return Err(StoreError::FutureSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= i64::from(version) {
            tx.commit()?;
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration { version, source })?;
        tx.pragma_update(None, "user_version", i64::from(version))
            .map_err(|source| StoreError::Migration { version, source })?;
        tx.commit()
            .map_err(|source| StoreError::Migration { version, source })?;
        tracing::info!(version, "store: schema migrated");
    }
    Ok(())
}

struct NamespaceRow {
    id: String,
    name: String,
    placement_domain: String,
    backend_ref: String,
}

fn namespace_from_row(r: &Row<'_>) -> rusqlite::Result<NamespaceRow> {
    Ok(NamespaceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        placement_domain: r.get(2)?,
        backend_ref: r.get(3)?,
    })
}

/// S22.2/2: the first `smoothfs` namespace (by id) whose `backend_ref` or
/// `name` is the UUID string; failing that, the pool name.
fn find_namespace(conn: &Connection, uuid: &str, name: &str) -> Result<Option<NamespaceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, placement_domain, backend_ref FROM managed_namespaces \
         WHERE backend_kind = 'smoothfs' AND (backend_ref = ?1 OR name = ?1) \
         ORDER BY id LIMIT 1",
    )?;
    if let Some(ns) = stmt.query_row([uuid], namespace_from_row).optional()? {
        return Ok(Some(ns));
    }
    if name.is_empty() {
        return Ok(None);
    }
    Ok(stmt.query_row([name], namespace_from_row).optional()?)
}

fn load_pool(conn: &Connection, ns: NamespaceRow) -> Result<PoolRecord> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, rank, target_fill_pct, full_threshold_pct, backing_ref \
         FROM tier_targets WHERE placement_domain = ?1 AND backend_kind = 'smoothfs' \
         ORDER BY rank",
    )?;
    let tiers = stmt
        .query_map([&ns.placement_domain], |r| {
            Ok(TierTarget {
                id: r.get(0)?,
                name: r.get(1)?,
                rank: r.get(2)?,
                target_fill_pct: r.get(3)?,
                full_threshold_pct: r.get(4)?,
                backing_ref: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(PoolRecord {
        namespace_id: ns.id,
        name: ns.name,
        placement_domain: ns.placement_domain,
        backend_ref: ns.backend_ref,
        tiers,
    })
}

fn insert_object_tx(tx: &Transaction<'_>, o: &NewObject, now: &str) -> Result<bool> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO smoothfs_objects (object_id, namespace_id, current_tier_id, \
         movement_state, pin_state, policy_pin, mediated, object_gen, size_bytes, mtime_ns, \
         ewma_value, created_at, updated_at, rel_path) \
         VALUES (?1, ?2, ?3, 'placed', ?4, ?5, ?6, ?7, ?8, ?9, 0.0, ?10, ?10, ?11) \
         ON CONFLICT (object_id) DO UPDATE SET namespace_id = excluded.namespace_id, \
             current_tier_id = excluded.current_tier_id, intended_tier_id = NULL, \
             movement_state = 'placed', pin_state = excluded.pin_state, \
             policy_pin = excluded.policy_pin, mediated = excluded.mediated, \
             object_gen = excluded.object_gen, size_bytes = excluded.size_bytes, \
             mtime_ns = excluded.mtime_ns, attempts = 0, next_attempt_at = NULL, \
             failure_reason = '', deferred_reason = '', updated_at = excluded.updated_at, \
             rel_path = excluded.rel_path \
         WHERE movement_state = 'stale'",
    )?;
    let n = stmt.execute(params![
        oid_hex(&o.oid),
        o.namespace_id,
        o.current_tier_id,
        o.pin_state.as_str(),
        o.policy_pin.as_str(),
        o.mediated,
        o.object_gen,
        sql_u64(o.size_bytes),
        sql_u64(o.mtime_ns),
        now,
        o.rel_path
    ])?;
    Ok(n > 0)
}

/// Whether the placement domain has a `tier_targets` row for `rank`.
fn tier_row_exists(tx: &Transaction<'_>, domain: &str, rank: u8) -> Result<bool> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM tier_targets \
         WHERE placement_domain = ?1 AND rank = ?2)",
        params![domain, rank],
        |r| r.get(0),
    )?)
}

/// One move step's transaction, begun by [`Store::begin_step`] once the
/// row's state allowed the transition.
struct Step<'c> {
    tx: Transaction<'c>,
    /// The row's state before the step.
    from: MovementState,
    namespace: String,
    /// The OID as stored.
    hex: String,
    /// The step's time as stored.
    now: String,
}

impl Step<'_> {
    /// Appends the step's one log row, `from` → `to`, with `payload_json`.
    fn log(&self, mv: &MoveRef<'_>, to: MovementState, payload_json: &str) -> Result<i64> {
        append_log(
            &self.tx,
            &self.hex,
            &self.namespace,
            mv,
            Some(self.from),
            to,
            payload_json,
            &self.now,
        )
    }
}

/// The row's state and namespace, if `t` is allowed from that state.
fn check_transition(
    tx: &Transaction<'_>,
    oid: &[u8; 16],
    t: Transition,
) -> Result<(MovementState, String)> {
    let hex = oid_hex(oid);
    let (from, namespace) = tx
        .prepare_cached(
            "SELECT movement_state, namespace_id FROM smoothfs_objects WHERE object_id = ?1",
        )?
        .query_row([&hex], |r| Ok((state_at(r, 0)?, r.get::<_, String>(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchObject(hex.clone()))?;
    if !t.allowed_from(from) {
        return Err(StoreError::InvalidTransition {
            oid: hex,
            from,
            transition: t,
        });
    }
    Ok((from, namespace))
}

#[allow(clippy::too_many_arguments)]
fn append_log(
    tx: &Transaction<'_>,
    oid_hex: &str,
    namespace_id: &str,
    mv: &MoveRef<'_>,
    from: Option<MovementState>,
    to: MovementState,
    payload_json: &str,
    now: &str,
) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO smoothfs_movement_log (object_id, namespace_id, transaction_seq, \
         from_state, to_state, source_tier, dest_tier, payload_json, written_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        oid_hex,
        namespace_id,
        sql_u64(mv.transaction_seq),
        from.map(|s| s.as_str()),
        to.as_str(),
        mv.source_tier_id,
        mv.dest_tier_id,
        payload_json,
        now
    ])?;
    Ok(tx.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_is_wal_full_sync_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let pragma = |name: &str| -> String {
            store
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("user_version"), SCHEMA_VERSION.to_string());
    }

    #[test]
    fn timestamps_round_trip_with_nanoseconds() {
        for ns in [
            0i64,
            1,
            999_999_999,
            1_700_000_000_123_456_789,
            -1,
            951_782_400_000_000_000, // 2000-02-29
            4_102_444_799_999_999_999,
        ] {
            let t = Timestamp::from_unix_nanos(ns);
            let s = t.to_rfc3339();
            assert_eq!(s.len(), 30, "{s}");
            assert_eq!(Timestamp::parse(&s), Some(t), "{s}");
        }
        assert_eq!(
            Timestamp::from_unix_nanos(1_700_000_000_123_456_789).to_rfc3339(),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            Timestamp::from_unix_nanos(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn parser_accepts_the_legacy_and_offset_forms() {
        let t = Timestamp::from_unix_secs(1_700_000_000);
        assert_eq!(Timestamp::parse("2023-11-14 22:13:20"), Some(t));
        assert_eq!(Timestamp::parse("2023-11-14T22:13:20Z"), Some(t));
        assert_eq!(Timestamp::parse(" 2023-11-14t22:13:20z "), Some(t));
        assert_eq!(Timestamp::parse("2023-11-15T00:13:20+02:00"), Some(t));
        assert_eq!(Timestamp::parse("2023-11-14T21:13:20-0100"), Some(t));
        assert_eq!(
            Timestamp::parse("2023-11-14T22:13:20.5Z"),
            Some(Timestamp::from_unix_nanos(1_700_000_000_500_000_000))
        );
        assert_eq!(
            Timestamp::parse("2023-11-14T22:13:20.1234567891Z"),
            Some(Timestamp::from_unix_nanos(1_700_000_000_123_456_789))
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14 22:13:20",
            "2023-02-29 00:00:00",
            "2023-11-14 24:00:00",
            "2023-11-14 22:13:20.",
            "2023-11-14 22:13:20 UTC",
            "2023/11/14 22:13:20",
            "not a time at all!!",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
        assert!(Timestamp::parse("2024-02-29 00:00:00").is_some());
    }

    #[test]
    fn stored_stamps_sort_as_text_in_time_order() {
        let a = Timestamp::from_unix_nanos(1_700_000_000_000_000_001);
        let b = Timestamp::from_unix_nanos(1_700_000_000_100_000_000);
        let c = Timestamp::from_unix_secs(1_800_000_000);
        assert!(a.to_rfc3339() < b.to_rfc3339() && b.to_rfc3339() < c.to_rfc3339());
    }

    #[test]
    fn oid_hex_round_trips() {
        let oid: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
        let s = oid_hex(&oid);
        assert_eq!(s.len(), 32);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(parse_oid(&s), Some(oid));
        assert_eq!(parse_oid(&s.to_uppercase()), Some(oid));
        assert_eq!(parse_oid("xyz"), None);
        assert_eq!(parse_oid(&"g".repeat(32)), None);
    }

    /// Every (state, transition) pair against the S9.3 table.
    #[test]
    fn transition_table_is_exactly_the_spec() {
        use MovementState::*;
        let order = [
            PlanAccepted,
            DestinationReserved,
            CopyInProgress,
            CopyComplete,
            CopyVerified,
            CutoverInProgress,
            Switched,
            CleanupInProgress,
            CleanupComplete,
        ];
        for &from in MovementState::ALL {
            for &to in MovementState::ALL {
                let expected = match to {
                    PlanAccepted => matches!(from, Placed | Failed),
                    _ => order.windows(2).any(|w| w[0] == from && w[1] == to),
                };
                assert_eq!(
                    Transition::Step(to).allowed_from(from),
                    expected,
                    "{from} -> {to}"
                );
            }
            let n = from.number();
            assert_eq!(
                Transition::Fail.allowed_from(from),
                from == Placed || from == Failed || (1..=6).contains(&n),
                "fail from {from}"
            );
            assert_eq!(
                Transition::Defer.allowed_from(from),
                Transition::Fail.allowed_from(from)
            );
            assert_eq!(Transition::Abort.allowed_from(from), (1..=5).contains(&n));
            assert_eq!(
                Transition::Finalise.allowed_from(from),
                (7..=9).contains(&n)
            );
        }
    }
}
