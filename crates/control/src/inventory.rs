//! Object inventory (S7.4) and the pool-socket commands the daemon sends
//! besides the worker's: LIST_OBJECTS, PIN_SET and PRUNE_DIRS (S15.3).
//!
//! Owns: paging through LIST_OBJECTS into the store
//! ([`Store::sync_inventory_page`]), marking rows of objects that were not
//! listed `stale`, and aborting plans the data plane holds that no row
//! knows about (a control plane that died between MOVE_PLAN and writing
//! `plan_accepted`). Must never: mark a row stale that was created or
//! refreshed while the listing ran (a new file whose OID sorts before the
//! cursor is missing from the listing but not gone), or abort a plan this
//! daemon is running or one an operator's `smoothfs move` made.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use smoothfs_uapi::Result as UapiResult;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::event::{ObjectEntry, StatusItem, decode_list};
use smoothfs_uapi::ids::{Attr, Command, MovementState, PinState};
use uuid::Uuid;

use crate::dataplane;
use crate::store::{InventoryStats, PoolRecord, Result, Store, StoreError, Timestamp, oid_hex};
use crate::{daemon::lock, storeext};

/// Objects per LIST_OBJECTS page.
pub const PAGE_LIMIT: u32 = 1000;

/// Transaction seqs this control plane hands out are small counters; an
/// operator's `smoothfs move` uses microseconds since the epoch (about
/// 2^50). A plan with a seq below this bound and no row is ours.
pub const DAEMON_SEQ_LIMIT: u64 = 1 << 40;

fn pool_attrs(pool: &Uuid) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, pool.as_bytes());
    a
}

/// One LIST_OBJECTS page.
#[derive(Clone, Debug, Default)]
pub struct ObjectPage {
    pub objects: Vec<ObjectEntry>,
    /// Present when more pages follow.
    pub cursor: Option<Vec<u8>>,
    pub journal_seq: u64,
}

/// LIST_OBJECTS(POOL_UUID[, CURSOR], LIMIT): regular files in OID order.
pub fn list_objects(
    c: &mut Client,
    pool: &Uuid,
    cursor: Option<&[u8]>,
    limit: u32,
) -> UapiResult<ObjectPage> {
    let mut req = pool_attrs(pool);
    req.put_u32(Attr::Limit, limit);
    if let Some(cur) = cursor {
        req.put_bytes(Attr::Cursor, cur);
    }
    let reply = c.request(Command::ListObjects, &req)?;
    let a = reply.attrs();
    Ok(ObjectPage {
        objects: decode_list(&a, Attr::Objects, ObjectEntry::decode)?,
        cursor: a.get_bytes(Attr::Cursor).map(<[u8]>::to_vec),
        journal_seq: a.get_u64(Attr::JournalSeq)?.unwrap_or(0),
    })
}

/// PIN_SET(POOL_UUID, OBJECT_ID, PIN_STATE): set the protocol pin slot
/// (`pin_lun`, `pin_lease` or `none`). Returns the effective pin.
pub fn pin_set_protocol(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    pin: PinState,
) -> UapiResult<PinState> {
    let mut req = pool_attrs(pool);
    req.put_bytes(Attr::ObjectId, oid)
        .put_u8(Attr::PinState, pin.number());
    let reply = c.request(Command::PinSet, &req)?;
    Ok(PinState::from_wire(
        reply.attrs().get_u8(Attr::PinState)?.unwrap_or(0),
    ))
}

/// What PRUNE_DIRS reported (S15.3/4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub dirs_removed: u64,
    pub dirs_updated: u64,
    pub dirs_kept: u64,
}

/// PRUNE_DIRS(POOL_UUID[, REL_PATH]) over every tier the data plane walks.
pub fn prune_dirs(c: &mut Client, pool: &Uuid, under: Option<&Path>) -> UapiResult<PruneReport> {
    let mut req = pool_attrs(pool);
    if let Some(p) = under {
        req.put_path(Attr::RelPath, p);
    }
    let reply = c.request(Command::PruneDirs, &req)?;
    let items = decode_list(&reply.attrs(), Attr::StatusItems, StatusItem::decode)?;
    let get = |name: &str| {
        items
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.value.parse().ok())
            .unwrap_or(0)
    };
    Ok(PruneReport {
        dirs_removed: get("dirs_removed"),
        dirs_updated: get("dirs_updated"),
        dirs_kept: get("dirs_kept"),
    })
}

