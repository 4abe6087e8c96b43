//! One move of one object: steps W1–W12 of SPEC S10.2, driven over the
//! pool's control socket, with the copy done by [`crate::copy`].
//!
//! Owns: the order of the steps, what counts as a refusal (the object stays
//! `placed`, S9.3/4) versus a failure (S9.3/3), aborting an accepted plan
//! on any failure before the switch, and announcing every transition to a
//! [`MoveObserver`]. Must never: switch the authoritative lower itself
//! (only MOVE_CUTOVER does), send MOVE_CUTOVER without the W1 write_seq
//! guard, or leave an accepted plan behind on a failure it can report.
//!
//! Observer contract: transitions are reported in exactly this order for a
//! successful move — `plan_accepted`, `destination_reserved`,
//! `copy_in_progress`, `copy_complete`, `copy_verified`,
//! `cutover_in_progress`, `switched`, `cleanup_in_progress`,
//! `cleanup_complete`. A state naming work in progress
//! (`copy_in_progress`, `cutover_in_progress`, `cleanup_in_progress`) is
//! reported *before* that work starts, so a store written from the observer
//! (S9.3/2) always knows what might be half done after a crash; the other
//! states are reported once their step has finished. A failure ends the
//! sequence with one `failed` (detail = failure reason); a refusal ends it
//! with one `placed` (detail = deferred reason). The only exception is the
//! `worker_after_cutover` failpoint with an `error` action, which stops the
//! worker after `switched` without a final state, as a worker dying there
//! would (recovery, S19.2, then forwards the row).
//!
//! LUN plans: with [`MoveOptions::lun`] set (prepared by
//! [`crate::lun::prepare`], which cleared the pin), W3 runs the admission
//! checks, W11 re-pins the destination, verifies, records and resumes the
//! target before MOVE_CLEANUP, and any stop before the switch runs the LUN
//! rollback (S18.3). An object still pinned `pin_lun` is refused with
//! `lun quiesce required`. Hardlink-group moves (S12.2) are not offered either: `st_nlink > 1` is a
//! refusal.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use smoothfs_uapi::Error as UapiError;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::event::TierInfo;
use smoothfs_uapi::failpoint;
use smoothfs_uapi::ids::{MovementState, ObjectKind, PinState, PolicyPin, TierCap};
use uuid::Uuid;

use crate::copy::{self, CopyError, CopyOptions, CopyReport, SourceSnapshot, Staging};
use crate::dataplane::{self, Cutover, Inspection, Plan};
use crate::lun::{self, LunPlan};

/// Failpoints evaluated by the worker (see [`smoothfs_uapi::failpoint`]).
/// `worker_copy` fires once per copied chunk inside [`crate::copy`].
pub const FAILPOINT_BEFORE_PLAN: &str = "worker_before_plan";
pub const FAILPOINT_AFTER_PLAN: &str = "worker_after_plan";
pub const FAILPOINT_COPY: &str = copy::FAILPOINT_COPY;
/// Between W8 and W9: tests mutate the source here.
pub const FAILPOINT_AFTER_COPY: &str = "worker_after_copy";
pub const FAILPOINT_BEFORE_CUTOVER: &str = "worker_before_cutover";
pub const FAILPOINT_AFTER_CUTOVER: &str = "worker_after_cutover";

/// `smoothfs_move_reserve_bytes` default (S10.2 W6, S29.2).
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;
/// `full_pct` when STATUS does not report `write_staging_full_pct`.
pub const DEFAULT_FULL_PCT: u8 = 98;

// ---------------------------------------------------------------------------
// Observer
// ---------------------------------------------------------------------------

/// Receives every transition of a move, in order (see the module doc).
pub trait MoveObserver {
    /// `state` is about to be worked on (`*_in_progress`) or was reached.
    /// `detail` is a human-readable note; for `failed` it is the failure
    /// reason and for `placed` (a refusal) the deferred reason.
    fn state(&mut self, state: MovementState, detail: &str);

    /// Copy progress, at least once a second while bytes flow.
    fn progress(&mut self, done: u64, total: u64) {
        let _ = (done, total);
    }
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullObserver;

impl MoveObserver for NullObserver {
    fn state(&mut self, _state: MovementState, _detail: &str) {}
}

/// An observer that records every call, for tests.
#[derive(Clone, Debug, Default)]
pub struct RecordingObserver {
    pub states: Vec<(MovementState, String)>,
    pub progress_calls: u64,
    pub last_progress: Option<(u64, u64)>,
}

impl RecordingObserver {
    /// The state names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.states.iter().map(|(s, _)| s.as_str()).collect()
    }
}

impl MoveObserver for RecordingObserver {
    fn state(&mut self, state: MovementState, detail: &str) {
        self.states.push((state, detail.to_string()));
    }

    fn progress(&mut self, done: u64, total: u64) {
        self.progress_calls += 1;
        self.last_progress = Some((done, total));
    }
}

/// The exact order of a successful move's transitions (S10.4/A4).
pub const SUCCESS_SEQUENCE: [MovementState; 9] = [
    MovementState::PlanAccepted,
    MovementState::DestinationReserved,
    MovementState::CopyInProgress,
    MovementState::CopyComplete,
    MovementState::CopyVerified,
    MovementState::CutoverInProgress,
    MovementState::Switched,
    MovementState::CleanupInProgress,
    MovementState::CleanupComplete,
];

// ---------------------------------------------------------------------------
// Options, outcomes, errors
// ---------------------------------------------------------------------------

