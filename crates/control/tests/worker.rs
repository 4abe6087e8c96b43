//! The worker's side of W1–W12 (S10.2) against a fake data plane: the
//! observer sees the states in order, failures abort the plan and remove
//! the staging file, refusals leave the object placed.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::SystemTime;

use common::{FakePool, OID, exists};
use smoothfs_control::worker::{
    MoveError, MoveObserver, MoveOptions, MoveOutcome, RecordingObserver, Refusal,
    SUCCESS_SEQUENCE, run_move,
};
use smoothfs_uapi::ids::MovementState;

fn data() -> Vec<u8> {
    (0..3 * 1024 * 1024 + 77).map(|i| (i % 251) as u8).collect()
}

fn opts(seq: u64) -> MoveOptions {
    let mut o = MoveOptions::new(seq);
    // The test filesystem may be fuller than a real tier would be.
    o.reserve_bytes = 0;
    o
}

#[test]
fn successful_move_reports_every_state_in_order() {
    let pool = FakePool::new("deep/tree/object.txt", &data());
    let src = pool.lower(0);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    rustix::fs::setxattr(&src, "user.x", b"1", rustix::fs::XattrFlags::empty()).unwrap();
    let mtime = fs::metadata(&src).unwrap().modified().unwrap();

    let mut obs = RecordingObserver::default();
    let out = run_move(
        &mut pool.client(),
        &pool.uuid,
        &OID,
        1,
        &opts(100),
        &mut obs,
    )
    .unwrap();
    let MoveOutcome::Moved(report) = out else {
        panic!("not moved: {out:?}");
    };
    assert_eq!(
        obs.states.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        SUCCESS_SEQUENCE.to_vec(),
        "{:?}",
        obs.names()
    );
    assert_eq!(
        pool.log(),
        [
            "STATUS",
            "INSPECT",
            "MOVE_PLAN",
            "INSPECT",
            "MOVE_CUTOVER",
            "MOVE_CLEANUP"
        ]
    );
    let dst = pool.tiers[1].join("deep/tree/object.txt");
    assert_eq!(report.lower_path, dst);
    assert_eq!((report.from_tier, report.to_tier), (0, 1));
    assert_eq!(report.generation, 1);
    assert_eq!(report.transaction_seq, 100);
    assert_eq!(report.copy.bytes_total, data().len() as u64);
    assert_eq!(report.cleanup_errno, 0);
    assert_eq!(fs::read(&dst).unwrap(), data());
    let m = fs::metadata(&dst).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(m.modified().unwrap(), mtime);
    let mut v = [0u8; 8];
    let n = rustix::fs::getxattr(&dst, "user.x", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"1");
    assert!(!exists(&src), "cleanup removed the source");
    assert!(pool.incoming(1).is_empty());
    assert!(obs.progress_calls >= 2);
    assert_eq!(
        obs.last_progress,
        Some((data().len() as u64, data().len() as u64))
    );

    // And back again within the same "mount" (S9.4/A2).
    let mut obs = RecordingObserver::default();
    let out = run_move(
        &mut pool.client(),
        &pool.uuid,
        &OID,
        0,
        &opts(101),
        &mut obs,
    )
    .unwrap();
    assert!(matches!(out, MoveOutcome::Moved(_)), "{out:?}");
    assert_eq!(
        fs::read(pool.tiers[0].join("deep/tree/object.txt")).unwrap(),
        data()
    );
}

#[test]
fn write_between_the_inspects_fails_with_source_raced_and_aborts() {
    let pool = FakePool::new("f", &data());
    // W1 is the first INSPECT, W9 the second: a write in between.
    pool.obj.lock().unwrap().bump_write_seq_at_inspect = Some(2);
    let mut obs = RecordingObserver::default();
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts(7), &mut obs).unwrap_err();
    assert!(matches!(err, MoveError::SourceRaced(_)), "{err}");
    assert!(err.reason().starts_with("source raced"), "{}", err.reason());
    let (last, reason) = obs.states.last().unwrap();
    assert_eq!(*last, MovementState::Failed);
    assert!(reason.starts_with("source raced"));
    assert_eq!(
        obs.names(),
        [
            "plan_accepted",
            "destination_reserved",
            "copy_in_progress",
            "copy_complete",
            "failed"
        ]
    );
    let log = pool.log();
    assert!(!log.contains(&"MOVE_CUTOVER"), "{log:?}");
    assert_eq!(log.last(), Some(&"MOVE_ABORT"));
    let o = pool.obj.lock().unwrap();
    assert!(o.abort_reasons[0].starts_with("source raced"));
    assert_eq!(o.state, MovementState::Placed);
    drop(o);
    assert!(pool.incoming(1).is_empty(), "staging removed");
    assert_eq!(fs::read(pool.lower(0)).unwrap(), data(), "source untouched");
}

