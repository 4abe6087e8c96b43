//! The data plane's half of a move (SPEC S9.2, S11, S12, S13.3, S15.1, S8):
//! MOVE_PLAN gates, the cutover switch under the object's drain lock,
//! MOVE_ABORT, MOVE_CLEANUP (also after `cleanup_grace_s`), REVOKE_MAPPINGS
//! and pins.
//!
//! Every transition is journaled synchronously (through [`Placement`])
//! before it is acknowledged, and announced through the MOVE_STATE sink
//! installed by the control socket.
//!
//! Safety rules this module keeps:
//! - no write can reach the destination before `switched` is durable: the
//!   switch runs under the exclusive drain lock and mediated handles only
//!   reissue to the destination after the node's rank is swapped, which
//!   happens after the journal record;
//! - a failure before the switch leaves the source authoritative and removes
//!   the staging file (and a destination copy we put in place);
//! - lower files are only ever removed after checking they carry the
//!   object's OID and are not the authoritative copy.
//!
//! Lock order: drain (exclusive) → `ns_lock` → `nodes`; `mv` → `io`.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use smoothfs_uapi::failpoint;
use tracing::{info, warn};

use crate::err;
use crate::error::{Error, Result};
use crate::live::LiveObj;
use crate::namespace::{INTERNAL_DIR, KIND_FILE, Namespace, join, snapshot, split};
use crate::oid::Oid;
use crate::placement::state;
use crate::sys;

const OID_XATTR: &std::ffi::CStr = c"trusted.smoothfs.oid";
const GEN_XATTR: &std::ffi::CStr = c"trusted.smoothfs.gen";
/// `<tier>/.smoothfs/incoming`: staging files of planned moves.
pub const INCOMING_DIR: &str = ".smoothfs/incoming";
/// `<tier>/.smoothfs/quarantine`: foreign files found at a cutover target.
pub const QUARANTINE_DIR: &str = ".smoothfs/quarantine";
/// `<tier>/.smoothfs/outgoing`: source copies of switched moves, named by
/// OID, taken out of the namespace at the switch and removed by cleanup.
pub const OUTGOING_DIR: &str = ".smoothfs/outgoing";
/// MOVE_PLAN gate 15: free space needed beyond the object's size.
pub const MOVE_RESERVE_BYTES: u64 = smoothfs_uapi::codec::MOVE_PLAN_RESERVE_BYTES;
const NO_SLOT: u8 = 0xFF;

/// Pin numbers (S8.1).
pub mod pin {
    pub const NONE: u8 = 0;
    pub const HOT: u8 = 1;
    pub const COLD: u8 = 2;
    pub const HARDLINK: u8 = 3;
    pub const LEASE: u8 = 4;
    pub const LUN: u8 = 5;
}

/// One MOVE_STATE announcement (S9.2 item 2).
#[derive(Clone, Debug)]
pub struct MoveEvt {
    pub oid: Oid,
    pub state: u8,
    pub seq: u64,
    pub current: u8,
    pub intended: u8,
    pub reason: Option<String>,
}

type Sink<T> = OnceLock<Box<dyn Fn(T) + Send + Sync>>;

impl MoveCtl {
    /// The switch sequence of directory `dir` (relative path).
    pub fn switch_seq_of(&self, dir: &OsStr) -> &AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        &self.switch_seq[(h.finish() % 64) as usize]
    }
}

/// Movement settings, counters and the sinks the control socket installs.
pub struct MoveCtl {
    pub quiesced: AtomicBool,
    pub cutover_drain_timeout_ms: AtomicU64,
    pub cleanup_grace_s: AtomicU64,
    pub quiesce_timeout_ms: AtomicU64,
    pub cutovers_in_flight: AtomicU64,
    /// Per directory (hashed into 64 slots): odd while a switch renames
    /// copies between tiers in it, even otherwise. A union listing that
    /// overlapped one (saw the source tier before and the destination
    /// after, or the reverse) lists again.
    pub switch_seq: [AtomicU64; 64],
    pub moves_planned_total: AtomicU64,
    pub cutovers_total: AtomicU64,
    pub cutover_failures_total: AtomicU64,
    pub aborts_total: AtomicU64,
    pub cleanups_total: AtomicU64,
    pub cleanup_failures_total: AtomicU64,
    pub auto_cleanups_total: AtomicU64,
    pub lease_breaks_total: AtomicU64,
    pub reissues_total: AtomicU64,
    pub reissue_failures_total: AtomicU64,
    pub cutover_drain_wait_ns_max: AtomicU64,
    pub cutover_ns_last: AtomicU64,
    pub quarantined_total: AtomicU64,
    /// S5.4: writable opens on a tier this full are mediated.
    pub passthrough_write_off_pct: AtomicU64,
    pub spill_writes_total: AtomicU64,
    pub spill_writes_failed_all_tiers: AtomicU64,
    /// Seqs of internal moves (high bit set, never a worker's).
    pub internal_seq: AtomicU64,
    pub tier_faults_total: AtomicU64,
    /// TIER_FAULT / TIER_RESUMED sink.
    pub tier_event: Sink<crate::health::TierEvt>,
    /// OBJECT_REMOVED sink: (oid, object generation) when the last name of
    /// an object goes (S20.5, S7.4 item 2).
    pub removed: Sink<(Oid, u32)>,
    /// The pool's tier health checker (installed by the control socket).
    pub health: OnceLock<Arc<crate::health::Health>>,
    /// MOVE_STATE sink.
    pub emit: Sink<MoveEvt>,
    /// Kernel cache invalidation of one inode (whole range + attributes).
    pub invalidate: Sink<u64>,
}

