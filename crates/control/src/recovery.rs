//! Control-plane recovery (S19.2): after a restart, and whenever a pool is
//! discovered, every row of that pool in a movement state is compared with
//! what the data plane says (INSPECT) and brought into agreement.
//!
//! Owns: the decision table of S19.2/2 ([`decide`], pure, so every row of
//! the table is unit-tested), the requests it implies (MOVE_ABORT of our
//! own accepted plan, MOVE_CLEANUP of a switched object), and the LUN pin
//! repair of S19.2/3, which marks a row whose repair failed and carries on
//! with the others. Must never: delete lower files (S19.2/4), touch rows of
//! another pool, or act on a row when INSPECT failed for a reason other
//! than ENOENT (the row is left for the next discovery).

use std::sync::Mutex;

use smoothfs_uapi::client::Client;
use smoothfs_uapi::ids::{MovementState, PinState};
use uuid::Uuid;

use crate::daemon::lock;
use crate::dataplane::{self, Inspection};
use crate::inventory;
use crate::store::{ObjectRow, PoolRecord, Recovery, Result, Store, Timestamp, oid_hex};
use crate::storeext;

/// What recovery does with one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply this to the row (after the requests below).
    Row(Recovery),
    /// Send MOVE_ABORT for the row's seq first, then roll the row back.
    AbortThenRow(Recovery),
    /// Send MOVE_CLEANUP for the row's seq first, then forward the row.
    CleanupThenRow(Recovery),
    /// Leave the row as it is (logged).
    Leave(String),
}

/// What INSPECT answered for the row's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Object {
        state: MovementState,
        current_rank: u8,
        transaction_seq: u64,
    },
    Gone,
}

impl Seen {
    pub fn from_inspection(i: &Inspection) -> Seen {
        Seen::Object {
            state: i.movement_state,
            current_rank: i.current_tier,
            transaction_seq: i.transaction_seq,
        }
    }
}

fn is_pre_cutover(s: MovementState) -> bool {
    use MovementState::*;
    matches!(
        s,
        PlanAccepted | DestinationReserved | CopyInProgress | CopyComplete | CopyVerified
    )
}

fn is_post_cutover(s: MovementState) -> bool {
    use MovementState::*;
    matches!(
        s,
        CutoverInProgress | Switched | CleanupInProgress | CleanupComplete
    )
}

/// The S19.2/2 table for one row. `intended_rank` is the rank of the
/// row's intended tier in the pool record. A rolled-back row is then
/// pointed at the data plane's current tier by the caller.
pub fn decide(
    row: &ObjectRow,
    intended_rank: Option<u8>,
    seen: &Seen,
    tier_id_of: &dyn Fn(u8) -> Option<String>,
) -> Action {
    let state = row.movement_state;
    let rolled_back = || Recovery::RolledBack {
        reason: format!("recovered: rolled back from {state}"),
    };
    let forwarded = || Recovery::Forwarded {
        reason: format!("recovered: forwarded from {state}"),
    };
    let (dp_state, dp_rank, dp_seq) = match seen {
        Seen::Gone => {
            return Action::Row(Recovery::Gone {
                reason: "recovered: object gone".into(),
            });
        }
        Seen::Object {
            state,
            current_rank,
            transaction_seq,
        } => (*state, *current_rank, *transaction_seq),
    };
    let ours = dp_seq == row.transaction_seq && row.transaction_seq != 0;
    if state == MovementState::Failed {
        return match tier_id_of(dp_rank) {
            Some(tier_id) => Action::Row(Recovery::FailedOn { tier_id }),
            None => Action::Leave(format!(
                "failed row: the data plane reports tier {dp_rank}, which the pool record lacks"
            )),
        };
    }
    if is_pre_cutover(state) {
        // Nothing was switched (cutover_in_progress is committed before
        // MOVE_CUTOVER): drop our plan if the data plane still holds it.
        // The row then follows the data plane's current tier.
        if dp_state == MovementState::PlanAccepted && ours {
            return Action::AbortThenRow(rolled_back());
        }
        return Action::Row(rolled_back());
    }
    if is_post_cutover(state) {
        let Some(intended) = intended_rank else {
            return Action::Leave(format!("{state} row without an intended tier"));
        };
        if dp_rank == intended {
            if dp_state == MovementState::Switched && ours {
                return Action::CleanupThenRow(forwarded());
            }
            return Action::Row(forwarded());
        }
        if dp_state == MovementState::PlanAccepted && ours {
            // The cutover never happened (or drained out): drop the plan
            // and its staging file.
            return Action::AbortThenRow(rolled_back());
        }
        return Action::Row(rolled_back());
    }
    Action::Leave(format!("{state} rows are not recovered"))
}

/// Counts of what one recovery pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub scanned: usize,
    pub rolled_back: usize,
    pub forwarded: usize,
    pub gone: usize,
    pub failed_repointed: usize,
    pub left_alone: usize,
    /// INSPECT failed with something other than ENOENT.
    pub inspect_errors: usize,
    pub lun_repaired: usize,
    pub lun_repair_failed: usize,
}

