//! The active-LUN workflow (S18.2, S18.3; S30.2 lun_pin, lun_plan and the
//! worker's LUN groups) against the fake data plane, with a recording
//! controller and store.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FakePool, OID, exists};
use smoothfs_control::config::LunController;
use smoothfs_control::lun::{
    self, Controller, LunPlan, LunRequest, LunStore, NoController, controller_for,
};
use smoothfs_control::store::{ObjectRow, PoolRecord, Store, TierTarget};
use smoothfs_control::worker::{
    MoveError, MoveOptions, MoveOutcome, RecordingObserver, SUCCESS_SEQUENCE, run_move,
};
use smoothfs_uapi::ids::{MovementState, PinState, PolicyPin};

const NS: &str = "ns-1";

type Obj = Arc<Mutex<common::Obj>>;

/// A `command`-style controller that records into the fake's trace.
struct Recorder {
    obj: Obj,
    fail_stop: bool,
    fail_resume: bool,
}

impl Controller for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }
    fn stop(&self, target: &str) -> Result<(), String> {
        self.step(format!("stop {target}"), self.fail_stop, "stop refused")
    }
    fn resume(&self, target: &str) -> Result<(), String> {
        self.step(
            format!("resume {target}"),
            self.fail_resume,
            "resume refused",
        )
    }
}

impl Recorder {
    /// Records `step` in the trace; fails with `refusal` if `fail`.
    fn step(&self, step: String, fail: bool, refusal: &str) -> Result<(), String> {
        self.obj.lock().unwrap().trace.push(step);
        if fail { Err(refusal.into()) } else { Ok(()) }
    }
}

/// The store's row, recording `pin_lun` writes into the fake's trace.
struct RowStore {
    obj: Obj,
    row: Mutex<Option<ObjectRow>>,
}

impl LunStore for RowStore {
    fn row(&self, _oid: &[u8; 16]) -> Result<Option<ObjectRow>, String> {
        Ok(self.row.lock().unwrap().clone())
    }
    fn record_pin_lun(&self, _oid: &[u8; 16]) -> Result<(), String> {
        self.obj.lock().unwrap().trace.push("record pin_lun".into());
        if let Some(r) = self.row.lock().unwrap().as_mut() {
            r.pin_state = PinState::PinLun;
        }
        Ok(())
    }
}

fn row(rel: &str, tier: &str) -> ObjectRow {
    ObjectRow {
        object_id: OID,
        namespace_id: NS.into(),
        current_tier_id: tier.into(),
        intended_tier_id: None,
        movement_state: MovementState::Placed,
        pin_state: PinState::PinLun,
        policy_pin: PolicyPin::None,
        pin_origin: String::new(),
        mediated: true,
        transaction_seq: 0,
        last_committed_cutover_gen: 0,
        object_gen: 0,
        size_bytes: 0,
        mtime_ns: 0,
        failure_reason: String::new(),
        deferred_reason: String::new(),
        attempts: 0,
        next_attempt_at: None,
        ewma_value: None,
        last_heat_sample_at: None,
        last_movement_at: None,
        created_at: String::new(),
        updated_at: String::new(),
        rel_path: rel.into(),
    }
}

fn record(pool: &FakePool) -> PoolRecord {
    PoolRecord {
        namespace_id: NS.into(),
        name: "p".into(),
        placement_domain: String::new(),
        backend_ref: pool.uuid.to_string(),
        tiers: pool
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| TierTarget {
                id: format!("tier-{i}"),
                name: format!("t{i}"),
                rank: i as u8,
                target_fill_pct: 70,
                full_threshold_pct: 90,
                backing_ref: t.to_string_lossy().into_owned(),
            })
            .collect(),
    }
}

struct Setup {
    pool: FakePool,
    record: PoolRecord,
    controller: Arc<Recorder>,
    store: Arc<RowStore>,
}

