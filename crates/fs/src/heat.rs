//! Data-plane heat counters and drain (S6.1–S6.3).
//!
//! Owns: the per-object counters (opens, read and write bytes, last access),
//! the passthrough estimates of S6.2, and turning undrained deltas into
//! 56-byte [`HeatRecord`]s in chunks of at most 256 with commit-or-put-back
//! delivery. Depends on neither FUSE nor the control socket: the caller
//! records activity and hands each drained chunk to whatever publishes
//! HEAT_SAMPLE events.
//!
//! Must never: lose an undrained delta while the daemon runs (a delivery that
//! reached no subscriber puts the deltas back), count a delta twice, or send
//! an `open_count_delta` larger than the opens actually performed.
//!
//! # Design
//!
//! * Counters are keyed by [`Oid`] in a sharded map, independent of any
//!   other in-memory object table, so an object leaving memory never loses
//!   undrained deltas (S6.1 item 2): this map *is* the pending table.
//!   Each recording call takes one short shard lock.
//! * [`HeatTable::drain`] *takes* the deltas out of the counters (they are
//!   zero afterwards) and returns a [`Drain`]. Each chunk of the drain is
//!   then either committed (delivered to at least one subscriber) or put
//!   back, which adds its deltas onto whatever the counters hold by then.
//!   Because the deltas live in exactly one place at any time (the counters
//!   or one pending chunk), concurrent activity between drain and put-back
//!   is neither lost nor counted twice. Dropping a [`Drain`] puts every
//!   unresolved chunk back.
//! * Eviction: an entry whose deltas have all been drained keeps only its
//!   "previous drain" time. It is removed at the first drain that finds it
//!   unchanged for at least [`HeatConfig::idle_retention_ns`] (default 0:
//!   the first drain that finds it unchanged since the previous drain). The
//!   map therefore holds only objects active within about the last two
//!   drain intervals. An object that comes back after eviction reports
//!   `sample_window_ns` = now − its first activity, which S6.3 allows.
//! * Passthrough handles (S6.2) are tracked in a separate registry, one
//!   entry per object shared by all its passthrough handles (refcounted),
//!   holding a duplicate of the backing fd; each drain fstats it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use smoothfs_uapi::heat::HeatRecord;

use crate::oid::Oid;

/// Records per HEAT_SAMPLE event (S6.3 item 3).
pub const MAX_RECORDS_PER_EVENT: usize = 256;
const _: () = assert!(MAX_RECORDS_PER_EVENT == smoothfs_uapi::codec::MAX_HEAT_RECORDS);

/// Default `passthrough_read_credit_max` (S6.2 item 1, S29).
pub const DEFAULT_READ_CREDIT_MAX: u64 = 64 << 20;

/// Write credit cap when the size is unchanged but the mtime advanced
/// (S6.2 item 1).
pub const UNCHANGED_SIZE_WRITE_CREDIT_MAX: u64 = 1 << 20;

/// Number of counter shards; a power of two.
const SHARDS: usize = 32;

/// Wall clock (CLOCK_REALTIME) in nanoseconds since the Unix epoch; 0 if
/// the clock is before the epoch.
pub fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The S6.2 item 1 estimate for one passthrough handle at release, as
/// `(read_bytes, write_bytes)`.
///
/// * reads (handle opened for reading): `min(size_at_release, read_credit_max)`;
/// * writes (handle opened for writing): `|size_at_release − size_at_open|`,
///   or `min(size_at_release, 1 MiB)` if the size is unchanged but the lower
///   mtime advanced; 0 otherwise.
pub fn passthrough_release_estimate(
    readable: bool,
    writable: bool,
    size_at_open: u64,
    size_at_release: u64,
    mtime_advanced: bool,
    read_credit_max: u64,
) -> (u64, u64) {
    let read = if readable {
        size_at_release.min(read_credit_max)
    } else {
        0
    };
    let write = if !writable {
        0
    } else if size_at_release != size_at_open {
        size_at_release.abs_diff(size_at_open)
    } else if mtime_advanced {
        size_at_release.min(UNCHANGED_SIZE_WRITE_CREDIT_MAX)
    } else {
        0
    };
    (read, write)
}

/// Size and times of a lower file, as seen by fstat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    /// st_atim in ns since the epoch.
    pub atime_ns: i128,
    /// st_mtim in ns since the epoch.
    pub mtime_ns: i128,
}

impl FileStamp {
    pub fn from_stat(st: &libc::stat) -> FileStamp {
        let ns = |s: libc::time_t, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            size: u64::try_from(st.st_size).unwrap_or(0),
            atime_ns: ns(st.st_atime, st.st_atime_nsec),
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        }
    }

    /// fstat `fd`.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<FileStamp> {
        crate::sys::fstat(fd).map(|st| FileStamp::from_stat(&st))
    }
}

/// Tunables of the heat table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeatConfig {
    /// `passthrough_read_credit_max` (S6.2 item 1).
    pub read_credit_max: u64,
    /// How long an entry with no undrained deltas is kept (measured from its
    /// last drain) so that its next record's `sample_window_ns` can start at
    /// that drain. 0 = removed at the first drain that finds it unchanged.
    pub idle_retention_ns: u64,
}

impl Default for HeatConfig {
    fn default() -> Self {
        HeatConfig {
            read_credit_max: DEFAULT_READ_CREDIT_MAX,
            idle_retention_ns: 0,
        }
    }
}