/// Everything a move needs besides the object and the destination.
#[derive(Clone, Debug)]
pub struct MoveOptions {
    /// Per pool, strictly increasing (S10.1/2).
    pub transaction_seq: u64,
    /// FORCE on MOVE_PLAN: bypasses `pin_lease` only (S8.5).
    pub force: bool,
    /// The plan's relative path (W4); `None`, empty or the OID hex means
    /// "use INSPECT's".
    pub rel_path: Option<PathBuf>,
    /// `smoothfs_move_reserve_bytes`.
    pub reserve_bytes: u64,
    /// Near-full threshold for W6; `None` = STATUS `write_staging_full_pct`,
    /// else [`DEFAULT_FULL_PCT`].
    pub full_pct: Option<u8>,
    /// `smoothfs_verify_source_rehash` (W9).
    pub verify_source_rehash: bool,
    /// `smoothfs_move_preallocate`: fallocate the staging file to the
    /// source's size at W6. Off by default: on ext4 the copy into
    /// preallocated (unwritten) extents measured 3.5x slower than a plain
    /// write (1 GiB: 3.7 s vs 1.1 s), and the W6 free-space check already
    /// reserves size + `move_reserve_bytes`; a tier filled by others during
    /// the copy makes the copy fail with ENOSPC, the move fail, and the
    /// source stay authoritative (docs/semantics.md).
    pub preallocate: bool,
    pub copy: CopyOptions,
    /// A prepared active-LUN plan (S18.3): enables W3, W11 and the LUN
    /// rollback before the switch.
    pub lun: Option<LunPlan>,
}

impl MoveOptions {
    /// The spec defaults with this transaction seq.
    pub fn new(transaction_seq: u64) -> MoveOptions {
        MoveOptions {
            transaction_seq,
            force: false,
            rel_path: None,
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            full_pct: None,
            verify_source_rehash: true,
            preallocate: false,
            copy: CopyOptions::default(),
            lun: None,
        }
    }
}

/// Why a move was not attempted (or, for [`Refusal::CutoverBusy`], given
/// up at the cutover): the object stays where it is and is retried later
/// without counting an attempt (S9.3/4, S9.5/3). `Display` is the
/// deferred reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("already on tier {rank}")]
    AlreadyOnDestination { rank: u8 },
    /// W1: INSPECT failed (for example ENOENT: the object is gone).
    #[error("INSPECT failed: {}: {message}", errno_name(*errno))]
    Inspect { errno: i32, message: String },
    #[error("not a regular file ({0})")]
    NotRegularFile(ObjectKind),
    #[error("movement state is {0}, not placed")]
    NotPlaced(MovementState),
    #[error("lun quiesce required")]
    LunQuiesceRequired,
    #[error("lease pinned")]
    LeasePinned,
    /// `pin_hot` toward a slower tier or `pin_cold` toward a faster one
    /// (S8.2; MOVE_PLAN gate 11 would refuse it with EBUSY).
    #[error("policy pin {0} forbids this direction")]
    PolicyPinned(PolicyPin),
    #[error("st_nlink is {nlink}; hard-linked files are not moved")]
    Hardlinked { nlink: u32 },
    #[error("range staged")]
    RangeStaged,
    #[error("{count} passthrough handle(s) open")]
    PassthroughHandles { count: u32 },
    #[error("immutable or append-only file flag")]
    ImmutableOrAppendOnly,
    /// S1.3/5: the destination cannot hold the object's xattrs.
    #[error("tier {rank} lacks {cap}, which the file's xattrs need")]
    MissingCapability { rank: u8, cap: TierCap },
    #[error("no relative path")]
    EmptyRelPath,
    /// W10: MOVE_CUTOVER returned EBUSY (drain timeout or a passthrough
    /// handle); the plan was aborted.
    #[error("cutover busy: {message}")]
    CutoverBusy { message: String },
}

impl Refusal {
    /// What an operator should do next.
    pub fn hint(&self) -> String {
        match self {
            Refusal::AlreadyOnDestination { rank } => {
                format!("nothing to do: the file is already on tier {rank}")
            }
            Refusal::Inspect { .. } => {
                "check that the path exists and the pool is mounted (smoothfs status)".into()
            }
            Refusal::NotRegularFile(_) => "only regular files are moved".into(),
            Refusal::NotPlaced(_) => {
                "another move of this file is in flight: wait for it to finish and retry".into()
            }
            Refusal::LunQuiesceRequired => {
                "the file is an active LUN: use `smoothfs lun move`, which quiesces it first".into()
            }
            Refusal::LeasePinned => {
                "an SMB lease pins the file: retry with --force to break the lease".into()
            }
            Refusal::PolicyPinned(PolicyPin::PinHot) => {
                "the file is pinned hot: `smoothfs pin set PATH none` first to demote it".into()
            }
            Refusal::PolicyPinned(_) => {
                "the file is pinned cold: `smoothfs pin set PATH none` first to promote it".into()
            }
            Refusal::Hardlinked { .. } => {
                "hard-linked files cannot be moved: remove the extra links first".into()
            }
            Refusal::RangeStaged => {
                "the file has staged writes: wait for the write-staging drain and retry".into()
            }
            Refusal::PassthroughHandles { .. } => {
                "file is open with passthrough handles: close it and retry \
                 (new opens are now mediated)"
                    .into()
            }
            Refusal::ImmutableOrAppendOnly => {
                "clear the immutable/append-only flag (chattr -i -a) and retry".into()
            }
            Refusal::MissingCapability { .. } => {
                "choose a tier whose filesystem supports the file's xattrs or ACLs".into()
            }
            Refusal::EmptyRelPath => "the object has no path in the pool".into(),
            Refusal::CutoverBusy { .. } => {
                "writes did not drain in time or the file was opened passthrough: \
                 retry when it is idle"
                    .into()
            }
        }
    }
}

