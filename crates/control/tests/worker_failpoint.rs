//! `worker_after_copy=error(5)` fails the move between W8 and W9: the plan
//! is aborted and the staging file removed. Failpoints are read from the
//! environment once per process, so this test has a binary of its own.

mod common;

use common::{FakePool, OID};
use smoothfs_control::worker::{
    FAILPOINT_AFTER_COPY, MoveError, MoveOptions, RecordingObserver, run_move,
};
use smoothfs_uapi::ids::MovementState;

#[test]
fn worker_after_copy_error_fails_and_aborts() {
    // SAFETY: the only test in this binary; set before any thread reads
    // the environment or evaluates a failpoint.
    unsafe { std::env::set_var(smoothfs_uapi::failpoint::ENV, "worker_after_copy=error(5)") };
    let pool = FakePool::new("f", b"some bytes to move");
    let mut opts = MoveOptions::new(1);
    opts.reserve_bytes = 0;
    let mut obs = RecordingObserver::default();
    let err = run_move(&mut pool.client(), &pool.uuid, &OID, 1, &opts, &mut obs).unwrap_err();
    assert!(
        matches!(
            err,
            MoveError::Failpoint {
                name: FAILPOINT_AFTER_COPY,
                errno: 5
            }
        ),
        "{err}"
    );
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
    assert_eq!(
        obs.states.last().unwrap().1,
        "failpoint worker_after_copy: EIO"
    );
    assert_eq!(pool.log().last(), Some(&"MOVE_ABORT"));
    assert!(!pool.log().contains(&"MOVE_CUTOVER"));
    assert!(pool.incoming(1).is_empty(), "staging removed");
    assert_eq!(pool.obj.lock().unwrap().state, MovementState::Placed);
}
