//! Runtime state of objects that are open, moving or pinned in memory:
//! the drain lock, write_seq and cutover generation of S11, the handle
//! counts of S13.1, the volatile lease pin of S8.3 and the in-flight move.
//!
//! Invariants:
//! - An object with handles open, a movement in flight (state not `placed`),
//!   a lease pin or the `no_passthrough` flag stays in the table; anything
//!   else may be evicted by [`Live::sweep`].
//! - write_seq values are never reused for one object within a mount: an
//!   evicted object's last value raises the table's floor, and a re-created
//!   entry starts at the floor (S11.3 item 3).
//! - Lock order: `LiveObj::mv` before `LiveObj::io`; the drain lock is
//!   taken before either when both are needed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::oid::Oid;
use crate::placement::state;

/// The movement in flight for one object, as the data plane holds it (S9.2).
#[derive(Clone, Debug)]
pub struct MoveState {
    pub state: u8,
    /// Destination rank while a plan is in flight.
    pub intended: u8,
    /// Rank the move started from.
    pub source: u8,
    pub seq: u64,
    pub force: bool,
    /// Where the source copy was at the switch (for cleanup).
    pub source_rel: Option<OsString>,
    pub switched_at: Option<Instant>,
    /// Seq of the last completed cleanup (MOVE_CLEANUP is idempotent per seq).
    pub cleaned_seq: u64,
    /// A metadata change (mode, owner, times, xattrs, inode flags) reached
    /// the source after the plan: the staging copy may lack it, so the
    /// cutover refuses (S11.3 counts data changes only in write_seq).
    pub meta_changed: bool,
}

impl Default for MoveState {
    fn default() -> MoveState {
        MoveState {
            state: state::PLACED,
            intended: 0,
            source: 0,
            seq: 0,
            force: false,
            source_rel: None,
            switched_at: None,
            cleaned_seq: 0,
            meta_changed: false,
        }
    }
}

/// Open handle counts of one inode (S13.1 item 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub passthrough: u32,
    pub mediated: u32,
}

pub struct LiveObj {
    pub ino: u64,
    pub oid: Oid,
    /// Shared by data-changing operations on mediated handles, exclusive
    /// for the cutover switch (S11.3). parking_lot's lock is task-fair: a
    /// waiting cutover holds back new writers, which wait rather than fail.
    pub drain: RwLock<()>,
    pub write_seq: AtomicU64,
    /// Bumped by each cutover; mediated handles opened at an older value
    /// reissue their lower descriptor (S11.5).
    pub cutover_gen: AtomicU32,
    /// REVOKE_MAPPINGS (S13.3): later opens are mediated.
    pub no_passthrough: AtomicBool,
    /// The volatile `pin_lease` (S8.3 item 2).
    pub lease: AtomicBool,
    pub mv: Mutex<MoveState>,
    pub io: Mutex<IoCounts>,
}

impl LiveObj {
    fn new(ino: u64, oid: Oid, write_seq: u64) -> LiveObj {
        LiveObj {
            ino,
            oid,
            drain: RwLock::new(()),
            write_seq: AtomicU64::new(write_seq),
            cutover_gen: AtomicU32::new(0),
            no_passthrough: AtomicBool::new(false),
            lease: AtomicBool::new(false),
            mv: Mutex::new(MoveState::default()),
            io: Mutex::new(IoCounts::default()),
        }
    }

    pub fn state(&self) -> u8 {
        self.mv.lock().state
    }

    pub fn counts(&self) -> IoCounts {
        *self.io.lock()
    }

    /// A data-changing operation completed (S11.3 item 3).
    pub fn wrote(&self) {
        self.write_seq.fetch_add(1, Ordering::AcqRel);
    }

    /// A metadata change completed on the current lower, under the drain
    /// lock held shared: a move planned but not yet switched must not cut
    /// over to a copy made before it.
    pub fn meta_changed(&self) {
        let mut mv = self.mv.lock();
        if matches!(mv.state, state::PLAN_ACCEPTED | state::CUTOVER_IN_PROGRESS) {
            mv.meta_changed = true;
        }
    }

    fn evictable(&self) -> bool {
        let io = self.io.lock();
        io.passthrough == 0
            && io.mediated == 0
            && !self.lease.load(Ordering::Relaxed)
            && !self.no_passthrough.load(Ordering::Relaxed)
            && self.mv.lock().state == state::PLACED
    }
}