/// One object's undrained deltas.
#[derive(Debug)]
struct Counters {
    opens: u64,
    read: u64,
    write: u64,
    /// Latest access ever seen (kept across drains, monotonic).
    last_access_ns: u64,
    /// Start of the undrained window: this object's previous drain, or its
    /// first activity since it entered the table.
    window_start_ns: u64,
    /// Something changed since the previous drain.
    dirty: bool,
    /// Holds deltas that a drain put back (counted in `records_deferred`).
    deferred: bool,
}

impl Counters {
    fn new(window_start_ns: u64) -> Counters {
        Counters {
            opens: 0,
            read: 0,
            write: 0,
            last_access_ns: 0,
            window_start_ns,
            dirty: false,
            deferred: false,
        }
    }
}

/// A passthrough-tracked object: one backing fd shared by all its
/// passthrough handles.
#[derive(Debug)]
struct Tracked {
    fd: Arc<OwnedFd>,
    refs: u32,
    /// fstat at track time or at the previous drain.
    base: FileStamp,
}

/// Returned by [`HeatTable::track_passthrough`]; keep it in the file handle
/// and pass it to [`HeatTable::release_passthrough`] at release.
#[must_use = "pass the ticket to HeatTable::release_passthrough at release"]
#[derive(Debug)]
pub struct PassthroughTicket {
    oid: Oid,
    readable: bool,
    writable: bool,
    at_open: FileStamp,
}

impl PassthroughTicket {
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The backing file's size and times when this handle was opened.
    pub fn at_open(&self) -> FileStamp {
        self.at_open
    }
}

/// Per-pool heat counters. Send + Sync; share it by reference or `Arc`.
#[derive(Debug)]
pub struct HeatTable {
    config: HeatConfig,
    shards: Box<[Mutex<HashMap<Oid, Counters>>]>,
    passthrough: Mutex<HashMap<Oid, Tracked>>,
    /// Serialises drains (the passthrough baselines must be sampled by one
    /// drain at a time).
    drain_lock: Mutex<()>,
    records_sent_total: AtomicU64,
    records_deferred: AtomicU64,
    estimated_bytes_total: AtomicU64,
}

impl Default for HeatTable {
    fn default() -> Self {
        HeatTable::new()
    }
}

impl HeatTable {
    pub fn new() -> HeatTable {
        HeatTable::with_config(HeatConfig::default())
    }