/// Recover every row of `pool` that is neither `placed` nor `stale`
/// (S19.2/1–3). Errors from the data plane are per row; a store error ends
/// the pass.
pub fn recover_pool(
    store: &Mutex<Store>,
    client: &mut Client,
    uuid: &Uuid,
    pool: &PoolRecord,
) -> Result<RecoveryReport> {
    let rows = lock(store).recovery_rows(&pool.namespace_id)?;
    let mut report = RecoveryReport::default();
    for row in rows {
        report.scanned += 1;
        recover_row(store, client, uuid, pool, &row, &mut report)?;
    }
    if report.scanned > 0 {
        tracing::info!(
            pool = %pool.name,
            scanned = report.scanned,
            rolled_back = report.rolled_back,
            forwarded = report.forwarded,
            gone = report.gone,
            failed = report.failed_repointed,
            left = report.left_alone,
            lun_repaired = report.lun_repaired,
            lun_repair_failed = report.lun_repair_failed,
            "recovery done"
        );
    }
    Ok(report)
}

/// Recover one row (also used by the worker when its own store writes went
/// wrong mid-move).
pub fn recover_row(
    store: &Mutex<Store>,
    client: &mut Client,
    uuid: &Uuid,
    pool: &PoolRecord,
    row: &ObjectRow,
    report: &mut RecoveryReport,
) -> Result<()> {
    let hex = oid_hex(&row.object_id);
    let inspection = match dataplane::inspect(client, uuid, &row.object_id) {
        Ok(i) => Some(i),
        Err(e) if e.errno() == libc::ENOENT => None,
        Err(e) => {
            tracing::warn!(pool = %pool.name, oid = %hex, state = %row.movement_state,
                "recovery: INSPECT failed ({e}); row left for the next discovery");
            report.inspect_errors += 1;
            return Ok(());
        }
    };
    let seen = inspection
        .as_ref()
        .map_or(Seen::Gone, Seen::from_inspection);
    let intended_rank = row
        .intended_tier_id
        .as_deref()
        .and_then(|t| pool.rank_of(t));
    let tier_id_of = |rank: u8| pool.tier(rank).map(|t| t.id.clone());
    let action = decide(row, intended_rank, &seen, &tier_id_of);
    let now = Timestamp::now();
    let recovery = match action {
        Action::Leave(why) => {
            tracing::warn!(pool = %pool.name, oid = %hex, "recovery: row left alone: {why}");
            report.left_alone += 1;
            None
        }
        Action::Row(r) => Some(r),
        Action::AbortThenRow(r) => {
            if let Err(e) = dataplane::move_abort(
                client,
                uuid,
                &row.object_id,
                row.transaction_seq,
                Some("recovered: control plane restarted"),
            ) {
                // EINVAL: the plan ended meanwhile; the row result is the same.
                tracing::info!(pool = %pool.name, oid = %hex, seq = row.transaction_seq,
                    "recovery: MOVE_ABORT: {e}");
            }
            Some(r)
        }
        Action::CleanupThenRow(r) => {
            match dataplane::move_cleanup(client, uuid, &row.object_id, row.transaction_seq) {
                Ok(c) if c.cleanup_errno != 0 => tracing::warn!(pool = %pool.name, oid = %hex,
                    errno = c.cleanup_errno, "recovery: old source not removed; the scrub will"),
                Ok(_) => {}
                Err(e) => tracing::warn!(pool = %pool.name, oid = %hex, seq = row.transaction_seq,
                    "recovery: MOVE_CLEANUP: {e}; the data plane cleans up after cleanup_grace_s"),
            }
            Some(r)
        }
    };
    if let Some(r) = &recovery {
        match r {
            Recovery::RolledBack { .. } => report.rolled_back += 1,
            Recovery::Forwarded { .. } => report.forwarded += 1,
            Recovery::Gone { .. } => report.gone += 1,
            Recovery::FailedOn { .. } => report.failed_repointed += 1,
        }
        tracing::info!(pool = %pool.name, oid = %hex, state = %row.movement_state,
            "recovery: {r:?}");
        let mut st = lock(store);
        st.recover_row(&row.object_id, r, now)?;
        // A rolled-back row points at the tier the data plane has the
        // object on (the source, or the destination's rank when a
        // `switched` row had already made it current).
        if let (Recovery::RolledBack { .. }, Some(i)) = (r, &inspection)
            && let Some(t) = pool.tier(i.current_tier)
        {
            storeext::set_current_tier(&mut st, &row.object_id, &t.id, now)?;
        }
    }
    // S19.2/3: LUN pin repair, whatever happened to the row.
    if row.pin_state == PinState::PinLun
        && let Some(i) = &inspection
        && i.pin_state != PinState::PinLun
    {
        match inventory::pin_set_protocol(client, uuid, &row.object_id, PinState::PinLun) {
            Ok(_) => {
                report.lun_repaired += 1;
                tracing::info!(pool = %pool.name, oid = %hex, tier = i.current_tier,
                    "recovery: lun pin restored");
            }
            Err(e) => {
                report.lun_repair_failed += 1;
                tracing::error!(pool = %pool.name, oid = %hex, errno = e.errno(),
                    "recovery: lun pin repair failed: {e}");
                storeext::set_failure_reason(
                    &mut lock(store),
                    &row.object_id,
                    &format!("recovered: lun pin repair failed: {e}"),
                    now,
                )?;
            }
        }
    }
    Ok(())
}
