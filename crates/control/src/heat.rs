//! Control-plane heat (SPEC S7): the EWMA kept per object row, and heat as
//! of now.
//!
//! Owns: the score of a HEAT_SAMPLE record, the decay with the configured
//! half-life, applying a whole HEAT_SAMPLE event to the store in one
//! transaction (S7.1/3), and reporting the OIDs that have no row so the
//! caller can INSPECT them (S7.3). Must never: compare or plan with a
//! stored `ewma_value` directly (always [`heat_now`], S7.2), talk to a data
//! plane, or create rows itself (the caller does after INSPECT).

use std::collections::HashSet;

use smoothfs_uapi::heat::HeatRecord;

use crate::store::{Store, StoreError, Timestamp, oid_hex};

/// S7.1/4: the half-life used when the configured one is not > 0.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 86400.0;

/// S7.3/2: at most this many distinct unknown OIDs are reported per event;
/// records for further ones wait for that OID's next event.
pub const MAX_INSPECTS_PER_EVENT: usize = 1024;

/// One record's score (S7.1/1): `read + 2 × write + 4096 × opens`.
pub fn score(r: &HeatRecord) -> f64 {
    r.read_bytes_delta as f64
        + 2.0 * r.write_bytes_delta as f64
        + 4096.0 * f64::from(r.open_count_delta)
}

fn half_life(h: f64) -> f64 {
    if h.is_finite() && h > 0.0 {
        h
    } else {
        DEFAULT_HALF_LIFE_SECS
    }
}

/// `2^(−gap / half_life)`, with a negative gap (a stamp in the future)
/// clamped to 0.
pub fn decay(gap_secs: f64, half_life_secs: f64) -> f64 {
    if gap_secs.is_nan() || gap_secs <= 0.0 {
        1.0
    } else {
        (-gap_secs / half_life(half_life_secs)).exp2()
    }
}

/// The EWMA after a sample with `score` at `now` (S7.1/2). `previous` is
/// the row's `ewma_value` and `last_heat_sample_at` text; without both the
/// result is `score`. An unparsable stamp gives gap 0.
pub fn ewma_update(
    previous: Option<(f64, &str)>,
    score: f64,
    now: Timestamp,
    half_life_secs: f64,
) -> f64 {
    match previous {
        Some((ewma, stamp)) => {
            let gap = Timestamp::parse(stamp).map_or(0.0, |t| now.secs_since(t));
            ewma * decay(gap, half_life_secs) + score
        }
        None => score,
    }
}

/// Heat as of `now` (S7.2): `ewma × 2^(−(now − last_sample) / half_life)`,
/// or `ewma` when there is no sample time.
pub fn heat_now(
    ewma: f64,
    last_sample: Option<Timestamp>,
    now: Timestamp,
    half_life_secs: f64,
) -> f64 {
    match last_sample {
        Some(t) => ewma * decay(now.secs_since(t), half_life_secs),
        None => ewma,
    }
}

/// What applying one HEAT_SAMPLE did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeatIngest {
    /// Records applied to existing rows.
    pub applied: usize,
    /// Distinct OIDs without a row, in order of first appearance, at most
    /// [`MAX_INSPECTS_PER_EVENT`]: INSPECT each, create its row, then apply
    /// [`HeatIngest::pending`] again (S7.3/1).
    pub unknown: Vec<[u8; 16]>,
    /// Records for unknown OIDs beyond the INSPECT limit, dropped until
    /// that OID's next event (S7.3/2).
    pub dropped: usize,
}

impl HeatIngest {
    /// The records of `records` whose OID is in [`HeatIngest::unknown`].
    pub fn pending(&self, records: &[HeatRecord]) -> Vec<HeatRecord> {
        let unknown: HashSet<&[u8; 16]> = self.unknown.iter().collect();
        records
            .iter()
            .filter(|r| unknown.contains(&r.oid))
            .copied()
            .collect()
    }
}