    pub fn with_config(config: HeatConfig) -> HeatTable {
        HeatTable {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            passthrough: Mutex::new(HashMap::new()),
            drain_lock: Mutex::new(()),
            records_sent_total: AtomicU64::new(0),
            records_deferred: AtomicU64::new(0),
            estimated_bytes_total: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> HeatConfig {
        self.config
    }

    fn shard(&self, oid: &Oid) -> &Mutex<HashMap<Oid, Counters>> {
        let lo = u64::from_le_bytes(oid.0[0..8].try_into().unwrap_or([0; 8]));
        let hi = u64::from_le_bytes(oid.0[8..16].try_into().unwrap_or([0; 8]));
        let h = (lo ^ hi.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.shards[(h >> 59) as usize & (SHARDS - 1)]
    }

    fn record_at(&self, oid: Oid, opens: u64, read: u64, write: u64, at_ns: u64) {
        let mut map = self.shard(&oid).lock();
        let c = map.entry(oid).or_insert_with(|| Counters::new(at_ns));
        c.opens = c.opens.saturating_add(opens);
        c.read = c.read.saturating_add(read);
        c.write = c.write.saturating_add(write);
        c.last_access_ns = c.last_access_ns.max(at_ns);
        c.dirty = true;
    }

    fn estimate_at(&self, oid: Oid, read: u64, write: u64, at_ns: u64) {
        self.record_at(oid, 0, read, write, at_ns);
        self.estimated_bytes_total
            .fetch_add(read.saturating_add(write), Ordering::Relaxed);
    }

    // ---- recording (I/O path) ----

    /// One open of `oid` (any mode, mediated or passthrough).
    pub fn open(&self, oid: Oid) {
        self.record_at(oid, 1, 0, 0, wall_clock_ns());
    }

    /// A successful mediated read of `bytes` bytes (0 still counts as an access).
    pub fn read(&self, oid: Oid, bytes: u64) {
        self.record_at(oid, 0, bytes, 0, wall_clock_ns());
    }

    /// A successful mediated write of `bytes` bytes.
    pub fn write(&self, oid: Oid, bytes: u64) {
        self.record_at(oid, 0, 0, bytes, wall_clock_ns());
    }

    /// Estimated read bytes (S6.2): same field as [`read`](Self::read), also
    /// counted in `estimated_bytes_total`.
    pub fn estimated_read(&self, oid: Oid, bytes: u64) {
        self.estimate_at(oid, bytes, 0, wall_clock_ns());
    }

    /// Estimated write bytes (S6.2): same field as [`write`](Self::write),
    /// also counted in `estimated_bytes_total`.
    pub fn estimated_write(&self, oid: Oid, bytes: u64) {
        self.estimate_at(oid, 0, bytes, wall_clock_ns());
    }

    // ---- passthrough (S6.2) ----

    /// Register a passthrough handle of `oid` whose backing file is `fd`.
    /// The first handle of an object shares its descriptor `fd` (what each
    /// drain fstats, S6.2 item 2; passthrough handles never change their
    /// descriptor); later handles share that entry. `at_open` is the
    /// file's stamp when the caller has just stat'ed it (a create), else it
    /// is fstat'ed here. Returns the ticket to give back at release. On error nothing is tracked and no
    /// release call is needed (the open itself is still counted by
    /// [`open`](Self::open)).
    pub fn track_passthrough(
        &self,
        oid: Oid,
        fd: &Arc<OwnedFd>,
        readable: bool,
        writable: bool,
        at_open: Option<FileStamp>,
    ) -> io::Result<PassthroughTicket> {
        let at_open = match at_open {
            Some(s) => s,
            None => FileStamp::of(fd.as_fd())?,
        };
        let mut map = self.passthrough.lock();
        match map.entry(oid) {
            Entry::Occupied(mut e) => {
                let t = e.get_mut();
                t.refs = t.refs.saturating_add(1);
            }
            Entry::Vacant(v) => {
                v.insert(Tracked {
                    fd: Arc::clone(fd),
                    refs: 1,
                    base: at_open,
                });
            }
        }
        Ok(PassthroughTicket {
            oid,
            readable,
            writable,
            at_open,
        })
    }

    /// Release one passthrough handle: credits the S6.2 item 1 estimate
    /// (sized by `now`, the backing file's fstat at release, or by an fstat
    /// made here when the caller has none) and drops the handle's
    /// reference. Returns the credited `(read_bytes, write_bytes)`.
    pub fn release_passthrough(
        &self,
        ticket: PassthroughTicket,
        now: Option<FileStamp>,
    ) -> (u64, u64) {
        let fd = {
            let mut map = self.passthrough.lock();
            let Some(t) = map.get_mut(&ticket.oid) else {
                return (0, 0);
            };
            let fd = Arc::clone(&t.fd);
            t.refs = t.refs.saturating_sub(1);
            if t.refs == 0 {
                map.remove(&ticket.oid);
            }
            fd
        };
        // If the backing file cannot be stat'ed now, size by the open stamp.
        let now = now
            .or_else(|| FileStamp::of(fd.as_fd()).ok())
            .unwrap_or(ticket.at_open);
        drop(fd);
        let (r, w) = passthrough_release_estimate(
            ticket.readable,
            ticket.writable,
            ticket.at_open.size,
            now.size,
            now.mtime_ns > ticket.at_open.mtime_ns,
            self.config.read_credit_max,
        );
        if r > 0 || w > 0 {
            self.estimate_at(ticket.oid, r, w, wall_clock_ns());
        }
        (r, w)
    }

    /// Number of objects with at least one tracked passthrough handle.
    pub fn passthrough_tracked(&self) -> usize {
        self.passthrough.lock().len()
    }

    /// S6.2 item 2: fstat every tracked backing file; credit reads if its
    /// atime advanced and writes if its mtime advanced since the previous
    /// drain (or since it was tracked). Called by [`drain`](Self::drain)
    /// under `drain_lock`, so baselines are sampled by one drain at a time.
    fn sample_passthrough(&self, now_ns: u64) {
        let snapshot: Vec<(Oid, Arc<OwnedFd>, FileStamp)> = self
            .passthrough
            .lock()
            .iter()
            .map(|(oid, t)| (*oid, Arc::clone(&t.fd), t.base))
            .collect();
        if snapshot.is_empty() {
            return;
        }
        // fstat outside the lock so opens and releases are not held up.
        let sampled: Vec<(Oid, Arc<OwnedFd>, FileStamp, FileStamp)> = snapshot
            .into_iter()
            .filter_map(|(oid, fd, base)| {
                let cur = FileStamp::of(fd.as_fd()).ok()?;
                Some((oid, fd, base, cur))
            })
            .collect();
        {
            let mut map = self.passthrough.lock();
            for (oid, fd, _, cur) in &sampled {
                // Only if it is still the same tracking (not released and re-tracked).
                if let Some(t) = map.get_mut(oid)
                    && Arc::ptr_eq(&t.fd, fd)
                {
                    t.base = *cur;
                }
            }
        }
        for (oid, _, base, cur) in sampled {
            let atime_adv = cur.atime_ns > base.atime_ns;
            let mtime_adv = cur.mtime_ns > base.mtime_ns;
            if !atime_adv && !mtime_adv {
                continue;
            }
            let (r, w) = passthrough_release_estimate(
                atime_adv,
                mtime_adv,
                base.size,
                cur.size,
                mtime_adv,
                self.config.read_credit_max,
            );
            if r == 0 && w == 0 {
                continue;
            }
            let mut at = i128::MIN;
            if atime_adv {
                at = at.max(cur.atime_ns);
            }
            if mtime_adv {
                at = at.max(cur.mtime_ns);
            }
            let at = u64::try_from(at.max(0)).unwrap_or(u64::MAX).min(now_ns);
            self.estimate_at(oid, r, w, at);
        }
    }

    // ---- drain (S6.3) ----

    /// Take every changed object's deltas as records (S6.3 item 1); see
    /// [`Drain`] for delivering them. `now_ns` is the wall clock (ns).
    pub fn drain(&self, now_ns: u64) -> Drain<'_> {
        let _serial = self.drain_lock.lock();
        self.sample_passthrough(now_ns);
        let retention = self.config.idle_retention_ns;
        let mut records = Vec::new();
        let mut undeferred = 0u64;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|oid, c| {
                if !c.dirty {
                    return now_ns.saturating_sub(c.window_start_ns) < retention;
                }
                let opens = c.opens.min(u64::from(u32::MAX));
                records.push(HeatRecord {
                    oid: oid.0,
                    open_count_delta: u32::try_from(opens).unwrap_or(u32::MAX),
                    read_bytes_delta: c.read,
                    write_bytes_delta: c.write,
                    last_access_ns: c.last_access_ns,
                    sample_window_ns: now_ns.saturating_sub(c.window_start_ns),
                });
                // Opens above u32::MAX are carried to the next drain (S6.3 item 2).
                c.opens -= opens;
                c.read = 0;
                c.write = 0;
                c.dirty = c.opens > 0;
                c.window_start_ns = now_ns;
                if c.deferred {
                    c.deferred = false;
                    undeferred += 1;
                }
                true
            });
        }
        if undeferred > 0 {
            self.records_deferred
                .fetch_sub(undeferred, Ordering::Relaxed);
        }
        let chunks = records.len().div_ceil(MAX_RECORDS_PER_EVENT);
        Drain {
            table: self,
            now_ns,
            records,
            states: vec![ChunkState::Pending; chunks],
        }
    }

