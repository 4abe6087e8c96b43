//! The worker pool's store side (S9.3, S9.5, S9.6, S10.3/6) against the
//! one-object fake data plane of the worker tests: every transition is
//! committed before its step, a source race is a failure on the retry
//! schedule, a refusal is a deferral logged at most hourly, an operator
//! abort rolls back without counting an attempt, an object removed during
//! a move stops it, and the queue never holds or runs one OID twice.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FakePool, OID, exists};
use smoothfs_control::config::PolicyConfig;
use smoothfs_control::copy::Throttle;
use smoothfs_control::planner::Blocker;
use smoothfs_control::store::{
    DiscoveredTier, LogQuery, NewObject, PoolDiscovery, PoolRecord, Store, Timestamp,
};
use smoothfs_control::storeext;
use smoothfs_control::workers::{
    Job, MoveResult, MoveTracker, OPERATOR_ABORT_REASON, PlannedMove, Queue, Rejected,
    run_planned_move,
};
use smoothfs_uapi::ids::{MovementState, PinState, PolicyPin};

const SIZE: usize = 3 * 1024 * 1024 + 77;

fn data() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

fn policy() -> PolicyConfig {
    PolicyConfig {
        // The test filesystem may be fuller than a real tier would be.
        move_reserve_bytes: 0,
        ..PolicyConfig::default()
    }
}

/// A store with the fake pool registered and the object's row on tier 0.
fn setup(pool: &FakePool) -> (Mutex<Store>, PoolRecord) {
    let mut st = Store::open_in_memory().unwrap();
    let record = st
        .register_pool(&PoolDiscovery {
            uuid: pool.uuid,
            name: "fake".into(),
            tiers: pool
                .tiers
                .iter()
                .enumerate()
                .map(|(i, p)| DiscoveredTier {
                    rank: i as u8,
                    path: p.clone(),
                })
                .collect(),
        })
        .unwrap();
    // The test filesystem may be nearly full; W6 uses the tier's full %.
    st.set_tier_thresholds(&record.tiers[1].id, 90, 100)
        .unwrap();
    let record = st.pool(&record.namespace_id).unwrap().unwrap();
    st.insert_object(
        &NewObject {
            oid: OID,
            namespace_id: record.namespace_id.clone(),
            current_tier_id: record.tiers[0].id.clone(),
            rel_path: pool.obj.lock().unwrap().rel_path.to_string_lossy().into(),
            size_bytes: SIZE as u64,
            mtime_ns: 0,
            pin_state: PinState::None,
            policy_pin: PolicyPin::None,
            mediated: false,
            object_gen: 1,
        },
        Timestamp::now(),
    )
    .unwrap();
    (Mutex::new(st), record)
}

fn tracker(pool: &FakePool, seq: u64) -> MoveTracker {
    MoveTracker::new(
        "fake",
        pool.uuid,
        OID,
        "",
        0,
        1,
        "demote:pressure-soft",
        seq,
    )
}

fn planned<'a>(record: &'a PoolRecord, pool: &FakePool, seq: u64) -> PlannedMove<'a> {
    PlannedMove {
        pool: record,
        pool_uuid: pool.uuid,
        oid: OID,
        to: 1,
        transaction_seq: seq,
    }
}

/// `(from, to, payload)` of the object's log rows, oldest first.
fn log(st: &Mutex<Store>) -> Vec<(Option<MovementState>, MovementState, serde_json::Value)> {
    let mut rows = st
        .lock()
        .unwrap()
        .movement_log(&LogQuery {
            object_id: Some(OID),
            limit: 500,
            ..LogQuery::default()
        })
        .unwrap();
    rows.reverse();
    rows.into_iter()
        .map(|r| (r.from_state, r.to_state, r.payload))
        .collect()
}

fn states(st: &Mutex<Store>) -> Vec<MovementState> {
    log(st).into_iter().map(|(_, to, _)| to).collect()
}

