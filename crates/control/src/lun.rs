//! The active-LUN movement workflow (S18.2, S18.3): a pluggable target
//! controller, the prepare step (stop, drain, clear the pin, build the
//! plan), the worker's admission checks (W3), its post-switch steps (W11)
//! and the rollback before the switch.
//!
//! Owns: the order of pinning and resuming. Must never resume a target
//! before the `pin_lun` of the authoritative copy has been verified with
//! INSPECT (S18.3 rule 5); a failure that cannot verify the pin leaves the
//! target stopped.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smoothfs_uapi::client::Client;
use smoothfs_uapi::ids::{MovementState, PinState};
use uuid::Uuid;

use crate::config::LunController;
use crate::dataplane::{self, Inspection};
use crate::inventory::pin_set_protocol;
use crate::store::{ObjectRow, PoolRecord, Store, Timestamp};

pub const LUN_QUIESCE_REQUIRED: &str = "lun quiesce required";
pub const LUN_RECORD_REQUIRED: &str = "lun record required";
pub const LUN_PLACEMENT_STALE: &str = "lun placement stale";
pub const DESTINATION_TIER_BAD: &str = "destination tier bad";
pub const LUN_DESTINATION_STALE: &str = "lun destination stale";
pub const LUN_PIN_NOT_VISIBLE: &str = "lun pin not visible";
pub const LUN_RESUME_REQUIRED: &str = "lun resume required";
pub const LUN_SOURCE_PIN_NOT_VISIBLE: &str = "lun source pin not visible";
pub const NO_LUN_CONTROLLER: &str = "no LUN controller";

/// The LUN pin xattr on a file through the mount (S8.4).
pub const LUN_XATTR: &str = "trusted.smoothfs.lun";
/// Drain gives up after this long (S18.2/2).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Target controllers (S18.2)
// ---------------------------------------------------------------------------

/// Stops and resumes an iSCSI target. `stop_and_drain` stops the target
/// and then waits until `write_seq` has not changed for `quiet`.
pub trait Controller: Send + Sync {
    /// `tgt`, `lio`, `command`, `none` or a test double's name.
    fn kind(&self) -> &'static str;
    /// Take the target offline.
    fn stop(&self, target: &str) -> Result<(), String>;
    /// Bring the target back.
    fn resume(&self, target: &str) -> Result<(), String>;

    /// Stop, then drain (S18.2/2).
    fn stop_and_drain(
        &self,
        target: &str,
        write_seq: &mut dyn FnMut() -> Result<Option<u64>, String>,
        quiet: Duration,
    ) -> Result<(), String> {
        self.stop(target)?;
        drain(write_seq, quiet, DRAIN_TIMEOUT)
    }
}