/// Apply a whole HEAT_SAMPLE event in one transaction (S7.1/3): each
/// record's score is folded into its row's EWMA, and the row gets
/// `last_heat_sample_at` = `updated_at` = now. Records for the same OID
/// apply in order. An empty event touches nothing (S7.1/A3).
pub fn apply_heat_sample(
    store: &mut Store,
    records: &[HeatRecord],
    now: Timestamp,
    half_life_secs: f64,
) -> Result<HeatIngest, StoreError> {
    let mut out = HeatIngest::default();
    if records.is_empty() {
        return Ok(out);
    }
    let now_s = now.to_rfc3339();
    let mut unknown_set: HashSet<[u8; 16]> = HashSet::new();
    let tx = store
        .conn_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut select = tx.prepare_cached(
            "SELECT ewma_value, last_heat_sample_at FROM smoothfs_objects WHERE object_id = ?1",
        )?;
        let mut update = tx.prepare_cached(
            "UPDATE smoothfs_objects SET ewma_value = ?2, last_heat_sample_at = ?3, \
             updated_at = ?3 WHERE object_id = ?1",
        )?;
        for r in records {
            let oid = oid_hex(&r.oid);
            let mut rows = select.query([&oid])?;
            let Some(row) = rows.next()? else {
                if unknown_set.contains(&r.oid) {
                    continue;
                }
                if unknown_set.len() < MAX_INSPECTS_PER_EVENT {
                    unknown_set.insert(r.oid);
                    out.unknown.push(r.oid);
                } else {
                    out.dropped += 1;
                }
                continue;
            };
            let ewma: Option<f64> = row.get(0)?;
            let stamp: Option<String> = row.get(1)?;
            drop(rows);
            let previous = ewma.zip(stamp);
            let value = ewma_update(
                previous.as_ref().map(|(e, s)| (*e, s.as_str())),
                score(r),
                now,
                half_life_secs,
            );
            update.execute(rusqlite::params![oid, value, now_s])?;
            out.applied += 1;
        }
    }
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(opens: u32, read: u64, write: u64) -> HeatRecord {
        HeatRecord {
            open_count_delta: opens,
            read_bytes_delta: read,
            write_bytes_delta: write,
            ..HeatRecord::default()
        }
    }

    /// S7.1/A1.
    #[test]
    fn first_sample_score() {
        let s = score(&record(3, 1 << 20, 2 << 20));
        assert_eq!(s, 5255168.0);
        assert_eq!(
            ewma_update(None, s, Timestamp::from_unix_secs(100), 86400.0),
            5255168.0
        );
    }

    /// S7.1/A2.
    #[test]
    fn one_half_life_later_halves_the_old_value() {
        let t0 = Timestamp::from_unix_secs(1_700_000_000);
        let first = ewma_update(None, 1000.0, t0, 3600.0);
        let stamp = t0.to_rfc3339();
        let second = ewma_update(Some((first, &stamp)), 500.0, t0.add_secs(3600), 3600.0);
        assert_eq!(second, 1000.0);
    }

    #[test]
    fn future_and_unparsable_stamps_give_gap_zero() {
        let now = Timestamp::from_unix_secs(1_700_000_000);
        let future = now.add_secs(60).to_rfc3339();
        assert_eq!(ewma_update(Some((10.0, &future)), 1.0, now, 3600.0), 11.0);
        assert_eq!(ewma_update(Some((10.0, "garbage")), 1.0, now, 3600.0), 11.0);
    }

    #[test]
    fn non_positive_half_life_falls_back_to_a_day() {
        assert_eq!(decay(86400.0, 0.0), 0.5);
        assert_eq!(decay(86400.0, -5.0), 0.5);
        assert_eq!(decay(86400.0, f64::NAN), 0.5);
    }

    /// S7.2/A1.
    #[test]
    fn heat_now_decays_to_a_quarter_after_two_half_lives() {
        let t0 = Timestamp::from_unix_secs(1_700_000_000);
        assert_eq!(heat_now(1000.0, Some(t0), t0.add_secs(7200), 3600.0), 250.0);
        assert_eq!(heat_now(1000.0, None, t0.add_secs(7200), 3600.0), 1000.0);
    }
}

/// Write-behind heat state (S7.1 at ingest rate): the EWMA of every object
/// that has received heat, applied in memory per event and written to the
/// store in one transaction per [`HeatCache::flush`] (the daemon flushes
/// every few seconds, before each planner pass and at shutdown). The value
/// an object gets is exactly what [`apply_heat_sample`] would give it; what
/// a crash can lose is the heat of the last few seconds, which the data
/// plane also treats as soft (S6.1 item 2).
#[derive(Default)]
pub struct HeatCache {
    /// oid -> (ewma, last sample time in unix ns, written to the store)
    entries: std::collections::HashMap<[u8; 16], (f64, i64, bool)>,
    dirty: usize,
}