/// A LUN file `lun.img` on tier 0, pinned `pin_lun` in the data plane and
/// the row.
fn setup() -> Setup {
    let pool = FakePool::new("vm/lun.img", &vec![7u8; 256 * 1024]);
    pool.obj.lock().unwrap().pin_state = 5;
    let record = record(&pool);
    let controller = Arc::new(Recorder {
        obj: Arc::clone(&pool.obj),
        fail_stop: false,
        fail_resume: false,
    });
    let store = Arc::new(RowStore {
        obj: Arc::clone(&pool.obj),
        row: Mutex::new(Some(row("vm/lun.img", "tier-0"))),
    });
    Setup {
        pool,
        record,
        controller,
        store,
    }
}

impl Setup {
    fn request(&self, dest: u8) -> LunRequest<'_> {
        LunRequest {
            pool_uuid: self.pool.uuid,
            oid: OID,
            record: &self.record,
            dest_rank: dest,
            target_id: "tid1".into(),
            transaction_seq: 41,
            controller: self.controller.clone(),
            store: self.store.clone(),
        }
    }

    fn prepare(&self, dest: u8) -> Result<LunPlan, String> {
        lun::prepare(
            &mut self.pool.client(),
            &self.request(dest),
            Duration::from_millis(5),
        )
    }

    /// Puts `row` in the store (`None`: no row).
    fn set_row(&self, row: Option<ObjectRow>) {
        *self.store.row.lock().unwrap() = row;
    }

    /// `prepare(dest)` fails with an error starting `want`.
    fn prepare_fails(&self, dest: u8, want: &str) {
        let e = self.prepare(dest).unwrap_err();
        assert!(e.starts_with(want), "{e}");
    }

    /// The trace without the drain's and W1/W9's INSPECTs.
    fn steps(&self) -> Vec<String> {
        self.pool.trace()
    }

    fn clear_trace(&self) {
        self.pool.obj.lock().unwrap().trace.clear();
    }

    fn run(&self, plan: LunPlan) -> (Result<MoveOutcome, MoveError>, RecordingObserver) {
        let mut o = MoveOptions::new(plan.transaction_seq);
        o.reserve_bytes = 0;
        o.rel_path = Some(plan.rel_path.clone());
        let dest = plan.dest_rank;
        o.lun = Some(plan);
        let mut obs = RecordingObserver::default();
        let r = run_move(
            &mut self.pool.client(),
            &self.pool.uuid,
            &OID,
            dest,
            &o,
            &mut obs,
        );
        (r, obs)
    }
}

