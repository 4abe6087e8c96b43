//! The worker pool (S10.3/5–7): a queue of planned moves, N worker threads
//! that run each one with [`worker::run_move`], and the store writes of
//! every transition (S9.3).
//!
//! Owns: queue admission (never two entries or runs for one OID, at most
//! 1024 queued, S29.2), the per-tier limit on concurrent moves, the
//! running-move progress shown by `smoothfs move status`, cancellation
//! (operator abort, shutdown), and what the store records when a move ends:
//! [`Store::finalise_move`] on success, [`Store::record_failure`] (retry
//! schedule, S9.5) on failure, [`Store::record_deferral`] on a refusal,
//! [`Store::record_abort`] on an operator abort. Must never: let a step
//! start before the row says so (the observer commits each state before
//! returning to the worker, which announces `*_in_progress` states before
//! their work), or record a failure for a move that already switched
//! (recovery forwards those).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use smoothfs_uapi::client::Client;
use smoothfs_uapi::ids::MovementState;
use uuid::Uuid;

use crate::config::PolicyConfig;
use crate::copy::{CopyError, CopyOptions, Throttle};
use crate::daemon::lock;
use crate::recovery::{self, RecoveryReport};
use crate::store::{MoveRef, PoolRecord, Store, Timestamp, oid_hex};
use crate::storeext;
use crate::worker::{self, MoveError, MoveObserver, MoveOptions, MoveOutcome, Refusal};

/// Plans queued at most (S29.2 "plan queue 1024").
pub const QUEUE_CAPACITY: usize = 1024;

/// The deferral reason of an operator abort (S9.6/2).
pub const OPERATOR_ABORT_REASON: &str = "aborted by operator";
/// The reason recorded when the daemon stops during a copy.
pub const SHUTDOWN_ABORT_REASON: &str = "aborted: control plane stopping";

// ---------------------------------------------------------------------------
// Progress of one running move
// ---------------------------------------------------------------------------

/// A running move as `smoothfs move status` shows it (S10.3/7), and its
/// cancel flag.
#[derive(Debug)]
pub struct MoveTracker {
    pub pool_name: String,
    pub pool_uuid: Uuid,
    pub oid: [u8; 16],
    pub rel_path: Mutex<String>,
    pub from: u8,
    pub to: u8,
    pub reason: String,
    pub transaction_seq: u64,
    pub started: SystemTime,
    started_at: Instant,
    state: Mutex<MovementState>,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    cancel: Arc<AtomicBool>,
    cancel_reason: Mutex<Option<String>>,
}

impl MoveTracker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool_name: &str,
        pool_uuid: Uuid,
        oid: [u8; 16],
        rel_path: &str,
        from: u8,
        to: u8,
        reason: &str,
        transaction_seq: u64,
    ) -> MoveTracker {
        MoveTracker {
            pool_name: pool_name.to_string(),
            pool_uuid,
            oid,
            rel_path: Mutex::new(rel_path.to_string()),
            from,
            to,
            reason: reason.to_string(),
            transaction_seq,
            started: SystemTime::now(),
            started_at: Instant::now(),
            state: Mutex::new(MovementState::Placed),
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            cancel: Arc::new(AtomicBool::new(false)),
            cancel_reason: Mutex::new(None),
        }
    }

    /// Ask the worker to stop (before the cutover; later the move
    /// completes). The first reason given wins.
    pub fn cancel(&self, reason: &str) {
        let mut r = lock(&self.cancel_reason);
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The bytes the move is expected to copy, until the copy reports.
    pub fn set_expected_bytes(&self, n: u64) {
        self.bytes_total.store(n, Ordering::Relaxed);
    }

    pub fn cancel_reason(&self) -> Option<String> {
        lock(&self.cancel_reason).clone()
    }

    pub fn state(&self) -> MovementState {
        *lock(&self.state)
    }

    /// `(done, total)` bytes of the copy.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.bytes_done.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        )
    }

    /// The `move status` JSON of this move.
    pub fn to_json(&self) -> serde_json::Value {
        let (done, total) = self.progress();
        let secs = self.started_at.elapsed().as_secs_f64();
        let started = Timestamp::from_unix_nanos(
            self.started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        );
        serde_json::json!({
            "pool": self.pool_name,
            "pool_uuid": self.pool_uuid.to_string(),
            "object_id": oid_hex(&self.oid),
            "path": *lock(&self.rel_path),
            "from_tier": self.from,
            "to_tier": self.to,
            "reason": self.reason,
            "transaction_seq": self.transaction_seq,
            "state": self.state().as_str(),
            "bytes_done": done,
            "bytes_total": total,
            "bytes_per_s": if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 },
            "started_at": started.to_rfc3339(),
            "cancelling": self.cancel.load(Ordering::Relaxed),
        })
    }
}

