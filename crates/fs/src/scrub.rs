//! Background scrub (S4.6): walks every metadata-active tier depth-first, a
//! bounded number of lower entries per step, and repairs what lookup would
//! only notice when someone happens to look: lower entries missing from the
//! index get their identity exactly as lookup would give it (S3.1), lost OID
//! xattrs are written back from the index (S3.5 item 5), the generation
//! rules apply (S3.3), stale duplicates are removed or quarantined, name
//! conflicts are counted, and at the end of a pass index entries whose
//! files are gone are dropped.
//!
//! Owns the walk, its persisted cursor and the scrub's STATUS items
//! ([`Scrubber`]). It must never:
//! - open a tier whose metadata bit is clear (S2.2): a pass walks the active
//!   tiers and then waits for the others, and an object whose authoritative
//!   tier is inactive is left alone;
//! - hold `ns_lock` across the walk: the lock is taken around each single
//!   mutation, after re-classifying the entry under it, so creates, renames
//!   and unlinks keep going while a pass runs. Content hashes of duplicates
//!   are computed outside the lock and re-validated (inode, size, mtime,
//!   ctime of both copies) under it;
//! - delete anything but a stale duplicate whose content hash equals the
//!   authoritative copy's: every other duplicate is moved to
//!   `<tier>/.smoothfs/quarantine/<YYYY-MM-DD>/<rel path>`;
//! - touch an object in movement (index state not `placed`, or a live move).
//!
//! Which lower entry is "the" object follows lookup (S2.1): the path index
//! first, then the lowest-rank active tier holding the name. An entry that
//! lookup would never reach (shadowed by a faster copy or by the index) is
//! not given an identity, so the scrub cannot steal a path from the object
//! the mount shows.
//!
//! Cursor (the index's opaque `scrub_cursor`, version 1, little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 0 | version = 1 |
//! | 1 | phase: 0 idle (no pass in progress), 1 walking tiers, 2 dropping gone index entries |
//! | 2–9 | u64 unix seconds the pass started |
//! | 10–17 | u64 unix seconds the last complete pass ended (0 = never) |
//! | 18–25 | u64 entries walked in this (or the last) pass |
//! | 26–27 | u16 bit mask of tier *slots* walked to the end in this pass |
//! | 28 | 1 if bytes 29–44 hold the last OID checked in phase 2 |
//! | 29–44 | that OID |
//! | 45 | n: tiers walked part way |
//! | … | n × (u8 slot, u32 length, the rel path of the last entry done on that tier) |
//!
//! Slots rather than ranks are stored so a cursor survives tier reordering.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use crate::err;
use crate::error::{Error, Result};
use crate::movement::QUARANTINE_DIR;
use crate::namespace::{
    GEN_XATTR_C, INTERNAL_DIR, KIND_DIR, Namespace, OID_XATTR_C, SLOT_NONE, bump, join,
    kind_of_mode, snapshot, split,
};
use crate::oid::Oid;
use crate::placement::{ObjectRec, state};
use crate::sys;
use crate::tier::Tier;

/// `scrub_rate` default, entries per second (S29.1).
pub const DEFAULT_SCRUB_RATE: u64 = 2000;
/// `scrub_interval_s` default (S29.1).
pub const DEFAULT_SCRUB_INTERVAL_S: u64 = 604_800;
/// Largest `scrub_rate` accepted.
pub const MAX_SCRUB_RATE: u64 = 10_000_000;

const CURSOR_VERSION: u8 = 1;
/// Index objects read per page in the drop phase.
const GC_PAGE: usize = 256;
/// The background loop's step period; each step gets rate × TICK entries.
const TICK: Duration = Duration::from_millis(100);
/// How often a pass waiting for an inactive tier looks at the mask again.
const WAIT_INACTIVE: Duration = Duration::from_secs(1);
const WAIT_ERROR: Duration = Duration::from_secs(5);
const HASH_CHUNK: usize = 1 << 20;

/// Bit of a tier slot in the cursor's done mask (slots are 0–7, S1.2;
/// the same u16 mask as DIR_RENAME's).
fn slot_bit(slot: u8) -> u16 {
    1u16 << (slot & 15)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lossy(p: &OsStr) -> String {
    p.to_string_lossy().into_owned()
}

/// `YYYY-MM-DD` (UTC) of a Unix time, for quarantine directories.
fn utc_date(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

// ---- cursor ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle = 0,
    Walk = 1,
    Gc = 2,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cursor {
    phase: Phase,
    pass_started_at: u64,
    last_complete_at: u64,
    entries_done: u64,
    done_slots: u16,
    gc_after: Option<[u8; 16]>,
    /// slot -> rel path of the last entry done on that tier.
    positions: BTreeMap<u8, Vec<u8>>,
}

impl Cursor {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(CURSOR_VERSION);
        out.push(self.phase as u8);
        out.extend_from_slice(&self.pass_started_at.to_le_bytes());
        out.extend_from_slice(&self.last_complete_at.to_le_bytes());
        out.extend_from_slice(&self.entries_done.to_le_bytes());
        out.extend_from_slice(&self.done_slots.to_le_bytes());
        out.push(u8::from(self.gc_after.is_some()));
        out.extend_from_slice(&self.gc_after.unwrap_or([0; 16]));
        out.push(self.positions.len() as u8);
        for (slot, path) in &self.positions {
            out.push(*slot);
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Cursor> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (h, t) = b.split_at_checked(n)?;
            *b = t;
            Some(h)
        }
        fn u64_of(b: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
        }
        let mut b = b;
        if take(&mut b, 1)? != [CURSOR_VERSION] {
            return None;
        }
        let phase = match take(&mut b, 1)?[0] {
            0 => Phase::Idle,
            1 => Phase::Walk,
            2 => Phase::Gc,
            _ => return None,
        };
        let pass_started_at = u64_of(&mut b)?;
        let last_complete_at = u64_of(&mut b)?;
        let entries_done = u64_of(&mut b)?;
        let done_slots = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?);
        let has_after = take(&mut b, 1)?[0] != 0;
        let after: [u8; 16] = take(&mut b, 16)?.try_into().ok()?;
        let n = take(&mut b, 1)?[0];
        let mut positions = BTreeMap::new();
        for _ in 0..n {
            let slot = take(&mut b, 1)?[0];
            let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
            positions.insert(slot, take(&mut b, len)?.to_vec());
        }
        if !b.is_empty() {
            return None;
        }
        Some(Cursor {
            phase,
            pass_started_at,
            last_complete_at,
            entries_done,
            done_slots,
            gc_after: has_after.then_some(after),
            positions,
        })
    }

    fn begin_pass(&mut self, now: u64) {
        *self = Cursor {
            phase: Phase::Walk,
            pass_started_at: now,
            last_complete_at: self.last_complete_at,
            ..Cursor::default()
        };
    }
}

fn load_cursor(ns: &Namespace) -> Cursor {
    match ns.placement.scrub_cursor() {
        None => Cursor::default(),
        Some(b) => Cursor::decode(&b).unwrap_or_else(|| {
            warn!(
                "scrub cursor unreadable ({} bytes); starting a new pass",
                b.len()
            );
            Cursor {
                phase: Phase::Walk,
                pass_started_at: unix_now(),
                ..Cursor::default()
            }
        }),
    }
}

// ---- progress ------------------------------------------------------------------

/// What one [`Namespace::scrub_step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubProgress {
    /// Lower entries walked by this step (`.smoothfs` not counted).
    pub entries: u64,
    /// Index objects checked by this step in the drop phase.
    pub objects_checked: u64,
    /// Entries that got into the index (identity minted or recorded).
    pub indexed: u64,
    /// OID xattrs written back from the index or a directory's canonical copy.
    pub oid_restored: u64,
    /// Generations bumped because a file was replaced out of band (S3.3).
    pub gen_bumps: u64,
    /// Copies of a live object at another path given a new OID (S3.3 item 4).
    pub oid_duplicates: u64,
    /// Objects whose index entry was moved to where their only copy now is.
    pub adopted: u64,
    /// Stale duplicates (same content) removed.
    pub stale_removed: u64,
    /// Other duplicates moved to quarantine.
    pub quarantined: u64,
    /// Directory vs non-directory conflicts seen (S2.1 item 4).
    pub name_conflicts: u64,
    /// Entries lookup never reaches (a faster copy or the index wins the name).
    pub shadowed: u64,
    /// Entries left for a later pass: their object is moving, or a tier
    /// needed to judge them is inactive or faulted, or they changed under us.
    pub deferred: u64,
    /// Index entries dropped because no tier holds their file any more.
    pub index_dropped: u64,
    /// Entries that could not be read or repaired (logged).
    pub errors: u64,
    /// Entries walked in the current pass so far (persisted in the cursor).
    pub pass_entries: u64,
    /// Rank of the tier the walk stopped on, if it is walking.
    pub tier: Option<u8>,
    /// Where the walk stopped: `<rank>:<rel path>`, `gc:<oid>`, or empty.
    pub cursor: String,
    /// Only metadata-inactive (or faulted) tiers are left to walk; the pass
    /// continues when the mask includes them.
    pub waiting_for_inactive: bool,
    /// This step finished a full pass.
    pub pass_complete: bool,
    /// Unix seconds of the end of the last complete pass (0 = never).
    pub last_complete_at: u64,
}