/// `setup()` with a plan to tier 1 prepared, and the trace cleared.
fn prepared() -> (Setup, LunPlan) {
    let s = setup();
    let plan = s.prepare(1).unwrap();
    s.clear_trace();
    (s, plan)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn index(trace: &[String], what: &str) -> usize {
    trace
        .iter()
        .position(|s| s == what)
        .unwrap_or_else(|| panic!("{what} not in {trace:?}"))
}

/// `order`'s steps all stand in `trace`, in that order.
fn assert_in_order(trace: &[String], order: &[&str]) {
    let idx: Vec<usize> = order.iter().map(|w| index(trace, w)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{trace:?}");
}

// ---------------------------------------------------------------------------
// lun_pin (S30.2): the xattr helpers
// ---------------------------------------------------------------------------

#[test]
fn lun_pin_clearing_removes_the_xattr_and_missing_counts_as_success() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    // user.* stands in for trusted.smoothfs.lun (no CAP_SYS_ADMIN needed).
    let name = "user.smoothfs_test_lun";
    if rustix::fs::setxattr(&f, name, &[1u8], rustix::fs::XattrFlags::empty()).is_err() {
        eprintln!("skipped: no user xattrs on the temp filesystem");
        return;
    }
    lun::clear_xattr(&f, name).unwrap();
    let mut buf = [0u8; 4];
    assert!(rustix::fs::getxattr(&f, name, &mut buf[..]).is_err());
    // Missing: success.
    lun::clear_xattr(&f, name).unwrap();
}

#[test]
fn lun_pin_other_errors_are_returned_with_context() {
    let e =
        lun::clear_xattr(Path::new("/nonexistent/smoothfs/lun.img"), lun::LUN_XATTR).unwrap_err();
    assert!(e.contains("/nonexistent/smoothfs/lun.img"), "{e}");
    assert!(e.contains(lun::LUN_XATTR), "{e}");
}

// ---------------------------------------------------------------------------
// lun_plan (S30.2)
// ---------------------------------------------------------------------------

#[test]
fn plan_sets_repin_and_takes_the_data_plane_path_with_the_next_seq() {
    let s = setup();
    // No path in the row: INSPECT's is used.
    s.set_row(Some(row("", "tier-0")));
    let plan = s.prepare(1).unwrap();
    assert!(plan.repin_lun);
    assert_eq!(plan.lun_target_id, "tid1");
    assert_eq!(plan.rel_path, PathBuf::from("vm/lun.img"));
    assert_eq!(plan.transaction_seq, 41);
    assert_eq!((plan.source_rank, plan.dest_rank), (0, 1));
    assert_eq!(plan.source_lower, s.pool.tiers[0]);
    assert_eq!(plan.dest_lower, s.pool.tiers[1]);
    assert_eq!(plan.dest_tier_id, "tier-1");
}

#[test]
fn successful_prepare_leaves_the_pin_cleared_and_the_target_stopped() {
    let s = setup();
    s.prepare(1).unwrap();
    assert_eq!(s.pool.obj.lock().unwrap().pin_state, 0);
    let t = s.steps();
    assert!(!t.iter().any(|x| x.starts_with("resume")), "{t:?}");
}

#[test]
fn target_is_stopped_and_drained_before_the_pin_is_cleared() {
    let s = setup();
    s.prepare(1).unwrap();
    let t = s.steps();
    assert_eq!(t[0], "stop tid1");
    assert_eq!(t[1], "INSPECT", "drain reads WRITE_SEQ: {t:?}");
    assert!(index(&t, "stop tid1") < index(&t, "PIN_SET 0"));
    // Every INSPECT between the stop and the clear belongs to the drain.
    let clear = index(&t, "PIN_SET 0");
    assert!(t[1..clear].iter().all(|x| x == "INSPECT"), "{t:?}");
}

#[test]
fn plan_requires_the_data_plane_unpinned() {
    let s = setup();
    // The clear does not take (for example a lease pin in its place).
    s.pool.obj.lock().unwrap().pin_set_ignored_on_tier = Some(0);
    s.prepare_fails(1, "lun quiesce required");
}

#[test]
fn plan_rejects_identical_lower_directories() {
    let mut s = setup();
    s.record.tiers[1].backing_ref = format!("{}/", s.record.tiers[0].backing_ref);
    s.prepare_fails(1, "destination tier bad");
}

#[test]
fn plan_rejects_a_destination_equal_to_the_source_or_unregistered() {
    let s = setup();
    s.prepare_fails(0, "destination tier bad");
    let s = setup();
    s.prepare_fails(5, "destination tier bad");
}

#[test]
fn plan_requires_the_lun_row() {
    for bad in [
        None,
        Some(ObjectRow {
            pin_state: PinState::None,
            ..row("vm/lun.img", "tier-0")
        }),
        Some(ObjectRow {
            namespace_id: "other".into(),
            ..row("vm/lun.img", "tier-0")
        }),
        Some(ObjectRow {
            movement_state: MovementState::Failed,
            ..row("vm/lun.img", "tier-0")
        }),
    ] {
        let s = setup();
        s.set_row(bad);
        s.prepare_fails(1, "lun record required");
    }
}

#[test]
fn plan_rejects_a_stale_data_plane_tier() {
    let s = setup();
    // The row says tier 1; the data plane has it on tier 0.
    s.set_row(Some(row("vm/lun.img", "tier-1")));
    s.prepare_fails(0, "lun placement stale");
    let s = setup();
    s.set_row(Some(row("vm/lun.img", "tier-9")));
    s.prepare_fails(1, "lun placement stale");
}

#[test]
fn failed_plan_runs_stop_clear_pin_again_resume_in_that_order() {
    let s = setup();
    s.set_row(None);
    s.prepare_fails(1, "lun record required");
    assert_eq!(s.pool.obj.lock().unwrap().pin_state, 5, "pinned again");
    let t: Vec<String> = s.steps().into_iter().filter(|x| x != "INSPECT").collect();
    assert_eq!(
        t,
        strs(&["stop tid1", "PIN_SET 0", "PIN_SET 5", "resume tid1"])
    );
}

#[test]
fn failed_plan_with_an_unverifiable_repin_leaves_the_target_stopped_and_reports_all() {
    let s = setup();
    s.set_row(None);
    s.pool.obj.lock().unwrap().pin_set_errno = Some(libc::EIO);
    let e = s.prepare(1).unwrap_err();
    assert!(
        e.contains("lun record required") || e.contains("PIN_SET none"),
        "{e}"
    );
    assert!(e.contains("PIN_SET pin_lun"), "{e}");
    assert!(e.contains("left stopped"), "{e}");
    assert!(!s.steps().iter().any(|x| x.starts_with("resume")));
}

#[test]
fn stop_failure_stops_prepare_before_the_pin_is_touched() {
    let s = setup();
    let c = Arc::new(Recorder {
        obj: Arc::clone(&s.pool.obj),
        fail_stop: true,
        fail_resume: false,
    });
    let mut req = s.request(1);
    req.controller = c;
    let e = lun::prepare(&mut s.pool.client(), &req, Duration::from_millis(5)).unwrap_err();
    assert!(e.contains("stop refused"), "{e}");
    assert_eq!(s.steps(), strs(&["stop tid1"]));
    assert_eq!(s.pool.obj.lock().unwrap().pin_state, 5);
}

#[test]
fn none_controller_fails_prepare() {
    let s = setup();
    let mut req = s.request(1);
    req.controller = Arc::new(NoController);
    let e = lun::prepare(&mut s.pool.client(), &req, Duration::from_millis(5)).unwrap_err();
    assert!(e.contains("no LUN controller"), "{e}");
    assert_eq!(s.pool.obj.lock().unwrap().pin_state, 5);
    let c = controller_for(LunController::None, None, None);
    assert_eq!(c.kind(), "none");
    assert_eq!(c.resume("t").unwrap_err(), "no LUN controller");
    let c = controller_for(LunController::Command, Some("/bin/true".into()), None);
    assert_eq!(c.kind(), "none", "command without executables");
}

#[test]
fn command_controller_runs_the_executables_with_the_target_id() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("calls");
    let script = |name: &str, word: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho {word} \"$1\" >> {}\n", out.display()),
        )
        .unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&p).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    };
    let c = controller_for(
        LunController::Command,
        Some(script("stop", "stop")),
        Some(script("resume", "resume")),
    );
    assert_eq!(c.kind(), "command");
    c.stop("iqn.t:1").unwrap();
    c.resume("iqn.t:1").unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "stop iqn.t:1\nresume iqn.t:1\n"
    );
    let bad = lun::CommandController {
        stop: "/bin/false".into(),
        resume: dir.path().join("missing"),
    };
    assert!(bad.stop("t").is_err());
    assert!(bad.resume("t").unwrap_err().contains("missing"));
}