#[test]
fn a_planned_move_logs_each_state_once_in_order_and_finalises() {
    let pool = FakePool::new("a/b/c.bin", &data());
    let (st, record) = setup(&pool);
    let t = tracker(&pool, 41);
    let r = run_planned_move(
        &st,
        &mut pool.client(),
        &planned(&record, &pool, 41),
        &policy(),
        None,
        &t,
    );
    assert!(
        matches!(&r, MoveResult::Moved { bytes, .. } if *bytes == SIZE as u64),
        "{r:?}"
    );
    use MovementState::*;
    let log = log(&st);
    let expected = [
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
    assert_eq!(
        log.iter().map(|(_, to, _)| *to).collect::<Vec<_>>(),
        expected
    );
    // Each row continues from the previous one.
    let mut prev = Placed;
    for (from, to, _) in &log {
        assert_eq!(*from, Some(prev));
        prev = *to;
    }
    let row = st.lock().unwrap().object(&OID).unwrap().unwrap();
    assert_eq!(row.movement_state, Placed);
    assert_eq!(row.current_tier_id, record.tiers[1].id);
    assert_eq!(row.intended_tier_id, None);
    assert_eq!(row.last_committed_cutover_gen, 1);
    assert_eq!(row.transaction_seq, 41);
    assert!(row.last_movement_at.is_some());
    assert_eq!(t.progress(), (SIZE as u64, SIZE as u64));
    assert_eq!(std::fs::read(pool.lower(1)).unwrap(), data());
}

/// S9.3/2: `copy_in_progress` is in the store before the first byte of
/// the staging file is written.
#[test]
fn copy_in_progress_is_committed_before_bytes_flow() {
    let pool = FakePool::new("slow.bin", &data());
    let (st, record) = setup(&pool);
    let st = Arc::new(st);
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let st = Arc::clone(&st);
        let done = Arc::clone(&done);
        let incoming = pool.tiers[1].join(".smoothfs/incoming");
        std::thread::spawn(move || {
            let mut checked = 0;
            while !done.load(Ordering::SeqCst) {
                let staged: u64 = std::fs::read_dir(&incoming)
                    .map(|rd| {
                        rd.flatten()
                            .filter_map(|e| e.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                if staged > 0 && staged < SIZE as u64 {
                    let state = st
                        .lock()
                        .unwrap()
                        .object(&OID)
                        .unwrap()
                        .unwrap()
                        .movement_state;
                    assert_eq!(state, MovementState::CopyInProgress);
                    checked += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            checked
        })
    };
    let r = run_planned_move(
        &st,
        &mut pool.client(),
        &planned(&record, &pool, 5),
        &policy(),
        Some(Arc::new(Throttle::new(2 << 20))),
        &tracker(&pool, 5),
    );
    done.store(true, Ordering::SeqCst);
    let checked = watcher.join().unwrap();
    assert!(matches!(r, MoveResult::Moved { .. }), "{r:?}");
    assert!(checked > 0, "the copy was never seen half done");
}

/// S9.3/3, S9.5/1, S10.2 W9: a write between the INSPECTs is a source
/// race: the plan is aborted, the row is `failed` with attempts 1 and the
/// first retry delay, and exactly one `failed` log row closes the move.
#[test]
fn a_source_race_is_a_failure_on_the_retry_schedule() {
    let pool = FakePool::new("raced.bin", &data());
    pool.obj.lock().unwrap().bump_write_seq_at_inspect = Some(2);
    let (st, record) = setup(&pool);
    let before = Timestamp::now();
    let r = run_planned_move(
        &st,
        &mut pool.client(),
        &planned(&record, &pool, 9),
        &policy(),
        None,
        &tracker(&pool, 9),
    );
    let MoveResult::Failed { reason, attempts } = r else {
        panic!("{r:?}");
    };
    assert!(reason.starts_with("source raced"), "{reason}");
    assert_eq!(attempts, 1);
    let row = st.lock().unwrap().object(&OID).unwrap().unwrap();
    assert_eq!(row.movement_state, MovementState::Failed);
    assert_eq!(row.current_tier_id, record.tiers[0].id);
    assert_eq!(row.intended_tier_id, None);
    let next = Timestamp::parse(row.next_attempt_at.as_deref().unwrap()).unwrap();
    let delay = next.secs_since(before);
    assert!((899.0..=905.0).contains(&delay), "retry in {delay} s");
    let states = states(&st);
    assert_eq!(states.last(), Some(&MovementState::Failed));
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == MovementState::Failed)
            .count(),
        1
    );
    assert!(!states.contains(&MovementState::CopyVerified));
    assert!(pool.log().contains(&"MOVE_ABORT"));
    assert!(pool.incoming(1).is_empty(), "staging file removed");
    assert!(exists(&pool.lower(0)));
    // The planner retries it only after the delay.
    let objs = st
        .lock()
        .unwrap()
        .planning_objects(&record, Timestamp::now(), 86400.0)
        .unwrap();
    assert!(
        objs[0]
            .next_attempt_at
            .is_some_and(|t| t > Timestamp::now())
    );
}

/// S9.3/4, S9.5/3: a refusal leaves the row `placed` with the deferred
/// reason and a busy-retry time, is logged once, and not again within the
/// hour; the planner then sees the blocker.
#[test]
fn refusals_are_deferred_and_logged_at_most_hourly() {
    let pool = FakePool::new("open.bin", &data());
    pool.obj.lock().unwrap().passthrough = 1;
    let (st, record) = setup(&pool);
    for seq in [20, 21] {
        let r = run_planned_move(
            &st,
            &mut pool.client(),
            &planned(&record, &pool, seq),
            &policy(),
            None,
            &tracker(&pool, seq),
        );
        assert_eq!(
            r,
            MoveResult::Refused("1 passthrough handle(s) open".into())
        );
        // The second refusal comes within the hour: no second log row.
    }
    let row = st.lock().unwrap().object(&OID).unwrap().unwrap();
    assert_eq!(row.movement_state, MovementState::Placed);
    assert_eq!(row.deferred_reason, "1 passthrough handle(s) open");
    assert_eq!(row.attempts, 0);
    let log = log(&st);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].0, log[0].1),
        (Some(MovementState::Placed), MovementState::Placed)
    );
    assert_eq!(log[0].2["deferred"], "1 passthrough handle(s) open");
    let objs = st
        .lock()
        .unwrap()
        .planning_objects(&record, Timestamp::now(), 86400.0)
        .unwrap();
    assert_eq!(objs[0].blocker, Some(Blocker::PassthroughOpen));
    assert!(pool.log().contains(&"REVOKE_MAPPINGS"));
    assert!(!pool.log().contains(&"MOVE_PLAN"));
}