impl ScrubProgress {
    fn absorb(&mut self, o: &ScrubProgress) {
        self.entries += o.entries;
        self.objects_checked += o.objects_checked;
        self.indexed += o.indexed;
        self.oid_restored += o.oid_restored;
        self.gen_bumps += o.gen_bumps;
        self.oid_duplicates += o.oid_duplicates;
        self.adopted += o.adopted;
        self.stale_removed += o.stale_removed;
        self.quarantined += o.quarantined;
        self.name_conflicts += o.name_conflicts;
        self.shadowed += o.shadowed;
        self.deferred += o.deferred;
        self.index_dropped += o.index_dropped;
        self.errors += o.errors;
        self.pass_entries = o.pass_entries;
        self.tier = o.tier;
        self.cursor.clone_from(&o.cursor);
        self.waiting_for_inactive = o.waiting_for_inactive;
        self.pass_complete |= o.pass_complete;
        self.last_complete_at = o.last_complete_at;
    }
}

// ---- walk state ------------------------------------------------------------------

/// One directory of the depth-first walk on the tier being scrubbed.
struct Frame {
    rel: OsString,
    /// O_PATH descriptor of this directory on the walked tier.
    dir: OwnedFd,
    /// The same directory on faster metadata-active tiers that have it, in
    /// rank order: what decides whether an entry here is shadowed.
    faster: Vec<(u8, OwnedFd)>,
    /// Entry names, byte-sorted so a cursor path can be resumed after.
    names: Vec<Vec<u8>>,
    next: usize,
}

impl Frame {
    fn new(rel: OsString, dir: OwnedFd, faster: Vec<(u8, OwnedFd)>) -> std::io::Result<Frame> {
        let mut names: Vec<Vec<u8>> = sys::read_dir_all(dir.as_fd())?
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort_unstable();
        Ok(Frame {
            rel,
            dir,
            faster,
            names,
            next: 0,
        })
    }
}

/// The in-memory walk of one tier; rebuilt from the cursor when it does
/// not match (restart, another tier, the metadata mask changed).
struct Walk {
    slot: u8,
    mask: u64,
    stack: Vec<Frame>,
    /// Rel path of the last entry done (what the cursor holds).
    last: Vec<u8>,
}

/// Opaque walk cache a [`Scrubber`] keeps between steps.
#[derive(Default)]
pub struct WalkCache(Option<Walk>);

/// Whether a lower entry is the one lookup reaches for its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    Reached,
    Shadowed,
    /// Shadowed by an entry of the other kind (directory vs not).
    Conflict,
    /// Cannot tell without a tier that is inactive or faulted.
    Unknown,
}

/// What the scrub does about one entry.
#[derive(Clone, Debug)]
enum Action {
    Nothing,
    Shadowed,
    Conflict,
    Deferred,
    /// Give it identity the way lookup does ([`Namespace::identify`]).
    Identify,
    /// The lower file lost its OID xattr; the index knows it.
    Restore(ObjectRec),
    /// Replaced out of band carrying its OID: new incarnation (S3.3).
    GenBump(ObjectRec),
    /// A copy of a live object at another path: its own OID (S3.3 item 4).
    NewOid,
    /// The object's recorded copy is gone and this is the one: record it here.
    Adopt(ObjectRec),
    /// Same OID, same path, the index puts the object on this faster tier.
    Duplicate {
        auth_rank: u8,
    },
    /// A directory copy without (or with another) OID than its canonical copy.
    DirSetOid {
        oid: Oid,
        gen_: u32,
    },
}

impl Action {
    fn mutates(&self) -> bool {
        !matches!(
            self,
            Action::Nothing | Action::Shadowed | Action::Conflict | Action::Deferred
        )
    }
}

fn read_oid(dir: BorrowedFd<'_>, name: &OsStr) -> Option<Oid> {
    sys::lgetxattr(dir, name, OID_XATTR_C)
        .ok()
        .and_then(|v| Oid::from_slice(&v))
}