// ---------------------------------------------------------------------------
// Worker LUN groups (S30.2): W3, W11, rollback
// ---------------------------------------------------------------------------

#[test]
fn prepared_move_orders_stop_drain_unpin_plan_switch_repin_verify_record_resume_cleanup() {
    let s = setup();
    let plan = s.prepare(1).unwrap();
    let (r, obs) = s.run(plan);
    let MoveOutcome::Moved(rep) = r.unwrap() else {
        panic!("not moved")
    };
    assert_eq!(rep.to_tier, 1);
    assert_eq!(
        obs.states.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        SUCCESS_SEQUENCE.to_vec()
    );
    let t = s.steps();
    let order = [
        "stop tid1",
        "PIN_SET 0",
        "MOVE_PLAN",
        "MOVE_CUTOVER",
        "PIN_SET 5",
        "record pin_lun",
        "resume tid1",
        "MOVE_CLEANUP",
    ];
    assert_in_order(&t, &order);
    // Verified with INSPECT between the re-pin and the record.
    let repin = index(&t, "PIN_SET 5");
    assert_eq!(t[repin + 1], "INSPECT", "{t:?}");
    // The cutover carried the W1 write_seq guard (the fake checks it).
    assert_eq!(s.pool.obj.lock().unwrap().pin_state, 5);
    assert_eq!(s.pool.obj.lock().unwrap().current_tier, 1);
    assert!(!exists(&s.pool.tiers[0].join("vm/lun.img")));
    assert_eq!(
        s.store.row.lock().unwrap().as_ref().unwrap().pin_state,
        PinState::PinLun
    );
}