/// The table of live objects, keyed by inode number (= node id).
#[derive(Default)]
pub struct Live {
    objs: Mutex<HashMap<u64, Arc<LiveObj>>>,
    /// Highest write_seq of any evicted object.
    floor: AtomicU64,
    /// Cutover generations of evicted objects that have moved in this mount,
    /// so GENERATION keeps counting across eviction (S9.4 A1).
    gens: Mutex<HashMap<u64, u32>>,
}

impl Live {
    pub fn get(&self, ino: u64) -> Option<Arc<LiveObj>> {
        self.objs.lock().get(&ino).cloned()
    }

    pub fn get_or_create(&self, ino: u64, oid: Oid) -> Arc<LiveObj> {
        let mut objs = self.objs.lock();
        if let Some(o) = objs.get(&ino)
            && o.oid == oid
        {
            return Arc::clone(o);
        }
        let o = Arc::new(LiveObj::new(ino, oid, self.floor.load(Ordering::Acquire)));
        if let Some(g) = self.gens.lock().get(&ino) {
            o.cutover_gen.store(*g, Ordering::Release);
        }
        objs.insert(ino, Arc::clone(&o));
        o
    }

    /// Every live object (for RECONCILE and the cleanup timer).
    pub fn all(&self) -> Vec<Arc<LiveObj>> {
        self.objs.lock().values().cloned().collect()
    }

    /// The write_seq a re-created entry starts at.
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.objs.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop entries that hold nothing worth keeping; returns how many.
    pub fn sweep(&self) -> usize {
        let mut objs = self.objs.lock();
        let before = objs.len();
        objs.retain(|_, o| {
            if Arc::strong_count(o) > 1 || !o.evictable() {
                return true;
            }
            self.retire(o);
            false
        });
        before - objs.len()
    }

    /// Evict one entry if it is evictable (called at the last release).
    pub fn maybe_evict(&self, ino: u64) {
        let mut objs = self.objs.lock();
        if let Some(o) = objs.get(&ino)
            && Arc::strong_count(o) == 1
            && o.evictable()
        {
            self.retire(o);
            objs.remove(&ino);
        }
    }

    fn retire(&self, o: &LiveObj) {
        self.floor
            .fetch_max(o.write_seq.load(Ordering::Acquire), Ordering::AcqRel);
        let g = o.cutover_gen.load(Ordering::Acquire);
        if g > 0 {
            self.gens.lock().insert(o.ino, g);
        }
    }

    /// Objects with a movement in flight.
    pub fn moving(&self) -> usize {
        self.objs
            .lock()
            .values()
            .filter(|o| o.mv.lock().state != state::PLACED)
            .count()
    }

    /// Sum of handle counts over the pool (STATUS).
    pub fn totals(&self) -> IoCounts {
        let objs = self.objs.lock();
        let mut t = IoCounts::default();
        for o in objs.values() {
            let c = o.counts();
            t.passthrough += c.passthrough;
            t.mediated += c.mediated;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_seq_is_never_reused_across_eviction() {
        let live = Live::default();
        let oid = Oid([7; 16]);
        let o = live.get_or_create(5, oid);
        o.wrote();
        o.wrote();
        assert_eq!(o.write_seq.load(Ordering::Relaxed), 2);
        o.cutover_gen.store(3, Ordering::Relaxed);
        drop(o);
        live.maybe_evict(5);
        assert!(live.get(5).is_none());
        let o = live.get_or_create(5, oid);
        assert_eq!(o.write_seq.load(Ordering::Relaxed), 2);
        o.wrote();
        assert_eq!(o.write_seq.load(Ordering::Relaxed), 3);
        assert_eq!(o.cutover_gen.load(Ordering::Relaxed), 3, "generation kept");
    }

    #[test]
    fn busy_objects_are_kept() {
        let live = Live::default();
        let a = live.get_or_create(1, Oid([1; 16]));
        a.io.lock().mediated = 1;
        let b = live.get_or_create(2, Oid([2; 16]));
        b.mv.lock().state = state::PLAN_ACCEPTED;
        let c = live.get_or_create(3, Oid([3; 16]));
        c.lease.store(true, Ordering::Relaxed);
        live.get_or_create(4, Oid([4; 16]));
        drop((a, b, c));
        assert_eq!(live.sweep(), 1);
        assert_eq!(live.len(), 3);
    }
}