    /// `drain(now_ns)` then [`Drain::deliver`].
    pub fn drain_and_deliver(
        &self,
        now_ns: u64,
        send: impl FnMut(&[HeatRecord]) -> bool,
    ) -> DrainReport {
        self.drain(now_ns).deliver(send)
    }

    /// Add undelivered records back onto the counters so they go out with
    /// the next drain. Only for records taken by [`drain`](Self::drain) at
    /// `drained_at_ns` and not committed; [`Drain`] guarantees that.
    fn restore(&self, drained_at_ns: u64, records: &[HeatRecord]) {
        let mut newly_deferred = 0u64;
        for r in records {
            let oid = Oid(r.oid);
            let start = drained_at_ns.saturating_sub(r.sample_window_ns);
            let mut map = self.shard(&oid).lock();
            let c = map.entry(oid).or_insert_with(|| Counters::new(start));
            c.opens = c.opens.saturating_add(u64::from(r.open_count_delta));
            c.read = c.read.saturating_add(r.read_bytes_delta);
            c.write = c.write.saturating_add(r.write_bytes_delta);
            c.last_access_ns = c.last_access_ns.max(r.last_access_ns);
            // The next record covers the restored interval too.
            c.window_start_ns = c.window_start_ns.min(start);
            c.dirty = true;
            if !c.deferred {
                c.deferred = true;
                newly_deferred += 1;
            }
        }
        self.records_deferred
            .fetch_add(newly_deferred, Ordering::Relaxed);
    }

    // ---- STATUS counters ----

    /// `heat_records_sent_total`: records in events that reached a subscriber.
    pub fn records_sent_total(&self) -> u64 {
        self.records_sent_total.load(Ordering::Relaxed)
    }

    /// `heat_records_deferred`: objects whose deltas were put back after a
    /// failed delivery and wait for the next drain.
    pub fn records_deferred(&self) -> u64 {
        self.records_deferred.load(Ordering::Relaxed)
    }

    /// `heat_estimated_bytes_total`: bytes credited by passthrough estimates.
    pub fn estimated_bytes_total(&self) -> u64 {
        self.estimated_bytes_total.load(Ordering::Relaxed)
    }

    /// Objects currently in the counter table (changed or recently drained).
    pub fn tracked_objects(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Pending,
    Committed,
    PutBack,
}

/// The records taken by one [`HeatTable::drain`], split into chunks of at
/// most [`MAX_RECORDS_PER_EVENT`] (one HEAT_SAMPLE event each).
///
/// Resolve each chunk exactly once: [`commit`](Self::commit) once its event
/// was written to at least one subscriber, else
/// [`put_back`](Self::put_back). A second resolution of a chunk is ignored.
/// Dropping the drain puts every unresolved chunk back, so deltas are never
/// lost; they are counted twice only if a delivered chunk is not committed.
#[must_use = "deliver each chunk and commit or put it back; dropping puts all back"]
#[derive(Debug)]
pub struct Drain<'a> {
    table: &'a HeatTable,
    now_ns: u64,
    records: Vec<HeatRecord>,
    states: Vec<ChunkState>,
}

/// What [`Drain::deliver`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub records: usize,
    pub events_sent: usize,
    pub records_sent: usize,
    pub events_deferred: usize,
    pub records_deferred: usize,
}