/// Planner deferrals worth telling (destination full, …) are logged at
/// most once per object per hour and set no retry time.
#[test]
fn planner_deferrals_are_logged_at_most_hourly_without_a_retry_time() {
    let pool = FakePool::new("x.bin", b"x");
    let (st, record) = setup(&pool);
    let mut s = st.lock().unwrap();
    let t0 = Timestamp::now();
    let tier = record.tiers[1].id.as_str();
    assert!(
        storeext::log_planner_deferral(&mut s, &OID, tier, "deferred:destination-full", t0)
            .unwrap()
    );
    assert!(
        !storeext::log_planner_deferral(
            &mut s,
            &OID,
            tier,
            "deferred:destination-full",
            t0.add_secs(600)
        )
        .unwrap()
    );
    assert!(
        storeext::log_planner_deferral(
            &mut s,
            &OID,
            tier,
            "deferred:no-swap-victim",
            t0.add_secs(3601)
        )
        .unwrap()
    );
    let row = s.object(&OID).unwrap().unwrap();
    assert_eq!(row.next_attempt_at, None);
    assert_eq!(row.deferred_reason, "deferred:no-swap-victim");
    drop(s);
    assert_eq!(log(&st).len(), 2);
}

/// S9.6/2, A1: an operator abort during a throttled copy: within 2 s the
/// plan is aborted, the staging file is gone, the row is `placed` with
/// `next_attempt_at` = now + cooldown, one `failed` log row says "aborted
/// by operator", and no attempt is counted.
#[test]
fn an_operator_abort_mid_copy_rolls_back_without_an_attempt() {
    let pool = FakePool::new("abort.bin", &data());
    let (st, record) = setup(&pool);
    let t = Arc::new(tracker(&pool, 30));
    let canceller = {
        let t = Arc::clone(&t);
        std::thread::spawn(move || {
            while t.state() != MovementState::CopyInProgress {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(300));
            t.cancel(OPERATOR_ABORT_REASON);
            Instant::now()
        })
    };
    let r = run_planned_move(
        &st,
        &mut pool.client(),
        &planned(&record, &pool, 30),
        &policy(),
        Some(Arc::new(Throttle::new(1 << 20))),
        &t,
    );
    let cancelled_at = canceller.join().unwrap();
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    assert_eq!(r, MoveResult::Aborted(OPERATOR_ABORT_REASON.into()));
    let row = st.lock().unwrap().object(&OID).unwrap().unwrap();
    assert_eq!(row.movement_state, MovementState::Placed);
    assert_eq!(row.attempts, 0);
    assert_eq!(row.current_tier_id, record.tiers[0].id);
    let next = Timestamp::parse(row.next_attempt_at.as_deref().unwrap()).unwrap();
    assert!(next.secs_since(Timestamp::now()) > 21000.0, "cooldown");
    let log = log(&st);
    let (from, to, payload) = log.last().unwrap();
    assert_eq!(
        (*from, *to),
        (Some(MovementState::CopyInProgress), MovementState::Failed)
    );
    assert_eq!(payload["reason"], OPERATOR_ABORT_REASON);
    assert!(pool.log().contains(&"MOVE_ABORT"));
    assert!(pool.incoming(1).is_empty());
    assert_eq!(std::fs::read(pool.lower(0)).unwrap(), data());
}