/// Wait until `write_seq` has stayed the same for `quiet`; fail after
/// `timeout`.
pub fn drain(
    write_seq: &mut dyn FnMut() -> Result<Option<u64>, String>,
    quiet: Duration,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let mut last = write_seq()?;
    let mut since = Instant::now();
    let step = (quiet / 10).clamp(Duration::from_millis(1), Duration::from_millis(200));
    loop {
        if since.elapsed() >= quiet {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "drain: WRITE_SEQ still changing after {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(step);
        let now = write_seq()?;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

fn run_exe(exe: &Path, args: &[&str]) -> Result<(), String> {
    let out = Process::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {}: {}: {}",
            exe.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `tgt`: `tgtadm ... --name state --value offline|ready`.
#[derive(Clone, Debug)]
pub struct TgtController {
    pub tgtadm: PathBuf,
}

impl TgtController {
    /// The tgtadm arguments that set target `tid` to `value`.
    pub fn args<'a>(tid: &'a str, value: &'a str) -> [&'a str; 12] {
        [
            "--lld", "iscsi", "--mode", "target", "--op", "update", "--tid", tid, "--name",
            "state", "--value", value,
        ]
    }
}

impl Controller for TgtController {
    fn kind(&self) -> &'static str {
        "tgt"
    }
    fn stop(&self, target: &str) -> Result<(), String> {
        run_exe(&self.tgtadm, &Self::args(target, "offline"))
    }
    fn resume(&self, target: &str) -> Result<(), String> {
        run_exe(&self.tgtadm, &Self::args(target, "ready"))
    }
}

/// `lio`: write 0/1 to `<root>/<iqn>/tpgt_<n>/enable`. The target id is
/// `<iqn>/tpgt_<n>`, or a bare IQN meaning `tpgt_1`.
#[derive(Clone, Debug)]
pub struct LioController {
    /// `/sys/kernel/config/target/iscsi`.
    pub root: PathBuf,
}

impl LioController {
    pub fn enable_file(&self, target: &str) -> PathBuf {
        if target.contains("/tpgt_") {
            self.root.join(target).join("enable")
        } else {
            self.root.join(target).join("tpgt_1").join("enable")
        }
    }
    fn write(&self, target: &str, v: &str) -> Result<(), String> {
        let f = self.enable_file(target);
        std::fs::write(&f, v).map_err(|e| format!("write {v} to {}: {e}", f.display()))
    }
}

impl Controller for LioController {
    fn kind(&self) -> &'static str {
        "lio"
    }
    fn stop(&self, target: &str) -> Result<(), String> {
        self.write(target, "0")
    }
    fn resume(&self, target: &str) -> Result<(), String> {
        self.write(target, "1")
    }
}

/// `command`: run the configured executables with the target id.
#[derive(Clone, Debug)]
pub struct CommandController {
    pub stop: PathBuf,
    pub resume: PathBuf,
}

impl Controller for CommandController {
    fn kind(&self) -> &'static str {
        "command"
    }
    fn stop(&self, target: &str) -> Result<(), String> {
        run_exe(&self.stop, &[target])
    }
    fn resume(&self, target: &str) -> Result<(), String> {
        run_exe(&self.resume, &[target])
    }
}

/// `none` (the default): every operation fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoController;

impl Controller for NoController {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn stop(&self, _target: &str) -> Result<(), String> {
        Err(NO_LUN_CONTROLLER.into())
    }
    fn resume(&self, _target: &str) -> Result<(), String> {
        Err(NO_LUN_CONTROLLER.into())
    }
}

/// The controller `smoothfs_lun_controller` names. `command` needs both
/// executables (else it fails like `none`, naming what is missing).
pub fn controller_for(
    kind: LunController,
    stop_cmd: Option<PathBuf>,
    resume_cmd: Option<PathBuf>,
) -> Arc<dyn Controller> {
    match kind {
        LunController::None => Arc::new(NoController),
        LunController::Tgt => Arc::new(TgtController {
            tgtadm: PathBuf::from("tgtadm"),
        }),
        LunController::Lio => Arc::new(LioController {
            root: PathBuf::from("/sys/kernel/config/target/iscsi"),
        }),
        LunController::Command => match (stop_cmd, resume_cmd) {
            (Some(stop), Some(resume)) => Arc::new(CommandController { stop, resume }),
            _ => Arc::new(NoController),
        },
    }
}

// ---------------------------------------------------------------------------
// The store side
// ---------------------------------------------------------------------------

/// What the LUN steps need from the store.
pub trait LunStore: Send + Sync {
    fn row(&self, oid: &[u8; 16]) -> Result<Option<ObjectRow>, String>;
    /// Record `pin_lun` as the row's effective pin.
    fn record_pin_lun(&self, oid: &[u8; 16]) -> Result<(), String>;
}

impl LunStore for Mutex<Store> {
    fn row(&self, oid: &[u8; 16]) -> Result<Option<ObjectRow>, String> {
        let st = self.lock().map_err(|_| "store lock poisoned".to_string())?;
        st.object(oid).map_err(|e| e.to_string())
    }