#[test]
fn lun_plan_without_prepare_is_refused_with_quiesce_required() {
    let s = setup();
    let plan = lun::build_plan(&mut s.pool.client(), &s.request(1));
    assert!(plan.unwrap_err().starts_with("lun quiesce required"));
    // A plain move of a pinned LUN is refused too.
    let mut obs = RecordingObserver::default();
    let mut o = MoveOptions::new(3);
    o.reserve_bytes = 0;
    let r = run_move(&mut s.pool.client(), &s.pool.uuid, &OID, 1, &o, &mut obs).unwrap();
    assert!(matches!(r, MoveOutcome::Refused(ref x) if x.to_string() == "lun quiesce required"));
}

/// Builds a plan, changes it with `f`, clears the trace and runs the move,
/// which must fail; returns the setup, the error and the observer.
fn changed_move_fails(
    f: impl FnOnce(&Setup, &mut LunPlan),
) -> (Setup, MoveError, RecordingObserver) {
    let s = setup();
    let mut plan = s.prepare(1).unwrap();
    f(&s, &mut plan);
    s.clear_trace();
    let (r, obs) = s.run(plan);
    (s, r.unwrap_err(), obs)
}

/// Build a plan, change it with `f`, run the move; it must fail W3 with
/// `want` before MOVE_PLAN.
fn admission_fails(f: impl FnOnce(&Setup, &mut LunPlan), want: &str) {
    let (s, e, obs) = changed_move_fails(f);
    assert!(matches!(e, MoveError::Lun(_)), "{e}");
    assert!(e.reason().starts_with(want), "want {want}: {}", e.reason());
    assert_eq!(obs.states.last().unwrap().0, MovementState::Failed);
    let t = s.steps();
    assert!(!t.iter().any(|x| x == "MOVE_PLAN"), "{t:?}");
}

#[test]
fn admission_requires_the_lun_row() {
    admission_fails(
        |s, _| *s.store.row.lock().unwrap() = None,
        "lun placement stale",
    );
    admission_fails(
        |s, _| {
            s.store.row.lock().unwrap().as_mut().unwrap().pin_state = PinState::None;
        },
        "lun placement stale",
    );
}

#[test]
fn admission_rejects_a_destination_equal_to_the_source() {
    admission_fails(
        |_, p| {
            p.dest_tier_id = p.source_tier_id.clone();
        },
        "destination tier bad",
    );
}

#[test]
fn admission_rejects_an_empty_destination_id() {
    admission_fails(|_, p| p.dest_tier_id.clear(), "destination tier bad");
}

#[test]
fn admission_rejects_a_stale_data_plane_rank() {
    admission_fails(
        |_, p| {
            // The plan's source rank is not the data plane's current rank.
            p.source_rank = 2;
        },
        "lun placement stale",
    );
}

#[test]
fn admission_rejects_a_data_plane_pin_other_than_none() {
    // An effective pin appeared after prepare (pin_lun and pin_lease are
    // refused at W2 already; here an effective pin_hot).
    admission_fails(
        |s, _| s.pool.obj.lock().unwrap().pin_state = 1,
        "lun placement stale",
    );
}

#[test]
fn admission_rejects_a_stale_data_plane_path() {
    admission_fails(
        |s, _| s.pool.obj.lock().unwrap().rel_path = PathBuf::from("vm/other.img"),
        "lun placement stale",
    );
}

#[test]
fn admission_rejects_a_stale_row_path() {
    admission_fails(
        |s, _| {
            s.store.row.lock().unwrap().as_mut().unwrap().rel_path = "vm/old.img".into();
        },
        "lun placement stale",
    );
}