impl HeatCache {
    pub fn new() -> HeatCache {
        HeatCache::default()
    }

    /// Objects held; objects with changes not yet in the store.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn dirty(&self) -> usize {
        self.dirty
    }

    /// Apply one HEAT_SAMPLE event. OIDs not yet cached are read from the
    /// store in one query; OIDs without a row come back in
    /// [`HeatIngest::unknown`] (at most [`MAX_INSPECTS_PER_EVENT`]).
    pub fn ingest(
        &mut self,
        store: &Store,
        records: &[HeatRecord],
        now: Timestamp,
        half_life_secs: f64,
    ) -> Result<HeatIngest, StoreError> {
        let mut out = HeatIngest::default();
        if records.is_empty() {
            return Ok(out);
        }
        let missing: Vec<[u8; 16]> = {
            let mut seen = HashSet::new();
            records
                .iter()
                .filter(|r| !self.entries.contains_key(&r.oid) && seen.insert(r.oid))
                .map(|r| r.oid)
                .collect()
        };
        if !missing.is_empty() {
            self.load(store, &missing)?;
        }
        let now_ns = now.unix_nanos();
        let mut unknown_set: HashSet<[u8; 16]> = HashSet::new();
        for r in records {
            let Some(e) = self.entries.get_mut(&r.oid) else {
                if unknown_set.insert(r.oid) {
                    if out.unknown.len() < MAX_INSPECTS_PER_EVENT {
                        out.unknown.push(r.oid);
                    } else {
                        out.dropped += 1;
                    }
                }
                continue;
            };
            let s = score(r);
            e.0 = if e.1 == i64::MIN {
                s
            } else {
                let gap = ((now_ns - e.1) as f64 / 1e9).max(0.0);
                e.0 * decay(gap, half_life_secs) + s
            };
            e.1 = now_ns;
            if e.2 {
                e.2 = false;
                self.dirty += 1;
            }
            out.applied += 1;
        }
        Ok(out)
    }

    /// Read rows for `oids` into the cache (absent rows stay absent).
    fn load(&mut self, store: &Store, oids: &[[u8; 16]]) -> Result<(), StoreError> {
        let conn = store.conn();
        for chunk in oids.chunks(500) {
            let sql = format!(
                "SELECT object_id, ewma_value, last_heat_sample_at FROM smoothfs_objects \
                 WHERE object_id IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let hex: Vec<String> = chunk.iter().map(oid_hex).collect();
            let mut rows = stmt.query(rusqlite::params_from_iter(hex.iter()))?;
            while let Some(row) = rows.next()? {
                let id: String = row.get(0)?;
                let ewma: Option<f64> = row.get(1)?;
                let stamp: Option<String> = row.get(2)?;
                let Some(oid) = crate::store::parse_oid(&id) else {
                    continue;
                };
                let at = match (ewma, stamp.as_deref().and_then(Timestamp::parse)) {
                    (Some(_), Some(t)) => t.unix_nanos(),
                    _ => i64::MIN,
                };
                self.entries.insert(oid, (ewma.unwrap_or(0.0), at, true));
            }
        }
        Ok(())
    }

    /// Write every changed EWMA to the store in one transaction; returns
    /// how many rows were written.
    pub fn flush(&mut self, store: &mut Store) -> Result<usize, StoreError> {
        if self.dirty == 0 {
            return Ok(0);
        }
        let tx = store
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut update = tx.prepare_cached(
                "UPDATE smoothfs_objects SET ewma_value = ?2, last_heat_sample_at = ?3, \
                 updated_at = ?3 WHERE object_id = ?1",
            )?;
            for (oid, e) in self.entries.iter().filter(|(_, e)| !e.2) {
                let stamp = Timestamp::from_unix_nanos(e.1).to_rfc3339();
                update.execute(rusqlite::params![oid_hex(oid), e.0, stamp])?;
                n += 1;
            }
        }
        tx.commit()?;
        for e in self.entries.values_mut() {
            e.2 = true;
        }
        self.dirty = 0;
        Ok(n)
    }

    /// Forget an object (its row is gone or stale).
    pub fn forget(&mut self, oid: &[u8; 16]) {
        if let Some(e) = self.entries.remove(oid)
            && !e.2
        {
            self.dirty = self.dirty.saturating_sub(1);
        }
    }
}