/// A finished move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveReport {
    pub oid: [u8; 16],
    pub rel_path: PathBuf,
    pub from_tier: u8,
    pub to_tier: u8,
    pub transaction_seq: u64,
    /// The cutover generation after the switch.
    pub generation: u32,
    /// The new authoritative lower file.
    pub lower_path: PathBuf,
    pub copy: CopyReport,
    /// Wall time of the whole move, W1 to W12.
    pub duration: Duration,
    /// CLEANUP_ERRNO (0 = source removed), or the errno of a failed
    /// MOVE_CLEANUP request.
    pub cleanup_errno: u32,
    /// Set when the old source was not removed by W12.
    pub cleanup_note: Option<String>,
}

/// What [`run_move`] ended with when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    Moved(Box<MoveReport>),
    Refused(Refusal),
}

/// A failed move (S9.3/3). Every failure after MOVE_PLAN and before the
/// switch has aborted the plan and removed the staging file before it is
/// returned. `Display` (see [`MoveError::reason`]) is the FAILURE_REASON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoveError {
    #[error("invalid destination tier {rank}: the pool has {tier_count} tier(s)")]
    InvalidDestination { rank: u8, tier_count: usize },
    /// A control request failed for a reason other than the step's own
    /// refusals (connection lost, malformed reply, unexpected errno).
    #[error("{step} failed: {source}")]
    Control {
        step: &'static str,
        #[source]
        source: UapiError,
    },
    /// W5: the data plane refused the plan (S12.1 gates).
    #[error("MOVE_PLAN refused: {0}")]
    Plan(#[source] UapiError),
    /// W6.
    #[error("destination lacks space: {0}")]
    NoSpace(String),
    /// W7/W8: `checksum mismatch`, `metadata mismatch`, cancelled, I/O.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// W9: the source changed while it was copied.
    #[error("source raced: {0}")]
    SourceRaced(String),
    /// W10: MOVE_CUTOVER returned ESTALE.
    #[error("source raced during cutover")]
    CutoverRaced(#[source] UapiError),
    #[error("failpoint {name}: {}", errno_name(*errno))]
    Failpoint { name: &'static str, errno: i32 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// W3, W11 or the LUN rollback (S18.3); the text starts with the
    /// spec's reason (`lun placement stale`, `lun pin not visible`, ...).
    #[error("{0}")]
    Lun(String),
}

impl MoveError {
    /// The FAILURE_REASON (at most 255 bytes).
    pub fn reason(&self) -> String {
        let s = match self {
            MoveError::Copy(CopyError::Cancelled) => "aborted by operator".to_string(),
            other => other.to_string(),
        };
        dataplane::truncate_utf8(&s, 255).to_string()
    }

    /// The errno this failure stands for.
    pub fn errno(&self) -> i32 {
        match self {
            MoveError::InvalidDestination { .. } => libc::EINVAL,
            MoveError::Control { source, .. } | MoveError::Plan(source) => source.errno(),
            MoveError::NoSpace(_) => libc::ENOSPC,
            MoveError::Copy(e) => e.errno(),
            MoveError::SourceRaced(_) | MoveError::CutoverRaced(_) => libc::ESTALE,
            MoveError::Failpoint { errno, .. } => *errno,
            MoveError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            MoveError::Lun(_) => libc::EIO,
        }
    }

    /// True when the object was already switched to the destination (only
    /// the `worker_after_cutover` failpoint fails that late).
    pub fn is_after_switch(&self) -> bool {
        matches!(
            self,
            MoveError::Failpoint {
                name: FAILPOINT_AFTER_CUTOVER,
                ..
            }
        )
    }

    /// What an operator should do next.
    pub fn hint(&self) -> String {
        match self {
            MoveError::InvalidDestination { .. } => "choose an existing tier rank".into(),
            MoveError::Control { .. } => {
                "is the pool still mounted? see `smoothfs status`; the file stays where it was"
                    .into()
            }
            MoveError::Plan(e) => match e.errno() {
                libc::EAGAIN => "the pool is quiesced: retry after it resumes".into(),
                libc::EALREADY => "the file is already on that tier".into(),
                libc::EBUSY => "the file is pinned, busy or open passthrough: see \
                                `smoothfs inspect PATH` and retry"
                    .into(),
                libc::ENOSPC => "the destination tier is (nearly) full: free space or \
                                 choose another tier"
                    .into(),
                libc::EIO => {
                    "the destination tier is faulted or down: see `smoothfs status`".into()
                }
                libc::ENOENT => "the file no longer exists".into(),
                _ => "see `smoothfs inspect PATH` and retry".into(),
            },
            MoveError::NoSpace(_) => {
                "free space on the destination tier or choose another tier".into()
            }
            MoveError::Copy(CopyError::Cancelled) => {
                "the move was cancelled; the file stays where it was".into()
            }
            MoveError::Copy(CopyError::ChecksumMismatch { .. }) => {
                "check the destination tier's health (dmesg) and retry".into()
            }
            MoveError::Copy(CopyError::MetadataMismatch(_)) => {
                "the file's metadata changed during the copy, or the destination cannot \
                 store it: retry, or choose another tier"
                    .into()
            }
            MoveError::SourceRaced(_)
            | MoveError::CutoverRaced(_)
            | MoveError::Copy(CopyError::SourceChanged(_)) => {
                "the file changed during the move: retry when it is idle".into()
            }
            MoveError::Copy(_) | MoveError::Io { .. } => {
                "check the tiers' health and free space, then retry".into()
            }
            MoveError::Failpoint { .. } => "a test failpoint fired (SMOOTHFS_FAILPOINTS)".into(),
            MoveError::Lun(_) => "the LUN target may still be stopped: check the pin \
                                  (`smoothfs inspect PATH`), fix the cause, then resume it"
                .into(),
        }
    }
}

// ---------------------------------------------------------------------------
// I/O priority
// ---------------------------------------------------------------------------

/// `smoothfs_move_ioprio` (S10.3/5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoPriority {
    /// Best-effort class, level 0 (highest) – 7 (lowest).
    BestEffort(u8),
    Idle,
}

impl IoPriority {
    /// The spec default, `be7`.
    pub const DEFAULT: IoPriority = IoPriority::BestEffort(7);

    /// `be0`–`be7` or `idle`.
    pub fn parse(s: &str) -> Option<IoPriority> {
        if s == "idle" {
            return Some(IoPriority::Idle);
        }
        let level: u8 = s.strip_prefix("be")?.parse().ok()?;
        (level <= 7).then_some(IoPriority::BestEffort(level))
    }
}

/// Set the I/O priority of the calling thread (Linux I/O priorities are
/// per thread).
pub fn set_thread_io_priority(p: IoPriority) -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    const IOPRIO_CLASS_BE: libc::c_int = 2;
    const IOPRIO_CLASS_IDLE: libc::c_int = 3;
    let value = match p {
        IoPriority::BestEffort(level) => {
            (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | libc::c_int::from(level.min(7))
        }
        IoPriority::Idle => IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
    };
    // SAFETY: ioprio_set takes three integers and touches no memory; who =
    // PROCESS with id 0 means the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The move
// ---------------------------------------------------------------------------

/// Move object `oid` of pool `pool_uuid` to tier `dest_rank` (S10.2).
///
/// Returns `Ok(Moved)` after cleanup, `Ok(Refused)` when a W1/W2 check or
/// the cutover's EBUSY keeps the object where it is, and `Err` on a failure
/// (after aborting an accepted plan and removing its staging file). See the
/// module doc for what the observer sees.
pub fn run_move(
    client: &mut Client,
    pool_uuid: &Uuid,
    oid: &[u8; 16],
    dest_rank: u8,
    opts: &MoveOptions,
    observer: &mut dyn MoveObserver,
) -> Result<MoveOutcome, MoveError> {
    Move {
        client,
        pool: *pool_uuid,
        oid: *oid,
        dest: dest_rank,
        opts,
        obs: observer,
        started: Instant::now(),
        cache_dropper: None,
    }
    .run()
}

/// Why the steps stopped early.
enum Stop {
    Refuse(Refusal),
    Fail(MoveError),
}

impl From<MoveError> for Stop {
    fn from(e: MoveError) -> Stop {
        Stop::Fail(e)
    }
}

impl From<CopyError> for Stop {
    fn from(e: CopyError) -> Stop {
        Stop::Fail(MoveError::Copy(e))
    }
}

/// What W1–W4 established.
struct Prepared {
    w1: Inspection,
    dest_tier: TierInfo,
    full_pct: u8,
    rel_path: PathBuf,
}

fn hit(name: &'static str) -> Result<(), MoveError> {
    failpoint::hit(name).map_err(|errno| MoveError::Failpoint { name, errno })
}

fn oid_hex(oid: &[u8; 16]) -> String {
    oid.iter().map(|b| format!("{b:02x}")).collect()
}

struct Move<'a> {
    client: &'a mut Client,
    pool: Uuid,
    oid: [u8; 16],
    dest: u8,
    opts: &'a MoveOptions,
    obs: &'a mut dyn MoveObserver,
    started: Instant,
    /// Drops the moved file's pages from the page cache after W9 while the
    /// cutover and cleanup run; joined when the move ends.
    cache_dropper: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Move<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.cache_dropper.take() {
            let _ = t.join();
        }
    }
}