/// Mutates the source lower in place when the copy completes, keeping its
/// size and mtime: only the W9 re-hash can notice (S10.4/A1).
struct Mutator {
    inner: RecordingObserver,
    path: std::path::PathBuf,
}

impl MoveObserver for Mutator {
    fn state(&mut self, state: MovementState, detail: &str) {
        if state == MovementState::CopyComplete {
            let mtime: SystemTime = fs::metadata(&self.path).unwrap().modified().unwrap();
            let mut bytes = fs::read(&self.path).unwrap();
            bytes[1000] ^= 0xff;
            fs::write(&self.path, &bytes).unwrap();
            fs::File::options()
                .write(true)
                .open(&self.path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        self.inner.state(state, detail);
    }
}

#[test]
fn out_of_band_mutation_after_the_copy_is_caught_by_the_rehash() {
    let pool = FakePool::new("f", &data());
    let mut obs = Mutator {
        inner: RecordingObserver::default(),
        path: pool.lower(0),
    };
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts(8), &mut obs).unwrap_err();
    assert!(matches!(err, MoveError::SourceRaced(_)), "{err}");
    // Caught by the ctime check (the re-hash was taken before the change).
    let msg = err.to_string();
    assert!(
        msg.contains("ctime") || msg.contains("content changed"),
        "{err}"
    );
    assert!(!pool.log().contains(&"MOVE_CUTOVER"));
    assert!(pool.log().contains(&"MOVE_ABORT"));
    assert!(pool.incoming(1).is_empty());
    assert_eq!(obs.inner.states.last().unwrap().0, MovementState::Failed);
}

#[test]
fn passthrough_handles_are_a_refusal_and_revoke_mappings() {
    let pool = FakePool::new("f", &data());
    pool.obj.lock().unwrap().passthrough = 1;
    let mut obs = RecordingObserver::default();
    let out = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts(9), &mut obs).unwrap();
    let MoveOutcome::Refused(r) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r, Refusal::PassthroughHandles { count: 1 });
    assert!(r.hint().contains("close it and retry"));
    assert_eq!(pool.log(), ["STATUS", "INSPECT", "REVOKE_MAPPINGS"]);
    assert_eq!(obs.names(), ["placed"]);
}

#[test]
fn lease_pin_is_refused_without_force_and_moved_with_it() {
    let pool = FakePool::new("f", &data());
    pool.obj.lock().unwrap().pin_state = 4;
    let out = run_move(
        &mut pool.client(),
        &pool.uuid,
        &OID,
        1,
        &opts(10),
        &mut RecordingObserver::default(),
    )
    .unwrap();
    assert_eq!(out, MoveOutcome::Refused(Refusal::LeasePinned));
    let mut o = opts(11);
    o.force = true;
    let out = run_move(
        &mut pool.client(),
        &pool.uuid,
        &OID,
        1,
        &o,
        &mut RecordingObserver::default(),
    )
    .unwrap();
    assert!(matches!(out, MoveOutcome::Moved(_)), "{out:?}");
}

#[test]
fn other_w2_refusals() {
    let pool = FakePool::new("f", &data());
    let mut o = pool.obj.lock().unwrap();
    o.pin_state = 5;
    drop(o);
    let run = |dest| {
        run_move(
            &mut pool.client(),
            &pool.uuid,
            &OID,
            dest,
            &opts(12),
            &mut RecordingObserver::default(),
        )
    };
    assert_eq!(
        run(1).unwrap(),
        MoveOutcome::Refused(Refusal::LunQuiesceRequired)
    );
    pool.obj.lock().unwrap().pin_state = 0;
    pool.obj.lock().unwrap().nlink = 2;
    assert_eq!(
        run(1).unwrap(),
        MoveOutcome::Refused(Refusal::Hardlinked { nlink: 2 })
    );
    pool.obj.lock().unwrap().nlink = 1;
    pool.obj.lock().unwrap().range_staged = true;
    assert_eq!(run(1).unwrap(), MoveOutcome::Refused(Refusal::RangeStaged));
    pool.obj.lock().unwrap().range_staged = false;
    assert_eq!(
        run(0).unwrap(),
        MoveOutcome::Refused(Refusal::AlreadyOnDestination { rank: 0 })
    );
    let err = run(5).unwrap_err();
    assert!(
        matches!(
            err,
            MoveError::InvalidDestination {
                rank: 5,
                tier_count: 2
            }
        ),
        "{err}"
    );
    assert!(!pool.log().contains(&"MOVE_PLAN"));
}