// ---------------------------------------------------------------------------
// One planned move, start to finish
// ---------------------------------------------------------------------------

/// A move the planner emitted (S10.1), as a worker runs it.
#[derive(Clone, Debug)]
pub struct PlannedMove<'a> {
    pub pool: &'a PoolRecord,
    pub pool_uuid: Uuid,
    pub oid: [u8; 16],
    pub to: u8,
    pub transaction_seq: u64,
}

/// How a planned move ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveResult {
    /// Bytes copied and the copy method.
    Moved { bytes: u64, method: String },
    /// Failure recorded; `attempts` after it.
    Failed { reason: String, attempts: u32 },
    /// Refusal recorded (S9.3/4).
    Refused(String),
    /// Cancelled (operator or shutdown) and recorded as an abort.
    Aborted(String),
    /// INSPECT says the object no longer exists: the row is `stale`.
    Gone,
    /// Nothing to do: the row was not `placed`/`failed`, or the object was
    /// already on the destination (row corrected).
    Skipped(String),
    /// The worker stopped after the switch (failpoint); left to recovery.
    StoppedAfterSwitch,
    /// The store could not record a transition; the row was recovered
    /// from INSPECT instead.
    Recovered(String),
}

/// Writes every transition to the store before the worker goes on (S9.3/2).
struct StoreObserver<'a> {
    store: &'a Mutex<Store>,
    oid: [u8; 16],
    seq: u64,
    source_tier_id: String,
    dest_tier_id: String,
    tracker: &'a MoveTracker,
    /// The first store write that failed; the move is then cancelled.
    store_error: Option<String>,
}

impl MoveObserver for StoreObserver<'_> {
    fn state(&mut self, state: MovementState, detail: &str) {
        *lock(&self.tracker.state) = state;
        // `failed` and `placed` (refusal) are recorded from the outcome.
        if matches!(state, MovementState::Failed | MovementState::Placed) {
            return;
        }
        if self.store_error.is_some() {
            return;
        }
        let mv = MoveRef {
            transaction_seq: self.seq,
            source_tier_id: &self.source_tier_id,
            dest_tier_id: &self.dest_tier_id,
            rel_path: "",
        };
        let r = lock(self.store).set_state(&self.oid, state, &mv, detail, Timestamp::now());
        if let Err(e) = r {
            tracing::error!(oid = %oid_hex(&self.oid), seq = self.seq, state = %state,
                "store: cannot record the transition ({e}); cancelling the move");
            self.store_error = Some(e.to_string());
            self.tracker.cancel(&format!("store write failed: {e}"));
        }
    }

    fn progress(&mut self, done: u64, total: u64) {
        self.tracker.bytes_done.store(done, Ordering::Relaxed);
        self.tracker.bytes_total.store(total, Ordering::Relaxed);
    }
}

/// The worker options for a move under `policy`.
pub fn move_options(
    policy: &PolicyConfig,
    seq: u64,
    full_pct: Option<u8>,
    throttle: Option<Arc<Throttle>>,
    cancel: Arc<AtomicBool>,
) -> MoveOptions {
    let mut o = MoveOptions::new(seq);
    o.reserve_bytes = policy.move_reserve_bytes;
    o.full_pct = full_pct;
    o.verify_source_rehash = policy.verify_source_rehash;
    o.copy = CopyOptions {
        chunk_bytes: usize::try_from(policy.move_chunk_bytes).unwrap_or(usize::MAX),
        throttle,
        cancel: Some(cancel),
        readback_direct: policy.verify_readback == crate::config::VerifyReadback::Direct,
        ..CopyOptions::default()
    };
    o
}