/// What one inventory pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryReport {
    pub listed: usize,
    pub pages: usize,
    pub stats: InventoryStats,
    /// Rows marked `stale` because their object was not listed.
    pub marked_stale: usize,
    /// Orphaned plans aborted (see the module doc).
    pub orphans_aborted: usize,
    /// The largest transaction seq seen on an orphaned plan (0 = none).
    pub max_orphan_seq: u64,
    pub journal_seq: u64,
}

/// An inventory failure: the data plane (the pass stopped; nothing was
/// marked stale) or the store.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("LIST_OBJECTS: {0}")]
    List(#[from] smoothfs_uapi::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One full inventory pass (S7.4/1) of `pool` over `client`. Every pass
/// lists every object (SINCE_SEQ is not sent: the data plane lists all
/// objects for it anyway), so unlisted rows can be marked stale each time.
/// With `abort_orphans`, plans held by the data plane for objects whose row
/// is `placed` or `failed` and that `busy` does not name are aborted when
/// their seq is one of ours (< [`DAEMON_SEQ_LIMIT`]).
pub fn sync(
    store: &Mutex<Store>,
    client: &mut Client,
    uuid: &Uuid,
    pool: &PoolRecord,
    abort_orphans: bool,
    busy: &dyn Fn(&[u8; 16]) -> bool,
) -> Result<InventoryReport, InventoryError> {
    let started = Timestamp::now();
    let mut report = InventoryReport::default();
    let mut listed: HashSet<[u8; 16]> = HashSet::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = list_objects(client, uuid, cursor.as_deref(), PAGE_LIMIT)?;
        report.pages += 1;
        report.journal_seq = page.journal_seq;
        report.listed += page.objects.len();
        let stats = lock(store).sync_inventory_page(pool, &page.objects, Timestamp::now())?;
        add_stats(&mut report.stats, &stats);
        for e in &page.objects {
            listed.insert(e.oid);
            if abort_orphans && e.movement_state == MovementState::PlanAccepted && !busy(&e.oid) {
                abort_orphan(store, client, uuid, e, &mut report);
            }
        }
        match page.cursor {
            Some(c) if !page.objects.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    let mut st = lock(store);
    let touched = storeext::rows_touched_since(&mut st, &pool.namespace_id, started)?;
    listed.extend(touched);
    report.marked_stale = st.mark_unlisted_stale(&pool.namespace_id, &listed, Timestamp::now())?;
    drop(st);
    tracing::info!(
        pool = %pool.name,
        listed = report.listed,
        created = report.stats.created,
        updated = report.stats.updated,
        stale = report.marked_stale,
        orphans_aborted = report.orphans_aborted,
        "inventory done"
    );
    Ok(report)
}

fn add_stats(sum: &mut InventoryStats, s: &InventoryStats) {
    sum.created += s.created;
    sum.updated += s.updated;
    sum.revived += s.revived;
    sum.attempts_reset += s.attempts_reset;
    sum.in_flight += s.in_flight;
    sum.not_regular += s.not_regular;
    sum.unknown_tier += s.unknown_tier;
}

/// A plan the data plane holds with no row in a movement state: the
/// control plane died after MOVE_PLAN and before `plan_accepted` was
/// committed (S19.2 cannot see it, the row says `placed`).
fn abort_orphan(
    store: &Mutex<Store>,
    client: &mut Client,
    uuid: &Uuid,
    e: &ObjectEntry,
    report: &mut InventoryReport,
) {
    let row_state = match lock(store).object(&e.oid) {
        Ok(Some(r)) => r.movement_state,
        _ => return,
    };
    if !matches!(row_state, MovementState::Placed | MovementState::Failed) {
        return;
    }
    let Ok(i) = dataplane::inspect(client, uuid, &e.oid) else {
        return;
    };
    if i.movement_state != MovementState::PlanAccepted || i.transaction_seq >= DAEMON_SEQ_LIMIT {
        return;
    }
    report.max_orphan_seq = report.max_orphan_seq.max(i.transaction_seq);
    match dataplane::move_abort(
        client,
        uuid,
        &e.oid,
        i.transaction_seq,
        Some("recovered: orphaned plan"),
    ) {
        Ok(_) => {
            report.orphans_aborted += 1;
            tracing::warn!(oid = %oid_hex(&e.oid), seq = i.transaction_seq,
                "aborted a plan no row knew about (control plane stopped after MOVE_PLAN)");
        }
        Err(err) => tracing::warn!(oid = %oid_hex(&e.oid), seq = i.transaction_seq,
            "MOVE_ABORT of an orphaned plan: {err}"),
    }
}