#[test]
fn admission_accepts_an_explicit_path_with_the_row_path_unknown() {
    let s = setup();
    let plan = s.prepare(1).unwrap();
    s.store.row.lock().unwrap().as_mut().unwrap().rel_path = String::new();
    let (r, _) = s.run(plan);
    assert!(matches!(r, Ok(MoveOutcome::Moved(_))), "{r:?}");
}

#[test]
fn admission_requires_an_explicit_normalised_path() {
    for bad in [
        "",
        "vm/./lun.img",
        "vm/../vm/lun.img",
        "/vm/lun.img",
        "vm//lun.img",
        "./vm/lun.img",
    ] {
        admission_fails(
            |_, p| p.rel_path = PathBuf::from(bad),
            "lun placement stale",
        );
    }
    admission_fails(
        |_, p| p.rel_path = PathBuf::from("5a".repeat(16)),
        "lun placement stale",
    );
}

#[test]
fn admission_requires_lower_directories_present_absolute_and_distinct() {
    admission_fails(
        |_, p| p.source_lower = PathBuf::new(),
        "lun placement stale",
    );
    admission_fails(|_, p| p.dest_lower = PathBuf::new(), "destination tier bad");
    admission_fails(
        |_, p| p.dest_lower = PathBuf::from("relative/t1"),
        "destination tier bad",
    );
    admission_fails(
        |_, p| p.dest_lower = p.source_lower.clone(),
        "destination tier bad",
    );
}

#[test]
fn admission_rejects_a_stale_lower_path() {
    admission_fails(
        |_, p| p.source_lower = PathBuf::from("/elsewhere/t0"),
        "lun placement stale",
    );
}

#[test]
fn admission_failure_pins_the_source_again_and_resumes() {
    let (s, plan) = prepared();
    *s.store.row.lock().unwrap() = Some(ObjectRow {
        rel_path: "vm/old.img".into(),
        ..row("vm/lun.img", "tier-0")
    });
    let (r, _) = s.run(plan);
    assert!(r.unwrap_err().reason().starts_with("lun placement stale"));
    let t = s.steps();
    assert!(index(&t, "PIN_SET 5") < index(&t, "resume tid1"), "{t:?}");
    assert_eq!(s.pool.obj.lock().unwrap().pin_state, 5);
}

#[test]
fn copy_failure_before_the_switch_pins_the_source_again_then_resumes() {
    let (s, plan) = prepared();
    // The cutover's write_seq guard fails the move (ESTALE) before the switch.
    s.pool.obj.lock().unwrap().cutover_errno = Some(libc::ESTALE);
    let (r, obs) = s.run(plan);
    let e = r.unwrap_err();
    assert_eq!(
        e.reason(),
        "source raced during cutover",
        "rollback succeeded"
    );
    assert_eq!(obs.states.last().unwrap().0, MovementState::Failed);
    let t = s.steps();
    let order = [
        "MOVE_PLAN",
        "MOVE_CUTOVER",
        "PIN_SET 5",
        "record pin_lun",
        "resume tid1",
    ];
    assert_in_order(&t, &order);
    assert_eq!(t[index(&t, "PIN_SET 5") + 1], "INSPECT");
    let o = s.pool.obj.lock().unwrap();
    assert_eq!((o.current_tier, o.pin_state), (0, 5));
    assert!(!t.iter().any(|x| x == "MOVE_CLEANUP"));
}

#[test]
fn plan_refusal_pins_the_source_again_then_resumes() {
    let (s, plan) = prepared();
    s.pool.obj.lock().unwrap().plan_errno = Some(libc::ENOSPC);
    let (r, _) = s.run(plan);
    assert!(matches!(r, Err(MoveError::Plan(_))), "{r:?}");
    let t = s.steps();
    assert!(index(&t, "PIN_SET 5") < index(&t, "resume tid1"), "{t:?}");
}

#[test]
fn invisible_source_pin_means_no_resume() {
    let (s, plan) = prepared();
    let mut o = s.pool.obj.lock().unwrap();
    o.cutover_errno = Some(libc::ESTALE);
    o.pin_set_ignored_on_tier = Some(0);
    drop(o);
    let (r, _) = s.run(plan);
    let e = r.unwrap_err().reason();
    assert!(e.starts_with("source raced during cutover; "), "{e}");
    assert!(e.contains("lun source pin not visible"), "{e}");
    assert!(e.contains("left stopped"), "{e}");
    let t = s.steps();
    assert!(!t.iter().any(|x| x.starts_with("resume")), "{t:?}");
    assert!(!t.iter().any(|x| x == "record pin_lun"), "{t:?}");
}