/// Run one planned move and record its end in the store. The row must be
/// `placed` or `failed`; its current tier is the source.
pub fn run_planned_move(
    store: &Mutex<Store>,
    client: &mut Client,
    mv: &PlannedMove<'_>,
    policy: &PolicyConfig,
    throttle: Option<Arc<Throttle>>,
    tracker: &MoveTracker,
) -> MoveResult {
    let hex = oid_hex(&mv.oid);
    let row = match lock(store).object(&mv.oid) {
        Ok(Some(r)) => r,
        Ok(None) => return MoveResult::Skipped("no row".into()),
        Err(e) => return MoveResult::Skipped(format!("store: {e}")),
    };
    if !matches!(
        row.movement_state,
        MovementState::Placed | MovementState::Failed
    ) {
        return MoveResult::Skipped(format!("row is {}", row.movement_state));
    }
    if !row.rel_path.is_empty() {
        *lock(&tracker.rel_path) = row.rel_path.clone();
    }
    let Some(dest) = mv.pool.tier(mv.to) else {
        return MoveResult::Skipped(format!("pool has no tier {}", mv.to));
    };
    let dest_tier_id = dest.id.clone();
    let source_tier_id = row.current_tier_id.clone();
    let opts = move_options(
        policy,
        mv.transaction_seq,
        Some(dest.full_threshold_pct),
        throttle,
        Arc::clone(&tracker.cancel),
    );
    let mut obs = StoreObserver {
        store,
        oid: mv.oid,
        seq: mv.transaction_seq,
        source_tier_id: source_tier_id.clone(),
        dest_tier_id: dest_tier_id.clone(),
        tracker,
        store_error: None,
    };
    let outcome = worker::run_move(client, &mv.pool_uuid, &mv.oid, mv.to, &opts, &mut obs);
    let store_error = obs.store_error.take();
    let mref = MoveRef {
        transaction_seq: mv.transaction_seq,
        source_tier_id: &source_tier_id,
        dest_tier_id: &dest_tier_id,
        rel_path: "",
    };
    let now = Timestamp::now();
    if let Some(err) = store_error {
        // The row no longer follows the move (OBJECT_REMOVED made it
        // stale, or the store failed): ask the data plane where the object
        // is, as a restart would.
        let mut report = RecoveryReport::default();
        if let Ok(Some(row)) = lock(store).object(&mv.oid)
            && !matches!(
                row.movement_state,
                MovementState::Placed | MovementState::Stale
            )
        {
            let _ = recovery::recover_row(store, client, &mv.pool_uuid, mv.pool, &row, &mut report);
        }
        return MoveResult::Recovered(err);
    }
    let cancel_reason = tracker.cancel_reason();
    match outcome {
        Ok(MoveOutcome::Moved(report)) => {
            if let Err(e) = lock(store).finalise_move(&mv.oid, &mref, now) {
                tracing::error!(oid = %hex, "store: cannot finalise the move: {e}");
                return MoveResult::Recovered(e.to_string());
            }
            tracing::info!(pool = %mv.pool.name, oid = %hex, seq = mv.transaction_seq,
                tier = mv.to, bytes = report.copy.bytes_total, method = %report.copy.method,
                secs = report.duration.as_secs_f64(),
                "moved {} from tier {} to tier {}", report.rel_path.display(),
                report.from_tier, report.to_tier);
            MoveResult::Moved {
                bytes: report.copy.bytes_total,
                method: report.copy.method.as_str().to_string(),
            }
        }
        Ok(MoveOutcome::Refused(Refusal::Inspect { errno, .. })) if errno == libc::ENOENT => {
            let _ = lock(store).mark_stale(&mv.oid, now);
            MoveResult::Gone
        }
        Ok(MoveOutcome::Refused(Refusal::AlreadyOnDestination { rank })) => {
            let _ = storeext::set_current_tier(&mut lock(store), &mv.oid, &dest_tier_id, now);
            MoveResult::Skipped(format!("already on tier {rank}"))
        }
        Ok(MoveOutcome::Refused(r)) => {
            let reason = r.to_string();
            if let Err(e) =
                lock(store).record_deferral(&mv.oid, &mref, &reason, policy.busy_retry_seconds, now)
            {
                tracing::warn!(oid = %hex, "store: cannot record the refusal: {e}");
            }
            MoveResult::Refused(reason)
        }
        Err(e) if e.is_after_switch() => MoveResult::StoppedAfterSwitch,
        Err(MoveError::Copy(CopyError::Cancelled)) if cancel_reason.is_some() => {
            let reason = cancel_reason.unwrap_or_default();
            let retry_after = if reason == OPERATOR_ABORT_REASON {
                policy.movement_cooldown_seconds
            } else {
                0
            };
            let mut st = lock(store);
            let state = st.object(&mv.oid).ok().flatten().map(|r| r.movement_state);
            let r = match state {
                // Cancelled before MOVE_PLAN: nothing to roll back; an
                // operator abort still holds the object off for the cooldown.
                Some(MovementState::Placed | MovementState::Failed) if retry_after > 0 => {
                    storeext::set_next_attempt(
                        &mut st,
                        &mv.oid,
                        now.add_secs(retry_after),
                        &reason,
                        now,
                    )
                    .map(|_| ())
                }
                Some(MovementState::Placed | MovementState::Failed) => Ok(()),
                Some(_) => st
                    .record_abort(&mv.oid, &mref, &reason, retry_after, now)
                    .map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(oid = %hex, "store: cannot record the abort: {e}");
            }
            MoveResult::Aborted(reason)
        }
        Err(e) => {
            let reason = e.reason();
            match lock(store).record_failure(&mv.oid, &mref, &reason, policy, now) {
                Ok(s) => MoveResult::Failed {
                    reason,
                    attempts: s.attempts,
                },
                Err(err) => {
                    tracing::warn!(oid = %hex, "store: cannot record the failure: {err}");
                    MoveResult::Failed {
                        reason,
                        attempts: 0,
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------

/// A queued plan.
#[derive(Clone, Debug)]
pub struct Job {
    pub pool_uuid: Uuid,
    pub oid: [u8; 16],
    pub from: u8,
    pub to: u8,
    pub size_bytes: u64,
    pub reason: String,
    pub rel_path: String,
    /// The OID whose move must end before this one starts: a swap's
    /// promotion waits for its victim's demotion, whose room it takes
    /// (S22.5/1 emits the demotion first; with several workers emitting
    /// first is not enough).
    pub after: Option<[u8; 16]>,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// OIDs queued or running.
    busy: HashSet<[u8; 16]>,
    /// Moves running per (pool, rank), source and destination both count.
    load: HashMap<(Uuid, u8), u32>,
    running: HashMap<[u8; 16], Arc<MoveTracker>>,
}

/// Remove the queued jobs waiting for `victim` (swap promotions) and
/// return them.
fn drop_waiting(s: &mut QueueState, victim: &[u8; 16]) -> Vec<Job> {
    let (keep, waiting): (VecDeque<Job>, VecDeque<Job>) = std::mem::take(&mut s.jobs)
        .into_iter()
        .partition(|j| j.after.as_ref() != Some(victim));
    s.jobs = keep;
    for j in &waiting {
        s.busy.remove(&j.oid);
    }
    waiting.into()
}

/// The plan queue shared by the planner and the workers.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

/// Why a job was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    AlreadyQueued,
    Full,
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Queue a plan unless its OID is queued or running, or the queue is
    /// full (S10.3/6, S22.5/2).
    pub fn push(&self, job: Job) -> Result<(), Rejected> {
        let mut s = lock(&self.state);
        if s.busy.contains(&job.oid) {
            return Err(Rejected::AlreadyQueued);
        }
        if s.jobs.len() >= QUEUE_CAPACITY {
            return Err(Rejected::Full);
        }
        s.busy.insert(job.oid);
        s.jobs.push_back(job);
        drop(s);
        self.cv.notify_all();
        Ok(())
    }

    /// Plans the queue can still take.
    pub fn free_slots(&self) -> usize {
        QUEUE_CAPACITY.saturating_sub(self.queued_len())
    }

    /// Whether `oid` is queued or running.
    pub fn is_busy(&self, oid: &[u8; 16]) -> bool {
        lock(&self.state).busy.contains(oid)
    }

    /// Every OID queued or running.
    pub fn busy(&self) -> HashSet<[u8; 16]> {
        lock(&self.state).busy.clone()
    }

    /// Queued plus running jobs of a pool: `(from, to, bytes still to
    /// land on the destination)` for the planner's projected fill.
    pub fn in_flight(&self, pool: &Uuid) -> Vec<(u8, u8, u64, u64)> {
        let s = lock(&self.state);
        let mut out: Vec<(u8, u8, u64, u64)> = s
            .jobs
            .iter()
            .filter(|j| &j.pool_uuid == pool)
            .map(|j| (j.from, j.to, j.size_bytes, 0))
            .collect();
        for t in s.running.values().filter(|t| &t.pool_uuid == pool) {
            let (done, total) = t.progress();
            let state = t.state();
            // After the switch both tiers' usage already shows it.
            if matches!(
                state,
                MovementState::Switched
                    | MovementState::CleanupInProgress
                    | MovementState::CleanupComplete
            ) {
                continue;
            }
            out.push((t.from, t.to, total, done));
        }
        out
    }

    pub fn queued_len(&self) -> usize {
        lock(&self.state).jobs.len()
    }

    /// The running moves.
    pub fn running(&self) -> Vec<Arc<MoveTracker>> {
        let mut v: Vec<_> = lock(&self.state).running.values().cloned().collect();
        v.sort_by_key(|t| t.started);
        v
    }

    /// Queued jobs, in order.
    pub fn queued(&self) -> Vec<Job> {
        lock(&self.state).jobs.iter().cloned().collect()
    }

    /// Drop the queued jobs of a pool (it went offline).
    pub fn drop_pool(&self, pool: &Uuid) -> usize {
        let mut s = lock(&self.state);
        let before = s.jobs.len();
        let dropped: Vec<[u8; 16]> = s
            .jobs
            .iter()
            .filter(|j| &j.pool_uuid == pool)
            .map(|j| j.oid)
            .collect();
        s.jobs.retain(|j| &j.pool_uuid != pool);
        for oid in dropped {
            s.busy.remove(&oid);
        }
        before - s.jobs.len()
    }

    /// Cancel a running move or unqueue a queued one. Returns what was
    /// done: `Some(true)` running move cancelled, `Some(false)` unqueued.
    pub fn cancel(&self, oid: &[u8; 16], reason: &str) -> Option<bool> {
        let mut s = lock(&self.state);
        if let Some(t) = s.running.get(oid) {
            t.cancel(reason);
            return Some(true);
        }
        let pos = s.jobs.iter().position(|j| &j.oid == oid)?;
        s.jobs.remove(pos);
        s.busy.remove(oid);
        for w in drop_waiting(&mut s, oid) {
            tracing::info!(oid = %oid_hex(&w.oid), "swap promotion unqueued with its victim");
        }
        Some(false)
    }

    /// Cancel every running move and empty the queue (shutdown).
    pub fn cancel_all(&self, reason: &str) {
        let mut s = lock(&self.state);
        for t in s.running.values() {
            t.cancel(reason);
        }
        let queued: Vec<[u8; 16]> = s.jobs.iter().map(|j| j.oid).collect();
        s.jobs.clear();
        for oid in queued {
            s.busy.remove(&oid);
        }
        drop(s);
        self.cv.notify_all();
    }

    pub fn wake_all(&self) {
        self.cv.notify_all();
    }

    /// Take the first job whose tiers have a free slot, registering it as
    /// running with the tracker `make` builds. Waits up to `wait`.
    pub fn take(
        &self,
        per_tier: u32,
        wait: Duration,
        make: &dyn Fn(&Job) -> Arc<MoveTracker>,
    ) -> Option<(Job, Arc<MoveTracker>)> {
        let deadline = Instant::now() + wait;
        let mut s = lock(&self.state);
        loop {
            let free = |s: &QueueState, j: &Job| {
                let l = |r: u8| s.load.get(&(j.pool_uuid, r)).copied().unwrap_or(0);
                l(j.from) < per_tier
                    && l(j.to) < per_tier
                    && j.after.is_none_or(|a| !s.busy.contains(&a))
            };
            if let Some(pos) = s.jobs.iter().position(|j| free(&s, j)) {
                let job = s.jobs.remove(pos)?;
                for r in [job.from, job.to] {
                    *s.load.entry((job.pool_uuid, r)).or_insert(0) += 1;
                }
                let t = make(&job);
                s.running.insert(job.oid, Arc::clone(&t));
                return Some((job, t));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = match self.cv.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// A job finished; `moved` says whether the object now sits on the
    /// destination. When it did not, the queued jobs waiting for it (swap
    /// promotions into the room it was to leave) are dropped and returned:
    /// they would only be refused for lack of room, and the next tick plans
    /// them again.
    pub fn done(&self, job: &Job, moved: bool) -> Vec<Job> {
        let mut s = lock(&self.state);
        for r in [job.from, job.to] {
            if let Some(n) = s.load.get_mut(&(job.pool_uuid, r)) {
                *n = n.saturating_sub(1);
            }
        }
        s.running.remove(&job.oid);
        s.busy.remove(&job.oid);
        let dropped = if moved {
            Vec::new()
        } else {
            drop_waiting(&mut s, &job.oid)
        };
        drop(s);
        self.cv.notify_all();
        dropped
    }
}