impl Default for MoveCtl {
    fn default() -> MoveCtl {
        MoveCtl {
            quiesced: AtomicBool::new(false),
            cutover_drain_timeout_ms: AtomicU64::new(30_000),
            cleanup_grace_s: AtomicU64::new(300),
            quiesce_timeout_ms: AtomicU64::new(60_000),
            cutovers_in_flight: AtomicU64::new(0),
            switch_seq: std::array::from_fn(|_| AtomicU64::new(0)),
            moves_planned_total: AtomicU64::new(0),
            cutovers_total: AtomicU64::new(0),
            cutover_failures_total: AtomicU64::new(0),
            aborts_total: AtomicU64::new(0),
            cleanups_total: AtomicU64::new(0),
            cleanup_failures_total: AtomicU64::new(0),
            auto_cleanups_total: AtomicU64::new(0),
            lease_breaks_total: AtomicU64::new(0),
            reissues_total: AtomicU64::new(0),
            reissue_failures_total: AtomicU64::new(0),
            cutover_drain_wait_ns_max: AtomicU64::new(0),
            cutover_ns_last: AtomicU64::new(0),
            quarantined_total: AtomicU64::new(0),
            passthrough_write_off_pct: AtomicU64::new(95),
            spill_writes_total: AtomicU64::new(0),
            spill_writes_failed_all_tiers: AtomicU64::new(0),
            internal_seq: AtomicU64::new(1),
            tier_faults_total: AtomicU64::new(0),
            tier_event: OnceLock::new(),
            health: OnceLock::new(),
            removed: OnceLock::new(),
            emit: OnceLock::new(),
            invalidate: OnceLock::new(),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// MOVE_PLAN's reply (S12.1).
#[derive(Clone, Debug)]
pub struct PlanReply {
    pub staging_path: PathBuf,
    pub lower_path: PathBuf,
    pub state: u8,
}

/// MOVE_CUTOVER's reply (S11.2 item 7).
#[derive(Clone, Debug)]
pub struct CutoverReply {
    pub generation: u32,
    pub current_tier: u8,
    pub lower_path: PathBuf,
    /// A forced move over a lease: the caller breaks kernel leases (S8.5).
    pub break_lease: bool,
    pub rel_path: OsString,
}

/// The pins and flags of an object as PIN_SET reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pins {
    pub effective: u8,
    pub policy: u8,
    pub mediated: bool,
}

fn ebusy(msg: impl Into<String>) -> Error {
    Error::new(libc::EBUSY, msg.into())
}

fn staging_name(oid: &Oid, seq: u64) -> OsString {
    OsString::from(format!("{}-{seq}", oid.hex()))
}

impl Namespace {
    fn emit(&self, e: MoveEvt) {
        if let Some(f) = self.moves.emit.get() {
            f(e);
        }
    }

    /// The last name of `oid` is gone: OBJECT_REMOVED.
    pub(crate) fn object_removed(&self, oid: Oid, gen_: u32) {
        if let Some(f) = self.moves.removed.get() {
            f((oid, gen_));
        }
    }

    pub(crate) fn invalidate_inode(&self, ino: u64) {
        if let Some(f) = self.moves.invalidate.get() {
            f(ino);
        }
    }

    fn rank_of_slot(&self, slot: u8) -> Option<u8> {
        self.tier_by_slot(slot).map(|t| t.rank)
    }

    /// Path of `rel` on tier `rank`, for replies (LOWER_PATH).
    pub fn lower_path(&self, rank: u8, rel: &OsStr) -> PathBuf {
        let mut p = self.tiers[usize::from(rank)].path.clone().into_os_string();
        if !rel.is_empty() {
            p.push("/");
            p.push(rel);
        }
        PathBuf::from(p)
    }

    /// Create `.smoothfs/incoming`, `outgoing` and `quarantine` on every
    /// tier and remove staging leftovers (no plan survives a remount,
    /// S19.1); settle the source copies a crash left in `outgoing`.
    pub fn prepare_movement_dirs(&self) {
        for t in &self.tiers {
            self.prepare_movement_dirs_on(t);
            self.settle_outgoing(t);
        }
    }

    /// At mount, after replay: a source copy in `outgoing` was put there
    /// after its move's `switched` was durable, so it is removed when the
    /// index places its object on another tier. Otherwise (no record, or
    /// the index says the object lives here: a journal that lost records)
    /// it goes to quarantine: nothing is deleted that is not proven
    /// redundant.
    fn settle_outgoing(&self, t: &crate::tier::Tier) {
        let Ok(d) = t.open_dir(OsStr::new(OUTGOING_DIR)) else {
            return;
        };
        let Ok(list) = sys::read_dir_all(d.as_fd()) else {
            return;
        };
        for e in list {
            let n = OsStr::from_bytes(&e.name);
            let oid = sys::lgetxattr(d.as_fd(), n, OID_XATTR)
                .ok()
                .and_then(|v| Oid::from_slice(&v));
            let elsewhere = oid
                .and_then(|o| self.placement.get(&o))
                .is_some_and(|rec| rec.slot != t.slot && self.tier_by_slot(rec.slot).is_some());
            if elsewhere {
                match sys::unlinkat(d.as_fd(), n, false) {
                    Ok(()) => info!("tier {}: removed switched source copy {:?}", t.rank, n),
                    Err(err) => warn!("tier {}: switched source copy {:?}: {err}", t.rank, n),
                }
            } else if let Err(err) = self.quarantine(t.rank, &d, n) {
                warn!("tier {}: outgoing copy {:?} kept: {err}", t.rank, n);
            }
        }
    }

    fn prepare_movement_dirs_on(&self, t: &crate::tier::Tier) {
        {
            for dir in [INCOMING_DIR, OUTGOING_DIR, QUARANTINE_DIR] {
                let (_, name) = split(OsStr::new(dir));
                if let Ok(d) = t.open_dir(OsStr::new(INTERNAL_DIR))
                    && let Err(e) = sys::mkdirat(d.as_fd(), &name, 0o700)
                    && e.raw_os_error() != Some(libc::EEXIST)
                {
                    warn!("tier {}: cannot create {dir}: {e}", t.rank);
                }
            }
            if let Ok(d) = t.open_dir(OsStr::new(INCOMING_DIR))
                && let Ok(list) = sys::read_dir_all(d.as_fd())
            {
                for e in list {
                    let n = OsStr::from_bytes(&e.name);
                    if n == "." || n == ".." {
                        continue;
                    }
                    match sys::unlinkat(d.as_fd(), n, false) {
                        Ok(()) => info!("tier {}: removed staging leftover {:?}", t.rank, n),
                        Err(err) => warn!("tier {}: staging leftover {:?}: {err}", t.rank, n),
                    }
                }
            }
        }
    }

    /// The live object for `oid`, checking the object exists (ENOENT).
    fn live_for(&self, oid: &Oid) -> Result<(Arc<LiveObj>, crate::namespace::Node)> {
        let node = self.node(oid.ino()).map_err(|e| {
            if e.errno == libc::ESTALE {
                err!(libc::ENOENT, "unknown object {oid}")
            } else {
                e
            }
        })?;
        if node.oid != *oid {
            return Err(err!(libc::ENOENT, "unknown object {oid}"));
        }
        Ok((self.live.get_or_create(oid.ino(), *oid), node))
    }

    /// Effective protocol pin: the volatile lease, else the stored lun.
    fn protocol_pin(&self, live: &LiveObj, stored: u8) -> u8 {
        if live.lease.load(Ordering::Relaxed) {
            pin::LEASE
        } else if stored == pin::LUN {
            pin::LUN
        } else {
            pin::NONE
        }
    }

    /// S13.1 item 2, the object-side rules: must a new open be mediated?
    pub fn must_mediate(&self, live: &LiveObj) -> bool {
        if live.no_passthrough.load(Ordering::Relaxed) || live.state() != state::PLACED {
            return true;
        }
        match self.placement.get(&live.oid) {
            Some(r) => r.always_mediated || r.protocol_pin == pin::LUN,
            None => false,
        }
    }

    // ---- MOVE_PLAN (S12.1) ------------------------------------------------

    pub fn move_plan(&self, oid: &Oid, dest: u8, seq: u64, force: bool) -> Result<PlanReply> {
        if self.moves.quiesced.load(Ordering::Acquire) {
            return Err(err!(libc::EAGAIN, "pool is quiesced"));
        }
        let dt = self
            .tiers
            .get(usize::from(dest))
            .ok_or_else(|| err!(libc::EINVAL, "tier {dest} does not exist"))?;
        if !dt.is_ok() {
            return Err(err!(
                libc::EIO,
                "destination tier {dest} is faulted or down"
            ));
        }
        let rec = self
            .placement
            .get(oid)
            .ok_or_else(|| err!(libc::ENOENT, "unknown object {oid}"))?;
        let (live, node) = self.live_for(oid)?;
        let cur = node
            .rank
            .or_else(|| self.rank_of_slot(rec.slot))
            .unwrap_or(0);
        if node.kind == KIND_FILE && cur == dest {
            return Err(err!(libc::EALREADY, "object is already on tier {dest}"));
        }
        self.check_tier_ok(cur)?;
        if live.state() != state::PLACED {
            return Err(ebusy(format!("object is {}", state::name(live.state()))));
        }
        if node.kind != KIND_FILE {
            return Err(ebusy("not a regular file"));
        }
        match self.protocol_pin(&live, rec.protocol_pin) {
            pin::LUN => return Err(ebusy("object is pinned (pin_lun)")),
            pin::LEASE if !force => {
                return Err(ebusy("object holds a lease (pin_lease); use FORCE"));
            }
            _ => {}
        }
        if rec.policy_pin == pin::HOT && dest > cur {
            return Err(ebusy("object is pinned hot: it is never demoted"));
        }
        if rec.policy_pin == pin::COLD && dest < cur {
            return Err(ebusy("object is pinned cold: it is never promoted"));
        }
        let st = self.getattr(oid.ino())?;
        if st.st_nlink > 1 {
            return Err(ebusy(format!(
                "object has {} hard links (pin_hardlink)",
                st.st_nlink
            )));
        }
        if matches!(self.placement.staged(oid), Some((2, _))) {
            return Err(ebusy("object is range staged"));
        }
        let vfs = dt
            .statfs()
            .map_err(|e| Error::io(format!("statfs tier {dest}"), e))?;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        // A sparse file needs only its allocated bytes (holes stay holes).
        let size = u64::try_from(st.st_size)
            .unwrap_or(0)
            .min(u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512));
        let full_pct = self.full_pct.load(Ordering::Relaxed) as u32;
        if dt.near_full(full_pct).unwrap_or(true) || free < size.saturating_add(MOVE_RESERVE_BYTES)
        {
            return Err(err!(
                libc::ENOSPC,
                "tier {dest} has {free} bytes free; {size} + {MOVE_RESERVE_BYTES} needed below {full_pct}% full"
            ));
        }
        // Gate 14 and the state change happen together under mv + io, so
        // no passthrough open can slip in between.
        {
            let mut mv = live.mv.lock();
            if mv.state != state::PLACED {
                return Err(ebusy(format!("object is {}", state::name(mv.state))));
            }
            let io = live.io.lock();
            if io.passthrough > 0 {
                return Err(ebusy(format!(
                    "{} passthrough handle(s) open",
                    io.passthrough
                )));
            }
            drop(io);
            mv.state = state::PLAN_ACCEPTED;
            mv.intended = dest;
            mv.source = cur;
            mv.seq = seq;
            mv.force = force;
            mv.meta_changed = false;
        }
        let src_slot = self.tiers[usize::from(cur)].slot;
        if let Err(e) =
            self.placement
                .move_state(oid, state::PLAN_ACCEPTED, src_slot, dt.slot, seq, "plan")
        {
            *live.mv.lock() = Default::default();
            return Err(err!(libc::EIO, "journaling the plan failed: {e}"));
        }
        bump(&self.moves.moves_planned_total);
        // The staging directory the reply promises (a tier may have been
        // emptied by hand since the mount).
        if dt.open_dir(OsStr::new(INCOMING_DIR)).is_err() {
            self.prepare_movement_dirs_on(dt);
        }
        let _ = failpoint::hit("plan_after_journal");
        self.emit(MoveEvt {
            oid: *oid,
            state: state::PLAN_ACCEPTED,
            seq,
            current: cur,
            intended: dest,
            reason: None,
        });
        let mut staging = dt.path.join(INCOMING_DIR);
        staging.push(staging_name(oid, seq));
        Ok(PlanReply {
            staging_path: staging,
            lower_path: self.lower_path(cur, &node.rel_path),
            state: state::PLAN_ACCEPTED,
        })
    }

    /// Back to `placed` on the source after a failure: journal `failed`
    /// then `placed`, remove the staging file (and, when `remove_dest` is
    /// given, the destination copy at that rel_path carrying this OID).
    fn fail_move(&self, live: &LiveObj, reason: &str, remove_dest: Option<&OsStr>) {
        self.fail_move_from(live, reason, remove_dest, None);
    }

    /// Fail the move in flight back to its source. The move is claimed under
    /// the `mv` lock in one step (state `failed`, seq, source and
    /// destination read together), so two paths never fail it twice and an
    /// abort never fails a move whose cutover has begun: with `only_from`,
    /// only a move in that state is failed. Returns whether this call
    /// failed it.
    fn fail_move_from(
        &self,
        live: &LiveObj,
        reason: &str,
        remove_dest: Option<&OsStr>,
        only_from: Option<u8>,
    ) -> bool {
        let (seq, src, dest) = {
            let mut mv = live.mv.lock();
            if matches!(mv.state, state::PLACED | state::FAILED)
                || only_from.is_some_and(|s| s != mv.state)
            {
                return false;
            }
            mv.state = state::FAILED;
            (mv.seq, mv.source, mv.intended)
        };
        let oid = live.oid;
        let src_slot = self.tiers[usize::from(src)].slot;
        let dst_slot = self.tiers[usize::from(dest)].slot;
        if let Err(e) =
            self.placement
                .move_state(&oid, state::FAILED, src_slot, dst_slot, seq, reason)
        {
            warn!(%oid, "journaling failed state: {e}");
        }
        self.remove_staging(dest, &oid, seq);
        if let Some(rel) = remove_dest {
            self.remove_copy(dest, rel, &oid);
        }
        if let Err(e) = self
            .placement
            .move_state(&oid, state::PLACED, src_slot, NO_SLOT, seq, "")
        {
            warn!(%oid, "journaling placed after failure: {e}");
        }
        {
            let mut mv = live.mv.lock();
            if mv.state == state::FAILED && mv.seq == seq {
                *mv = Default::default();
            }
        }
        live.no_passthrough.store(false, Ordering::Relaxed);
        self.emit(MoveEvt {
            oid,
            state: state::FAILED,
            seq,
            current: src,
            intended: dest,
            reason: Some(reason.to_string()),
        });
        true
    }

    fn remove_staging(&self, rank: u8, oid: &Oid, seq: u64) {
        let t = &self.tiers[usize::from(rank)];
        if let Ok(d) = t.open_dir(OsStr::new(INCOMING_DIR)) {
            match sys::unlinkat(d.as_fd(), &staging_name(oid, seq), false) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => warn!(%oid, "removing staging file on tier {rank}: {e}"),
            }
        }
    }