#[test]
fn cutover_ebusy_is_a_refusal_that_aborts_the_plan() {
    let pool = FakePool::new("f", &data());
    pool.obj.lock().unwrap().cutover_errno = Some(libc::EBUSY);
    let mut obs = RecordingObserver::default();
    let out = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts(13), &mut obs).unwrap();
    assert!(
        matches!(out, MoveOutcome::Refused(Refusal::CutoverBusy { .. })),
        "{out:?}"
    );
    assert_eq!(pool.log().last(), Some(&"MOVE_ABORT"));
    assert_eq!(obs.names().last(), Some(&"placed"));
    assert!(obs.names().contains(&"cutover_in_progress"));
    assert!(pool.incoming(1).is_empty());
    assert_eq!(pool.obj.lock().unwrap().state, MovementState::Placed);
    assert!(exists(&pool.lower(0)));
}

#[test]
fn cutover_estale_is_source_raced_during_cutover() {
    let pool = FakePool::new("f", &data());
    pool.obj.lock().unwrap().cutover_errno = Some(libc::ESTALE);
    let mut obs = RecordingObserver::default();
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts(14), &mut obs).unwrap_err();
    assert_eq!(err.reason(), "source raced during cutover");
    assert_eq!(
        obs.states.last().unwrap(),
        &(
            MovementState::Failed,
            "source raced during cutover".to_string()
        )
    );
    assert!(pool.incoming(1).is_empty());
    assert!(exists(&pool.lower(0)));
}

#[test]
fn no_space_fails_after_the_plan_and_aborts_it() {
    let pool = FakePool::new("f", &data());
    let mut o = opts(15);
    o.reserve_bytes = u64::MAX / 2;
    let mut obs = RecordingObserver::default();
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &o, &mut obs).unwrap_err();
    assert!(matches!(err, MoveError::NoSpace(_)), "{err}");
    assert_eq!(obs.names(), ["plan_accepted", "failed"]);
    assert_eq!(pool.log().last(), Some(&"MOVE_ABORT"));
    assert_eq!(pool.obj.lock().unwrap().state, MovementState::Placed);
}

#[test]
fn plan_refused_by_the_data_plane_is_a_failure_without_abort() {
    let pool = FakePool::new("f", &data());
    pool.obj.lock().unwrap().plan_errno = Some(libc::EAGAIN);
    let mut obs = RecordingObserver::default();
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts(16), &mut obs).unwrap_err();
    assert!(matches!(err, MoveError::Plan(_)), "{err}");
    assert_eq!(err.errno(), libc::EAGAIN);
    assert!(err.hint().contains("quiesced"));
    assert_eq!(obs.names(), ["failed"]);
    assert_eq!(pool.log(), ["STATUS", "INSPECT", "MOVE_PLAN"]);
}

#[test]
fn cancel_before_the_plan_fails_without_plan_or_abort() {
    let pool = FakePool::new("f", &data());
    let mut o = opts(17);
    o.copy.cancel = Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
        true,
    )));
    let mut obs = RecordingObserver::default();
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &o, &mut obs).unwrap_err();
    assert_eq!(err.reason(), "aborted by operator");
    assert_eq!(obs.names(), ["failed"]);
    assert!(!pool.log().contains(&"MOVE_PLAN"));
    assert!(!pool.log().contains(&"MOVE_ABORT"));
}

/// A copy that saw the source change says so, rather than pointing at the
/// tiers' health and free space.
#[test]
fn a_source_changed_during_the_copy_hints_at_an_idle_retry() {
    let e = smoothfs_control::worker::MoveError::Copy(
        smoothfs_control::copy::CopyError::SourceChanged(
            "the source shrank during the copy".into(),
        ),
    );
    assert!(e.hint().contains("changed during the move"), "{}", e.hint());
}
