//! A tier as the namespace sees it: rank, slot, the root directory fd that
//! every lower access is relative to, and a short-lived statfs snapshot for
//! create placement (S5.1).
//!
//! Invariant: `root` was opened once at mount and is never re-resolved by
//! path; every lower path is resolved beneath it (see [`crate::sys`]).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::sys;

/// How old a statfs snapshot may be before create placement refreshes it
/// (S5.1 allows 1 s; statfs is cheap, and a fresher view spills sooner).
const STATFS_MAX_AGE: Duration = Duration::from_millis(100);

pub struct Tier {
    pub rank: u8,
    pub slot: u8,
    pub path: PathBuf,
    pub root: std::sync::Arc<OwnedFd>,
    /// Capability bits from the probe (S1.3).
    pub caps: u32,
    /// The tier can back FUSE passthrough handles (S1.3 item 6).
    pub passthrough: AtomicBool,
    /// 0 ok, 1 faulted, 2 down (S23).
    pub state: AtomicU32,
    statfs: Mutex<Option<(Instant, libc::statvfs)>>,
}

impl Tier {
    pub fn new(rank: u8, slot: u8, path: PathBuf, root: OwnedFd, caps: u32) -> Tier {
        Tier {
            rank,
            slot,
            path,
            root: std::sync::Arc::new(root),
            caps,
            passthrough: AtomicBool::new(true),
            state: AtomicU32::new(0),
            statfs: Mutex::new(None),
        }
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Open the directory `rel` (empty = tier root) beneath the root as an
    /// O_PATH descriptor usable for `*at` calls.
    pub fn open_dir(&self, rel: &OsStr) -> std::io::Result<OwnedFd> {
        sys::openat_beneath(self.root(), rel, libc::O_PATH | libc::O_DIRECTORY, 0)
    }

    /// Open the lower file at `rel` for I/O with `flags` (never follows a symlink).
    /// FUSE hands us the caller's `f_flags`, which may carry kernel-internal
    /// bits (e.g. `__FMODE_EXEC` for exec); openat2 rejects unknown bits, so
    /// only real open flags are passed on.
    pub fn open_file(&self, rel: &OsStr, flags: i32) -> std::io::Result<OwnedFd> {
        const PASS: i32 = libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_NONBLOCK
            | libc::O_DSYNC
            | libc::O_SYNC
            | libc::O_DIRECT
            | libc::O_NOATIME
            | libc::O_TRUNC
            | libc::O_LARGEFILE
            | libc::O_DIRECTORY
            | libc::O_PATH;
        sys::openat_beneath(self.root(), rel, (flags & PASS) | libc::O_NOFOLLOW, 0)
    }

    pub fn is_ok(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 0
    }

    /// statfs of the tier, at most 1 s old.
    pub fn statfs(&self) -> std::io::Result<libc::statvfs> {
        let mut cached = self.statfs.lock();
        if let Some((at, st)) = *cached
            && at.elapsed() < STATFS_MAX_AGE
        {
            return Ok(st);
        }
        let st = sys::fstatvfs(self.root())?;
        *cached = Some((Instant::now(), st));
        Ok(st)
    }

    /// Forget the snapshot (after ENOSPC, so the next create sees the truth).
    pub fn invalidate_statfs(&self) {
        *self.statfs.lock() = None;
    }

    /// `(f_blocks − f_bavail) × 100 ≥ f_blocks × full_pct` (S5.1).
    pub fn near_full(&self, full_pct: u32) -> std::io::Result<bool> {
        let st = self.statfs()?;
        let blocks = st.f_blocks as u128;
        let used = blocks.saturating_sub(st.f_bavail as u128);
        Ok(used * 100 >= blocks * full_pct as u128)
    }
}