    /// Remove the copy at `rel` on `rank` if it carries `oid`; returns the errno.
    fn remove_copy(&self, rank: u8, rel: &OsStr, oid: &Oid) -> i32 {
        let t = &self.tiers[usize::from(rank)];
        let (p, n) = split(rel);
        let d = match t.open_dir(&p) {
            Ok(d) => d,
            Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
        };
        match sys::lgetxattr(d.as_fd(), &n, OID_XATTR) {
            Ok(v) if v == oid.0 => {}
            Ok(_) => return libc::EEXIST,
            Err(e) => return e.raw_os_error().unwrap_or(libc::EIO),
        }
        match sys::unlinkat(d.as_fd(), &n, false) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    // ---- MOVE_ABORT (S9.6) --------------------------------------------------

    pub fn move_abort(&self, oid: &Oid, seq: u64, reason: &str) -> Result<u8> {
        if self.placement.get(oid).is_none() && self.live.get(oid.ino()).is_none() {
            return Err(err!(libc::ENOENT, "unknown object {oid}"));
        }
        let live = self.live.get_or_create(oid.ino(), *oid);
        {
            let mv = live.mv.lock();
            match mv.state {
                state::PLAN_ACCEPTED if mv.seq != seq => {
                    return Err(err!(libc::ESTALE, "plan seq is {}, not {seq}", mv.seq));
                }
                state::PLAN_ACCEPTED => {}
                state::CUTOVER_IN_PROGRESS => return Err(ebusy("a cutover is running")),
                _ => return Err(err!(libc::EINVAL, "no movement in flight")),
            }
        }
        let reason = if reason.is_empty() { "aborted" } else { reason };
        if !self.fail_move_from(&live, reason, None, Some(state::PLAN_ACCEPTED)) {
            // The cutover claimed it since the check above.
            return Err(ebusy("a cutover is running"));
        }
        bump(&self.moves.aborts_total);
        Ok(state::PLACED)
    }

    /// A plan in flight is abandoned because its object changed shape
    /// (last name unlinked, a new hard link) (S9.2 table).
    pub(crate) fn abort_in_flight(&self, oid: &Oid, reason: &str) {
        // Only a plan not yet cutting over: a cutover that has begun checks
        // the object's name and links itself, under ns_lock.
        if let Some(live) = self.live.get(oid.ino())
            && self.fail_move_from(&live, reason, None, Some(state::PLAN_ACCEPTED))
        {
            bump(&self.moves.aborts_total);
        }
    }

    // ---- MOVE_CUTOVER (S11) -------------------------------------------------

    pub fn move_cutover(
        &self,
        oid: &Oid,
        seq: u64,
        write_seq: Option<u64>,
    ) -> Result<CutoverReply> {
        if self.moves.quiesced.load(Ordering::Acquire) {
            return Err(err!(libc::EAGAIN, "pool is quiesced"));
        }
        let Some(live) = self.live.get(oid.ino()).filter(|l| l.oid == *oid) else {
            return if self.placement.get(oid).is_some() {
                Err(ebusy("object has no plan"))
            } else {
                Err(err!(libc::ENOENT, "unknown object {oid}"))
            };
        };
        let (dest, src) = {
            let mut mv = live.mv.lock();
            if usize::from(mv.intended) >= self.tiers.len() {
                return Err(err!(
                    libc::EINVAL,
                    "intended tier {} out of range",
                    mv.intended
                ));
            }
            if mv.state == state::PLAN_ACCEPTED && !self.tiers[usize::from(mv.intended)].is_ok() {
                drop(mv);
                self.fail_move(&live, "destination tier faulted", None);
                return Err(err!(libc::EIO, "destination tier is faulted or down"));
            }
            if mv.state != state::PLAN_ACCEPTED {
                return Err(ebusy(format!("object is {}", state::name(mv.state))));
            }
            if mv.seq != seq {
                return Err(err!(libc::ESTALE, "plan seq is {}, not {seq}", mv.seq));
            }
            let io = live.io.lock();
            if io.passthrough > 0 {
                return Err(ebusy(format!(
                    "{} passthrough handle(s) open",
                    io.passthrough
                )));
            }
            drop(io);
            mv.state = state::CUTOVER_IN_PROGRESS;
            (mv.intended, mv.source)
        };
        self.moves.cutovers_in_flight.fetch_add(1, Ordering::AcqRel);
        let r = self.cutover_locked(&live, seq, src, dest, write_seq);
        self.moves.cutovers_in_flight.fetch_sub(1, Ordering::AcqRel);
        match &r {
            Ok(_) => bump(&self.moves.cutovers_total),
            Err(_) => bump(&self.moves.cutover_failures_total),
        }
        r
    }

    fn cutover_locked(
        &self,
        live: &Arc<LiveObj>,
        seq: u64,
        src: u8,
        dest: u8,
        write_seq: Option<u64>,
    ) -> Result<CutoverReply> {
        let oid = live.oid;
        let started = Instant::now();
        let src_slot = self.tiers[usize::from(src)].slot;
        let dst_slot = self.tiers[usize::from(dest)].slot;
        let back_to_plan = |why: &str| {
            live.mv.lock().state = state::PLAN_ACCEPTED;
            let _ =
                self.placement
                    .move_state(&oid, state::PLAN_ACCEPTED, src_slot, dst_slot, seq, why);
            self.emit(MoveEvt {
                oid,
                state: state::PLAN_ACCEPTED,
                seq,
                current: src,
                intended: dest,
                reason: None,
            });
        };
        if let Err(e) = self.placement.move_state(
            &oid,
            state::CUTOVER_IN_PROGRESS,
            src_slot,
            dst_slot,
            seq,
            "cutover",
        ) {
            live.mv.lock().state = state::PLAN_ACCEPTED;
            return Err(err!(libc::EIO, "journaling cutover_in_progress: {e}"));
        }
        self.emit(MoveEvt {
            oid,
            state: state::CUTOVER_IN_PROGRESS,
            seq,
            current: src,
            intended: dest,
            reason: None,
        });
        let _ = failpoint::hit("cutover_before_drain");
        // Drain (S11.3): wait for in-flight data-changing operations.
        let timeout =
            Duration::from_millis(self.moves.cutover_drain_timeout_ms.load(Ordering::Relaxed));
        let Some(guard) = live.drain.try_write_for(timeout) else {
            back_to_plan("drain timeout");
            return Err(ebusy(format!(
                "in-flight writes did not drain within {} ms",
                timeout.as_millis()
            )));
        };
        let waited = started.elapsed().as_nanos() as u64;
        self.moves
            .cutover_drain_wait_ns_max
            .fetch_max(waited, Ordering::Relaxed);
        if let Err(e) = failpoint::hit("cutover_after_drain") {
            drop(guard);
            self.fail_move(live, "failpoint cutover_after_drain", None);
            return Err(err!(e, "failpoint cutover_after_drain"));
        }
        // Metadata set on the source after the plan may be missing from
        // the staging copy (metadata operations hold the drain shared, so
        // none is running now).
        if live.mv.lock().meta_changed {
            drop(guard);
            self.fail_move(live, "source metadata changed during the move", None);
            return Err(err!(
                libc::ESTALE,
                "the source's metadata changed during the move"
            ));
        }
        // Gate 10: the source changed since the worker's INSPECT.
        let now_ws = live.write_seq.load(Ordering::Acquire);
        if let Some(w) = write_seq
            && w != now_ws
        {
            drop(guard);
            self.fail_move(live, "source raced during cutover", None);
            return Err(err!(
                libc::ESTALE,
                "write_seq is {now_ws}, not {w}: the source changed"
            ));
        }
        let switched = self.switch_and_swap(live, seq, src, dest);
        drop(guard);
        let (rel, gen_) = switched?;
        // Step 6, outside the lock.
        self.invalidate_inode(oid.ino());
        self.emit(MoveEvt {
            oid,
            state: state::SWITCHED,
            seq,
            current: dest,
            intended: dest,
            reason: None,
        });
        let force = live.mv.lock().force;
        let break_lease = force && live.lease.swap(false, Ordering::AcqRel);
        self.moves
            .cutover_ns_last
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        info!(%oid, from = src, to = dest, rel = ?rel, "cutover switched");
        Ok(CutoverReply {
            generation: gen_,
            current_tier: dest,
            lower_path: self.lower_path(dest, &rel),
            break_lease,
            rel_path: rel,
        })
    }

    /// S11.2 steps 1–5 under `ns_lock`; the caller holds the drain lock
    /// exclusively. On failure the move is failed back to the source
    /// (`failed` → `placed`). Returns the rel_path and the new generation.
    fn switch_and_swap(
        &self,
        live: &LiveObj,
        seq: u64,
        src: u8,
        dest: u8,
    ) -> Result<(OsString, u32)> {
        let oid = live.oid;
        let dst_slot = self.tiers[usize::from(dest)].slot;
        let ns_guard = self.ns_lock.lock();
        // The directory the copies move in (under ns_lock: no rename now).
        let dir = self
            .node(oid.ino())
            .map(|n| split(&n.rel_path).0)
            .unwrap_or_default();
        let dir_seq = self.moves.switch_seq_of(&dir);
        dir_seq.fetch_add(1, Ordering::AcqRel);
        let switched = self.switch(live, seq, src, dest);
        dir_seq.fetch_add(1, Ordering::AcqRel);
        let (rel, dst_ino, source_rel) = match switched {
            Ok(v) => v,
            Err((e, placed_rel)) => {
                drop(ns_guard);
                self.fail_move(live, &format!("cutover failed: {e}"), placed_rel.as_deref());
                return Err(e);
            }
        };
        // Step 4: swap the lower.
        if let Some(n) = self.nodes.write().get_mut(&oid.ino()) {
            n.rank = Some(dest);
            n.attr = Some(crate::namespace::NodeAttr::from(&dst_ino));
        }
        let gen_ = live.cutover_gen.fetch_add(1, Ordering::AcqRel) + 1;
        {
            let mut mv = live.mv.lock();
            mv.state = state::SWITCHED;
            mv.source_rel = Some(source_rel);
            mv.switched_at = Some(Instant::now());
        }
        if let Some(mut rec) = self.placement.get(&oid) {
            rec.slot = dst_slot;
            rec.lower_ino = dst_ino.st_ino;
            rec.rel_path = rel.to_string_lossy().into_owned();
            rec.attrs = snapshot(&dst_ino);
            if let Err(e) = self.placement.placed(&rec) {
                warn!(%oid, "recording the destination inode: {e}");
            }
        }
        drop(ns_guard);
        Ok((rel, gen_))
    }

    // ---- internal moves (S5.4) ----------------------------------------------

    /// Move `oid` to the first tier of `candidates` with room, in-process,
    /// with the cutover protocol: plan, copy with metadata into staging
    /// under the exclusive drain lock (writers wait), switch, cleanup. The
    /// caller must not hold the object's drain lock. Returns the new rank.
    pub fn relocate(&self, oid: &Oid, candidates: &[u8], reason: &str) -> Result<u8> {
        let (live, node) = self.live_for(oid)?;
        let cur = node
            .rank
            .ok_or_else(|| err!(libc::EISDIR, "not a regular file"))?;
        let st = self.getattr(oid.ino())?;
        let need = u64::try_from(st.st_size)
            .unwrap_or(0)
            .saturating_add(MOVE_RESERVE_BYTES);
        let full_pct = self.full_pct.load(Ordering::Relaxed) as u32;
        let dest = candidates
            .iter()
            .copied()
            .filter(|r| *r != cur)
            .find(|r| {
                let t = &self.tiers[usize::from(*r)];
                t.invalidate_statfs();
                t.is_ok()
                    && !t.near_full(full_pct).unwrap_or(true)
                    && t.statfs()
                        .map(|v| v.f_bavail.saturating_mul(v.f_frsize) >= need)
                        .unwrap_or(false)
            })
            .ok_or_else(|| err!(libc::ENOSPC, "no tier has room for {need} bytes"))?;
        let seq = self.moves.internal_seq.fetch_add(1, Ordering::AcqRel) | (1 << 63);
        {
            let mut mv = live.mv.lock();
            if mv.state != state::PLACED {
                return Err(ebusy(format!("object is {}", state::name(mv.state))));
            }
            if live.io.lock().passthrough > 0 {
                return Err(ebusy("passthrough handles open"));
            }
            *mv = crate::live::MoveState {
                state: state::PLAN_ACCEPTED,
                intended: dest,
                source: cur,
                seq,
                ..Default::default()
            };
        }
        let dt = &self.tiers[usize::from(dest)];
        let src_slot = self.tiers[usize::from(cur)].slot;
        if let Err(e) =
            self.placement
                .move_state(oid, state::PLAN_ACCEPTED, src_slot, dt.slot, seq, reason)
        {
            *live.mv.lock() = Default::default();
            return Err(err!(libc::EIO, "journaling the internal plan failed: {e}"));
        }
        if dt.open_dir(OsStr::new(INCOMING_DIR)).is_err() {
            self.prepare_movement_dirs_on(dt);
        }
        self.emit(MoveEvt {
            oid: *oid,
            state: state::PLAN_ACCEPTED,
            seq,
            current: cur,
            intended: dest,
            reason: Some(reason.to_string()),
        });
        let guard = live.drain.write();
        live.mv.lock().state = state::CUTOVER_IN_PROGRESS;
        let _ = self.placement.move_state(
            oid,
            state::CUTOVER_IN_PROGRESS,
            src_slot,
            dt.slot,
            seq,
            reason,
        );
        // The node's current path, under the drain lock (renames are fine:
        // the switch re-reads it under ns_lock).
        let rel = self.node(oid.ino()).map(|n| n.rel_path)?;
        let mut staging = dt.path.join(INCOMING_DIR);
        staging.push(staging_name(oid, seq));
        let copied = smoothfs_control::copy::copy_file(
            &self.lower_path(cur, &rel),
            &staging,
            &smoothfs_control::copy::CopyOptions::default(),
            &mut |_, _| {},
        );
        if let Err(e) = copied {
            drop(guard);
            self.fail_move(&live, &format!("internal copy failed: {e}"), None);
            return Err(err!(libc::ENOSPC, "relocation to tier {dest} failed: {e}"));
        }
        let r = self.switch_and_swap(&live, seq, cur, dest);
        drop(guard);
        r?;
        self.invalidate_inode(oid.ino());
        self.emit(MoveEvt {
            oid: *oid,
            state: state::SWITCHED,
            seq,
            current: dest,
            intended: dest,
            reason: None,
        });
        // No worker will send MOVE_CLEANUP for an internal move.
        self.cleanup(&live);
        bump(&self.moves.cutovers_total);
        info!(%oid, from = cur, to = dest, reason, "object relocated");
        Ok(dest)
    }

    /// S11.2 steps 1–3. On error returns the rel_path when a destination
    /// copy was already put in place (the caller removes it).
    #[allow(clippy::type_complexity)]
    fn switch(
        &self,
        live: &LiveObj,
        seq: u64,
        src: u8,
        dest: u8,
    ) -> std::result::Result<(OsString, libc::stat, OsString), (Error, Option<OsString>)> {
        let oid = live.oid;
        let node = self.node(oid.ino()).map_err(|e| (e, None))?;
        let rel = node.rel_path.clone();
        let (parent, name) = split(&rel);
        // The object still owns its name on the source: an unlink or a
        // rename over it while the drain waited (both serialise with the
        // switch on ns_lock) must not be undone by renaming the copy in.
        let st = &self.tiers[usize::from(src)];
        let spd = st
            .open_dir(&parent)
            .ok()
            .filter(|d| matches!(sys::lgetxattr(d.as_fd(), &name, OID_XATTR), Ok(v) if v == oid.0));
        let Some(spd) = spd else {
            return Err((
                err!(
                    libc::ENOENT,
                    "{:?} no longer names the object on tier {src} (unlinked or replaced)",
                    rel
                ),
                None,
            ));
        };
        // A hard link made while the drain waited (link() serialises with
        // the switch on ns_lock) would be left behind on the source.
        if let Ok(st) = self.getattr(oid.ino())
            && st.st_nlink > 1
        {
            return Err((ebusy("the object gained a hard link"), None));
        }
        let dt = &self.tiers[usize::from(dest)];
        let io = |what: String| move |e: std::io::Error| (Error::io(what, e), None);
        let incoming = dt
            .open_dir(OsStr::new(INCOMING_DIR))
            .map_err(io(format!("open {INCOMING_DIR} on tier {dest}")))?;
        let sname = staging_name(&oid, seq);
        let staged = match sys::fstatat(incoming.as_fd(), &sname) {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
            Err(e) => return Err((Error::io("stat staging file", e), None)),
        };
        // Gate 11/12: what will become the destination, and whose is it.
        let check_oid =
            |d: &OwnedFd, n: &OsStr| -> std::result::Result<(), (Error, Option<OsString>)> {
                match sys::lgetxattr(d.as_fd(), n, OID_XATTR) {
                    Ok(v) if v == oid.0 => Ok(()),
                    Ok(_) => Err((
                        err!(
                            libc::EINVAL,
                            "the destination carries a different object id"
                        ),
                        None,
                    )),
                    Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
                    Err(e) => Err((Error::io("read destination object id", e), None)),
                }
            };
        self.materialise(dest, &parent).map_err(|e| (e, None))?;
        let pd = dt
            .open_dir(&parent)
            .map_err(io(format!("open {:?} on tier {dest}", parent)))?;
        if staged {
            check_oid(&incoming, &sname)?;
            // Anything else already at the target goes to quarantine.
            match sys::lgetxattr(pd.as_fd(), &name, OID_XATTR) {
                Ok(v) if v == oid.0 => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                _ => {
                    if sys::fstatat(pd.as_fd(), &name).is_ok() {
                        self.quarantine(dest, &pd, &name).map_err(|e| (e, None))?;
                    }
                }
            }
            if let Err(e) = failpoint::hit("cutover_before_rename") {
                return Err((err!(e, "failpoint cutover_before_rename"), None));
            }
            sys::renameat2(incoming.as_fd(), &sname, pd.as_fd(), &name, 0)
                .map_err(io(format!("rename staging into {:?} on tier {dest}", rel)))?;
        } else {
            match sys::fstatat(pd.as_fd(), &name) {
                Ok(_) => check_oid(&pd, &name)?,
                Err(_) => {
                    return Err((
                        err!(
                            libc::ENOENT,
                            "neither the staging file nor {:?} exists on tier {dest}",
                            rel
                        ),
                        None,
                    ));
                }
            }
        }
        let placed = Some(rel.clone());
        // Step 2: identity, then durability of file and directory.
        let gen_ = node.generation;
        if sys::lgetxattr(pd.as_fd(), &name, OID_XATTR).is_err() {
            sys::lsetxattr(pd.as_fd(), &name, OID_XATTR, &oid.0, 0)
                .map_err(|e| (Error::io("write object id", e), placed.clone()))?;
        }
        if sys::lgetxattr(pd.as_fd(), &name, GEN_XATTR).is_err() {
            let _ = sys::lsetxattr(pd.as_fd(), &name, GEN_XATTR, &gen_.to_le_bytes(), 0);
        }
        let f = dt
            .open_file(&rel, libc::O_RDONLY)
            .map_err(|e| (Error::io("open destination", e), placed.clone()))?;
        sys::fsync(f.as_fd(), false)
            .map_err(|e| (Error::io("fsync destination", e), placed.clone()))?;
        let dfd = dt
            .open_file(&parent, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| (Error::io("open destination directory", e), placed.clone()))?;
        sys::fsync(dfd.as_fd(), false)
            .map_err(|e| (Error::io("fsync destination directory", e), placed.clone()))?;
        let st = sys::fstat(f.as_fd())
            .map_err(|e| (Error::io("stat destination", e), placed.clone()))?;
        if let Err(e) = failpoint::hit("cutover_before_switch_journal") {
            return Err((err!(e, "failpoint cutover_before_switch_journal"), placed));
        }
        // Step 3: `switched` is durable before any write can reach the destination.
        let src_slot = self.tiers[usize::from(src)].slot;
        self.placement
            .move_state(&oid, state::SWITCHED, src_slot, dt.slot, seq, "switched")
            .map_err(|e| (err!(libc::EIO, "journaling switched: {e}"), placed.clone()))?;
        let _ = failpoint::hit("cutover_after_switch_journal");
        // The source copy leaves the namespace now, not at cleanup: until
        // then a create, link, rename or listing at its name on the source
        // tier would find a second copy of a live object.
        let source_rel = self
            .retire_source(src, &spd, &name, &oid)
            .unwrap_or(rel.clone());
        let _ = failpoint::hit("cutover_after_retire_source");
        Ok((rel, st, source_rel))
    }

    /// Rename the switched source copy `name` in `spd` on tier `src` to
    /// `outgoing/<oid>`; its new relative path, or None (logged) when it
    /// stays where it is for cleanup to remove.
    fn retire_source(&self, src: u8, spd: &OwnedFd, name: &OsStr, oid: &Oid) -> Option<OsString> {
        let t = &self.tiers[usize::from(src)];
        let out = match t.open_dir(OsStr::new(OUTGOING_DIR)) {
            Ok(d) => d,
            Err(_) => {
                self.prepare_movement_dirs_on(t);
                t.open_dir(OsStr::new(OUTGOING_DIR))
                    .map_err(|e| warn!(%oid, "tier {src}: no {OUTGOING_DIR}: {e}"))
                    .ok()?
            }
        };
        let oname = OsString::from(oid.to_string());
        match sys::renameat2(spd.as_fd(), name, out.as_fd(), &oname, 0) {
            Ok(()) => Some(rel_join(OsStr::new(OUTGOING_DIR), &oname)),
            Err(e) => {
                warn!(%oid, "tier {src}: source copy {name:?} stays in place until cleanup: {e}");
                None
            }
        }
    }

    fn quarantine(&self, rank: u8, pd: &OwnedFd, name: &OsStr) -> Result<()> {
        let t = &self.tiers[usize::from(rank)];
        let q = t
            .open_dir(OsStr::new(QUARANTINE_DIR))
            .map_err(|e| Error::io("open quarantine", e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut qn = OsString::from(format!("{stamp}-"));
        qn.push(name);
        sys::renameat2(pd.as_fd(), name, q.as_fd(), &qn, 0)
            .map_err(|e| Error::io("move foreign file to quarantine", e))?;
        bump(&self.moves.quarantined_total);
        warn!(
            "tier {rank}: foreign file {:?} moved to quarantine as {:?}",
            name, qn
        );
        Ok(())
    }

    // ---- MOVE_CLEANUP (S9.2 item 3) -----------------------------------------

    /// Returns (movement state, cleanup errno).
    pub fn move_cleanup(&self, oid: &Oid, seq: u64) -> Result<(u8, i32)> {
        let Some(live) = self.live.get(oid.ino()).filter(|l| l.oid == *oid) else {
            return if self.placement.get(oid).is_some() {
                Err(err!(libc::EINVAL, "object is not switched"))
            } else {
                Err(err!(libc::ENOENT, "unknown object {oid}"))
            };
        };
        {
            let mv = live.mv.lock();
            if mv.state != state::SWITCHED {
                if mv.cleaned_seq == seq && seq != 0 {
                    return Ok((state::CLEANUP_COMPLETE, 0));
                }
                if mv.state == state::PLACED && mv.cleaned_seq != 0 {
                    return Err(err!(
                        libc::ESTALE,
                        "last cleanup was for seq {}",
                        mv.cleaned_seq
                    ));
                }
                return Err(err!(libc::EINVAL, "object is {}", state::name(mv.state)));
            }
            if mv.seq != seq {
                return Err(err!(libc::ESTALE, "switch seq is {}, not {seq}", mv.seq));
            }
        }
        let src = live.mv.lock().source;
        if !self.tiers[usize::from(src)].is_ok() {
            // S23.2 item 4: pending until the tier returns.
            live.mv.lock().switched_at = None;
            return Ok((state::SWITCHED, libc::EIO));
        }
        let errno = self.cleanup(&live);
        Ok((state::CLEANUP_COMPLETE, errno))
    }

    /// Cleanup of a switched object; returns the removal errno (0 = removed).
    fn cleanup(&self, live: &LiveObj) -> i32 {
        let oid = live.oid;
        let (seq, src, dest, source_rel) = {
            let mut mv = live.mv.lock();
            if mv.state != state::SWITCHED {
                return 0;
            }
            mv.state = state::CLEANUP_IN_PROGRESS;
            (mv.seq, mv.source, mv.intended, mv.source_rel.clone())
        };
        let dst_slot = self.tiers[usize::from(dest)].slot;
        if let Err(e) = self.placement.move_state(
            &oid,
            state::CLEANUP_IN_PROGRESS,
            dst_slot,
            dst_slot,
            seq,
            "cleanup",
        ) {
            warn!(%oid, "journaling cleanup_in_progress: {e}");
        }
        self.emit(MoveEvt {
            oid,
            state: state::CLEANUP_IN_PROGRESS,
            seq,
            current: dest,
            intended: dest,
            reason: None,
        });
        let _ = failpoint::hit("cleanup_before_remove");
        let errno = match &source_rel {
            Some(rel) if src != dest => match self.remove_copy(src, rel, &oid) {
                libc::ENOENT => 0,
                e => e,
            },
            _ => 0,
        };
        if errno != 0 {
            bump(&self.moves.cleanup_failures_total);
            warn!(%oid, "cleanup: source copy on tier {src} not removed: {}", std::io::Error::from_raw_os_error(errno));
        }
        if let Err(e) = self.placement.move_state(
            &oid,
            state::PLACED,
            dst_slot,
            NO_SLOT,
            seq,
            "cleanup_complete",
        ) {
            warn!(%oid, "journaling placed after cleanup: {e}");
        }
        {
            let mut mv = live.mv.lock();
            *mv = Default::default();
            mv.cleaned_seq = seq;
        }
        live.no_passthrough.store(false, Ordering::Relaxed);
        bump(&self.moves.cleanups_total);
        self.emit(MoveEvt {
            oid,
            state: state::CLEANUP_COMPLETE,
            seq,
            current: dest,
            intended: dest,
            reason: if errno != 0 {
                Some(format!(
                    "source copy not removed: {}",
                    std::io::Error::from_raw_os_error(errno)
                ))
            } else {
                None
            },
        });
        errno
    }

    /// Run cleanups that were held because their source tier was faulted
    /// or down (S23.3 item 3), now that tiers are back.
    pub fn auto_cleanup_now(&self) {
        for live in self.live.all() {
            let due = {
                let mv = live.mv.lock();
                mv.state == state::SWITCHED
                    && mv.switched_at.is_none()
                    && self.tiers[usize::from(mv.source)].is_ok()
            };
            if due {
                self.cleanup(&live);
            }
        }
    }

    /// Clean up switched objects whose `cleanup_grace_s` has passed (S9.2).
    pub fn auto_cleanup(&self) {
        let grace = Duration::from_secs(self.moves.cleanup_grace_s.load(Ordering::Relaxed));
        for live in self.live.all() {
            let due = {
                let mv = live.mv.lock();
                mv.state == state::SWITCHED
                    && mv.switched_at.is_some_and(|t| t.elapsed() >= grace)
                    && self.tiers[usize::from(mv.source)].is_ok()
            };
            if due {
                bump(&self.moves.auto_cleanups_total);
                self.cleanup(&live);
            }
        }
    }

    // ---- REVOKE_MAPPINGS (S13.3), QUIESCE/RECONCILE (S15) -------------------

    pub fn revoke_mappings(&self, oid: &Oid) -> Result<u32> {
        let (live, _) = self.live_for(oid)?;
        live.no_passthrough.store(true, Ordering::Release);
        self.invalidate_inode(oid.ino());
        Ok(live.counts().passthrough)
    }

    /// Set the quiesced flag and wait for running cutovers (S15.1).
    pub fn quiesce(&self) -> Result<()> {
        self.moves.quiesced.store(true, Ordering::Release);
        let limit = Duration::from_millis(self.moves.quiesce_timeout_ms.load(Ordering::Relaxed));
        let start = Instant::now();
        while self.moves.cutovers_in_flight.load(Ordering::Acquire) > 0 {
            if start.elapsed() >= limit {
                return Err(err!(
                    libc::ETIMEDOUT,
                    "running cutovers did not finish within {} ms; the pool stays quiesced",
                    limit.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Clear quiesce and every `no_passthrough` flag (S15.2).
    pub fn reconcile(&self) {
        self.moves.quiesced.store(false, Ordering::Release);
        for o in self.live.all() {
            o.no_passthrough.store(false, Ordering::Relaxed);
        }
    }

    // ---- pins (S8) ----------------------------------------------------------

    /// Current pins of an object.
    pub fn pins(&self, oid: &Oid) -> Result<Pins> {
        let rec = self
            .placement
            .get(oid)
            .ok_or_else(|| err!(libc::ENOENT, "unknown object {oid}"))?;
        let lease = self
            .live
            .get(oid.ino())
            .is_some_and(|l| l.lease.load(Ordering::Relaxed));
        let protocol = if lease {
            pin::LEASE
        } else if rec.protocol_pin == pin::LUN {
            pin::LUN
        } else {
            pin::NONE
        };
        let nlink = rec.nlink_names.len().max(1);
        let nlink = match self.getattr(oid.ino()) {
            Ok(st) => st.st_nlink as usize,
            Err(_) => nlink,
        };
        let effective = if protocol != pin::NONE {
            protocol
        } else if rec.kind == KIND_FILE && nlink > 1 {
            pin::HARDLINK
        } else {
            rec.policy_pin
        };
        Ok(Pins {
            effective,
            policy: rec.policy_pin,
            mediated: rec.always_mediated,
        })
    }

    /// PIN_SET (S20.4): any of policy pin, protocol pin (0 clear, 4, 5), mediated.
    pub fn pin_set(
        &self,
        oid: &Oid,
        policy: Option<u8>,
        protocol: Option<u8>,
        mediated: Option<bool>,
    ) -> Result<Pins> {
        if let Some(p) = policy
            && p > pin::COLD
        {
            return Err(err!(libc::EINVAL, "POLICY_PIN must be 0, 1 or 2, not {p}"));
        }
        if let Some(p) = protocol
            && !matches!(p, pin::NONE | pin::LEASE | pin::LUN)
        {
            return Err(err!(libc::EINVAL, "PIN_STATE must be 0, 4 or 5, not {p}"));
        }
        let rec = self
            .placement
            .get(oid)
            .ok_or_else(|| err!(libc::ENOENT, "unknown object {oid}"))?;
        let live = self.live.get_or_create(oid.ino(), *oid);
        let lease = live.lease.load(Ordering::Relaxed);
        let mut stored = rec.protocol_pin;
        let mut new_lease = lease;
        match protocol {
            Some(pin::LEASE) if stored == pin::LUN => {
                return Err(ebusy("the protocol slot holds pin_lun"));
            }
            Some(pin::LEASE) => new_lease = true,
            Some(pin::LUN) if lease => return Err(ebusy("the protocol slot holds pin_lease")),
            Some(pin::LUN) => stored = pin::LUN,
            Some(_) => {
                new_lease = false;
                stored = pin::NONE;
            }
            None => {}
        }
        let policy = policy.unwrap_or(rec.policy_pin);
        let mediated = mediated.unwrap_or(rec.always_mediated);
        if policy != rec.policy_pin || stored != rec.protocol_pin || mediated != rec.always_mediated
        {
            self.placement.set_pin(oid, policy, stored, mediated)?;
        }
        live.lease.store(new_lease, Ordering::Release);
        self.pins(oid)
    }

    /// The `lease` / `lun` xattrs (S8.4): `value` None = removexattr.
    pub fn set_protocol_xattr(
        &self,
        oid: &Oid,
        which: u8,
        value: Option<&[u8]>,
        uid: u32,
    ) -> Result<()> {
        if uid != 0 {
            return Err(err!(libc::EPERM, "only root may set protocol pins"));
        }
        let on = match value {
            None => false,
            Some([0]) => false,
            Some([1]) => true,
            Some(_) => return Err(err!(libc::EINVAL, "value must be one byte, 0 or 1")),
        };
        let cur = self.pins(oid)?;
        let lease = self
            .live
            .get(oid.ino())
            .is_some_and(|l| l.lease.load(Ordering::Relaxed));
        let holds = if which == pin::LEASE {
            lease
        } else {
            self.placement
                .get(oid)
                .is_some_and(|r| r.protocol_pin == pin::LUN)
        };
        let _ = cur;
        if on {
            self.pin_set(oid, None, Some(which), None).map(|_| ())
        } else if holds {
            self.pin_set(oid, None, Some(pin::NONE), None).map(|_| ())
        } else {
            Ok(())
        }
    }

    /// `lease` / `lun` xattr value (S8.4 item 1).
    pub fn protocol_xattr(&self, oid: &Oid, which: u8) -> u8 {
        let lease = self
            .live
            .get(oid.ino())
            .is_some_and(|l| l.lease.load(Ordering::Relaxed));
        let v = if which == pin::LEASE {
            lease
        } else {
            self.placement
                .get(oid)
                .is_some_and(|r| r.protocol_pin == pin::LUN)
        };
        u8::from(v)
    }

    /// Relative path of a node, for tests and replies.
    pub fn rel_of(&self, oid: &Oid) -> Option<OsString> {
        self.node(oid.ino()).ok().map(|n| n.rel_path)
    }
}

/// `parent/name` helper for callers outside the namespace.
pub fn rel_join(parent: &OsStr, name: &OsStr) -> OsString {
    join(parent, name)
}
