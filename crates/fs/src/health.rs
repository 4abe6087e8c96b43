//! Tier faults (SPEC S23): detection, the behaviour switch, and resume.
//!
//! A tier is **faulted** when its health check fails (statfs of the held
//! root, its marker read through the tier path carrying this pool's and
//! this tier's UUIDs, and the mount at the tier path being the one whose
//! root we hold), or when 3 lower operations on it fail with EIO, ENXIO,
//! ENODEV, ESTALE or ENOTCONN within 10 s. It is **down** when TIER_DOWN
//! names it. A faulted tier resumes by itself after 3 consecutive passing
//! checks; a down tier only through TIER_RESUME.
//!
//! While a tier is not ok the namespace answers for its objects from the
//! index (names stay listed and resolvable, attributes from the snapshot)
//! and fails open/read/write/getattr/unlink with EIO; creates and statfs
//! skip it; plans touching it are aborted.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::fs::{AtFlags, StatxFlags};
use smoothfs_uapi::failpoint;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::err;
use crate::error::Result;
use crate::live::LiveObj;
use crate::namespace::Namespace;
use crate::placement::state;
use crate::tier::Tier;

pub const STATE_OK: u32 = 0;
pub const STATE_FAULTED: u32 = 1;
pub const STATE_DOWN: u32 = 2;

/// Lower errors that count toward a fault (S23.1 item 1).
pub fn is_fault_errno(e: i32) -> bool {
    matches!(
        e,
        libc::EIO | libc::ENXIO | libc::ENODEV | libc::ESTALE | libc::ENOTCONN
    )
}

/// A tier state change to announce (TIER_FAULT / TIER_RESUMED).
#[derive(Clone, Debug)]
pub struct TierEvt {
    pub rank: u8,
    pub state: u32,
    pub errno: i32,
    pub resumed: bool,
}

/// Mount id of an open descriptor (statx STATX_MNT_ID).
pub fn mnt_id_of_fd(fd: impl AsFd) -> Option<u64> {
    rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .ok()
        .map(|s| s.stx_mnt_id)
}

/// Per-tier health bookkeeping.
#[derive(Default)]
struct TierWatch {
    /// Mount id of the root we hold (taken at mount).
    mnt_id: Option<u64>,
    passes: u32,
    errors: VecDeque<Instant>,
}

/// The health checker of one pool: identities and per-tier windows.
pub struct Health {
    pool_uuid: Uuid,
    tier_uuids: Vec<Uuid>,
    watch: Mutex<Vec<TierWatch>>,
    pub interval_ms: std::sync::atomic::AtomicU64,
}

const ERROR_WINDOW: Duration = Duration::from_secs(10);
const ERRORS_TO_FAULT: usize = 3;
const PASSES_TO_RESUME: u32 = 3;

impl Health {
    pub fn new(pool_uuid: Uuid, tier_uuids: Vec<Uuid>, tiers: &[Tier]) -> Health {
        let watch = tiers
            .iter()
            .map(|t| TierWatch {
                mnt_id: mnt_id_of_fd(t.root()),
                ..Default::default()
            })
            .collect();
        Health {
            pool_uuid,
            tier_uuids,
            watch: Mutex::new(watch),
            interval_ms: std::sync::atomic::AtomicU64::new(5000),
        }
    }