fn read_gen(dir: BorrowedFd<'_>, name: &OsStr) -> u32 {
    sys::lgetxattr(dir, name, GEN_XATTR_C)
        .ok()
        .and_then(|g| <[u8; 4]>::try_from(g.as_slice()).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// The file did not change between the two stats.
fn same_version(a: &libc::stat, b: &libc::stat) -> bool {
    (a.st_ino, a.st_mode, a.st_size, a.st_mtime, a.st_mtime_nsec)
        == (b.st_ino, b.st_mode, b.st_size, b.st_mtime, b.st_mtime_nsec)
        && (a.st_ctime, a.st_ctime_nsec) == (b.st_ctime, b.st_ctime_nsec)
}

fn open_for_hash(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OwnedFd> {
    match sys::openat_name(dir, name, libc::O_RDONLY | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            sys::openat_name(dir, name, libc::O_RDONLY, 0)
        }
        r => r,
    }
}

fn blake3_of(fd: BorrowedFd<'_>) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut off = 0u64;
    loop {
        let n = sys::pread(fd, &mut buf, off)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
}

/// Do the two lower entries hold the same content? Regular files by
/// BLAKE3, symlinks by target, other kinds by type and device number.
fn same_content(
    a_dir: BorrowedFd<'_>,
    a_name: &OsStr,
    a: &libc::stat,
    b_dir: BorrowedFd<'_>,
    b_name: &OsStr,
    b: &libc::stat,
) -> std::io::Result<bool> {
    let fmt = a.st_mode & libc::S_IFMT;
    if fmt != b.st_mode & libc::S_IFMT {
        return Ok(false);
    }
    match fmt {
        libc::S_IFREG => {
            if a.st_size != b.st_size {
                return Ok(false);
            }
            let fa = open_for_hash(a_dir, a_name)?;
            let fb = open_for_hash(b_dir, b_name)?;
            Ok(blake3_of(fa.as_fd())? == blake3_of(fb.as_fd())?)
        }
        libc::S_IFLNK => Ok(sys::readlinkat(a_dir, a_name)? == sys::readlinkat(b_dir, b_name)?),
        _ => Ok(a.st_rdev == b.st_rdev),
    }
}

/// Open `rel` beneath the tier root, creating missing components (0700).
fn mkdir_beneath(t: &Tier, rel: &OsStr) -> std::io::Result<OwnedFd> {
    let mut cur = t.open_dir(OsStr::new(""))?;
    for comp in rel
        .as_bytes()
        .split(|c| *c == b'/')
        .filter(|c| !c.is_empty())
    {
        let comp = OsStr::from_bytes(comp);
        let open =
            |d: &OwnedFd| sys::openat_beneath(d.as_fd(), comp, libc::O_PATH | libc::O_DIRECTORY, 0);
        cur = match open(&cur) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match sys::mkdirat(cur.as_fd(), comp, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                open(&cur)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

impl Namespace {
    /// One bounded step of the scrub (S4.6): walks at most `budget` lower
    /// entries (or, at the end of a pass, checks at most `budget` index
    /// objects), persists the cursor, and reports what it did. Starts a new
    /// pass when none is in progress. The caller rate-limits by how often
    /// it calls; [`Scrubber`] does that and keeps the walk between steps,
    /// this entry point rebuilds it from the persisted cursor each time.
    /// Callers must not run two steps of one pool at once.
    pub fn scrub_step(&self, budget: usize) -> Result<ScrubProgress> {
        self.scrub_step_cached(&mut WalkCache::default(), budget)
    }

    /// [`Namespace::scrub_step`] reusing `cache` when it matches the cursor.
    pub fn scrub_step_cached(&self, cache: &mut WalkCache, budget: usize) -> Result<ScrubProgress> {
        self.check_writable()?;
        let mut cur = load_cursor(self);
        let mut p = ScrubProgress::default();
        if cur.phase == Phase::Idle {
            cur.begin_pass(unix_now());
            cache.0 = None;
            info!("scrub pass started");
        }
        let mut left = budget.max(1);
        while left > 0 && cur.phase == Phase::Walk {
            let next = self
                .tiers
                .iter()
                .filter(|t| cur.done_slots & slot_bit(t.slot) == 0)
                .find(|t| t.is_ok() && self.meta_active(t.rank));
            let Some(t) = next else {
                if self
                    .tiers
                    .iter()
                    .all(|t| cur.done_slots & slot_bit(t.slot) != 0)
                {
                    cur.phase = Phase::Gc;
                    cur.gc_after = None;
                    cur.positions.clear();
                } else {
                    p.waiting_for_inactive = true;
                }
                break;
            };
            left -= self.scrub_walk_tier(t, &mut cur, cache, left, &mut p);
        }
        if left > 0 && cur.phase == Phase::Gc {
            self.scrub_drop_gone(&mut cur, left, &mut p)?;
        }
        p.pass_entries = cur.entries_done;
        p.last_complete_at = cur.last_complete_at;
        match cur.phase {
            Phase::Walk => {}
            Phase::Gc => {
                p.tier = None;
                p.cursor = format!(
                    "gc:{}",
                    cur.gc_after.map(|o| Oid(o).hex()).unwrap_or_default()
                );
            }
            Phase::Idle => {
                p.tier = None;
                p.cursor.clear();
            }
        }
        self.placement.set_scrub_cursor(&cur.encode())?;
        Ok(p)
    }

    /// Walk tier `t` for at most `budget` entries; returns how many were used.
    fn scrub_walk_tier(
        &self,
        t: &Tier,
        cur: &mut Cursor,
        cache: &mut WalkCache,
        budget: usize,
        p: &mut ScrubProgress,
    ) -> usize {
        let mask = self.metadata_mask.load(Ordering::Relaxed);
        let pos = cur.positions.get(&t.slot).cloned().unwrap_or_default();
        let reuse =
            matches!(&cache.0, Some(w) if w.slot == t.slot && w.mask == mask && w.last == pos);
        if !reuse {
            match self.scrub_build_walk(t, mask, &pos) {
                Ok(w) => cache.0 = Some(w),
                Err(e) => {
                    warn!(
                        "scrub: cannot walk tier {}: {e}; skipping it this pass",
                        t.rank
                    );
                    p.errors += 1;
                    cur.done_slots |= slot_bit(t.slot);
                    cur.positions.remove(&t.slot);
                    cache.0 = None;
                    return 0;
                }
            }
        }
        let Some(w) = cache.0.as_mut() else {
            return 0;
        };
        let mut used = 0usize;
        while used < budget {
            let child = {
                let Some(top) = w.stack.last_mut() else { break };
                if top.next >= top.names.len() {
                    w.stack.pop();
                    continue;
                }
                let name = OsString::from_vec(top.names[top.next].clone());
                top.next += 1;
                if top.rel.is_empty() && name == INTERNAL_DIR {
                    continue;
                }
                used += 1;
                p.entries += 1;
                cur.entries_done += 1;
                let rel = join(&top.rel, &name);
                w.last = rel.as_bytes().to_vec();
                let top: &Frame = top;
                let descend = self.scrub_entry(t, top, &name, &rel, p);
                if descend {
                    self.scrub_child_frame(top, &name, &rel)
                } else {
                    None
                }
            };
            if let Some(f) = child {
                w.stack.push(f);
            }
        }
        p.tier = Some(t.rank);
        p.cursor = format!("{}:{}", t.rank, String::from_utf8_lossy(&w.last));
        if w.stack.iter().all(|f| f.next >= f.names.len()) {
            debug!(tier = t.rank, "scrub: tier walked");
            cur.done_slots |= slot_bit(t.slot);
            cur.positions.remove(&t.slot);
            cache.0 = None;
        } else {
            cur.positions.insert(t.slot, w.last.clone());
        }
        used
    }

    /// Rebuild the walk of `t` positioned just after the entry `pos`.
    fn scrub_build_walk(&self, t: &Tier, mask: u64, pos: &[u8]) -> std::io::Result<Walk> {
        let root = t.open_dir(OsStr::new(""))?;
        let faster = self
            .tiers
            .iter()
            .filter(|f| f.rank < t.rank && f.is_ok() && mask & (1 << f.rank) != 0)
            .filter_map(|f| f.open_dir(OsStr::new("")).ok().map(|d| (f.rank, d)))
            .collect();
        let mut stack = vec![Frame::new(OsString::new(), root, faster)?];
        if !pos.is_empty() {
            let comps: Vec<&[u8]> = pos.split(|c| *c == b'/').collect();
            for (i, c) in comps.iter().enumerate() {
                let Some(top) = stack.last_mut() else { break };
                top.next = top.names.partition_point(|n| n.as_slice() <= *c);
                let name = OsStr::from_bytes(c);
                let rel = join(&top.rel, name);
                let top: &Frame = top;
                let last = i + 1 == comps.len();
                let descend = if last {
                    // The last entry done: go into it if the walk did.
                    matches!(sys::fstatat(top.dir.as_fd(), name), Ok(st) if kind_of_mode(st.st_mode) == KIND_DIR)
                        && !matches!(
                            self.scrub_classify_dir(t, top, name, &rel),
                            Action::Conflict | Action::Deferred
                        )
                } else {
                    true
                };
                if !descend {
                    break;
                }
                match self.scrub_child_frame(top, name, &rel) {
                    Some(f) => stack.push(f),
                    // Gone since: carry on with its siblings.
                    None => break,
                }
            }
        }
        Ok(Walk {
            slot: t.slot,
            mask,
            stack,
            last: pos.to_vec(),
        })
    }

    fn scrub_child_frame(&self, parent: &Frame, name: &OsStr, rel: &OsStr) -> Option<Frame> {
        let open =
            |d: &OwnedFd| sys::openat_beneath(d.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0);
        let dir = match open(&parent.dir) {
            Ok(d) => d,
            Err(e) => {
                debug!("scrub: cannot enter {:?}: {e}", rel);
                return None;
            }
        };
        let faster = parent
            .faster
            .iter()
            .filter_map(|(r, d)| open(d).ok().map(|fd| (*r, fd)))
            .collect();
        match Frame::new(rel.to_os_string(), dir, faster) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!("scrub: cannot list {:?}: {e}", rel);
                None
            }
        }
    }

    /// Scrub one lower entry; returns whether the walk descends into it.
    fn scrub_entry(
        &self,
        t: &Tier,
        frame: &Frame,
        name: &OsStr,
        rel: &OsStr,
        p: &mut ScrubProgress,
    ) -> bool {
        let st = match sys::fstatat(frame.dir.as_fd(), name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return false,
            Err(e) => {
                warn!("scrub: stat {:?} on tier {}: {e}", rel, t.rank);
                p.errors += 1;
                return false;
            }
        };
        let is_dir = kind_of_mode(st.st_mode) == KIND_DIR;
        let action = if is_dir {
            self.scrub_classify_dir(t, frame, name, rel)
        } else {
            self.scrub_classify(t, frame, name, rel, &st)
        };
        let descend = is_dir && !matches!(action, Action::Conflict | Action::Deferred);
        match action {
            Action::Nothing => {}
            Action::Shadowed => p.shadowed += 1,
            Action::Conflict => {
                p.name_conflicts += 1;
                bump(&self.counters.name_conflicts);
                warn!(
                    "name conflict: {:?} on tier {} is hidden by an entry of another kind",
                    rel, t.rank
                );
            }
            Action::Deferred => p.deferred += 1,
            Action::Duplicate { auth_rank } => {
                if let Err(e) = self.scrub_duplicate(t, frame, name, rel, &st, auth_rank, p) {
                    warn!("scrub: duplicate {:?} on tier {}: {e}", rel, t.rank);
                    p.errors += 1;
                }
            }
            _ => {
                // Re-decide under the lock: a create, rename or unlink may
                // have changed the name or the index since.
                let _g = self.ns_lock.lock();
                let st2 = match sys::fstatat(frame.dir.as_fd(), name) {
                    Ok(s) if s.st_ino == st.st_ino && s.st_mode == st.st_mode => s,
                    _ => {
                        p.deferred += 1;
                        return descend;
                    }
                };
                let again = if is_dir {
                    self.scrub_classify_dir(t, frame, name, rel)
                } else {
                    self.scrub_classify(t, frame, name, rel, &st2)
                };
                match again {
                    // Someone else (a lookup) did it meanwhile.
                    Action::Nothing => {}
                    Action::Duplicate { .. } => p.deferred += 1,
                    a if !a.mutates() => p.deferred += 1,
                    a => {
                        if let Err(e) = self.scrub_apply(t, frame, name, rel, &st2, a, p) {
                            warn!("scrub: {:?} on tier {}: {e}", rel, t.rank);
                            p.errors += 1;
                        }
                    }
                }
            }
        }
        descend
    }

    /// Is the object in movement (index state or a live move)?
    fn scrub_moving(&self, rec: &ObjectRec) -> bool {
        rec.movement_state != state::PLACED
            || self
                .live
                .get(rec.oid.ino())
                .is_some_and(|l| l.oid == rec.oid && l.state() != state::PLACED)
    }

    /// Does tier `t` hold object `rec` at `path`: the entry carries its OID,
    /// or carries none and is the inode the index recorded there.
    fn scrub_holds(&self, t: &Tier, path: &str, rec: &ObjectRec) -> bool {
        let (parent, name) = split(OsStr::new(path));
        let Ok(d) = t.open_dir(&parent) else {
            return false;
        };
        let Ok(st) = sys::fstatat(d.as_fd(), &name) else {
            return false;
        };
        if (kind_of_mode(st.st_mode) == KIND_DIR) != (rec.kind == KIND_DIR) {
            return false;
        }
        match sys::lgetxattr(d.as_fd(), &name, OID_XATTR_C) {
            Ok(v) => v == rec.oid.0,
            Err(_) if rec.kind == KIND_DIR => true,
            Err(_) => t.slot == rec.slot && st.st_ino == rec.lower_ino,
        }
    }

    /// The first entry named `name` in this directory on a faster active tier.
    fn scrub_faster_entry(&self, frame: &Frame, name: &OsStr) -> Option<(usize, libc::stat)> {
        frame.faster.iter().enumerate().find_map(|(i, (r, d))| {
            let ft = &self.tiers[*r as usize];
            if !ft.is_ok() || !self.meta_active(*r) {
                return None;
            }
            sys::fstatat(d.as_fd(), name).ok().map(|st| (i, st))
        })
    }

    /// Would lookup of `rel` reach the entry on `t` (S2.1 item 2)?
    fn scrub_reach(&self, t: &Tier, frame: &Frame, name: &OsStr, rel: &str, is_dir: bool) -> Reach {
        if let Some(rec) = self.placement.by_path(rel)
            && rec.kind != KIND_DIR
        {
            // Step 1: the path index sends lookup to the recorded tier.
            if rec.slot == t.slot {
                return Reach::Reached;
            }
            if let Some(a) = self.tier_by_slot(rec.slot) {
                if !a.is_ok() || !self.meta_active(a.rank) {
                    return Reach::Unknown;
                }
                if self.scrub_holds(a, rel, &rec) {
                    return if is_dir {
                        Reach::Conflict
                    } else {
                        Reach::Shadowed
                    };
                }
            }
        }
        match self.scrub_faster_entry(frame, name) {
            Some((_, fst)) if (kind_of_mode(fst.st_mode) == KIND_DIR) != is_dir => Reach::Conflict,
            Some(_) => Reach::Shadowed,
            None => Reach::Reached,
        }
    }

    fn scrub_reach_action(
        &self,
        t: &Tier,
        frame: &Frame,
        name: &OsStr,
        rel: &str,
    ) -> Option<Action> {
        match self.scrub_reach(t, frame, name, rel, false) {
            Reach::Reached => None,
            Reach::Shadowed => Some(Action::Shadowed),
            Reach::Conflict => Some(Action::Conflict),
            Reach::Unknown => Some(Action::Deferred),
        }
    }

    /// Decide about a non-directory entry. Reads only; may be called again
    /// under `ns_lock`.
    fn scrub_classify(
        &self,
        t: &Tier,
        frame: &Frame,
        name: &OsStr,
        rel_os: &OsStr,
        st: &libc::stat,
    ) -> Action {
        let rel = lossy(rel_os);
        let dir = frame.dir.as_fd();
        let Some(oid) = read_oid(dir, name) else {
            // S3.5 item 5: the index knows this inode at this path.
            if let Some(rec) = self.placement.by_lower(t.slot, st.st_ino)
                && (rec.rel_path == rel || rec.nlink_names.contains(&rel))
                && rec.kind != KIND_DIR
            {
                return Action::Restore(rec);
            }
            return self
                .scrub_reach_action(t, frame, name, &rel)
                .unwrap_or(Action::Identify);
        };
        let Some(rec) = self.placement.get(&oid) else {
            // Unknown or tombstoned: identify() indexes it or starts a new incarnation.
            return self
                .scrub_reach_action(t, frame, name, &rel)
                .unwrap_or(Action::Identify);
        };
        if rec.kind == KIND_DIR {
            // A directory's OID on a file: a copy, not the directory.
            return self
                .scrub_reach_action(t, frame, name, &rel)
                .unwrap_or(Action::NewOid);
        }
        if self.scrub_moving(&rec) {
            return Action::Deferred;
        }
        let named_here = rec.rel_path == rel || rec.nlink_names.contains(&rel);
        if rec.slot == t.slot {
            if named_here {
                if rec.rel_path == rel && rec.lower_ino != st.st_ino {
                    return if rec.lower_ino == 0 {
                        Action::Adopt(rec)
                    } else {
                        Action::GenBump(rec)
                    };
                }
                return Action::Nothing;
            }
            if rec.lower_ino == st.st_ino {
                // The same inode under another name: a hard link made on the
                // lower, or a rename made there.
                return if self.scrub_holds(t, &rec.rel_path, &rec) {
                    Action::Nothing
                } else {
                    Action::Adopt(rec)
                };
            }
            if let Some(a) = self.scrub_reach_action(t, frame, name, &rel) {
                return a;
            }
            return if self.scrub_holds(t, &rec.rel_path, &rec) {
                Action::NewOid
            } else {
                Action::Adopt(rec)
            };
        }
        let Some(auth) = self.tier_by_slot(rec.slot) else {
            // Recorded on a tier this pool no longer has.
            return self
                .scrub_reach_action(t, frame, name, &rel)
                .unwrap_or(Action::Adopt(rec));
        };
        if !auth.is_ok() || !self.meta_active(auth.rank) {
            return Action::Deferred;
        }
        if named_here {
            if self.scrub_holds(auth, &rel, &rec) {
                return Action::Duplicate {
                    auth_rank: auth.rank,
                };
            }
            // The recorded copy is gone: this one is the object unless a
            // faster tier wins the name.
            return match self.scrub_faster_entry(frame, name) {
                Some(_) => Action::Shadowed,
                None => Action::Adopt(rec),
            };
        }
        if let Some(a) = self.scrub_reach_action(t, frame, name, &rel) {
            return a;
        }
        if self.scrub_holds(auth, &rec.rel_path, &rec) {
            Action::NewOid
        } else {
            Action::Adopt(rec)
        }
    }

    /// Decide about a directory entry. Reads only.
    fn scrub_classify_dir(&self, t: &Tier, frame: &Frame, name: &OsStr, rel_os: &OsStr) -> Action {
        let rel = lossy(rel_os);
        let own = read_oid(frame.dir.as_fd(), name);
        if let Some((i, fst)) = self.scrub_faster_entry(frame, name) {
            if kind_of_mode(fst.st_mode) != KIND_DIR {
                return Action::Conflict;
            }
            // A slower copy: it carries the canonical copy's OID (S3.1 item 2).
            let canon_dir = frame.faster[i].1.as_fd();
            return match read_oid(canon_dir, name) {
                Some(c) if own != Some(c) => Action::DirSetOid {
                    oid: c,
                    gen_: read_gen(canon_dir, name),
                },
                _ => Action::Nothing,
            };
        }
        match self.scrub_reach(t, frame, name, &rel, true) {
            Reach::Conflict | Reach::Shadowed => return Action::Conflict,
            Reach::Unknown => return Action::Deferred,
            Reach::Reached => {}
        }
        // The canonical copy.
        let Some(oid) = own else {
            return match self.placement.by_path(&rel) {
                Some(rec) if rec.kind == KIND_DIR => Action::DirSetOid {
                    oid: rec.oid,
                    gen_: rec.r#gen,
                },
                _ => Action::Identify,
            };
        };
        match self.placement.get(&oid) {
            None => Action::Identify,
            Some(rec) if rec.kind != KIND_DIR => Action::NewOid,
            Some(rec) if rec.rel_path != rel => match self.scrub_dir_present(&rec) {
                Some(true) => Action::NewOid,
                Some(false) => Action::Adopt(rec),
                None => Action::Deferred,
            },
            Some(_) => Action::Nothing,
        }
    }

    /// Is directory object `rec` still at its recorded path on some tier?
    /// None when a tier that could hold it cannot be looked at.
    fn scrub_dir_present(&self, rec: &ObjectRec) -> Option<bool> {
        let mut unknown = false;
        for t in &self.tiers {
            if !t.is_ok() || !self.meta_active(t.rank) {
                unknown = true;
                continue;
            }
            let (parent, name) = split(OsStr::new(&rec.rel_path));
            if let Ok(d) = t.open_dir(&parent)
                && read_oid(d.as_fd(), &name) == Some(rec.oid)
            {
                return Some(true);
            }
        }
        if unknown { None } else { Some(false) }
    }

    /// Carry out a mutating action; the caller holds `ns_lock`.
    #[allow(clippy::too_many_arguments)]
    fn scrub_apply(
        &self,
        t: &Tier,
        frame: &Frame,
        name: &OsStr,
        rel_os: &OsStr,
        st: &libc::stat,
        action: Action,
        p: &mut ScrubProgress,
    ) -> Result<()> {
        let dir = frame.dir.as_fd();
        let rel = lossy(rel_os);
        let set_identity = |oid: &Oid, gen_: u32, flags: i32| -> Result<()> {
            match sys::lsetxattr(dir, name, OID_XATTR_C, &oid.0, flags) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
                Err(e) => return Err(Error::io(format!("write OID of {rel}"), e)),
            }
            let _ = sys::lsetxattr(dir, name, GEN_XATTR_C, &gen_.to_le_bytes(), 0);
            Ok(())
        };
        match action {
            Action::Identify => {
                if self.identify(t.rank, dir, rel_os, name, st)?.is_some() {
                    p.indexed += 1;
                }
            }
            Action::Restore(rec) => {
                set_identity(&rec.oid, rec.r#gen, libc::XATTR_CREATE)?;
                bump(&self.counters.oid_restored_total);
                p.oid_restored += 1;
                debug!(oid = %rec.oid, "scrub: OID xattr of {rel} restored on tier {}", t.rank);
            }
            Action::DirSetOid { oid, gen_ } => {
                set_identity(&oid, gen_, 0)?;
                bump(&self.counters.oid_restored_total);
                p.oid_restored += 1;
                debug!(%oid, "scrub: directory {rel} on tier {} given its OID", t.rank);
            }
            Action::GenBump(mut rec) => {
                let g = rec.r#gen.wrapping_add(1);
                sys::lsetxattr(dir, name, GEN_XATTR_C, &g.to_le_bytes(), 0)
                    .map_err(|e| Error::io(format!("write generation of {rel}"), e))?;
                self.placement.set_gen(&rec.oid, g)?;
                rec.r#gen = g;
                rec.lower_ino = st.st_ino;
                rec.attrs = snapshot(st);
                self.placement.placed(&rec)?;
                bump(&self.counters.gen_bumps_total);
                p.gen_bumps += 1;
                info!(oid = %rec.oid, generation = g, "scrub: {rel} on tier {} was replaced out of band", t.rank);
            }
            Action::NewOid => {
                let (oid, _) = self.mint_for(t.rank, dir, rel_os, name, st, true)?;
                bump(&self.counters.oid_duplicates_total);
                p.oid_duplicates += 1;
                info!(%oid, "scrub: {rel} on tier {} copied another object's OID; new OID", t.rank);
            }
            Action::Adopt(mut rec) => {
                if rec.kind != KIND_DIR {
                    rec.slot = t.slot;
                }
                rec.lower_ino = st.st_ino;
                rec.rel_path.clone_from(&rel);
                rec.attrs = snapshot(st);
                self.placement.placed(&rec)?;
                p.adopted += 1;
                info!(oid = %rec.oid, "scrub: object now recorded at {rel} on tier {}", t.rank);
            }
            Action::Nothing
            | Action::Shadowed
            | Action::Conflict
            | Action::Deferred
            | Action::Duplicate { .. } => {}
        }
        Ok(())
    }

    /// A copy of an object whose authoritative copy is at the same path on
    /// tier `auth_rank`: remove it when the content is the same, else
    /// quarantine it. Hashing runs unlocked; the decision is re-checked
    /// under `ns_lock`.
    #[allow(clippy::too_many_arguments)]
    fn scrub_duplicate(
        &self,
        t: &Tier,
        frame: &Frame,
        name: &OsStr,
        rel: &OsStr,
        st: &libc::stat,
        auth_rank: u8,
        p: &mut ScrubProgress,
    ) -> Result<()> {
        let a = &self.tiers[auth_rank as usize];
        let (parent, aname) = split(rel);
        let ad = a
            .open_dir(&parent)
            .map_err(|e| Error::io(format!("open {:?} on tier {auth_rank}", parent), e))?;
        let ast = sys::fstatat(ad.as_fd(), &aname)
            .map_err(|e| Error::io(format!("stat {:?} on tier {auth_rank}", rel), e))?;
        let dir = frame.dir.as_fd();
        let equal = same_content(dir, name, st, ad.as_fd(), &aname, &ast)
            .map_err(|e| Error::io(format!("compare {:?} with tier {auth_rank}", rel), e))?;
        let _g = self.ns_lock.lock();
        let unchanged = matches!(sys::fstatat(dir, name), Ok(s) if same_version(st, &s))
            && matches!(sys::fstatat(ad.as_fd(), &aname), Ok(s) if same_version(&ast, &s));
        let still = matches!(
            self.scrub_classify(t, frame, name, rel, st),
            Action::Duplicate { auth_rank: r } if r == auth_rank
        );
        if !unchanged || !still {
            p.deferred += 1;
            return Ok(());
        }
        if equal {
            sys::unlinkat(dir, name, false)
                .map_err(|e| Error::io(format!("remove stale duplicate {:?}", rel), e))?;
            bump(&self.counters.stale_duplicates_removed_total);
            p.stale_removed += 1;
            info!(
                "scrub: stale duplicate {:?} removed from tier {} (authoritative on tier {auth_rank})",
                rel, t.rank
            );
        } else {
            let to = self.scrub_quarantine(t, dir, name, rel)?;
            bump(&self.counters.duplicates_quarantined_total);
            p.quarantined += 1;
            warn!(
                "scrub: duplicate {:?} on tier {} differs from tier {auth_rank}; quarantined as {:?}",
                rel, t.rank, to
            );
        }
        Ok(())
    }

    /// Move an entry to `<tier>/.smoothfs/quarantine/<date>/<rel path>`;
    /// returns its new rel path on the tier.
    fn scrub_quarantine(
        &self,
        t: &Tier,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &OsStr,
    ) -> Result<OsString> {
        let (parent, _) = split(rel);
        let mut qrel = OsString::from(format!("{QUARANTINE_DIR}/{}", utc_date(unix_now())));
        if !parent.is_empty() {
            qrel.push("/");
            qrel.push(&parent);
        }
        let qd = mkdir_beneath(t, &qrel)
            .map_err(|e| Error::io(format!("create {:?} on tier {}", qrel, t.rank), e))?;
        let mut target = name.to_os_string();
        for attempt in 0..4 {
            match sys::renameat2(dir, name, qd.as_fd(), &target, libc::RENAME_NOREPLACE) {
                Ok(()) => return Ok(join(&qrel, &target)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempt < 3 => {
                    let nanos = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    target = name.to_os_string();
                    target.push(format!(".{nanos}"));
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("quarantine {:?} on tier {}", rel, t.rank),
                        e,
                    ));
                }
            }
        }
        Err(err!(libc::EEXIST, "quarantine target for {:?} exists", rel))
    }

    /// Phase 2 of a pass: drop index entries no tier holds any more.
    fn scrub_drop_gone(
        &self,
        cur: &mut Cursor,
        budget: usize,
        p: &mut ScrubProgress,
    ) -> Result<()> {
        let mut left = budget;
        while left > 0 {
            let want = left.min(GC_PAGE);
            let page = self.placement.list_objects(cur.gc_after, want)?;
            if page.is_empty() {
                cur.phase = Phase::Idle;
                cur.gc_after = None;
                cur.last_complete_at = unix_now();
                p.pass_complete = true;
                info!(entries = cur.entries_done, "scrub pass complete");
                return Ok(());
            }
            for rec in page {
                left -= 1;
                p.objects_checked += 1;
                cur.gc_after = Some(rec.oid.0);
                if let Err(e) = self.scrub_drop_if_gone(&rec, p) {
                    warn!(oid = %rec.oid, "scrub: checking {}: {e}", rec.rel_path);
                    p.errors += 1;
                }
            }
        }
        Ok(())
    }

    /// Some(true) if a tier holds `rec` under one of its names, Some(false)
    /// if every tier was looked at and none does, None if one could not be.
    fn scrub_object_present(&self, rec: &ObjectRec) -> Option<bool> {
        if rec.kind != KIND_DIR && rec.slot != SLOT_NONE && self.tier_by_slot(rec.slot).is_none() {
            return None;
        }
        let names: Vec<&str> = if rec.nlink_names.is_empty() {
            vec![rec.rel_path.as_str()]
        } else {
            rec.nlink_names.iter().map(String::as_str).collect()
        };
        // The recorded tier first: the common case costs one stat.
        let mut order: Vec<&Tier> = self.tiers.iter().collect();
        order.sort_by_key(|t| t.slot != rec.slot);
        let mut unknown = false;
        for t in order {
            if !t.is_ok() || !self.meta_active(t.rank) {
                unknown = true;
                continue;
            }
            if names.iter().any(|n| self.scrub_holds(t, n, rec)) {
                return Some(true);
            }
        }
        if unknown { None } else { Some(false) }
    }

    fn scrub_drop_if_gone(&self, rec: &ObjectRec, p: &mut ScrubProgress) -> Result<()> {
        if rec.oid.is_root() || rec.rel_path.is_empty() || self.scrub_moving(rec) {
            return Ok(());
        }
        match self.scrub_object_present(rec) {
            Some(true) => return Ok(()),
            None => {
                p.deferred += 1;
                return Ok(());
            }
            Some(false) => {}
        }
        let _g = self.ns_lock.lock();
        let Some(now) = self.placement.get(&rec.oid) else {
            return Ok(());
        };
        if self.scrub_moving(&now) || self.scrub_object_present(&now) != Some(false) {
            return Ok(());
        }
        self.placement
            .unlink(&now.oid, now.r#gen, 0, &now.rel_path)?;
        p.index_dropped += 1;
        info!(oid = %now.oid, "scrub: {} is on no tier; index entry dropped", now.rel_path);
        Ok(())
    }
}

// ---- Scrubber --------------------------------------------------------------------

/// `scrub_state` (S4.6 item 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubState {
    /// No pass running (one may be pending: see [`Scrubber::pending`]).
    Idle = 0,
    /// The background thread is walking.
    Running = 1,
    /// Stopped by `SCRUB stop`; `start` resumes at the cursor.
    Stopped = 2,
}

impl ScrubState {
    pub fn name(self) -> &'static str {
        match self {
            ScrubState::Idle => "idle",
            ScrubState::Running => "running",
            ScrubState::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> ScrubState {
        match v {
            1 => ScrubState::Running,
            2 => ScrubState::Stopped,
            _ => ScrubState::Idle,
        }
    }
}

/// The scrub's control state, shared by the SCRUB command, STATUS and the
/// background thread ([`Scrubber::run`]). `Send + Sync`; every method
/// takes `&self`.
pub struct Scrubber {
    state: AtomicU8,
    rate: AtomicU64,
    entries_done: AtomicU64,
    last_complete_at: AtomicU64,
    /// A pass is in progress in the persisted cursor.
    pending: AtomicBool,
    /// (rank being walked, cursor text) after the last step.
    position: Mutex<(Option<u8>, String)>,
    /// Serialises steps and keeps the walk between them.
    walk: Mutex<WalkCache>,
    wake_lock: Mutex<()>,
    wake: Condvar,
}

impl Scrubber {
    /// Reads the persisted cursor: a pass interrupted by an unmount or a
    /// crash is pending and continues where it stopped.
    pub fn new(ns: &Namespace) -> Scrubber {
        let cur = load_cursor(ns);
        Scrubber {
            state: AtomicU8::new(ScrubState::Idle as u8),
            rate: AtomicU64::new(DEFAULT_SCRUB_RATE),
            entries_done: AtomicU64::new(cur.entries_done),
            last_complete_at: AtomicU64::new(cur.last_complete_at),
            pending: AtomicBool::new(cur.phase != Phase::Idle),
            position: Mutex::new((None, String::new())),
            walk: Mutex::new(WalkCache::default()),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    pub fn state(&self) -> ScrubState {
        ScrubState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// A pass was started and has not completed.
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Entries walked in the current pass (or the last one when idle).
    pub fn entries_done(&self) -> u64 {
        self.entries_done.load(Ordering::Relaxed)
    }

    /// Unix seconds of the end of the last complete pass; 0 = never.
    pub fn last_complete_at(&self) -> u64 {
        self.last_complete_at.load(Ordering::Relaxed)
    }

    /// (rank being walked, `<rank>:<rel path>` or `gc:<oid>`) after the last step.
    pub fn position(&self) -> (Option<u8>, String) {
        self.position.lock().clone()
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// `scrub_rate` (entries per second): 1 to [`MAX_SCRUB_RATE`], else EINVAL.
    pub fn set_rate(&self, rate: u64) -> Result<u64> {
        if rate == 0 || rate > MAX_SCRUB_RATE {
            return Err(err!(
                libc::EINVAL,
                "scrub_rate must be 1..={MAX_SCRUB_RATE}, not {rate}"
            ));
        }
        self.rate.store(rate, Ordering::Relaxed);
        self.notify();
        Ok(rate)
    }

    /// `SCRUB start`: run (resuming a pending pass, else a new one).
    pub fn start(&self) {
        self.set_state(ScrubState::Running);
        info!("scrub started");
    }

    /// `SCRUB stop`: stop after the current step; the cursor is kept.
    pub fn stop(&self) {
        if self
            .state
            .compare_exchange(
                ScrubState::Running as u8,
                ScrubState::Stopped as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            info!("scrub stopped");
        }
        self.notify();
    }

    /// After mount (S4.6 item 1): start if a pass is pending or the last
    /// complete one is older than `interval_s` (or there never was one).
    pub fn start_if_due(&self, interval_s: u64) -> bool {
        let last = self.last_complete_at();
        let due = self.pending() || last == 0 || unix_now().saturating_sub(last) >= interval_s;
        if due {
            self.start();
        }
        due
    }

    fn set_state(&self, s: ScrubState) {
        let _g = self.wake_lock.lock();
        self.state.store(s as u8, Ordering::Release);
        self.wake.notify_all();
    }

    fn notify(&self) {
        let _g = self.wake_lock.lock();
        self.wake.notify_all();
    }

    fn sleep(&self, d: Duration, stop: &AtomicBool) {
        let mut g = self.wake_lock.lock();
        if stop.load(Ordering::Acquire) {
            return;
        }
        self.wake.wait_for(&mut g, d);
    }

    /// One step of at most `budget` entries, whatever the state; updates
    /// the status. A completed pass puts a running scrubber back to idle.
    pub fn step(&self, ns: &Namespace, budget: usize) -> Result<ScrubProgress> {
        let mut cache = self.walk.lock();
        let p = ns.scrub_step_cached(&mut cache, budget)?;
        self.entries_done.store(p.pass_entries, Ordering::Relaxed);
        self.last_complete_at
            .store(p.last_complete_at, Ordering::Relaxed);
        self.pending.store(!p.pass_complete, Ordering::Release);
        *self.position.lock() = (p.tier, p.cursor.clone());
        if p.pass_complete {
            let _ = self.state.compare_exchange(
                ScrubState::Running as u8,
                ScrubState::Idle as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        Ok(p)
    }

    /// Step without rate limit until the pass completes or only inactive
    /// tiers are left; returns the summed progress. For tests and tools.
    pub fn run_pass(&self, ns: &Namespace, budget: usize) -> Result<ScrubProgress> {
        let mut total = ScrubProgress::default();
        loop {
            let p = self.step(ns, budget)?;
            total.absorb(&p);
            if p.pass_complete || p.waiting_for_inactive {
                return Ok(total);
            }
        }
    }

    /// The background loop: while running, steps every [`TICK`] with a
    /// budget of `scrub_rate` × TICK entries and sleeps so the average stays
    /// at `scrub_rate` entries per second; waits while idle or stopped, and
    /// polls the metadata mask once a second while only inactive tiers are
    /// left. Returns when `stop` is set (see [`Scrubber::spawn`]). Runs the
    /// thread at idle I/O priority.
    pub fn run(&self, ns: &Namespace, stop: &AtomicBool) {
        set_idle_io_priority();
        let mut next = Instant::now();
        while !stop.load(Ordering::Acquire) {
            if self.state() != ScrubState::Running {
                self.sleep(WAIT_INACTIVE, stop);
                next = Instant::now();
                continue;
            }
            let rate = self.rate().max(1);
            let budget = (rate * TICK.as_millis() as u64 / 1000).max(1) as usize;
            match self.step(ns, budget) {
                Ok(p) if p.pass_complete => next = Instant::now(),
                Ok(p) if p.waiting_for_inactive && p.entries + p.objects_checked == 0 => {
                    self.sleep(WAIT_INACTIVE, stop);
                    next = Instant::now();
                }
                Ok(p) => {
                    let used = (p.entries + p.objects_checked).max(1);
                    next += Duration::from_secs_f64(used as f64 / rate as f64);
                    let now = Instant::now();
                    if next > now {
                        self.sleep(next - now, stop);
                    } else if now - next > Duration::from_secs(1) {
                        // Do not burst to catch up after a stall.
                        next = now;
                    }
                }
                Err(e) => {
                    warn!("scrub step failed: {e}");
                    self.sleep(WAIT_ERROR, stop);
                    next = Instant::now();
                }
            }
        }
    }

    /// [`Scrubber::run`] with `scrub_rate` set to `rate_per_s` first.
    pub fn run_for(&self, ns: &Namespace, rate_per_s: u64, stop: &AtomicBool) -> Result<()> {
        self.set_rate(rate_per_s)?;
        self.run(ns, stop);
        Ok(())
    }

    /// Start the background thread (`smoothfs-scrub`). It idles until
    /// [`Scrubber::start`] or [`Scrubber::start_if_due`].
    pub fn spawn(scrubber: Arc<Scrubber>, ns: Arc<Namespace>) -> std::io::Result<ScrubThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&scrubber), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("smoothfs-scrub".into())
            .spawn(move || s.run(&ns, &st))?;
        Ok(ScrubThread {
            stop,
            scrubber,
            handle: Some(handle),
        })
    }

    /// STATUS items of the scrub group (S26.1); times in Unix seconds.
    pub fn status_items(&self, ns: &Namespace) -> Vec<(String, String)> {
        vec![
            ("scrub_state".into(), self.state().name().into()),
            ("scrub_entries_done".into(), self.entries_done().to_string()),
            (
                "scrub_last_complete_at".into(),
                self.last_complete_at().to_string(),
            ),
            (
                "duplicates_quarantined_total".into(),
                ns.counters
                    .duplicates_quarantined_total
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            ("scrub_rate".into(), self.rate().to_string()),
        ]
    }
}

/// The background scrub thread; stopping it (or dropping it) ends the
/// loop after the current step and joins the thread.
pub struct ScrubThread {
    stop: Arc<AtomicBool>,
    scrubber: Arc<Scrubber>,
    handle: Option<JoinHandle<()>>,
}

impl ScrubThread {
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.scrubber.notify();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("scrub thread panicked");
        }
    }
}

impl Drop for ScrubThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// ioprio_set(IOPRIO_WHO_PROCESS, 0 = this thread, IOPRIO_CLASS_IDLE):
/// the scrub's lower I/O yields to everything else (S4.6 item 1).
fn set_idle_io_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: plain syscall with integer arguments, affecting only this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if r < 0 {
        debug!(
            "scrub: idle I/O priority not set: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{KIND_FILE, NamespaceConfig};
    use crate::placement::Placement;
    use std::ffi::CStr;
    use std::fs::{File, FileTimes};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    const POOL: [u8; 16] = [9; 16];

    struct Fixture {
        _dir: tempfile::TempDir,
        tiers: Vec<PathBuf>,
        ns: Namespace,
    }

    fn open_ns(paths: &[PathBuf]) -> Namespace {
        let tiers = paths
            .iter()
            .enumerate()
            .map(|(rank, p)| {
                let root = crate::marker::open_tier_root(p).unwrap();
                Tier::new(rank as u8, rank as u8, p.clone(), root, 0x173)
            })
            .collect();
        let (placement, _) = Placement::open(&paths[0].join(".smoothfs"), POOL).unwrap();
        Namespace::new(
            tiers,
            placement,
            NamespaceConfig {
                full_pct: 98,
                metadata_mask: u32::MAX,
                read_only: false,
            },
        )
    }

    fn fixture(n: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for rank in 0..n {
            let p = dir.path().join(format!("t{rank}"));
            std::fs::create_dir_all(p.join(".smoothfs")).unwrap();
            paths.push(p);
        }
        let ns = open_ns(&paths);
        Fixture {
            _dir: dir,
            tiers: paths,
            ns,
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn parent_and_name(path: &Path) -> (File, &OsStr) {
        (
            File::open(path.parent().unwrap()).unwrap(),
            path.file_name().unwrap(),
        )
    }

    fn xattr(path: &Path, attr: &CStr) -> Option<Vec<u8>> {
        let (d, n) = parent_and_name(path);
        sys::lgetxattr(d.as_fd(), n, attr).ok()
    }

    fn set_xattr(path: &Path, attr: &CStr, v: &[u8]) {
        let (d, n) = parent_and_name(path);
        sys::lsetxattr(d.as_fd(), n, attr, v, 0).unwrap();
    }

    fn lower_oid(path: &Path) -> Option<Oid> {
        xattr(path, OID_XATTR_C).and_then(|v| Oid::from_slice(&v))
    }

    fn oid_at(ns: &Namespace, rel: &str) -> Oid {
        ns.placement
            .by_path(rel)
            .unwrap_or_else(|| panic!("{rel} not indexed"))
            .oid
    }

    /// Everything about a lower entry a scrub could change by looking at it.
    fn fingerprint(path: &Path) -> (i64, i64, i64, i64, i64, Vec<u8>) {
        let m = std::fs::symlink_metadata(path).unwrap();
        let (d, n) = parent_and_name(path);
        let xattrs = sys::llistxattr(d.as_fd(), n).unwrap();
        (
            m.atime(),
            m.atime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            xattrs,
        )
    }

    fn age(path: &Path) {
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::open(path)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap();
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let mut c = Cursor {
            phase: Phase::Walk,
            pass_started_at: 17,
            last_complete_at: 5,
            entries_done: 1234,
            done_slots: 0b101,
            gc_after: Some([3; 16]),
            positions: BTreeMap::new(),
        };
        c.positions.insert(1, b"a/b/c".to_vec());
        c.positions.insert(3, Vec::new());
        let b = c.encode();
        assert_eq!(Cursor::decode(&b), Some(c.clone()));
        assert_eq!(Cursor::decode(&b[..b.len() - 1]), None);
        let mut bad = b.clone();
        bad[0] = 2;
        assert_eq!(Cursor::decode(&bad), None);
        let mut longer = b;
        longer.push(0);
        assert_eq!(Cursor::decode(&longer), None);
    }

    #[test]
    fn quarantine_dates_are_utc_calendar_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
        assert_eq!(utc_date(4_107_542_399), "2100-02-28");
    }

    /// S4.6/A1, scaled: files put on tier 1 out of band become findable by
    /// OID after one scrub, without any lookup through the namespace.
    #[test]
    fn s4_6_a1_out_of_band_files_are_indexed_by_one_scrub() {
        let f = fixture(2);
        for i in 0..500 {
            write(
                &f.tiers[1].join(format!("d{}/f{i}", i % 5)),
                format!("file {i}").as_bytes(),
            );
        }
        write(&f.tiers[1].join(".smoothfs/not-pool-data"), b"x");
        let s = Scrubber::new(&f.ns);
        assert_eq!(s.state(), ScrubState::Idle);
        let p = s.run_pass(&f.ns, 97).unwrap();
        assert!(p.pass_complete, "{p:?}");
        assert_eq!((p.entries, p.indexed, p.errors), (505, 505, 0), "{p:?}");
        for i in 0..500 {
            let rel = format!("d{}/f{i}", i % 5);
            let rec = f.ns.placement.by_path(&rel).expect("indexed");
            assert_eq!((rec.slot, rec.kind), (1, KIND_FILE));
            assert_eq!(f.ns.placement.get(&rec.oid).as_ref(), Some(&rec));
            assert_eq!(lower_oid(&f.tiers[1].join(&rel)), Some(rec.oid));
        }
        assert!(f.ns.placement.by_path(".smoothfs").is_none());
        assert!(f.ns.placement.by_path(".smoothfs/not-pool-data").is_none());
        assert_eq!(f.ns.resident_nodes(), 1, "nothing was looked up");
        assert_eq!(s.entries_done(), 505);
        assert!(s.last_complete_at() > 0);
        assert!(!s.pending());
        // A second pass finds nothing to do.
        let again = s.run_pass(&f.ns, 1000).unwrap();
        assert!(again.pass_complete);
        assert_eq!((again.entries, again.indexed), (505, 0), "{again:?}");
        assert_eq!(again.objects_checked, 505);
        assert_eq!(again.index_dropped, 0);
    }

    /// S4.6/A2: with the mask at 0x1 the scrub does not touch tier 1 at all
    /// (no xattr, no atime or ctime change), waits, and finishes tier 1
    /// once the mask includes it.
    #[test]
    fn s4_6_a2_inactive_tier_is_untouched_until_the_mask_includes_it() {
        let f = fixture(2);
        for i in 0..10 {
            write(&f.tiers[0].join(format!("hot{i}")), b"hot");
        }
        let mut cold = Vec::new();
        for i in 0..20 {
            let p = f.tiers[1].join(format!("cold/c{i}"));
            write(&p, b"cold");
            cold.push(p);
        }
        let top = f.tiers[1].join("top");
        write(&top, b"top");
        cold.push(top);
        // Old atimes: any read of these would move them (relatime).
        for p in &cold {
            age(p);
        }
        cold.push(f.tiers[1].join("cold"));
        age(&f.tiers[1].join("cold"));
        age(&f.tiers[1]);
        cold.push(f.tiers[1].clone());
        let before: Vec<_> = cold.iter().map(|p| fingerprint(p)).collect();

        assert_eq!(f.ns.set_metadata_mask(0x1), 0x1);
        let s = Scrubber::new(&f.ns);
        s.start();
        let p = s.run_pass(&f.ns, 7).unwrap();
        assert!(p.waiting_for_inactive && !p.pass_complete, "{p:?}");
        assert_eq!(p.entries, 10);
        assert!(f.ns.placement.by_path("hot3").is_some());
        assert!(f.ns.placement.by_path("cold/c0").is_none());
        let idle = s.step(&f.ns, 100).unwrap();
        assert!(idle.waiting_for_inactive && idle.entries == 0);
        assert_eq!(s.state(), ScrubState::Running);
        let after: Vec<_> = cold.iter().map(|p| fingerprint(p)).collect();
        assert_eq!(before, after, "tier 1 was touched");

        f.ns.set_metadata_mask(0x3);
        let p = s.run_pass(&f.ns, 7).unwrap();
        assert!(p.pass_complete, "{p:?}");
        assert_eq!(p.entries, 22);
        assert_eq!(s.entries_done(), 32);
        assert_eq!(s.state(), ScrubState::Idle);
        for i in 0..20 {
            let rel = format!("cold/c{i}");
            assert_eq!(lower_oid(&f.tiers[1].join(&rel)), Some(oid_at(&f.ns, &rel)));
        }
    }

    /// The cursor is in the index: a scrub stopped half way continues after
    /// a restart where it stopped, and the two halves cover every entry once.
    #[test]
    fn scrub_resumes_from_the_persisted_cursor_after_restart() {
        let f = fixture(2);
        for i in 0..300 {
            write(&f.tiers[1].join(format!("d{}/f{i}", i % 3)), b"x");
        }
        let s = Scrubber::new(&f.ns);
        s.start();
        let mut first = 0;
        for _ in 0..3 {
            first += s.step(&f.ns, 50).unwrap().entries;
        }
        assert_eq!(first, 150);
        s.stop();
        assert_eq!(s.state(), ScrubState::Stopped);
        // What unmount does before the process goes away.
        f.ns.placement.checkpoint().unwrap();
        let Fixture { _dir, tiers, ns } = f;
        drop(ns);

        let ns = open_ns(&tiers);
        let s = Scrubber::new(&ns);
        assert!(s.pending());
        assert_eq!(s.entries_done(), 150);
        assert!(s.start_if_due(DEFAULT_SCRUB_INTERVAL_S));
        let p = s.run_pass(&ns, 64).unwrap();
        assert!(p.pass_complete, "{p:?}");
        assert_eq!(p.entries, 153, "{p:?}");
        assert_eq!(p.indexed, 153, "the first half was not redone");
        assert_eq!(s.entries_done(), 303);
        for i in 0..300 {
            assert!(ns.placement.by_path(&format!("d{}/f{i}", i % 3)).is_some());
        }
        // Done recently: not due again after the next mount.
        assert!(!Scrubber::new(&ns).start_if_due(DEFAULT_SCRUB_INTERVAL_S));
    }

    /// S4.6 item 2: a copy of an authoritative object at the same path on
    /// another tier is removed when its bytes are the same, quarantined
    /// under `.smoothfs/quarantine/<date>/<path>` when they differ.
    #[test]
    fn stale_duplicates_are_removed_and_differing_ones_quarantined() {
        let f = fixture(2);
        let (t0, t1) = (&f.tiers[0], &f.tiers[1]);
        write(&t0.join("f"), b"same bytes");
        write(&t0.join("g"), b"authoritative g");
        write(&t0.join("sub/h"), b"authoritative h");
        let s = Scrubber::new(&f.ns);
        assert!(s.run_pass(&f.ns, 100).unwrap().pass_complete);
        for (rel, bytes) in [
            ("f", &b"same bytes"[..]),
            ("g", b"an older g"),
            ("sub/h", b"an older h, longer"),
        ] {
            let p = t1.join(rel);
            write(&p, bytes);
            set_xattr(&p, OID_XATTR_C, &oid_at(&f.ns, rel).0);
            set_xattr(&p, GEN_XATTR_C, &0u32.to_le_bytes());
        }
        let p = s.run_pass(&f.ns, 100).unwrap();
        assert!(p.pass_complete);
        assert_eq!((p.stale_removed, p.quarantined), (1, 2), "{p:?}");
        assert!(!t1.join("f").exists() && !t1.join("g").exists() && !t1.join("sub/h").exists());
        let q = t1.join(format!(".smoothfs/quarantine/{}", utc_date(unix_now())));
        assert_eq!(std::fs::read(q.join("g")).unwrap(), b"an older g");
        assert_eq!(
            std::fs::read(q.join("sub/h")).unwrap(),
            b"an older h, longer"
        );
        assert_eq!(std::fs::read(t0.join("f")).unwrap(), b"same bytes");
        assert_eq!(std::fs::read(t0.join("g")).unwrap(), b"authoritative g");
        // The slower copy of `sub` carries the canonical copy's OID.
        assert_eq!(lower_oid(&t1.join("sub")), Some(oid_at(&f.ns, "sub")));
        let c = &f.ns.counters;
        assert_eq!(c.duplicates_quarantined_total.load(Ordering::Relaxed), 2);
        assert_eq!(c.stale_duplicates_removed_total.load(Ordering::Relaxed), 1);
        let items: BTreeMap<_, _> = s.status_items(&f.ns).into_iter().collect();
        assert_eq!(items["duplicates_quarantined_total"], "2");
        assert_eq!(items["scrub_state"], "idle");
        assert_eq!(items["scrub_rate"], "2000");
        // Quarantined files are never walked or removed.
        let again = s.run_pass(&f.ns, 100).unwrap();
        assert_eq!((again.stale_removed, again.quarantined), (0, 0));
        assert!(q.join("g").exists());
    }

    /// S3.5 item 5 and the end of a pass: a lost OID xattr is written back
    /// from the index, and an object whose file is gone from every tier
    /// leaves the index (tombstoned).
    #[test]
    fn lost_oids_are_restored_and_gone_files_dropped_from_the_index() {
        let f = fixture(2);
        let (x, y) = (f.tiers[1].join("x"), f.tiers[1].join("y"));
        write(&x, b"x");
        write(&y, b"y");
        let s = Scrubber::new(&f.ns);
        s.run_pass(&f.ns, 100).unwrap();
        let (ox, oy) = (oid_at(&f.ns, "x"), oid_at(&f.ns, "y"));
        {
            let (d, n) = parent_and_name(&x);
            sys::lremovexattr(d.as_fd(), n, OID_XATTR_C).unwrap();
        }
        std::fs::remove_file(&y).unwrap();
        let p = s.run_pass(&f.ns, 100).unwrap();
        assert!(p.pass_complete);
        assert_eq!(
            (p.oid_restored, p.indexed, p.index_dropped),
            (1, 0, 1),
            "{p:?}"
        );
        assert_eq!(lower_oid(&x), Some(ox));
        assert_eq!(f.ns.counters.oid_restored_total.load(Ordering::Relaxed), 1);
        assert!(f.ns.placement.get(&oy).is_none());
        assert_eq!(f.ns.placement.tombstone(&oy), Some(0));
    }

    /// S3.3: a `cp -a` on a lower gets its own OID; a file renamed on the
    /// lower keeps its identity at the new path; a file replaced out of
    /// band carrying its OID is a new incarnation (generation + 1).
    #[test]
    fn copies_get_new_oids_renames_keep_identity_replacements_bump_generation() {
        let f = fixture(2);
        let t0 = &f.tiers[0];
        write(&t0.join("orig"), b"o");
        write(&t0.join("moved"), b"m");
        write(&t0.join("replaced"), b"r");
        let s = Scrubber::new(&f.ns);
        s.run_pass(&f.ns, 100).unwrap();
        let (orig, moved, replaced) = (
            oid_at(&f.ns, "orig"),
            oid_at(&f.ns, "moved"),
            oid_at(&f.ns, "replaced"),
        );
        // cp -a orig copy
        write(&t0.join("copy"), b"o");
        set_xattr(&t0.join("copy"), OID_XATTR_C, &orig.0);
        // mv moved renamed (on the lower)
        std::fs::rename(t0.join("moved"), t0.join("renamed")).unwrap();
        // replaced by a new file carrying the old identity
        write(&t0.join("replacement"), b"R");
        set_xattr(&t0.join("replacement"), OID_XATTR_C, &replaced.0);
        std::fs::rename(t0.join("replacement"), t0.join("replaced")).unwrap();

        let p = s.run_pass(&f.ns, 100).unwrap();
        assert!(p.pass_complete);
        assert_eq!(
            (p.oid_duplicates, p.adopted, p.gen_bumps),
            (1, 1, 1),
            "{p:?}"
        );
        let copy = oid_at(&f.ns, "copy");
        assert_ne!(copy, orig);
        assert_eq!(lower_oid(&t0.join("copy")), Some(copy));
        assert_eq!(oid_at(&f.ns, "orig"), orig);
        assert_eq!(oid_at(&f.ns, "renamed"), moved);
        assert!(f.ns.placement.by_path("moved").is_none());
        let rec = f.ns.placement.get(&replaced).unwrap();
        assert_eq!(rec.r#gen, 1);
        assert_eq!(
            xattr(&t0.join("replaced"), GEN_XATTR_C),
            Some(1u32.to_le_bytes().to_vec())
        );
        assert_eq!(p.index_dropped, 0);
    }

    /// A file on a slower tier hidden by a faster copy of the same name is
    /// not given an identity (it would take the path from the object the
    /// mount shows); a file hidden by a directory is a name conflict.
    #[test]
    fn shadowed_entries_keep_their_hands_off_the_path_index() {
        let f = fixture(2);
        write(&f.tiers[0].join("a"), b"fast");
        write(&f.tiers[1].join("a"), b"slow, no oid");
        write(&f.tiers[0].join("d/x"), b"in a dir");
        write(&f.tiers[1].join("d"), b"a file named like a dir");
        let p = Scrubber::new(&f.ns).run_pass(&f.ns, 100).unwrap();
        assert!(p.pass_complete);
        assert_eq!((p.shadowed, p.name_conflicts), (1, 1), "{p:?}");
        assert_eq!(f.ns.placement.by_path("a").unwrap().slot, 0);
        assert_eq!(lower_oid(&f.tiers[1].join("a")), None);
        assert_eq!(lower_oid(&f.tiers[1].join("d")), None);
        assert_eq!(
            std::fs::read(f.tiers[1].join("a")).unwrap(),
            b"slow, no oid"
        );
    }

    /// The scrub takes `ns_lock` per mutation only: creates, renames and
    /// unlinks through the namespace run while it walks, none fails, and
    /// afterwards every file carries the identity the create gave it.
    #[test]
    fn scrub_runs_alongside_namespace_changes() {
        use crate::oid::ROOT_INO;
        let f = fixture(2);
        for i in 0..200 {
            write(&f.tiers[1].join(format!("old/f{i}")), b"x");
        }
        let Fixture { _dir, tiers, ns } = f;
        let ns = Arc::new(ns);
        let done = Arc::new(AtomicBool::new(false));
        let scrubber = {
            let (ns, done) = (Arc::clone(&ns), Arc::clone(&done));
            std::thread::spawn(move || {
                let s = Scrubber::new(&ns);
                let mut total = ScrubProgress::default();
                while !done.load(Ordering::Acquire) {
                    total.absorb(&s.step(&ns, 16).unwrap());
                }
                total
            })
        };
        let mut created = Vec::new();
        for i in 0..300 {
            let name = OsString::from(format!("n{i}"));
            let (e, _fd) = ns
                .create(ROOT_INO, &name, 0o644, 0o022, libc::O_RDWR, 0, 0)
                .unwrap();
            if i % 3 == 0 {
                ns.unlink(ROOT_INO, &name).unwrap();
            } else if i % 3 == 1 {
                let to = OsString::from(format!("r{i}"));
                ns.rename(ROOT_INO, &name, ROOT_INO, &to, 0).unwrap();
                created.push((to, e.ino));
            } else {
                created.push((name, e.ino));
            }
        }
        done.store(true, Ordering::Release);
        let during = scrubber.join().unwrap();
        assert_eq!(during.errors, 0, "{during:?}");
        let s = Scrubber::new(&ns);
        let mut p = s.run_pass(&ns, 1000).unwrap();
        if !p.pass_complete {
            p = s.run_pass(&ns, 1000).unwrap();
        }
        assert!(p.pass_complete);
        assert_eq!(
            (p.errors, p.index_dropped, p.oid_duplicates),
            (0, 0, 0),
            "{p:?}"
        );
        for (name, ino) in &created {
            let rel = name.to_str().unwrap();
            let oid = oid_at(&ns, rel);
            assert_eq!(oid.ino(), *ino, "{rel} kept the identity create gave it");
            assert_eq!(lower_oid(&tiers[0].join(rel)), Some(oid));
        }
        for i in (0..300).step_by(3) {
            assert!(ns.placement.by_path(&format!("n{i}")).is_none());
        }
        assert!(ns.placement.by_path("old/f199").is_some());
    }

    #[test]
    fn background_thread_runs_a_requested_pass_then_idles() {
        let f = fixture(2);
        for i in 0..50 {
            write(&f.tiers[1].join(format!("f{i}")), b"x");
        }
        let Fixture { _dir, ns, .. } = f;
        let ns = Arc::new(ns);
        let s = Arc::new(Scrubber::new(&ns));
        s.set_rate(100_000).unwrap();
        assert_eq!(s.set_rate(0).unwrap_err().errno, libc::EINVAL);
        let thread = Scrubber::spawn(Arc::clone(&s), Arc::clone(&ns)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.entries_done(), 0, "idle until started");
        s.start();
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.state() != ScrubState::Idle && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.state(), ScrubState::Idle);
        assert_eq!(s.entries_done(), 50);
        assert!(s.last_complete_at() > 0);
        thread.shutdown();
        assert!(ns.placement.by_path("f49").is_some());
    }
}