    fn record_pin_lun(&self, oid: &[u8; 16]) -> Result<(), String> {
        let mut st = self.lock().map_err(|_| "store lock poisoned".to_string())?;
        let row = st
            .object(oid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no row".to_string())?;
        st.set_pins(
            oid,
            PinState::PinLun,
            row.policy_pin,
            &row.pin_origin,
            row.mediated,
            Timestamp::now(),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------

/// Remove the xattr `name` from `path`; a missing attribute counts as
/// success, other errors are returned with context (S18.3 item 1.2).
pub fn clear_xattr(path: &Path, name: &str) -> Result<(), String> {
    match rustix::fs::removexattr(path, name) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NODATA => Ok(()),
        Err(e) => Err(format!(
            "clear {name} on {}: {}",
            path.display(),
            std::io::Error::from(e)
        )),
    }
}

/// Set or clear the LUN pin through the mount (`lun` = 1 / removed).
pub fn set_lun_xattr(path: &Path, pinned: bool) -> Result<(), String> {
    if !pinned {
        return clear_xattr(path, LUN_XATTR);
    }
    rustix::fs::setxattr(path, LUN_XATTR, &[1u8], rustix::fs::XattrFlags::empty()).map_err(|e| {
        format!(
            "set {LUN_XATTR} on {}: {}",
            path.display(),
            std::io::Error::from(e)
        )
    })
}

/// PIN_SET PIN_STATE 5 (`pinned`) or 0. ENODATA counts as success for a
/// clear.
pub fn pin_set(c: &mut Client, pool: &Uuid, oid: &[u8; 16], pinned: bool) -> Result<(), String> {
    let pin = if pinned {
        PinState::PinLun
    } else {
        PinState::None
    };
    match pin_set_protocol(c, pool, oid, pin) {
        Ok(_) => Ok(()),
        Err(e) if !pinned && e.errno() == libc::ENODATA => Ok(()),
        Err(e) => Err(format!("PIN_SET {}: {e}", pin.as_str())),
    }
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

/// A prepared LUN plan (S10.1 `repin_lun`, `lun_target_id`), carried by
/// [`crate::worker::MoveOptions::lun`].
#[derive(Clone)]
pub struct LunPlan {
    pub namespace_id: String,
    pub source_tier_id: String,
    pub source_rank: u8,
    pub source_lower: PathBuf,
    pub dest_tier_id: String,
    pub dest_rank: u8,
    pub dest_lower: PathBuf,
    pub rel_path: PathBuf,
    pub transaction_seq: u64,
    pub repin_lun: bool,
    pub lun_target_id: String,
    pub controller: Arc<dyn Controller>,
    pub store: Arc<dyn LunStore>,
}

impl fmt::Debug for LunPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LunPlan")
            .field("namespace_id", &self.namespace_id)
            .field("source", &(&self.source_tier_id, self.source_rank))
            .field("source_lower", &self.source_lower)
            .field("dest", &(&self.dest_tier_id, self.dest_rank))
            .field("dest_lower", &self.dest_lower)
            .field("rel_path", &self.rel_path)
            .field("transaction_seq", &self.transaction_seq)
            .field("repin_lun", &self.repin_lun)
            .field("lun_target_id", &self.lun_target_id)
            .field("controller", &self.controller.kind())
            .finish()
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let clean = |p: &Path| p.components().collect::<PathBuf>();
    clean(a) == clean(b)
}

/// The inputs of [`build_plan`] and [`prepare`].
pub struct LunRequest<'a> {
    pub pool_uuid: Uuid,
    pub oid: [u8; 16],
    pub record: &'a PoolRecord,
    pub dest_rank: u8,
    pub target_id: String,
    pub transaction_seq: u64,
    pub controller: Arc<dyn Controller>,
    pub store: Arc<dyn LunStore>,
}

/// S18.3 item 1.3: build the plan from the data plane and the row.
pub fn build_plan(c: &mut Client, req: &LunRequest<'_>) -> Result<LunPlan, String> {
    let i = dataplane::inspect(c, &req.pool_uuid, &req.oid).map_err(|e| format!("INSPECT: {e}"))?;
    if i.pin_state != PinState::None {
        return Err(format!(
            "{LUN_QUIESCE_REQUIRED}: the data plane's pin is {}",
            i.pin_state.as_str()
        ));
    }
    let row = req
        .store
        .row(&req.oid)?
        .ok_or_else(|| format!("{LUN_RECORD_REQUIRED}: no row"))?;
    if row.pin_state != PinState::PinLun
        || row.namespace_id != req.record.namespace_id
        || row.movement_state != MovementState::Placed
    {
        return Err(format!(
            "{LUN_RECORD_REQUIRED}: row pin {}, namespace {}, state {}",
            row.pin_state.as_str(),
            row.namespace_id,
            row.movement_state
        ));
    }
    let rel_path = if row.rel_path.is_empty() {
        i.rel_path.clone()
    } else {
        PathBuf::from(&row.rel_path)
    };
    if rel_path.as_os_str().is_empty() {
        return Err("no relative path in the row or INSPECT".into());
    }
    let src = req.record.tier_by_id(&row.current_tier_id).ok_or_else(|| {
        format!(
            "{LUN_PLACEMENT_STALE}: tier {} is not registered",
            row.current_tier_id
        )
    })?;
    if src.rank != i.current_tier {
        return Err(format!(
            "{LUN_PLACEMENT_STALE}: the row says rank {}, the data plane {}",
            src.rank, i.current_tier
        ));
    }
    let dst = req.record.tier(req.dest_rank).ok_or_else(|| {
        format!(
            "{DESTINATION_TIER_BAD}: rank {} is not registered",
            req.dest_rank
        )
    })?;
    if dst.id == src.id {
        return Err(format!("{DESTINATION_TIER_BAD}: equal to the source"));
    }
    if same_dir(Path::new(&dst.backing_ref), Path::new(&src.backing_ref)) {
        return Err(format!(
            "{DESTINATION_TIER_BAD}: shares the source's lower directory {}",
            src.backing_ref
        ));
    }
    Ok(LunPlan {
        namespace_id: req.record.namespace_id.clone(),
        source_tier_id: src.id.clone(),
        source_rank: src.rank,
        source_lower: PathBuf::from(&src.backing_ref),
        dest_tier_id: dst.id.clone(),
        dest_rank: dst.rank,
        dest_lower: PathBuf::from(&dst.backing_ref),
        rel_path,
        transaction_seq: req.transaction_seq,
        repin_lun: true,
        lun_target_id: req.target_id.clone(),
        controller: Arc::clone(&req.controller),
        store: Arc::clone(&req.store),
    })
}

/// S18.3 item 1: stop and drain, clear the pin, build the plan. On a
/// failure after the stop, pin the source again, resume the target once
/// the pin is verified, and report every error together.
pub fn prepare(c: &mut Client, req: &LunRequest<'_>, quiet: Duration) -> Result<LunPlan, String> {
    let (pool, oid) = (req.pool_uuid, req.oid);
    let mut probe = || {
        dataplane::inspect(c, &pool, &oid)
            .map(|i| i.write_seq)
            .map_err(|e| format!("INSPECT: {e}"))
    };
    req.controller
        .stop_and_drain(&req.target_id, &mut probe, quiet)
        .map_err(|e| format!("stop target {}: {e}", req.target_id))?;
    let first = match pin_set(c, &pool, &oid, false) {
        Ok(()) => match build_plan(c, req) {
            Ok(plan) => return Ok(plan),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let mut errors = vec![first];
    let verified = match pin_set(c, &pool, &oid, true) {
        Err(e) => {
            errors.push(e);
            false
        }
        Ok(()) => match dataplane::inspect(c, &pool, &oid) {
            Ok(i) if i.pin_state == PinState::PinLun => true,
            Ok(i) => {
                errors.push(format!(
                    "{LUN_SOURCE_PIN_NOT_VISIBLE}: pin is {}",
                    i.pin_state.as_str()
                ));
                false
            }
            Err(e) => {
                errors.push(format!("{LUN_SOURCE_PIN_NOT_VISIBLE}: INSPECT: {e}"));
                false
            }
        },
    };
    if verified {
        if let Err(e) = req.controller.resume(&req.target_id) {
            errors.push(format!("{LUN_RESUME_REQUIRED}: {e}"));
        }
    } else {
        errors.push(format!("target {} left stopped", req.target_id));
    }
    Err(errors.join("; "))
}

// ---------------------------------------------------------------------------
// Worker hooks: W3, W11, rollback
// ---------------------------------------------------------------------------

/// Explicit, relative, normalised and not the OID hex.
fn rel_path_ok(p: &Path, oid: &[u8; 16]) -> bool {
    let hex: String = oid.iter().map(|b| format!("{b:02x}")).collect();
    !p.as_os_str().is_empty()
        && p.as_os_str() != hex.as_str()
        && p.is_relative()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components().collect::<PathBuf>().as_os_str() == p.as_os_str()
}

/// The data plane's paths agree with the plan on `lower` (S18.3 item 2).
fn paths_match(i: &Inspection, rel: &Path, lower: &Path) -> Result<(), String> {
    if !i.rel_path.as_os_str().is_empty() && i.rel_path != rel {
        return Err(format!(
            "REL_PATH {} != {}",
            i.rel_path.display(),
            rel.display()
        ));
    }
    let want = lower.join(rel);
    if !i.lower_path.as_os_str().is_empty() && !same_dir(&i.lower_path, &want) {
        return Err(format!(
            "LOWER_PATH {} != {}",
            i.lower_path.display(),
            want.display()
        ));
    }
    Ok(())
}

/// W3 (S18.3 item 2): `w1` is the W1 INSPECT, `dest` the move's rank.
pub fn admit(plan: &LunPlan, oid: &[u8; 16], dest: u8, w1: &Inspection) -> Result<(), String> {
    let stale = |why: String| Err(format!("{LUN_PLACEMENT_STALE}: {why}"));
    let bad = |why: &str| Err(format!("{DESTINATION_TIER_BAD}: {why}"));
    if !rel_path_ok(&plan.rel_path, oid) {
        return stale(format!(
            "relative path {:?} is not explicit and normalised",
            plan.rel_path
        ));
    }
    let dir_ok = |p: &Path| !p.as_os_str().is_empty() && p.is_absolute();
    if !dir_ok(&plan.source_lower) {
        return stale(format!(
            "source lower directory {:?} is not absolute",
            plan.source_lower
        ));
    }
    if !dir_ok(&plan.dest_lower) {
        return bad("destination lower directory is not set or not absolute");
    }
    if same_dir(&plan.source_lower, &plan.dest_lower) {
        return bad("destination shares the source's lower directory");
    }
    if plan.source_tier_id.is_empty() {
        return stale("no source tier id".into());
    }
    if plan.dest_tier_id.is_empty() {
        return bad("no destination tier id");
    }
    if plan.dest_tier_id == plan.source_tier_id || plan.dest_rank == plan.source_rank {
        return bad("destination equals the source");
    }
    if dest != plan.dest_rank {
        return bad("the move's destination is not the plan's");
    }
    let row = match plan.store.row(oid)? {
        Some(r) => r,
        None => return stale("no row".into()),
    };
    if row.pin_state != PinState::PinLun
        || row.movement_state != MovementState::Placed
        || row.namespace_id != plan.namespace_id
        || row.current_tier_id != plan.source_tier_id
    {
        return stale(format!(
            "row pin {}, state {}, namespace {}, tier {}",
            row.pin_state.as_str(),
            row.movement_state,
            row.namespace_id,
            row.current_tier_id
        ));
    }
    if !row.rel_path.is_empty() && Path::new(&row.rel_path) != plan.rel_path {
        return stale(format!("row path {} differs", row.rel_path));
    }
    if w1.pin_state != PinState::None {
        return stale(format!("data-plane pin is {}", w1.pin_state.as_str()));
    }
    if w1.current_tier != plan.source_rank {
        return stale(format!(
            "data-plane rank {} != {}",
            w1.current_tier, plan.source_rank
        ));
    }
    paths_match(w1, &plan.rel_path, &plan.source_lower).or_else(stale)
}

/// Pin the copy on `rank`/`lower` again and verify it with INSPECT.
fn repin_and_verify(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    plan: &LunPlan,
    rank: u8,
    lower: &Path,
    not_visible: &str,
) -> Result<(), String> {
    pin_set(c, pool, oid, true).map_err(|e| format!("{not_visible}: {e}"))?;
    let i = dataplane::inspect(c, pool, oid).map_err(|e| format!("{not_visible}: INSPECT: {e}"))?;
    if i.current_tier != rank {
        return Err(format!(
            "{not_visible}: current rank {} != {rank}",
            i.current_tier
        ));
    }
    paths_match(&i, &plan.rel_path, lower).map_err(|e| format!("{not_visible}: {e}"))?;
    if i.pin_state != PinState::PinLun {
        return Err(format!("{not_visible}: pin is {}", i.pin_state.as_str()));
    }
    Ok(())
}

/// W11 (S18.3 item 3), in order. Any error leaves the target stopped.
pub fn post_switch(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    plan: &LunPlan,
) -> Result<(), String> {
    let i =
        dataplane::inspect(c, pool, oid).map_err(|e| format!("{LUN_DESTINATION_STALE}: {e}"))?;
    if i.current_tier != plan.dest_rank {
        return Err(format!(
            "{LUN_DESTINATION_STALE}: current rank {} != {}",
            i.current_tier, plan.dest_rank
        ));
    }
    paths_match(&i, &plan.rel_path, &plan.dest_lower)
        .map_err(|e| format!("{LUN_DESTINATION_STALE}: {e}"))?;
    pin_set(c, pool, oid, true).map_err(|e| format!("{LUN_PIN_NOT_VISIBLE}: {e}"))?;
    let i = dataplane::inspect(c, pool, oid).map_err(|e| format!("{LUN_PIN_NOT_VISIBLE}: {e}"))?;
    if i.pin_state != PinState::PinLun {
        return Err(format!(
            "{LUN_PIN_NOT_VISIBLE}: pin is {}",
            i.pin_state.as_str()
        ));
    }
    plan.store
        .record_pin_lun(oid)
        .map_err(|e| format!("record pin_lun: {e}"))?;
    plan.controller
        .resume(&plan.lun_target_id)
        .map_err(|e| format!("{LUN_RESUME_REQUIRED}: {e}"))
}

/// S18.3 item 4: pin the source again, verify, record, and resume only if
/// the pin was verified. Returns the errors (empty = all done).
pub fn rollback(c: &mut Client, pool: &Uuid, oid: &[u8; 16], plan: &LunPlan) -> Vec<String> {
    let mut errors = Vec::new();
    let verified = repin_and_verify(
        c,
        pool,
        oid,
        plan,
        plan.source_rank,
        &plan.source_lower,
        LUN_SOURCE_PIN_NOT_VISIBLE,
    );
    match verified {
        Ok(()) => {
            if let Err(e) = plan.store.record_pin_lun(oid) {
                errors.push(format!("record pin_lun: {e}"));
            }
            if let Err(e) = plan.controller.resume(&plan.lun_target_id) {
                errors.push(format!("{LUN_RESUME_REQUIRED}: {e}"));
            }
        }
        Err(e) => {
            errors.push(e);
            errors.push(format!("target {} left stopped", plan.lun_target_id));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_must_be_normalised() {
        let oid = [0xab; 16];
        assert!(rel_path_ok(Path::new("a/b"), &oid));
        assert!(!rel_path_ok(Path::new(""), &oid));
        assert!(!rel_path_ok(Path::new("/a"), &oid));
        assert!(!rel_path_ok(Path::new("a/../b"), &oid));
        assert!(!rel_path_ok(Path::new("./a"), &oid));
        assert!(!rel_path_ok(Path::new("a//b"), &oid));
        assert!(!rel_path_ok(Path::new("a/"), &oid));
        assert!(!rel_path_ok(Path::new(&"ab".repeat(16)), &oid));
    }

    #[test]
    fn tgt_arguments_follow_the_table() {
        assert_eq!(
            TgtController::args("3", "offline").join(" "),
            "--lld iscsi --mode target --op update --tid 3 --name state --value offline"
        );
        let l = LioController {
            root: PathBuf::from("/r"),
        };
        assert_eq!(
            l.enable_file("iqn.x/tpgt_2"),
            PathBuf::from("/r/iqn.x/tpgt_2/enable")
        );
        assert_eq!(
            l.enable_file("iqn.x"),
            PathBuf::from("/r/iqn.x/tpgt_1/enable")
        );
    }

    #[test]
    fn none_controller_fails() {
        assert_eq!(NoController.stop("t").unwrap_err(), NO_LUN_CONTROLLER);
        assert_eq!(NoController.resume("t").unwrap_err(), NO_LUN_CONTROLLER);
    }

    #[test]
    fn drain_waits_for_quiet_and_times_out() {
        let mut n = 0u64;
        let mut seq = || {
            n += 1;
            Ok(Some(n.min(3)))
        };
        drain(&mut seq, Duration::from_millis(20), Duration::from_secs(5)).unwrap();
        let mut m = 0u64;
        let mut busy = || {
            m += 1;
            Ok(Some(m))
        };
        let e = drain(
            &mut busy,
            Duration::from_millis(50),
            Duration::from_millis(30),
        )
        .unwrap_err();
        assert!(e.contains("still changing"), "{e}");
    }
}