    /// One health check of tier `t` (S23.1 item 1): Ok, or (errno, why).
    pub fn check(&self, t: &Tier) -> std::result::Result<(), (i32, String)> {
        let r = usize::from(t.rank);
        if let Err(e) = failpoint::hit(&format!("tier_health_{}", t.rank)) {
            return Err((e, "failpoint".into()));
        }
        crate::sys::fstatvfs(t.root()).map_err(|e| {
            (
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("statfs: {e}"),
            )
        })?;
        match crate::marker::read_marker(&t.path) {
            Ok(Some(m))
                if m.pool_uuid == self.pool_uuid
                    && self.tier_uuids.get(r).is_none_or(|u| *u == m.tier_uuid) => {}
            Ok(Some(_)) => {
                return Err((
                    libc::EINVAL,
                    "tier identity mismatch: the marker at the tier path names another pool or tier"
                        .into(),
                ));
            }
            Ok(None) => {
                return Err((
                    libc::EINVAL,
                    "tier identity mismatch: no smoothfs marker at the tier path".into(),
                ));
            }
            Err(e) => return Err((e.errno, format!("tier marker: {e}"))),
        }
        let held = self.watch.lock().get(r).and_then(|w| w.mnt_id);
        let now = rustix::fs::statx(
            rustix::fs::CWD,
            t.path.as_path(),
            AtFlags::empty(),
            StatxFlags::MNT_ID,
        )
        .ok()
        .map(|s| s.stx_mnt_id);
        if held.is_some() && now != held {
            return Err((
                libc::EINVAL,
                "tier identity mismatch: the filesystem at the tier path is not the one \
                 mounted at start (remount the pool to use a new mount)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A lower operation on `rank` failed with `errno`; true when this makes
    /// 3 within 10 s (the tier should fault).
    pub fn note_error(&self, rank: u8, errno: i32) -> bool {
        if !is_fault_errno(errno) {
            return false;
        }
        let mut w = self.watch.lock();
        let Some(tw) = w.get_mut(usize::from(rank)) else {
            return false;
        };
        let now = Instant::now();
        tw.errors.push_back(now);
        while tw
            .errors
            .front()
            .is_some_and(|t| now.duration_since(*t) > ERROR_WINDOW)
        {
            tw.errors.pop_front();
        }
        tw.errors.len() >= ERRORS_TO_FAULT
    }

    /// Run one round of checks over every tier and apply the transitions.
    pub fn tick(&self, ns: &Namespace) {
        for t in &ns.tiers {
            let st = t.state.load(Ordering::Acquire);
            let r = self.check(t);
            match (st, r) {
                (STATE_OK, Err((e, why))) => {
                    error!("tier fault: tier {} ({}): {why}", t.rank, t.path.display());
                    ns.set_tier_state(t.rank, STATE_FAULTED, e);
                }
                (STATE_FAULTED, Ok(())) => {
                    let resume = {
                        let mut w = self.watch.lock();
                        let tw = &mut w[usize::from(t.rank)];
                        tw.passes += 1;
                        tw.passes >= PASSES_TO_RESUME
                    };
                    if resume {
                        info!(
                            "tier {} passed {PASSES_TO_RESUME} health checks: resuming",
                            t.rank
                        );
                        self.resume_now(ns, t.rank);
                    }
                }
                (STATE_FAULTED, Err((_, why))) => {
                    self.watch.lock()[usize::from(t.rank)].passes = 0;
                    if why.contains("identity") {
                        warn!("tier {}: {why}; it will not resume", t.rank);
                    }
                }
                _ => {}
            }
        }
    }

    fn resume_now(&self, ns: &Namespace, rank: u8) {
        {
            let mut w = self.watch.lock();
            let tw = &mut w[usize::from(rank)];
            tw.passes = 0;
            tw.errors.clear();
        }
        ns.set_tier_state(rank, STATE_OK, 0);
    }

    /// TIER_RESUME (S23.3 item 2): identity mismatch → EINVAL, failing
    /// health → EIO.
    pub fn resume(&self, ns: &Namespace, rank: u8) -> Result<u32> {
        let t = ns
            .tiers
            .get(usize::from(rank))
            .ok_or_else(|| err!(libc::EINVAL, "tier {rank} does not exist"))?;
        if t.state.load(Ordering::Acquire) == STATE_OK {
            return Ok(STATE_OK);
        }
        match self.check(t) {
            Ok(()) => {
                self.resume_now(ns, rank);
                Ok(STATE_OK)
            }
            Err((libc::EINVAL, why)) => Err(err!(libc::EINVAL, "tier {rank}: {why}")),
            Err((_, why)) => Err(err!(libc::EIO, "tier {rank} is not healthy: {why}")),
        }
    }
}

impl Namespace {
    /// Change a tier's state and apply S23.2: announce it, abort plans that
    /// touch it; on resume run pending cleanups and schedule a scrub.
    pub fn set_tier_state(&self, rank: u8, new: u32, errno: i32) {
        let Some(t) = self.tiers.get(usize::from(rank)) else {
            return;
        };
        let old = t.state.swap(new, Ordering::AcqRel);
        if old == new {
            return;
        }
        t.invalidate_statfs();
        if new != STATE_OK {
            self.moves.tier_faults_total.fetch_add(1, Ordering::Relaxed);
            for live in self.live.all() {
                let touches = {
                    let mv = live.mv.lock();
                    mv.state == state::PLAN_ACCEPTED && (mv.source == rank || mv.intended == rank)
                };
                if touches {
                    self.fail_plan_for_fault(&live);
                }
            }
        } else {
            self.auto_cleanup_now();
        }
        if let Some(f) = self.moves.tier_event.get() {
            f(TierEvt {
                rank,
                state: new,
                errno,
                resumed: new == STATE_OK,
            });
        }
    }

    /// A lower operation on tier `rank` failed with `errno`: 3 fault-class
    /// errors within 10 s fault the tier (S23.1 item 1).
    pub fn note_io_error(&self, rank: u8, errno: i32) {
        if let Some(h) = self.moves.health.get()
            && h.note_error(rank, errno)
            && self.tiers.get(usize::from(rank)).is_some_and(|t| t.is_ok())
        {
            error!(
                "tier fault: tier {rank}: repeated I/O errors ({})",
                std::io::Error::from_raw_os_error(errno)
            );
            self.set_tier_state(rank, STATE_FAULTED, errno);
        }
    }

    fn fail_plan_for_fault(&self, live: &LiveObj) {
        self.abort_in_flight(&live.oid, "tier fault");
    }

    /// EIO when the object's tier is faulted or down (S23.2 item 2).
    pub fn check_tier_ok(&self, rank: u8) -> Result<()> {
        match self.tiers.get(usize::from(rank)) {
            Some(t) if !t.is_ok() => Err(err!(
                libc::EIO,
                "tier {rank} is {}",
                if t.state.load(Ordering::Relaxed) == STATE_DOWN {
                    "down"
                } else {
                    "faulted"
                }
            )),
            _ => Ok(()),
        }
    }
}