impl Drain<'_> {
    /// The `now_ns` the drain was taken at.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// All records of the drain (in no particular order).
    pub fn records(&self) -> &[HeatRecord] {
        &self.records
    }

    /// Number of chunks (= HEAT_SAMPLE events needed); 0 for an empty drain.
    pub fn chunk_count(&self) -> usize {
        self.states.len()
    }

    /// Chunk `i` (1 to 256 records). Panics if `i >= chunk_count()`.
    pub fn chunk(&self, i: usize) -> &[HeatRecord] {
        assert!(i < self.states.len(), "chunk {i} out of range");
        let start = i * MAX_RECORDS_PER_EVENT;
        let end = (start + MAX_RECORDS_PER_EVENT).min(self.records.len());
        &self.records[start..end]
    }

    pub fn chunks(&self) -> impl Iterator<Item = &[HeatRecord]> {
        self.records.chunks(MAX_RECORDS_PER_EVENT)
    }

    /// Chunk `i` reached a subscriber: its deltas are gone for good and
    /// count into `records_sent_total`. Returns false if already resolved.
    pub fn commit(&mut self, i: usize) -> bool {
        if self.states[i] != ChunkState::Pending {
            return false;
        }
        self.states[i] = ChunkState::Committed;
        let n = self.chunk(i).len() as u64;
        self.table
            .records_sent_total
            .fetch_add(n, Ordering::Relaxed);
        true
    }

    /// Chunk `i` reached no subscriber: add its deltas back onto the
    /// counters for the next drain. Returns false if already resolved.
    pub fn put_back(&mut self, i: usize) -> bool {
        if self.states[i] != ChunkState::Pending {
            return false;
        }
        self.states[i] = ChunkState::PutBack;
        self.table.restore(self.now_ns, self.chunk(i));
        true
    }

    /// Offer each chunk to `send` (true = written to at least one
    /// subscriber) and commit or put it back accordingly.
    pub fn deliver(mut self, mut send: impl FnMut(&[HeatRecord]) -> bool) -> DrainReport {
        let mut report = DrainReport {
            records: self.records.len(),
            ..DrainReport::default()
        };
        for i in 0..self.chunk_count() {
            let n = self.chunk(i).len();
            if send(self.chunk(i)) {
                self.commit(i);
                report.events_sent += 1;
                report.records_sent += n;
            } else {
                self.put_back(i);
                report.events_deferred += 1;
                report.records_deferred += n;
            }
        }
        report
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for i in 0..self.states.len() {
            self.put_back(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::atomic::AtomicBool;

    fn oid(n: u64) -> Oid {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&n.to_be_bytes());
        b[8..16].copy_from_slice(&(!n).to_le_bytes());
        Oid(b)
    }

    fn commit_all(d: Drain<'_>) -> Vec<HeatRecord> {
        let recs = d.records().to_vec();
        let rep = d.deliver(|_| true);
        assert_eq!(rep.records_sent, recs.len());
        recs
    }

    fn only(recs: &[HeatRecord], o: Oid) -> HeatRecord {
        let v: Vec<_> = recs.iter().filter(|r| r.oid == o.0).collect();
        assert_eq!(v.len(), 1, "expected exactly one record for {o}");
        *v[0]
    }

    #[test]
    fn send_sync() {
        fn is<T: Send + Sync>() {}
        is::<HeatTable>();
    }

    #[test]
    fn a2_three_opens_then_nothing() {
        let h = HeatTable::new();
        let o = oid(1);
        for _ in 0..3 {
            h.open(o);
        }
        let recs = commit_all(h.drain(wall_clock_ns()));
        let r = only(&recs, o);
        assert_eq!(r.open_count_delta, 3);
        assert_eq!((r.read_bytes_delta, r.write_bytes_delta), (0, 0));
        assert!(r.last_access_ns > 0);
        assert!(h.drain(wall_clock_ns()).is_empty());
        assert_eq!(h.records_sent_total(), 1);
    }

    #[test]
    fn reads_and_writes_sum_and_last_access_is_latest() {
        let h = HeatTable::new();
        let o = oid(2);
        h.record_at(o, 1, 0, 0, 100);
        h.record_at(o, 0, 10, 0, 300);
        h.record_at(o, 0, 0, 7, 200);
        let recs = commit_all(h.drain(1000));
        let r = only(&recs, o);
        assert_eq!(
            (r.open_count_delta, r.read_bytes_delta, r.write_bytes_delta),
            (1, 10, 7)
        );
        assert_eq!(r.last_access_ns, 300);
        assert_eq!(r.sample_window_ns, 900); // now − first activity
    }

    #[test]
    fn a3_ten_thousand_objects_in_chunks() {
        let h = HeatTable::new();
        for i in 0..10_000 {
            h.open(oid(i));
            h.read(oid(i), 4096);
        }
        let d = h.drain(wall_clock_ns());
        assert_eq!(d.len(), 10_000);
        assert_eq!(d.chunk_count(), 10_000usize.div_ceil(256));
        let mut seen = HashSet::new();
        let mut events = 0;
        let rep = d.deliver(|c| {
            assert!(!c.is_empty() && c.len() <= MAX_RECORDS_PER_EVENT);
            // Each chunk encodes to a valid HEAT_SAMPLE_BLOB.
            let blob = smoothfs_uapi::heat::encode_blob(c);
            assert_eq!(smoothfs_uapi::heat::decode_blob(&blob).unwrap(), c);
            for r in c {
                assert_eq!((r.open_count_delta, r.read_bytes_delta), (1, 4096));
                assert!(seen.insert(r.oid));
            }
            events += 1;
            true
        });
        assert_eq!(seen.len(), 10_000);
        assert_eq!(events, 40);
        assert_eq!(rep.events_sent, 40);
        assert_eq!(h.records_sent_total(), 10_000);
        assert!(h.drain(wall_clock_ns()).is_empty());
        // Idle entries are evicted at the drain after.
        assert_eq!(h.tracked_objects(), 0);
    }

    #[test]
    fn open_count_saturates_and_carries() {
        let h = HeatTable::new();
        let o = oid(3);
        let total = u64::from(u32::MAX) + 5;
        h.record_at(o, total, 1, 0, 50);
        let r = only(&commit_all(h.drain(100)), o);
        assert_eq!(r.open_count_delta, u32::MAX);
        assert_eq!(r.read_bytes_delta, 1);
        // The rest goes out next time even without new activity.
        let r = only(&commit_all(h.drain(200)), o);
        assert_eq!(r.open_count_delta, 5);
        assert_eq!(r.read_bytes_delta, 0);
        assert_eq!(r.sample_window_ns, 100);
        assert!(h.drain(300).is_empty());
    }

    #[test]
    fn saturation_carry_survives_put_back() {
        let h = HeatTable::new();
        let o = oid(4);
        h.record_at(o, u64::from(u32::MAX) + 2, 0, 0, 10);
        drop(h.drain(20)); // nobody took it
        assert_eq!(h.records_deferred(), 1);
        let r = only(&commit_all(h.drain(30)), o);
        assert_eq!(r.open_count_delta, u32::MAX);
        let r = only(&commit_all(h.drain(40)), o);
        assert_eq!(r.open_count_delta, 2);
        assert_eq!(h.records_deferred(), 0);
    }

    #[test]
    fn sample_window_rules() {
        let h = HeatTable::new();
        let o = oid(5);
        // First activity at 1000, drain at 1500: window from first activity.
        h.record_at(o, 1, 0, 0, 1000);
        assert_eq!(only(&commit_all(h.drain(1500)), o).sample_window_ns, 500);
        // Activity before the next drain: window from the previous drain.
        h.record_at(o, 0, 1, 0, 1600);
        let r = only(&commit_all(h.drain(2500)), o);
        assert_eq!(r.sample_window_ns, 1000);
        assert_eq!(r.last_access_ns, 1600);
        // A drain with no activity evicts the entry (idle_retention 0) ...
        assert!(h.drain(3500).is_empty());
        assert_eq!(h.tracked_objects(), 0);
        // ... so the next window starts at the next first activity.
        h.record_at(o, 0, 1, 0, 4000);
        assert_eq!(only(&commit_all(h.drain(4500)), o).sample_window_ns, 500);
        // A clock that went backwards gives 0, not a wrap.
        h.record_at(o, 1, 0, 0, 5000);
        assert_eq!(only(&commit_all(h.drain(4000)), o).sample_window_ns, 0);
    }

    #[test]
    fn idle_retention_keeps_previous_drain_time() {
        let h = HeatTable::with_config(HeatConfig {
            idle_retention_ns: 10_000,
            ..HeatConfig::default()
        });
        let o = oid(6);
        h.record_at(o, 1, 0, 0, 1000);
        commit_all(h.drain(2000));
        assert!(h.drain(5000).is_empty());
        assert_eq!(h.tracked_objects(), 1); // still within retention
        h.record_at(o, 1, 0, 0, 8000);
        assert_eq!(only(&commit_all(h.drain(9000)), o).sample_window_ns, 7000);
        assert!(h.drain(20_000).is_empty());
        assert_eq!(h.tracked_objects(), 0);
    }

    #[test]
    fn put_back_with_concurrent_activity_conserves_sums() {
        let h = HeatTable::new();
        let a = oid(7);
        let b = oid(8);
        h.record_at(a, 2, 100, 10, 1000);
        h.record_at(b, 1, 5, 0, 1100);
        let mut d = h.drain(2000);
        assert_eq!(d.chunk_count(), 1);
        // New activity between drain and put back.
        h.record_at(a, 1, 50, 0, 2100);
        assert!(d.put_back(0));
        assert!(!d.put_back(0)); // a second resolution is ignored
        assert!(!d.commit(0));
        drop(d);
        assert_eq!(h.records_deferred(), 2);
        assert_eq!(h.records_sent_total(), 0);
        let recs = commit_all(h.drain(3000));
        let ra = only(&recs, a);
        assert_eq!(
            (
                ra.open_count_delta,
                ra.read_bytes_delta,
                ra.write_bytes_delta
            ),
            (3, 150, 10)
        );
        assert_eq!(ra.last_access_ns, 2100);
        // The restored window reaches back to a's first activity.
        assert_eq!(ra.sample_window_ns, 2000);
        let rb = only(&recs, b);
        assert_eq!((rb.open_count_delta, rb.read_bytes_delta), (1, 5));
        assert_eq!(rb.sample_window_ns, 1900);
        assert_eq!(h.records_deferred(), 0);
        assert_eq!(h.records_sent_total(), 2);
        assert!(h.drain(4000).is_empty());
    }

    #[test]
    fn put_back_after_eviction_recreates_entry() {
        let h = HeatTable::new();
        let a = oid(9);
        h.record_at(a, 1, 0, 0, 100);
        let d = h.drain(200);
        // A second drain while the first is undelivered evicts the clean entry.
        assert!(h.drain(300).is_empty());
        assert_eq!(h.tracked_objects(), 0);
        drop(d);
        let r = only(&commit_all(h.drain(400)), a);
        assert_eq!(r.open_count_delta, 1);
        assert_eq!(r.sample_window_ns, 300);
    }

    #[test]
    fn deliver_mixed_outcomes() {
        let h = HeatTable::new();
        for i in 0..600 {
            h.read(oid(i), 1);
        }
        let mut k = 0;
        let rep = h.drain_and_deliver(wall_clock_ns(), |_| {
            k += 1;
            k != 2 // the second event reaches nobody
        });
        assert_eq!(rep.records, 600);
        assert_eq!((rep.events_sent, rep.events_deferred), (2, 1));
        assert_eq!(rep.records_deferred, 256);
        assert_eq!(h.records_sent_total(), 344);
        assert_eq!(h.records_deferred(), 256);
        let d = h.drain(wall_clock_ns());
        assert_eq!(d.len(), 256);
        assert_eq!(h.records_deferred(), 0);
        commit_all(d);
        assert_eq!(h.records_sent_total(), 600);
    }

    #[test]
    fn release_estimate_rules() {
        const M: u64 = 1 << 20;
        let max = DEFAULT_READ_CREDIT_MAX;
        // Read-only handle: min(size at release, credit max).
        assert_eq!(
            passthrough_release_estimate(true, false, 5, 2 * M, false, max),
            (2 * M, 0)
        );
        assert_eq!(
            passthrough_release_estimate(true, false, 0, 1 << 30, false, max),
            (64 * M, 0)
        );
        assert_eq!(
            passthrough_release_estimate(true, false, 0, 10 * M, false, 3 * M),
            (3 * M, 0)
        );
        // Write handle: |size change|, growing or shrinking.
        assert_eq!(
            passthrough_release_estimate(false, true, 100, 4196, true, max),
            (0, 4096)
        );
        assert_eq!(
            passthrough_release_estimate(false, true, 4196, 100, true, max),
            (0, 4096)
        );
        // Size changed even though mtime did not look advanced: still |diff|.
        assert_eq!(
            passthrough_release_estimate(false, true, 0, 10, false, max),
            (0, 10)
        );
        // Unchanged size, mtime advanced: min(size, 1 MiB).
        assert_eq!(
            passthrough_release_estimate(false, true, 500, 500, true, max),
            (0, 500)
        );
        assert_eq!(
            passthrough_release_estimate(false, true, 8 * M, 8 * M, true, max),
            (0, M)
        );
        // Unchanged size and mtime: nothing.
        assert_eq!(
            passthrough_release_estimate(false, true, 8 * M, 8 * M, false, max),
            (0, 0)
        );
        // Read-write handle gets both.
        assert_eq!(
            passthrough_release_estimate(true, true, M, 3 * M, true, max),
            (3 * M, 2 * M)
        );
        // Neither readable nor writable (O_PATH-like): nothing.
        assert_eq!(
            passthrough_release_estimate(false, false, 0, M, true, max),
            (0, 0)
        );
    }

    fn set_times(f: &std::fs::File, atime_s: i64, mtime_s: i64) {
        let ts = |s| libc::timespec {
            tv_sec: s,
            tv_nsec: 0,
        };
        crate::sys::futimens(f.as_fd(), &[ts(atime_s), ts(mtime_s)]).unwrap();
    }

    /// A descriptor of `f` as a file handle holds it.
    fn shared(f: &std::fs::File) -> Arc<OwnedFd> {
        Arc::new(OwnedFd::from(f.try_clone().unwrap()))
    }

    fn tmpfile(len: usize) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        f
    }

    #[test]
    fn fstat_credit_at_drain() {
        let now = wall_clock_ns();
        let t0 = (now / 1_000_000_000) as i64 - 1000;
        let f = tmpfile(3 << 20);
        set_times(&f, t0, t0);
        let h = HeatTable::new();
        let o = oid(10);
        h.open(o);
        let ticket = h
            .track_passthrough(o, &shared(&f), true, true, None)
            .unwrap();
        assert_eq!(ticket.at_open().size, 3 << 20);
        // Nothing advanced: only the open.
        let r = only(&commit_all(h.drain(now)), o);
        assert_eq!(
            (r.open_count_delta, r.read_bytes_delta, r.write_bytes_delta),
            (1, 0, 0)
        );
        assert!(h.drain(now).is_empty());

        // atime advanced: read credit = min(size, 64 MiB).
        set_times(&f, t0 + 10, t0);
        let r = only(&commit_all(h.drain(now)), o);
        assert_eq!(
            (r.open_count_delta, r.read_bytes_delta, r.write_bytes_delta),
            (0, 3 << 20, 0)
        );
        assert_eq!(r.last_access_ns, (t0 as u64 + 10) * 1_000_000_000);
        assert!(h.drain(now).is_empty()); // baseline moved on

        // mtime advanced with the size grown by 4096: write credit 4096.
        f.set_len((3 << 20) + 4096).unwrap();
        set_times(&f, t0 + 10, t0 + 20);
        let r = only(&commit_all(h.drain(now)), o);
        assert_eq!((r.read_bytes_delta, r.write_bytes_delta), (0, 4096));

        // mtime advanced, size unchanged: min(size, 1 MiB).
        set_times(&f, t0 + 10, t0 + 30);
        let r = only(&commit_all(h.drain(now)), o);
        assert_eq!((r.read_bytes_delta, r.write_bytes_delta), (0, 1 << 20));

        // Both advanced.
        set_times(&f, t0 + 40, t0 + 40);
        let r = only(&commit_all(h.drain(now)), o);
        assert_eq!(
            (r.read_bytes_delta, r.write_bytes_delta),
            ((3 << 20) + 4096, 1 << 20)
        );

        // A timestamp in the future is clamped to the drain time.
        set_times(&f, t0 + 1_000_000, t0 + 40);
        let r = only(&commit_all(h.drain(now)), o);
        assert_eq!(r.last_access_ns, now);

        const M: u64 = 1 << 20;
        let grown = 3 * M + 4096;
        // atime; growth; unchanged size; both; future atime.
        let est = 3 * M + 4096 + M + (grown + M) + grown;
        assert_eq!(h.estimated_bytes_total(), est);
        drop(ticket);
    }

    #[test]
    fn passthrough_refcount_and_release_estimate() {
        let f = tmpfile(2 << 20);
        let h = HeatTable::new();
        let o = oid(11);
        // Two handles share one entry: a reader and a writer.
        let rd = h
            .track_passthrough(o, &shared(&f), true, false, None)
            .unwrap();
        let wr = h
            .track_passthrough(o, &shared(&f), false, true, None)
            .unwrap();
        assert_eq!(h.passthrough_tracked(), 1);
        // The writer appends 1000 bytes.
        (&f).write_all(&[1u8; 1000]).unwrap();
        assert_eq!(h.release_passthrough(wr, None), (0, 1000));
        assert_eq!(h.passthrough_tracked(), 1);
        // The reader: min(size at release, 64 MiB) — A4's 2 MiB cat.
        assert_eq!(h.release_passthrough(rd, None), ((2 << 20) + 1000, 0));
        assert_eq!(h.passthrough_tracked(), 0);
        let r = only(&commit_all(h.drain(wall_clock_ns())), o);
        assert_eq!(
            (r.read_bytes_delta, r.write_bytes_delta),
            ((2 << 20) + 1000, 1000)
        );
        assert!(r.read_bytes_delta >= 2_097_152);
        assert_eq!(h.estimated_bytes_total(), (2 << 20) + 2000);

        // Unchanged size but mtime advanced at release: min(size, 1 MiB).
        let t = h
            .track_passthrough(o, &shared(&f), false, true, None)
            .unwrap();
        let at = t.at_open();
        let s = (at.mtime_ns / 1_000_000_000) as i64 + 5;
        set_times(&f, s, s);
        assert_eq!(h.release_passthrough(t, None), (0, 1 << 20));
        // Unchanged size and mtime, write-only: no credit, no record.
        let t = h
            .track_passthrough(o, &shared(&f), false, true, None)
            .unwrap();
        assert_eq!(h.release_passthrough(t, None), (0, 0));
        let r = only(&commit_all(h.drain(wall_clock_ns())), o);
        assert_eq!((r.open_count_delta, r.write_bytes_delta), (0, 1 << 20));
        assert!(h.drain(wall_clock_ns()).is_empty());
    }

    #[test]
    fn estimated_counts_into_same_fields() {
        let h = HeatTable::new();
        let o = oid(12);
        h.read(o, 10);
        h.estimated_read(o, 20);
        h.write(o, 1);
        h.estimated_write(o, 2);
        let r = only(&commit_all(h.drain(wall_clock_ns())), o);
        assert_eq!((r.read_bytes_delta, r.write_bytes_delta), (30, 3));
        assert_eq!(h.estimated_bytes_total(), 22);
    }

    #[test]
    fn concurrent_reads_and_drains_conserve_totals() {
        const THREADS: u64 = 4;
        const OPS: u64 = 50_000;
        let h = HeatTable::new();
        let done = AtomicBool::new(false);
        let drains = AtomicU64::new(0);
        let (mut got_bytes, mut got_opens) = (0u64, 0u64);
        let mut expect_bytes = 0u64;
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (h, drains) = (&h, &drains);
                    s.spawn(move || {
                        let mut sum = 0u64;
                        for i in 0..OPS {
                            if i == OPS / 2 {
                                // Make sure drains really interleave with the reads.
                                let seen = drains.load(Ordering::Acquire);
                                while drains.load(Ordering::Acquire) < seen + 3 {
                                    std::thread::yield_now();
                                }
                            }
                            let o = oid((i * 7 + t) % 1000);
                            let n = (i * 31 + t) % 8192;
                            if i % 16 == 0 {
                                h.open(o);
                            }
                            h.read(o, n);
                            sum += n;
                        }
                        sum
                    })
                })
                .collect();
            let drainer = s.spawn(|| {
                let (mut bytes, mut opens, mut k) = (0u64, 0u64, 0u64);
                while !done.load(Ordering::Acquire) {
                    // Every third event reaches nobody and is put back.
                    h.drain_and_deliver(wall_clock_ns(), |c| {
                        k += 1;
                        if k % 3 == 0 {
                            return false;
                        }
                        for r in c {
                            bytes += r.read_bytes_delta;
                            opens += u64::from(r.open_count_delta);
                        }
                        true
                    });
                    drains.fetch_add(1, Ordering::Release);
                    std::thread::yield_now();
                }
                (bytes, opens)
            });
            for w in workers {
                expect_bytes += w.join().unwrap();
            }
            done.store(true, Ordering::Release);
            (got_bytes, got_opens) = drainer.join().unwrap();
        });
        // Final drains pick up whatever was put back or arrived last.
        loop {
            let recs = commit_all(h.drain(wall_clock_ns()));
            if recs.is_empty() {
                break;
            }
            for r in recs {
                got_bytes += r.read_bytes_delta;
                got_opens += u64::from(r.open_count_delta);
            }
        }
        assert_eq!(got_bytes, expect_bytes);
        assert_eq!(got_opens, THREADS * OPS / 16);
        assert_eq!(h.records_deferred(), 0);
        assert_eq!(h.tracked_objects(), 0);
    }
}