/// OBJECT_REMOVED during a move (the row became `stale`): the next store
/// write fails, the move is cancelled and its plan aborted; the row stays
/// stale.
#[test]
fn an_object_removed_during_its_move_stops_the_move() {
    let pool = FakePool::new("gone.bin", &data());
    let (st, record) = setup(&pool);
    let st = Arc::new(st);
    let t = Arc::new(tracker(&pool, 40));
    let remover = {
        let t = Arc::clone(&t);
        let st = Arc::clone(&st);
        std::thread::spawn(move || {
            while t.state() != MovementState::CopyInProgress {
                std::thread::sleep(Duration::from_millis(10));
            }
            st.lock()
                .unwrap()
                .mark_stale(&OID, Timestamp::now())
                .unwrap();
        })
    };
    let r = run_planned_move(
        &st,
        &mut pool.client(),
        &planned(&record, &pool, 40),
        &policy(),
        Some(Arc::new(Throttle::new(2 << 20))),
        &t,
    );
    remover.join().unwrap();
    assert!(matches!(r, MoveResult::Recovered(_)), "{r:?}");
    let row = st.lock().unwrap().object(&OID).unwrap().unwrap();
    assert_eq!(row.movement_state, MovementState::Stale);
    assert!(pool.log().contains(&"MOVE_ABORT"));
    assert!(!pool.log().contains(&"MOVE_CUTOVER"));
    assert!(pool.incoming(1).is_empty());
}

/// A row that is no longer `placed`/`failed` when its turn comes is not
/// moved.
#[test]
fn a_row_in_flight_is_skipped() {
    let pool = FakePool::new("busy.bin", &data());
    let (st, record) = setup(&pool);
    st.lock()
        .unwrap()
        .mark_stale(&OID, Timestamp::now())
        .unwrap();
    let r = run_planned_move(
        &st,
        &mut pool.client(),
        &planned(&record, &pool, 50),
        &policy(),
        None,
        &tracker(&pool, 50),
    );
    assert!(matches!(r, MoveResult::Skipped(_)), "{r:?}");
    assert!(pool.log().is_empty());
}

fn job(n: u8, from: u8, to: u8) -> Job {
    let mut oid = [0u8; 16];
    oid[15] = n;
    Job {
        pool_uuid: uuid::Uuid::from_u128(1),
        oid,
        from,
        to,
        size_bytes: 100,
        reason: "promote".into(),
        rel_path: String::new(),
        after: None,
    }
}

/// The tracker a worker makes for a job it takes from the queue.
fn queue_tracker(j: &Job) -> Arc<MoveTracker> {
    Arc::new(MoveTracker::new(
        "p",
        j.pool_uuid,
        j.oid,
        "",
        j.from,
        j.to,
        &j.reason,
        1,
    ))
}