impl Move<'_> {
    fn run(&mut self) -> Result<MoveOutcome, MoveError> {
        let prep = match self.prepare() {
            Ok(p) => p,
            Err(Stop::Refuse(r)) => {
                let r = self.lun_rollback_refusal(r);
                return Ok(self.refused(r));
            }
            Err(Stop::Fail(e)) => {
                let e = self.lun_rollback(e);
                return Err(self.failed(e));
            }
        };

        // W5. Nothing is accepted until MOVE_PLAN answers, so a failure
        // here needs no abort.
        if let Err(e) = self
            .check_cancel()
            .and_then(|()| hit(FAILPOINT_BEFORE_PLAN))
        {
            let e = self.lun_rollback(e);
            return Err(self.failed(e));
        }
        let plan = match dataplane::move_plan(
            self.client,
            &self.pool,
            &self.oid,
            self.dest,
            self.opts.transaction_seq,
            self.opts.force,
        ) {
            Ok(p) => p,
            Err(e) => {
                let e = self.lun_rollback(MoveError::Plan(e));
                return Err(self.failed(e));
            }
        };
        self.obs.state(
            MovementState::PlanAccepted,
            &format!(
                "seq {} {} tier {} -> {}, staging {}",
                self.opts.transaction_seq,
                prep.rel_path.display(),
                prep.w1.current_tier,
                self.dest,
                plan.staging_path.display()
            ),
        );

        // W6–W10. From here until the switch every stop aborts the plan.
        let (report, cutover) = match self.copy_and_cut_over(&prep, &plan) {
            Ok(v) => v,
            Err(stop) => {
                let reason = match &stop {
                    Stop::Refuse(r) => r.to_string(),
                    Stop::Fail(e) => e.reason(),
                };
                self.abort(&plan.staging_path, &reason);
                return match stop {
                    Stop::Refuse(r) => {
                        let r = self.lun_rollback_refusal(r);
                        Ok(self.refused(r))
                    }
                    Stop::Fail(e) => {
                        let e = self.lun_rollback(e);
                        Err(self.failed(e))
                    }
                };
            }
        };
        self.obs.state(
            MovementState::Switched,
            &format!(
                "generation {} on tier {}: {}",
                cutover.generation,
                cutover.current_tier,
                cutover.lower_path.display()
            ),
        );

        if let Err(e) = hit(FAILPOINT_AFTER_CUTOVER) {
            tracing::warn!(
                pool = %self.pool,
                oid = %oid_hex(&self.oid),
                seq = self.opts.transaction_seq,
                "{e}: stopping after the switch without MOVE_CLEANUP"
            );
            return Err(e);
        }

        // W11: a failure leaves the row failed on the destination and the
        // target stopped; MOVE_CLEANUP only after every step succeeded.
        if let Some(plan) = &self.opts.lun
            && let Err(e) = lun::post_switch(self.client, &self.pool, &self.oid, plan)
        {
            return Err(self.failed(MoveError::Lun(e)));
        }

        // W12.
        self.obs.state(MovementState::CleanupInProgress, "");
        let (cleanup_errno, cleanup_note) = match dataplane::move_cleanup(
            self.client,
            &self.pool,
            &self.oid,
            self.opts.transaction_seq,
        ) {
            Ok(c) if c.cleanup_errno == 0 => (0, None),
            Ok(c) => {
                let errno = i32::try_from(c.cleanup_errno).unwrap_or(libc::EIO);
                let note = format!(
                    "old source not removed ({}); the scrub will remove it",
                    errno_name(errno)
                );
                tracing::warn!(pool = %self.pool, oid = %oid_hex(&self.oid),
                    seq = self.opts.transaction_seq, errno, "{note}");
                (c.cleanup_errno, Some(note))
            }
            Err(e) => {
                let note = format!(
                    "MOVE_CLEANUP failed ({e}); the data plane cleans up after cleanup_grace_s"
                );
                tracing::warn!(pool = %self.pool, oid = %oid_hex(&self.oid),
                    seq = self.opts.transaction_seq, "{note}");
                (e.errno().unsigned_abs(), Some(note))
            }
        };
        self.obs.state(
            MovementState::CleanupComplete,
            cleanup_note.as_deref().unwrap_or("old source removed"),
        );
        Ok(MoveOutcome::Moved(Box::new(MoveReport {
            oid: self.oid,
            rel_path: prep.rel_path,
            from_tier: prep.w1.current_tier,
            to_tier: cutover.current_tier,
            transaction_seq: self.opts.transaction_seq,
            generation: cutover.generation,
            lower_path: cutover.lower_path,
            copy: report,
            duration: self.started.elapsed(),
            cleanup_errno,
            cleanup_note,
        })))
    }

    fn check_cancel(&self) -> Result<(), MoveError> {
        match &self.opts.copy.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(MoveError::Copy(CopyError::Cancelled)),
            _ => Ok(()),
        }
    }

    /// S18.3 item 4 after a failure before the switch; every error is
    /// reported together (the original error alone when the rollback
    /// succeeded).
    fn lun_rollback(&mut self, e: MoveError) -> MoveError {
        let Some(plan) = &self.opts.lun else {
            return e;
        };
        let errors = lun::rollback(self.client, &self.pool, &self.oid, plan);
        if errors.is_empty() {
            e
        } else {
            MoveError::Lun(format!("{}; {}", e.reason(), errors.join("; ")))
        }
    }

    /// [`Self::lun_rollback`] for a refusal: the rollback's errors are
    /// logged.
    fn lun_rollback_refusal(&mut self, r: Refusal) -> Refusal {
        if let Some(plan) = &self.opts.lun {
            let errors = lun::rollback(self.client, &self.pool, &self.oid, plan);
            if !errors.is_empty() {
                tracing::error!(pool = %self.pool, oid = %oid_hex(&self.oid),
                    "LUN rollback after refusal ({r}): {}", errors.join("; "));
            }
        }
        r
    }

    fn refused(&mut self, r: Refusal) -> MoveOutcome {
        tracing::info!(pool = %self.pool, oid = %oid_hex(&self.oid),
            seq = self.opts.transaction_seq, tier = self.dest, "move deferred: {r}");
        self.obs.state(MovementState::Placed, &r.to_string());
        MoveOutcome::Refused(r)
    }

    fn failed(&mut self, e: MoveError) -> MoveError {
        let reason = e.reason();
        tracing::warn!(pool = %self.pool, oid = %oid_hex(&self.oid),
            seq = self.opts.transaction_seq, tier = self.dest, errno = e.errno(),
            "move failed: {reason}");
        self.obs.state(MovementState::Failed, &reason);
        e
    }

    /// S10.2/13: drop the staging file and the plan. Both are best effort:
    /// the data plane deletes the staging file itself on MOVE_ABORT, and an
    /// abort it refuses (the plan already ended, for example after a
    /// cutover that failed on its own) leaves nothing to undo.
    fn abort(&mut self, staging_path: &Path, reason: &str) {
        match std::fs::remove_file(staging_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                pool = %self.pool, oid = %oid_hex(&self.oid),
                "cannot remove staging file {}: {e}", staging_path.display()
            ),
        }
        match dataplane::move_abort(
            self.client,
            &self.pool,
            &self.oid,
            self.opts.transaction_seq,
            Some(reason),
        ) {
            Ok(_) => {}
            Err(e) => tracing::info!(
                pool = %self.pool, oid = %oid_hex(&self.oid),
                seq = self.opts.transaction_seq, "MOVE_ABORT: {e}"
            ),
        }
    }

    /// STATUS, W1 (INSPECT), W2 (refusals), W4 (relative path).
    fn prepare(&mut self) -> Result<Prepared, Stop> {
        let status =
            dataplane::status(self.client, &self.pool).map_err(|source| MoveError::Control {
                step: "STATUS",
                source,
            })?;
        let dest_tier = status
            .tier(self.dest)
            .cloned()
            .ok_or(MoveError::InvalidDestination {
                rank: self.dest,
                tier_count: status.tiers.len(),
            })?;
        let full_pct = self
            .opts
            .full_pct
            .or_else(|| status.item("write_staging_full_pct")?.parse().ok())
            .unwrap_or(DEFAULT_FULL_PCT)
            .clamp(1, 100);

        // W1: an error is a refusal.
        let w1 = dataplane::inspect(self.client, &self.pool, &self.oid).map_err(|e| {
            Stop::Refuse(Refusal::Inspect {
                errno: e.errno(),
                message: e.to_string(),
            })
        })?;

        // W2.
        self.refusal(&w1, &dest_tier)?;

        // W3.
        if let Some(plan) = &self.opts.lun {
            lun::admit(plan, &self.oid, self.dest, &w1).map_err(MoveError::Lun)?;
        }

        // W4.
        let oid_hex = oid_hex(&self.oid);
        let rel_path = match &self.opts.rel_path {
            Some(p) if !p.as_os_str().is_empty() && p.as_os_str() != oid_hex.as_str() => p.clone(),
            _ => w1.rel_path.clone(),
        };
        if rel_path.as_os_str().is_empty() {
            return Err(Stop::Refuse(Refusal::EmptyRelPath));
        }
        Ok(Prepared {
            w1,
            dest_tier,
            full_pct,
            rel_path,
        })
    }

    /// W2: the checks that keep the object `placed` (S10.2/2).
    fn refusal(&mut self, w1: &Inspection, dest_tier: &TierInfo) -> Result<(), Stop> {
        let refuse = |r| Err(Stop::Refuse(r));
        if w1.current_tier == self.dest {
            return refuse(Refusal::AlreadyOnDestination { rank: self.dest });
        }
        if w1.kind != ObjectKind::Regular {
            return refuse(Refusal::NotRegularFile(w1.kind));
        }
        if w1.movement_state != MovementState::Placed {
            return refuse(Refusal::NotPlaced(w1.movement_state));
        }
        match w1.pin_state {
            // A prepared LUN plan has cleared the pin (W3 checks it).
            PinState::PinLun => return refuse(Refusal::LunQuiesceRequired),
            PinState::PinLease if !self.opts.force => return refuse(Refusal::LeasePinned),
            _ => {}
        }
        match w1.policy_pin {
            PolicyPin::PinHot if self.dest > w1.current_tier => {
                return refuse(Refusal::PolicyPinned(PolicyPin::PinHot));
            }
            PolicyPin::PinCold if self.dest < w1.current_tier => {
                return refuse(Refusal::PolicyPinned(PolicyPin::PinCold));
            }
            _ => {}
        }
        if w1.nlink > 1 {
            return refuse(Refusal::Hardlinked { nlink: w1.nlink });
        }
        if w1.range_staged {
            return refuse(Refusal::RangeStaged);
        }
        if w1.passthrough_handles > 0 {
            // Later opens become mediated, so a retry can succeed once the
            // current handles are closed.
            match dataplane::revoke_mappings(self.client, &self.pool, &self.oid) {
                Ok(left) => tracing::info!(pool = %self.pool, oid = %oid_hex(&self.oid),
                    "REVOKE_MAPPINGS sent; {left} passthrough handle(s) still open"),
                Err(e) => tracing::warn!(pool = %self.pool, oid = %oid_hex(&self.oid),
                    "REVOKE_MAPPINGS failed: {e}"),
            }
            return refuse(Refusal::PassthroughHandles {
                count: w1.passthrough_handles,
            });
        }
        if w1.lower_path.as_os_str().is_empty() {
            return refuse(Refusal::Inspect {
                errno: libc::EPROTO,
                message: "INSPECT reported no LOWER_PATH".into(),
            });
        }
        if copy::has_immutable_or_append(&w1.lower_path) {
            return refuse(Refusal::ImmutableOrAppendOnly);
        }
        // S1.3/5: optional capabilities the object's xattrs need. An
        // unreadable xattr list is left for the copy to report.
        if let Ok(names) = copy::xattr_names(&w1.lower_path) {
            let needs = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
            let required = [
                (needs("user."), TierCap::XattrUser),
                (needs("trusted."), TierCap::XattrTrusted),
                (needs("security."), TierCap::XattrSecurity),
                (needs("system.posix_acl_"), TierCap::PosixAcl),
            ];
            if let Some((_, cap)) = required
                .into_iter()
                .find(|(needed, cap)| *needed && !dest_tier.caps.contains(*cap))
            {
                return refuse(Refusal::MissingCapability {
                    rank: self.dest,
                    cap,
                });
            }
        }
        Ok(())
    }

    /// W6–W10, up to and including a successful MOVE_CUTOVER.
    fn copy_and_cut_over(
        &mut self,
        prep: &Prepared,
        plan: &Plan,
    ) -> Result<(CopyReport, Cutover), Stop> {
        hit(FAILPOINT_AFTER_PLAN)?;
        self.check_cancel()?;
        let lower = match &plan.lower_path {
            Some(p) if !p.as_os_str().is_empty() => p.clone(),
            _ => prep.w1.lower_path.clone(),
        };

        // W6.
        let before = SourceSnapshot::lstat(&lower)
            .map_err(|e| MoveError::SourceRaced(format!("source lower unavailable: {e}")))?;
        // A sparse source needs only its allocated bytes (S10.4/A6 moves a
        // 1 GiB file holding 1 MiB between 512 MiB tiers).
        let needed = if before.is_sparse() {
            before.blocks.saturating_mul(512)
        } else {
            before.size
        };
        self.check_space(prep, needed)?;
        let staging = Staging::create(&plan.staging_path)?;
        let same_fs = staging
            .file()
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m) == before.dev)
            .unwrap_or(false);
        let reflink_likely = same_fs && prep.dest_tier.caps.contains(TierCap::Reflink);
        if self.opts.preallocate && !before.is_sparse() && !reflink_likely {
            staging.preallocate(before.size)?;
        }
        self.obs.state(
            MovementState::DestinationReserved,
            &format!(
                "{} bytes on tier {} ({})",
                before.size,
                self.dest,
                prep.dest_tier.tier_path.display()
            ),
        );

        // W7.
        self.obs.state(
            MovementState::CopyInProgress,
            &format!("{} -> {}", lower.display(), staging.path().display()),
        );
        let obs = &mut *self.obs;
        // W9's fresh BLAKE3 of the source is taken by re-reading each
        // chunk right after it is copied (the sendfile copy), or right
        // after the copy while the staging file is fsynced (the other
        // methods); a change made after it, before W9's checks (S10.4 A1:
        // even with the mtime put back), moves the source's ctime, which
        // W9 compares with the snapshot taken before the copy. W8's
        // staging hash is read back during the stream copy.
        let copy_opts = CopyOptions {
            rehash_source: self.opts.verify_source_rehash,
            ..self.opts.copy.clone()
        };
        let report = copy::copy_into(&lower, &staging, &copy_opts, &mut |done, total| {
            obs.progress(done, total)
        })?;
        self.obs.state(
            MovementState::CopyComplete,
            &format!(
                "{} bytes via {} in {:.3} s",
                report.bytes_total,
                report.method,
                report.duration.as_secs_f64()
            ),
        );

        // Between W7 and W9 (tests change the source here).
        hit(FAILPOINT_AFTER_COPY)?;
        // W9 then W8: a source that changed during the copy is reported as
        // "source raced" (its mtime would also fail W8's metadata check);
        // both run before copy_verified.
        self.recheck_source(prep, &lower, &report)?;
        let cancel = self.opts.copy.cancel.as_deref();
        copy::verify_staging(&lower, staging.path(), &report, cancel)?;
        self.obs.state(
            MovementState::CopyVerified,
            &format!("blake3 {}", report.blake3),
        );
        // Both files leave the page cache (S10.3/4) while the cutover and
        // cleanup go on: freeing a large file's pages takes tens of ms. The
        // thread holds descriptors, not paths: the staging file is renamed
        // by the cutover and the source removed by the cleanup, and the
        // pages must go either way. It is joined before the move returns,
        // so the old copy's space is freed by then.
        let staging_fd = staging.file().try_clone().ok();
        let source_fd = copy::open_source(&lower).ok();
        self.cache_dropper = Some(std::thread::spawn(move || {
            for f in staging_fd.iter().chain(source_fd.iter()) {
                copy::drop_cache_fd(f);
            }
        }));
        drop(staging);

        // W10.
        self.check_cancel()?;
        hit(FAILPOINT_BEFORE_CUTOVER)?;
        let w1_seq = prep.w1.write_seq;
        self.obs.state(
            MovementState::CutoverInProgress,
            &format!("write_seq {}", w1_seq.unwrap_or(0)),
        );
        let cutover = match dataplane::move_cutover(
            self.client,
            &self.pool,
            &self.oid,
            self.opts.transaction_seq,
            w1_seq,
        ) {
            Ok(c) => c,
            Err(e @ UapiError::Remote { .. }) => {
                return Err(match e.errno() {
                    libc::ESTALE => Stop::Fail(MoveError::CutoverRaced(e)),
                    libc::EBUSY => Stop::Refuse(Refusal::CutoverBusy {
                        message: e.to_string(),
                    }),
                    _ => Stop::Fail(MoveError::Control {
                        step: "MOVE_CUTOVER",
                        source: e,
                    }),
                });
            }
            // The request may or may not have reached the data plane: ask.
            Err(e) => match self.cutover_happened(&prep.w1) {
                Some(c) => {
                    tracing::warn!(pool = %self.pool, oid = %oid_hex(&self.oid),
                        "MOVE_CUTOVER reply lost ({e}), but INSPECT shows the switch");
                    c
                }
                None => {
                    return Err(Stop::Fail(MoveError::Control {
                        step: "MOVE_CUTOVER",
                        source: e,
                    }));
                }
            },
        };
        Ok((report, cutover))
    }

    /// W6: `size + reserve_bytes` free on the destination and below
    /// `full_pct` afterwards (`size` = the bytes the copy will allocate).
    fn check_space(&self, prep: &Prepared, size: u64) -> Result<(), MoveError> {
        let root = &prep.dest_tier.tier_path;
        let sv = rustix::fs::statvfs(root).map_err(|e| MoveError::Io {
            context: format!("statvfs {}", root.display()),
            source: e.into(),
        })?;
        let unit = if sv.f_frsize > 0 {
            sv.f_frsize
        } else {
            sv.f_bsize
        };
        let avail = sv.f_bavail.saturating_mul(unit);
        let total = sv.f_blocks.saturating_mul(unit);
        let used = sv.f_blocks.saturating_sub(sv.f_bavail).saturating_mul(unit);
        let need = size.saturating_add(self.opts.reserve_bytes);
        if avail < need {
            return Err(MoveError::NoSpace(format!(
                "tier {} ({}) has {avail} bytes free; the move needs {need} \
                 ({size} + {} reserve)",
                self.dest,
                root.display(),
                self.opts.reserve_bytes
            )));
        }
        let after = u128::from(used) + u128::from(size);
        if total > 0 && after * 100 >= u128::from(total) * u128::from(prep.full_pct) {
            return Err(MoveError::NoSpace(format!(
                "tier {} ({}) would be {}% full after the move; full_pct is {}",
                self.dest,
                root.display(),
                after * 100 / u128::from(total),
                prep.full_pct
            )));
        }
        Ok(())
    }

    /// W9: the source is what was copied and the data plane saw no write.
    fn recheck_source(
        &mut self,
        prep: &Prepared,
        lower: &Path,
        report: &CopyReport,
    ) -> Result<(), Stop> {
        let raced = |why: String| Stop::Fail(MoveError::SourceRaced(why));
        let now = SourceSnapshot::lstat(lower)
            .map_err(|e| raced(format!("source lower unavailable: {e}")))?;
        if !report.source.same_ctime(&now) {
            return Err(raced(format!(
                "the source changed during the copy (ctime {}.{:09} -> {}.{:09})",
                report.source.ctime_sec, report.source.ctime_nsec, now.ctime_sec, now.ctime_nsec
            )));
        }
        if !report.source.same_size_and_mtime(&now) {
            return Err(raced(format!(
                "size/mtime changed during the copy ({} bytes, {}.{:09} -> {} bytes, {}.{:09})",
                report.source.size,
                report.source.mtime_sec,
                report.source.mtime_nsec,
                now.size,
                now.mtime_sec,
                now.mtime_nsec
            )));
        }
        if self.opts.verify_source_rehash {
            let fresh = match &report.source_rehash {
                Some(h) => h.clone(),
                None => copy::hash_file(lower, self.opts.copy.cancel.as_deref())?,
            };
            if fresh != report.blake3 {
                return Err(raced(format!(
                    "content changed during the copy (blake3 {} -> {fresh})",
                    report.blake3
                )));
            }
        }
        let w9 = dataplane::inspect(self.client, &self.pool, &self.oid).map_err(|source| {
            MoveError::Control {
                step: "INSPECT",
                source,
            }
        })?;
        if w9.movement_state != MovementState::PlanAccepted
            || w9.transaction_seq != self.opts.transaction_seq
        {
            return Err(raced(format!(
                "the plan ended: state {} with seq {}",
                w9.movement_state, w9.transaction_seq
            )));
        }
        match (prep.w1.write_seq, w9.write_seq) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                return Err(raced(format!(
                    "write_seq {} -> {}",
                    a.map_or("none".into(), |v| v.to_string()),
                    b.map_or("none".into(), |v| v.to_string())
                )));
            }
        }
        if w9.range_staged {
            return Err(raced("range staged during the copy".into()));
        }
        if w9.passthrough_handles > 0 {
            return Err(raced(format!(
                "{} passthrough handle(s) opened during the copy",
                w9.passthrough_handles
            )));
        }
        Ok(())
    }

    /// After a lost MOVE_CUTOVER reply: did the switch happen?
    fn cutover_happened(&mut self, w1: &Inspection) -> Option<Cutover> {
        let i = dataplane::inspect(self.client, &self.pool, &self.oid).ok()?;
        let switched = i.current_tier == self.dest
            && i.generation > w1.generation
            && matches!(
                i.movement_state,
                MovementState::Switched | MovementState::CleanupInProgress | MovementState::Placed
            );
        switched.then_some(Cutover {
            generation: i.generation,
            current_tier: i.current_tier,
            lower_path: i.lower_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_priority_names() {
        assert_eq!(IoPriority::parse("be7"), Some(IoPriority::BestEffort(7)));
        assert_eq!(IoPriority::parse("be0"), Some(IoPriority::BestEffort(0)));
        assert_eq!(IoPriority::parse("idle"), Some(IoPriority::Idle));
        assert_eq!(IoPriority::parse("be8"), None);
        assert_eq!(IoPriority::parse("rt1"), None);
        assert!(set_thread_io_priority(IoPriority::DEFAULT).is_ok());
    }

    #[test]
    fn failure_reasons_use_the_spec_words() {
        let e = MoveError::SourceRaced("write_seq 1 -> 2".into());
        assert_eq!(e.reason(), "source raced: write_seq 1 -> 2");
        let e = MoveError::CutoverRaced(UapiError::Remote {
            errno: libc::ESTALE,
            message: "x".into(),
        });
        assert_eq!(e.reason(), "source raced during cutover");
        let e = MoveError::Copy(CopyError::MetadataMismatch("mode 644 != 600".into()));
        assert!(e.reason().starts_with("metadata mismatch"));
        let e = MoveError::Copy(CopyError::ChecksumMismatch {
            source_blake3: "a".into(),
            staging_blake3: "b".into(),
        });
        assert!(e.reason().starts_with("checksum mismatch"));
        assert_eq!(
            MoveError::Copy(CopyError::Cancelled).reason(),
            "aborted by operator"
        );
        let long = MoveError::SourceRaced("x".repeat(400));
        assert!(long.reason().len() <= 255);
        assert!(
            MoveError::Failpoint {
                name: FAILPOINT_AFTER_CUTOVER,
                errno: 5
            }
            .is_after_switch()
        );
    }

    #[test]
    fn refusals_carry_hints() {
        let r = Refusal::PassthroughHandles { count: 2 };
        assert_eq!(r.to_string(), "2 passthrough handle(s) open");
        assert!(r.hint().contains("close it and retry"));
        assert_eq!(
            Refusal::LunQuiesceRequired.to_string(),
            "lun quiesce required"
        );
        assert!(Refusal::LeasePinned.hint().contains("--force"));
    }
}
