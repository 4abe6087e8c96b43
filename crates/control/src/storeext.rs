//! Row updates the daemon needs beyond [`crate::store::Store`]'s movement
//! transitions: keeping a row's tier in step with the data plane outside a
//! move of ours, the operator abort of a move that never reached MOVE_PLAN,
//! the mark left by a failed LUN pin repair, and the planner's deferral log
//! rows (S9.3/4).
//!
//! Owns nothing but these statements. Must never: change a row's
//! `movement_state` (only the store's transitions and recovery do), or
//! write a movement-log row other than the `placed`→`placed` deferral row.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use crate::store::{DEFERRAL_LOG_INTERVAL_SECS, Result, Store, Timestamp, oid_hex, parse_oid};

/// Point a `placed` or `failed` row at `tier_id` (the data plane moved the
/// object without us: an operator move, or W2 found it already there).
/// Returns whether a row changed.
pub fn set_current_tier(
    store: &mut Store,
    oid: &[u8; 16],
    tier_id: &str,
    now: Timestamp,
) -> Result<bool> {
    Ok(store.conn_mut().execute(
        "UPDATE smoothfs_objects SET current_tier_id = ?2, updated_at = ?3 \
         WHERE object_id = ?1 AND movement_state IN ('placed', 'failed') \
         AND current_tier_id != ?2",
        params![oid_hex(oid), tier_id, now.to_rfc3339()],
    )? > 0)
}

/// `next_attempt_at` of a `placed` or `failed` row (an operator abort
/// before MOVE_PLAN, S9.6/2). No attempt is counted.
pub fn set_next_attempt(
    store: &mut Store,
    oid: &[u8; 16],
    at: Timestamp,
    reason: &str,
    now: Timestamp,
) -> Result<bool> {
    Ok(store.conn_mut().execute(
        "UPDATE smoothfs_objects SET next_attempt_at = ?2, failure_reason = ?3, updated_at = ?4 \
         WHERE object_id = ?1 AND movement_state IN ('placed', 'failed')",
        params![oid_hex(oid), at.to_rfc3339(), reason, now.to_rfc3339()],
    )? > 0)
}

/// Record `reason` as the row's `failure_reason` without touching its
/// state (S19.2/3: `recovered: lun pin repair failed: …`).
pub fn set_failure_reason(
    store: &mut Store,
    oid: &[u8; 16],
    reason: &str,
    now: Timestamp,
) -> Result<bool> {
    Ok(store.conn_mut().execute(
        "UPDATE smoothfs_objects SET failure_reason = ?2, updated_at = ?3 WHERE object_id = ?1",
        params![oid_hex(oid), reason, now.to_rfc3339()],
    )? > 0)
}

/// A planner deferral worth telling the operator about (S9.3/4): the row
/// keeps its state and retry time, gets `deferred_reason`, and — at most
/// once per object per hour — one log row `placed`→`placed` with payload
/// `{"deferred":"<reason>"}`. Unlike a worker refusal this sets no retry
/// time: the planner decides again at the next tick. Returns whether a log
/// row was written.
pub fn log_planner_deferral(
    store: &mut Store,
    oid: &[u8; 16],
    tier_id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<bool> {
    let hex = oid_hex(oid);
    let now_s = now.to_rfc3339();
    let tx = store
        .conn_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let row: Option<(String, String, i64)> = tx
        .query_row(
            "SELECT namespace_id, movement_state, transaction_seq FROM smoothfs_objects \
             WHERE object_id = ?1",
            [&hex],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((namespace, state, seq)) = row else {
        return Ok(false);
    };
    if state != "placed" {
        return Ok(false);
    }
    tx.execute(
        "UPDATE smoothfs_objects SET deferred_reason = ?2 WHERE object_id = ?1",
        params![hex, reason],
    )?;
    let last: Option<String> = tx
        .query_row(
            "SELECT written_at FROM smoothfs_movement_log \
             WHERE object_id = ?1 AND from_state = 'placed' AND to_state = 'placed' \
             ORDER BY id DESC LIMIT 1",
            [&hex],
            |r| r.get(0),
        )
        .optional()?;
    let recent = last
        .as_deref()
        .and_then(Timestamp::parse)
        .is_some_and(|t| now.secs_since(t) < DEFERRAL_LOG_INTERVAL_SECS as f64);
    if !recent {
        let payload = serde_json::json!({ "deferred": reason }).to_string();
        tx.execute(
            "INSERT INTO smoothfs_movement_log (object_id, namespace_id, transaction_seq, \
             from_state, to_state, source_tier, dest_tier, payload_json, written_at) \
             VALUES (?1, ?2, ?3, 'placed', 'placed', ?4, '', ?5, ?6)",
            params![hex, namespace, seq, tier_id, payload, now_s],
        )?;
    }
    tx.commit()?;
    Ok(!recent)
}

/// OIDs of the namespace's rows written at or after `since` (created by
/// heat ingest or refreshed while an inventory pass was paging, so not
/// proof of absence when a listing missed them).
pub fn rows_touched_since(
    store: &mut Store,
    namespace_id: &str,
    since: Timestamp,
) -> Result<HashSet<[u8; 16]>> {
    let conn = store.conn_mut();
    let mut stmt = conn.prepare_cached(
        "SELECT object_id FROM smoothfs_objects WHERE namespace_id = ?1 AND updated_at >= ?2",
    )?;
    let rows = stmt.query_map(params![namespace_id, since.to_rfc3339()], |r| {
        r.get::<_, String>(0)
    })?;
    let mut out = HashSet::new();
    for r in rows {
        if let Some(oid) = parse_oid(&r?) {
            out.insert(oid);
        }
    }
    Ok(out)
}