/// S10.3/6: never two entries or runs for one OID; at most
/// `per_tier_moves` running moves touch a tier; a blocked job does not
/// hold up one whose tiers are free.
#[test]
fn the_queue_dedupes_and_limits_moves_per_tier() {
    let q = Queue::new();
    q.push(job(1, 1, 0)).unwrap();
    assert_eq!(q.push(job(1, 1, 0)), Err(Rejected::AlreadyQueued));
    q.push(job(2, 1, 0)).unwrap();
    q.push(job(3, 2, 1)).unwrap();
    q.push(job(4, 2, 3)).unwrap();
    let wait = Duration::from_millis(50);
    // Per tier limit 1: job 1 takes tiers 0 and 1; 2 and 3 wait; 4 runs.
    let (a, _) = q.take(1, wait, &queue_tracker).unwrap();
    assert_eq!(a.oid[15], 1);
    let (b, _) = q.take(1, wait, &queue_tracker).unwrap();
    assert_eq!(b.oid[15], 4);
    assert!(q.take(1, wait, &queue_tracker).is_none());
    // Running OIDs stay busy: no second queue entry.
    assert_eq!(q.push(job(1, 1, 0)), Err(Rejected::AlreadyQueued));
    assert_eq!(q.running().len(), 2);
    q.done(&a, true);
    let (c, _) = q.take(1, wait, &queue_tracker).unwrap();
    assert_eq!(c.oid[15], 2);
    // Unqueue and cancel.
    assert_eq!(q.cancel(&job(3, 0, 0).oid, "x"), Some(false));
    assert_eq!(q.cancel(&job(2, 0, 0).oid, "x"), Some(true));
    assert_eq!(q.cancel(&job(9, 0, 0).oid, "x"), None);
    q.done(&b, true);
    q.done(&c, true);
    assert!(q.busy().is_empty());
    // Capacity.
    for n in 0..=255u8 {
        let mut j = job(n, 0, 1);
        j.oid[0] = 1;
        q.push(j).unwrap();
    }
    assert_eq!(q.queued_len(), 256);
    // What a planner tick may still emit (it plans no more than this).
    assert_eq!(
        q.free_slots(),
        smoothfs_control::workers::QUEUE_CAPACITY - 256
    );
    assert_eq!(q.drop_pool(&uuid::Uuid::from_u128(1)), 256);
    assert!(q.busy().is_empty());
}

/// A swap's promotion (S22.4/4) moves into the room its victim leaves: it
/// is not started while the victim's demotion is queued or running, even
/// with tiers free for both; it is dropped, no longer busy, when the
/// victim did not move.
#[test]
fn a_swap_promotion_waits_for_its_victim() {
    let q = Queue::new();
    let wait = Duration::from_millis(50);
    let victim = job(1, 0, 1);
    let mut promo = job(2, 1, 0);
    promo.after = Some(victim.oid);
    // Queued before its victim, it still waits for it.
    q.push(promo.clone()).unwrap();
    q.push(victim.clone()).unwrap();
    let (v, _) = q.take(2, wait, &queue_tracker).unwrap();
    assert_eq!(v.oid, victim.oid);
    assert!(
        q.take(2, wait, &queue_tracker).is_none(),
        "promotion started beside its victim"
    );
    assert!(q.done(&v, true).is_empty());
    let (p, _) = q.take(2, wait, &queue_tracker).unwrap();
    assert_eq!(p.oid, promo.oid);
    assert!(q.done(&p, true).is_empty());

    // The victim fails: its promotion leaves the queue, other jobs stay.
    q.push(promo.clone()).unwrap();
    q.push(victim.clone()).unwrap();
    q.push(job(3, 1, 0)).unwrap();
    let (v, _) = q.take(2, wait, &queue_tracker).unwrap();
    assert_eq!(v.oid, victim.oid);
    let dropped = q.done(&v, false);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].oid, promo.oid);
    assert!(!q.is_busy(&promo.oid));
    assert_eq!(q.queued_len(), 1);
    let (o, _) = q.take(2, wait, &queue_tracker).unwrap();
    assert_eq!(o.oid[15], 3);
    assert!(q.done(&o, false).is_empty());
    assert!(q.busy().is_empty());

    // An operator unqueues the victim: its promotion goes with it.
    q.push(promo.clone()).unwrap();
    q.push(victim.clone()).unwrap();
    assert_eq!(q.cancel(&victim.oid, "operator"), Some(false));
    assert!(q.busy().is_empty());
    assert_eq!(q.queued_len(), 0);
}

/// S29.2 `smoothfs_verify_readback` and `smoothfs_verify_source_rehash`
/// reach the worker's options (the copy reads back with O_DIRECT only
/// when asked).
#[test]
fn verify_policy_reaches_the_worker_options() {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut policy = PolicyConfig::default();
    let o = smoothfs_control::workers::move_options(&policy, 1, None, None, Arc::clone(&cancel));
    assert!(!o.copy.readback_direct);
    assert!(o.verify_source_rehash);
    policy
        .set("smoothfs_verify_readback", "direct")
        .expect("direct is accepted");
    policy
        .set("smoothfs_verify_source_rehash", "false")
        .expect("false is accepted");
    let o = smoothfs_control::workers::move_options(&policy, 1, None, None, cancel);
    assert!(o.copy.readback_direct);
    assert!(!o.verify_source_rehash);
}