#[test]
fn failed_source_pin_means_no_resume() {
    let (s, plan) = prepared();
    let mut o = s.pool.obj.lock().unwrap();
    o.cutover_errno = Some(libc::ESTALE);
    o.pin_set_errno = Some(libc::EIO);
    drop(o);
    let (r, _) = s.run(plan);
    let e = r.unwrap_err().reason();
    assert!(e.contains("lun source pin not visible"), "{e}");
    assert!(!s.steps().iter().any(|x| x.starts_with("resume")));
}

/// Runs a prepared move that switches and then fails W11; returns the
/// reason and the trace after prepare.
fn w11_fails(f: impl FnOnce(&Setup, &mut LunPlan)) -> (String, Vec<String>, RecordingObserver) {
    let (s, e, obs) = changed_move_fails(f);
    assert!(!e.is_after_switch(), "recorded as a failure, not a stop");
    assert_eq!(obs.states.last().unwrap().0, MovementState::Failed);
    assert!(
        obs.names().contains(&"switched"),
        "the row's current tier is the destination: {:?}",
        obs.names()
    );
    assert_eq!(s.pool.obj.lock().unwrap().current_tier, 1);
    let t = s.steps();
    assert!(!t.iter().any(|x| x == "MOVE_CLEANUP"), "{t:?}");
    assert!(!t.iter().any(|x| x.starts_with("resume")), "{t:?}");
    (e.reason(), t, obs)
}

#[test]
fn stale_destination_path_means_neither_pinning_nor_resuming() {
    let (e, t, _) = w11_fails(|_, p| p.dest_lower = PathBuf::from("/elsewhere/t1"));
    assert!(e.starts_with("lun destination stale"), "{e}");
    assert!(!t.iter().any(|x| x == "PIN_SET 5"), "{t:?}");
}

#[test]
fn stale_destination_tier_means_neither_pinning_nor_resuming() {
    // The fake cannot report another rank right after its own cutover, so
    // W11 is called directly with the object still on rank 0.
    let (s, plan) = prepared();
    let mut bad = plan.clone();
    bad.dest_rank = 0;
    let e = lun::post_switch(&mut s.pool.client(), &s.pool.uuid, &OID, &bad).unwrap_err();
    assert!(e.starts_with("lun destination stale"), "{e}");
    let t = s.steps();
    assert!(
        !t.iter()
            .any(|x| x == "PIN_SET 5" || x.starts_with("resume"))
    );
}

#[test]
fn invisible_destination_pin_means_no_resume() {
    let (e, t, _) = w11_fails(|s, _| s.pool.obj.lock().unwrap().pin_set_ignored_on_tier = Some(1));
    assert!(e.starts_with("lun pin not visible"), "{e}");
    assert!(t.iter().any(|x| x == "PIN_SET 5"), "{t:?}");
    assert!(!t.iter().any(|x| x == "record pin_lun"), "{t:?}");
}

#[test]
fn prepared_move_without_a_controller_fails_with_current_on_the_destination() {
    let (e, t, obs) = w11_fails(|_, p| p.controller = Arc::new(NoController));
    assert_eq!(e, "lun resume required: no LUN controller");
    // Pin and record happened before the (failed) resume.
    assert!(index(&t, "PIN_SET 5") < index(&t, "record pin_lun"));
    let (_, detail) = obs.states.last().unwrap();
    assert!(detail.starts_with("lun resume required"));
}

#[test]
fn store_backed_lun_store_records_pin_lun() {
    // The Mutex<Store> implementation reads rows and records the pin.
    let st: Mutex<Store> = Mutex::new(Store::open_in_memory().unwrap());
    assert_eq!(LunStore::row(&st, &OID).unwrap(), None);
    assert!(st.record_pin_lun(&OID).is_err(), "no row to record on");
}
