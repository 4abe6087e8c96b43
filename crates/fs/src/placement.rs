//! The placement facade the namespace uses (SPEC S3.5, S4): every identity
//! or movement change goes through here, is appended to the journal and
//! applied to the identity index in the same seq order, and is durable
//! before the call returns when S4.2 says it must be.
//!
//! Owns replay at open (S4.3: apply the tail after the checkpoint, then
//! normalise unfinished moves), the group-commit flusher thread, and the
//! checkpoint schedule (S4.5). It never touches a lower file: when replay
//! decides a copy or a staging file must go, it says so in [`Normalised`]
//! and the namespace, which owns the tier descriptors, removes it.
//!
//! Lock order: `order` (serialises append + apply so the index sees records
//! in seq order) before the journal's internal locks. `fdatasync` for a
//! synchronous record happens after `order` is released, so one sync can
//! cover the records of many concurrent callers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::err;
use crate::error::Result;
pub use crate::index::{AttrSnapshot, ObjectRec, kind};
use crate::index::{Commit, Index, IndexSnapshot};
use crate::journal::{Journal, NO_SLOT, Record};
use crate::oid::Oid;

/// Movement states (SPEC S9.1). Kept local until the uapi ids settle; the
/// numbers are the wire's and must not change.
pub mod state {
    pub const PLACED: u8 = 0;
    pub const PLAN_ACCEPTED: u8 = 1;
    pub const DESTINATION_RESERVED: u8 = 2;
    pub const COPY_IN_PROGRESS: u8 = 3;
    pub const COPY_COMPLETE: u8 = 4;
    pub const COPY_VERIFIED: u8 = 5;
    pub const CUTOVER_IN_PROGRESS: u8 = 6;
    pub const SWITCHED: u8 = 7;
    pub const CLEANUP_IN_PROGRESS: u8 = 8;
    pub const CLEANUP_COMPLETE: u8 = 9;
    pub const FAILED: u8 = 10;
    pub const STALE: u8 = 11;

    /// States in which the destination copy is authoritative.
    pub fn is_past_switch(s: u8) -> bool {
        matches!(s, SWITCHED | CLEANUP_IN_PROGRESS | CLEANUP_COMPLETE)
    }

    pub fn name(s: u8) -> &'static str {
        match s {
            PLACED => "placed",
            PLAN_ACCEPTED => "plan_accepted",
            DESTINATION_RESERVED => "destination_reserved",
            COPY_IN_PROGRESS => "copy_in_progress",
            COPY_COMPLETE => "copy_complete",
            COPY_VERIFIED => "copy_verified",
            CUTOVER_IN_PROGRESS => "cutover_in_progress",
            SWITCHED => "switched",
            CLEANUP_IN_PROGRESS => "cleanup_in_progress",
            CLEANUP_COMPLETE => "cleanup_complete",
            FAILED => "failed",
            STALE => "stale",
            _ => "unknown",
        }
    }
}

/// Group-committed records are synced at least this often (S4.2 item 2).
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_millis(1000);
/// ... or at once when this many are pending.
pub const GROUP_COMMIT_MAX_PENDING: u64 = 8192;
/// A checkpoint is taken after this many records ... (S4.5 item 1)
pub const CHECKPOINT_RECORDS: u64 = 256;
/// ... or this long after the last one, whichever comes first.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Checkpoints taken on the record count are light (the index committed
/// without fsync); a durable one, which also syncs the journal, appends
/// CHECKPOINT and compacts, follows at most this long after a light one.
/// Replay after a crash is then bounded by the records of this interval
/// plus [`CHECKPOINT_RECORDS`] -- well inside S4.5/A2's 60 s + 256 -- while
/// a create or unlink storm costs one index fsync a second, not one per
/// 256 records (each of which is a commit of the tier's own filesystem
/// journal, which the storm's operations then wait behind).
pub const DURABLE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(1000);
/// At a checkpoint the active segment is closed (so it can be deleted)
/// once it holds more than this; keeps the journal after a clean unmount
/// to one small segment (S4.5/A1).
pub const CHECKPOINT_ROTATE_BYTES: u64 = 512 << 10;
/// Records applied per index transaction during replay.
const REPLAY_BATCH: usize = 4096;
const JOURNAL_DIR: &str = "journal";
const INDEX_DIR: &str = "index";

/// What open found and did (S4.3 item 5, S4.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub records_applied: u64,
    pub normalised: Vec<Normalised>,
    pub torn_tail_truncations: u64,
    pub corrupt_records: u64,
    pub degraded: bool,
    /// Directory renames whose last record does not cover every tier
    /// (`done_mask != tier_mask`): the namespace finishes them on the tiers
    /// still holding `old_path` (S2.5 item 4).
    pub unfinished_dir_renames: Vec<UnfinishedDirRename>,
}

/// One unfinished move resolved by replay (S4.3 table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalised {
    pub oid: Oid,
    pub rel_path: String,
    /// The last journaled state.
    pub from_state: u8,
    /// Slot the object is now placed on (for `stale`: where it last was).
    pub placed_slot: u8,
    /// The copy on this slot at `rel_path` that carries this OID must be
    /// removed by the caller.
    pub remove_slot: Option<u8>,
    /// The staging file of this object must be removed by the caller.
    pub remove_staging: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedDirRename {
    pub oid: Oid,
    pub tier_mask: u16,
    pub done_mask: u16,
    pub old_path: String,
    pub new_path: String,
}

/// Counters for STATUS (S4.3 item 5, S4.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlacementCounters {
    pub torn_tail_truncations: u64,
    pub corrupt_records: u64,
    pub degraded: bool,
    pub replay_records: u64,
    pub replay_normalised: u64,
    /// Records appended by this instance (normalisation included).
    pub records_written: u64,
    /// Checkpoints taken, light and durable.
    pub checkpoints: u64,
    /// Of those, durable ones (journal synced, CHECKPOINT appended,
    /// covered segments deleted).
    pub durable_checkpoints: u64,
    /// Background syncs or checkpoints that failed (logged).
    pub flusher_errors: u64,
}

/// The outcome the S4.3 table prescribes for an object found in `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Placed {
        slot: u8,
        remove_slot: Option<u8>,
        remove_staging: bool,
    },
    Tombstoned,
}

/// S4.3 item 2. `slot` is the index's authoritative slot, `intended` the
/// move's destination, `source` the slot the move started from.
pub fn resolve_unfinished(from: u8, slot: u8, intended: u8, source: u8) -> Resolution {
    let other = |s: u8, placed: u8| (s != NO_SLOT && s != placed).then_some(s);
    match from {
        state::CUTOVER_IN_PROGRESS => {
            // Roll back: the write_seq check may not have run.
            let placed = if source != NO_SLOT { source } else { slot };
            Resolution::Placed {
                slot: placed,
                remove_slot: other(intended, placed),
                remove_staging: true,
            }
        }
        state::SWITCHED | state::CLEANUP_IN_PROGRESS => {
            let placed = if intended != NO_SLOT { intended } else { slot };
            Resolution::Placed {
                slot: placed,
                remove_slot: other(source, placed),
                remove_staging: false,
            }
        }
        state::CLEANUP_COMPLETE => {
            let placed = if intended != NO_SLOT { intended } else { slot };
            Resolution::Placed {
                slot: placed,
                remove_slot: None,
                remove_staging: false,
            }
        }
        state::STALE => Resolution::Tombstoned,
        // plan_accepted, 2-5, failed, and any unknown state (decoded as
        // failed, S9.1): back to placed where the object is.
        _ => Resolution::Placed {
            slot,
            remove_slot: None,
            remove_staging: true,
        },
    }
}

#[derive(Default)]
struct Counters {
    torn_tail_truncations: AtomicU64,
    corrupt_records: AtomicU64,
    degraded: AtomicBool,
    replay_records: AtomicU64,
    replay_normalised: AtomicU64,
    records_written: AtomicU64,
    checkpoints: AtomicU64,
    durable_checkpoints: AtomicU64,
    flusher_errors: AtomicU64,
}

struct Order {
    /// Records since the last checkpoint, light or durable.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Records since the last durable checkpoint, and when it was taken.
    /// More records since it than since the last checkpoint of any kind
    /// means a light one (or a failed durable one) came in between.
    since_durable: u64,
    last_durable: Instant,
}

#[derive(Default)]
struct FlusherCtl {
    stop: bool,
}

struct Shared {
    journal: Journal,
    index: Index,
    order: Mutex<Order>,
    /// One checkpoint at a time.
    checkpoint_lock: Mutex<()>,
    ctl: Mutex<FlusherCtl>,
    wake: Condvar,
    kicked: AtomicBool,
    /// When the flusher last synced the journal (group commit, S4.2).
    last_sync: Mutex<Instant>,
    /// Set when a record reached the journal but not the index: checkpoints
    /// are refused from then on, so the next open replays it.
    index_diverged: AtomicBool,
    counters: Counters,
}

/// The journal + index pair. `Send + Sync`; every method takes `&self`.
pub struct Placement {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    /// `simulate_crash` skips the final sync in Drop.
    crashed: bool,
}

impl Placement {
    /// Opens journal and index under `<meta>/.smoothfs`, replays the tail
    /// after the checkpoint, normalises unfinished moves (appending MOVE
    /// `placed` records), checkpoints, and starts the flusher thread.
    pub fn open(
        meta_smoothfs_dir: &Path,
        pool_uuid: [u8; 16],
    ) -> Result<(Placement, ReplayReport)> {
        let index = Index::open(&meta_smoothfs_dir.join(INDEX_DIR))?;
        let checkpoint_seq = index.checkpoint_seq()?;
        let mut batch: Vec<Record> = Vec::with_capacity(REPLAY_BATCH);
        let mut applied = 0u64;
        let mut dir_renames: HashMap<Oid, UnfinishedDirRename> = HashMap::new();
        let started = Instant::now();
        let (journal, scan) = Journal::open(
            &meta_smoothfs_dir.join(JOURNAL_DIR),
            pool_uuid,
            checkpoint_seq + 1,
            |seq, rec| {
                // CHECKPOINT records change nothing in the index.
                if seq <= checkpoint_seq || matches!(rec, Record::Checkpoint { .. }) {
                    return Ok(());
                }
                if let Record::DirRename {
                    oid,
                    tier_mask,
                    done_mask,
                    old_path,
                    new_path,
                } = &rec
                {
                    if (done_mask & tier_mask) == *tier_mask {
                        dir_renames.remove(oid);
                    } else {
                        dir_renames.insert(
                            *oid,
                            UnfinishedDirRename {
                                oid: *oid,
                                tier_mask: *tier_mask,
                                done_mask: *done_mask,
                                old_path: old_path.clone(),
                                new_path: new_path.clone(),
                            },
                        );
                    }
                }
                batch.push(rec);
                applied += 1;
                if batch.len() >= REPLAY_BATCH {
                    index.apply_batch(batch.iter())?;
                    batch.clear();
                }
                Ok(())
            },
        )?;
        index.apply_batch(batch.iter())?;
        drop(batch);

        let shared = Arc::new(Shared {
            journal,
            index,
            order: Mutex::new(Order {
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                since_durable: 0,
                last_durable: Instant::now(),
            }),
            checkpoint_lock: Mutex::new(()),
            ctl: Mutex::new(FlusherCtl::default()),
            wake: Condvar::new(),
            kicked: AtomicBool::new(false),
            last_sync: Mutex::new(Instant::now()),
            index_diverged: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let c = &shared.counters;
        c.torn_tail_truncations
            .store(scan.torn_tail_truncations, Ordering::Relaxed);
        c.corrupt_records
            .store(scan.corrupt_records, Ordering::Relaxed);
        c.degraded.store(scan.degraded, Ordering::Relaxed);
        c.replay_records.store(applied, Ordering::Relaxed);

        let normalised = shared.normalise()?;
        c.replay_normalised
            .store(normalised.len() as u64, Ordering::Relaxed);
        if applied > 0 || !normalised.is_empty() || scan.torn_tail_truncations > 0 || scan.degraded
        {
            shared.checkpoint(true)?;
        }
        let mut unfinished_dir_renames: Vec<_> = dir_renames.into_values().collect();
        unfinished_dir_renames.sort_by_key(|a| a.oid);
        tracing::info!(
            records_applied = applied,
            normalised = normalised.len(),
            torn_tail_truncations = scan.torn_tail_truncations,
            corrupt_records = scan.corrupt_records,
            degraded = scan.degraded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "placement journal replayed"
        );
        let report = ReplayReport {
            records_applied: applied,
            normalised,
            torn_tail_truncations: scan.torn_tail_truncations,
            corrupt_records: scan.corrupt_records,
            degraded: scan.degraded,
            unfinished_dir_renames,
        };

        let for_thread = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("smoothfs-journal".into())
            .spawn(move || for_thread.flusher_loop())
            .map_err(|e| crate::error::Error::io("spawn journal flusher thread", e))?;
        Ok((
            Placement {
                shared,
                flusher: Some(flusher),
                crashed: false,
            },
            report,
        ))
    }

    pub fn get(&self, oid: &Oid) -> Option<ObjectRec> {
        logged(self.shared.index.get(oid))
    }

    /// Up to `limit` objects in OID order after `after` (LIST_OBJECTS).
    pub fn list_objects(&self, after: Option<[u8; 16]>, limit: usize) -> Result<Vec<ObjectRec>> {
        self.shared.index.list_objects(after, limit)
    }

    pub fn by_path(&self, rel_path: &str) -> Option<ObjectRec> {
        logged(self.shared.index.by_path(rel_path))
    }

    pub fn by_ino(&self, ino: u64) -> Option<ObjectRec> {
        logged(self.shared.index.by_ino(ino))
    }

    pub fn by_lower(&self, slot: u8, lower_ino: u64) -> Option<ObjectRec> {
        logged(self.shared.index.by_lower(slot, lower_ino))
    }

    /// Generation of a tombstoned OID.
    pub fn tombstone(&self, oid: &Oid) -> Option<u32> {
        logged(self.shared.index.tombstone(oid))
    }

    /// Entries of a directory ("" is the root) as (name, object); each
    /// object's `rel_path` is its primary name, which for a hard link may
    /// be in another directory.
    pub fn children(&self, dir_rel_path: &str) -> Vec<(String, ObjectRec)> {
        match self.shared.index.children(dir_rel_path) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(dir = dir_rel_path, error = %e, "identity index read failed");
                Vec::new()
            }
        }
    }

    /// PLACED: a create or a discovery (group commit). Upserts: for a known
    /// OID it refreshes gen, kind, slot, lower inode and pins and makes
    /// `rec.rel_path` the primary name; movement state is left alone. Also
    /// stores `rec.attrs` (not journaled). Clears a tombstone of this OID.
    pub fn placed(&self, rec: &ObjectRec) -> Result<()> {
        check_path(&rec.rel_path)?;
        let r = Record::Placed {
            oid: rec.oid,
            gen_: rec.r#gen,
            kind: rec.kind,
            slot: rec.slot,
            policy_pin: rec.policy_pin,
            protocol_pin: rec.protocol_pin,
            always_mediated: rec.always_mediated,
            lower_ino: rec.lower_ino,
            path: rec.rel_path.clone(),
        };
        self.shared.record(r, Some(&rec.attrs)).map(|_| ())
    }

    /// LINK: a new name for an object (group commit).
    pub fn link(&self, oid: &Oid, new_path: &str) -> Result<()> {
        check_path(new_path)?;
        self.shared
            .record(
                Record::Link {
                    oid: *oid,
                    path: new_path.to_string(),
                },
                None,
            )
            .map(|_| ())
    }

    /// UNLINK (group commit); `remaining_links == 0` tombstones the OID
    /// with `gen`.
    pub fn unlink(&self, oid: &Oid, gen_: u32, remaining_links: u32, path: &str) -> Result<()> {
        check_path(path)?;
        let r = Record::Unlink {
            oid: *oid,
            gen_,
            remaining_links,
            path: path.to_string(),
        };
        self.shared.record(r, None).map(|_| ())
    }

    /// RENAME; synchronous iff it replaces another object, which loses the
    /// name `new` (and is tombstoned when that was its last known name).
    /// Renaming a directory rewrites its descendants' paths.
    pub fn rename(&self, oid: &Oid, replaced: Option<&Oid>, old: &str, new: &str) -> Result<()> {
        check_path(old)?;
        check_path(new)?;
        let r = Record::Rename {
            oid: *oid,
            replaced: replaced.copied(),
            old_path: old.into(),
            new_path: new.into(),
        };
        self.shared.record(r, None).map(|_| ())
    }

    /// DIR_RENAME (synchronous); rewrites every descendant's path.
    pub fn dir_rename(
        &self,
        oid: &Oid,
        tier_mask: u16,
        done_mask: u16,
        old: &str,
        new: &str,
    ) -> Result<()> {
        check_path(old)?;
        check_path(new)?;
        let r = Record::DirRename {
            oid: *oid,
            tier_mask,
            done_mask,
            old_path: old.into(),
            new_path: new.into(),
        };
        self.shared.record(r, None).map(|_| ())
    }

    /// GEN (synchronous).
    pub fn set_gen(&self, oid: &Oid, gen_: u32) -> Result<()> {
        self.shared
            .record(Record::Gen { oid: *oid, gen_ }, None)
            .map(|_| ())
    }

    /// PIN (synchronous). The index keeps only `pin_lun` of the protocol
    /// pins; `pin_lease` is the caller's in-memory state (S8.3).
    pub fn set_pin(
        &self,
        oid: &Oid,
        policy_pin: u8,
        protocol_pin: u8,
        always_mediated: bool,
    ) -> Result<()> {
        let r = Record::Pin {
            oid: *oid,
            policy_pin,
            protocol_pin,
            always_mediated,
        };
        self.shared.record(r, None).map(|_| ())
    }

    /// MOVE (synchronous). `current_slot` is where the object is at this
    /// state; from `switched` on the index treats `intended_slot` as the
    /// authoritative copy (and forgets the lower inode until the namespace
    /// records the destination's with [`Placement::placed`]).
    pub fn move_state(
        &self,
        oid: &Oid,
        state: u8,
        current_slot: u8,
        intended_slot: u8,
        txn_seq: u64,
        reason: &str,
    ) -> Result<()> {
        let r = Record::Move {
            oid: *oid,
            state,
            current_slot,
            intended_slot,
            transaction_seq: txn_seq,
            reason: reason.to_string(),
        };
        self.shared.record(r, None).map(|_| ())
    }

    /// STAGE (synchronous): kind 1 write-staged rehome, 2 range-staged,
    /// 0 cleared (S14).
    pub fn stage(&self, oid: &Oid, kind: u8, source_slot: u8) -> Result<()> {
        self.shared
            .record(
                Record::Stage {
                    oid: *oid,
                    kind,
                    source_slot,
                },
                None,
            )
            .map(|_| ())
    }

    /// (stage kind, source slot) of a staged object.
    pub fn staged(&self, oid: &Oid) -> Option<(u8, u8)> {
        logged(self.shared.index.staged(oid))
    }

    /// Refreshes the attribute snapshot; not journaled, best effort.
    pub fn update_attrs(&self, oid: &Oid, attrs: AttrSnapshot) {
        if let Err(e) = self.shared.index.set_attrs(oid, &attrs) {
            tracing::warn!(%oid, error = %e, "attribute snapshot not stored");
        }
    }

    /// The scrub's resume point (S4.6).
    pub fn scrub_cursor(&self) -> Option<Vec<u8>> {
        logged(self.shared.index.scrub_cursor())
    }

    pub fn set_scrub_cursor(&self, cursor: &[u8]) -> Result<()> {
        self.shared.index.set_scrub_cursor(cursor)
    }

    /// Makes every record appended so far durable (fsync through the
    /// mount, syncfs, unmount).
    pub fn sync(&self) -> Result<()> {
        self.shared.journal.sync()
    }

    /// Commits the index durably, appends CHECKPOINT and deletes the
    /// segments it covers. Also runs on its own: light after 256 records,
    /// durable within [`DURABLE_CHECKPOINT_INTERVAL`] of a light one or 60 s
    /// after the last record.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.checkpoint(true)
    }

    /// A light checkpoint now (the index committed without fsync), as the
    /// flusher takes after 256 records. For tests.
    #[doc(hidden)]
    pub fn light_checkpoint(&self) -> Result<()> {
        self.shared.checkpoint(false)
    }

    /// Seq of the last record appended.
    pub fn journal_seq(&self) -> u64 {
        self.shared.journal.last_seq()
    }

    pub fn counters(&self) -> PlacementCounters {
        let c = &self.shared.counters;
        PlacementCounters {
            torn_tail_truncations: c.torn_tail_truncations.load(Ordering::Relaxed),
            corrupt_records: c.corrupt_records.load(Ordering::Relaxed),
            degraded: c.degraded.load(Ordering::Relaxed),
            replay_records: c.replay_records.load(Ordering::Relaxed),
            replay_normalised: c.replay_normalised.load(Ordering::Relaxed),
            records_written: c.records_written.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            durable_checkpoints: c.durable_checkpoints.load(Ordering::Relaxed),
            flusher_errors: c.flusher_errors.load(Ordering::Relaxed),
        }
    }

    /// Paths of the live journal segments (for tests and STATUS).
    pub fn journal_segments(&self) -> Vec<std::path::PathBuf> {
        self.shared.journal.segment_paths()
    }

    /// Full index dump, for tests.
    #[doc(hidden)]
    pub fn index_snapshot(&self) -> Result<IndexSnapshot> {
        self.shared.index.snapshot()
    }

    /// Unmount: sync, checkpoint, stop the flusher.
    pub fn close(mut self) -> Result<()> {
        self.stop_flusher();
        self.shared.journal.sync()?;
        self.shared.checkpoint(true)
    }

    /// What `kill -9` leaves behind: records not yet handed to the kernel
    /// are dropped, nothing is synced or checkpointed. For crash tests.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        self.crashed = true;
        self.stop_flusher();
        self.shared.journal.discard_unwritten();
    }

    fn stop_flusher(&mut self) {
        if let Some(handle) = self.flusher.take() {
            self.shared.ctl.lock().stop = true;
            self.shared.wake.notify_all();
            if handle.join().is_err() {
                tracing::error!("journal flusher thread panicked");
            }
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.stop_flusher();
        if !self.crashed
            && let Err(e) = self.shared.journal.sync()
        {
            tracing::error!(error = %e, "placement journal sync at drop failed");
        }
    }
}

impl Shared {
    /// Appends `rec`, applies it to the index, and for a synchronous record
    /// waits until it is durable. Returns its seq.
    fn record(&self, rec: Record, attrs: Option<&AttrSnapshot>) -> Result<u64> {
        let sync = rec.is_sync();
        let (seq, since) = {
            let mut order = self.order.lock();
            let seq = self.journal.append(&rec, sync)?;
            if let Err(e) = self.index.apply(&rec, attrs) {
                self.index_diverged.store(true, Ordering::Release);
                self.counters.degraded.store(true, Ordering::Relaxed);
                tracing::error!(seq, error = %e, "identity index apply failed; index will be rebuilt from the journal at next mount");
                return Err(e);
            }
            order.since_checkpoint += 1;
            order.since_durable += 1;
            (seq, order.since_checkpoint)
        };
        self.counters
            .records_written
            .fetch_add(1, Ordering::Relaxed);
        if sync {
            self.journal.sync_to(seq)?;
        }
        if since >= CHECKPOINT_RECORDS || self.journal.pending() >= GROUP_COMMIT_MAX_PENDING {
            self.kick();
        }
        Ok(seq)
    }

    fn kick(&self) {
        if !self.kicked.swap(true, Ordering::AcqRel) {
            let _ctl = self.ctl.lock();
            self.wake.notify_one();
        }
    }

    /// The index changes up to the last seq are frozen under `order` (so
    /// they are exactly the records up to that seq); the journal sync and
    /// the index commit run outside it, so appends continue.
    ///
    /// A light checkpoint (`durable` false) only commits the index without
    /// fsync: it bounds the in-memory overlay, but neither syncs the journal
    /// nor deletes a segment, because after a crash the index is back at
    /// the last durable checkpoint and replays from there. A durable one
    /// syncs the journal up to its seq first (the index must never claim a
    /// record the journal could still lose), commits the index with fsync
    /// -- which also makes every light commit before it durable -- appends
    /// CHECKPOINT and deletes the segments it covers.
    fn checkpoint(&self, durable: bool) -> Result<()> {
        let _one = self.checkpoint_lock.lock();
        if self.index_diverged.load(Ordering::Acquire) {
            return Err(err!(
                libc::EIO,
                "identity index diverged from the placement journal; checkpoint refused"
            ));
        }
        let (seq, frozen, covered) = {
            let mut order = self.order.lock();
            let seq = self.journal.last_seq();
            let frozen = self.index.freeze();
            order.since_checkpoint = 0;
            order.last_checkpoint = Instant::now();
            (seq, frozen, order.since_durable)
        };
        if !durable {
            self.index.commit_frozen(frozen, Commit::Light(seq))?;
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if let Err(e) = self.journal.sync_to(seq) {
            // Put the changes back; the next checkpoint retries them.
            let _ = self.index.commit_frozen(frozen, Commit::Flush);
            return Err(e);
        }
        self.index.commit_frozen(frozen, Commit::Durable(seq))?;
        {
            let mut order = self.order.lock();
            order.since_durable = order.since_durable.saturating_sub(covered);
            order.last_durable = Instant::now();
        }
        self.journal.rotate_if_larger(CHECKPOINT_ROTATE_BYTES)?;
        self.journal.append(
            &Record::Checkpoint {
                checkpoint_seq: seq,
            },
            false,
        )?;
        self.journal.compact(seq)?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.counters
            .durable_checkpoints
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flusher_loop(&self) {
        let mut ctl = self.ctl.lock();
        loop {
            if ctl.stop {
                return;
            }
            if !self.kicked.load(Ordering::Acquire) {
                // The next group commit is due one interval after the last.
                let wait = GROUP_COMMIT_INTERVAL.saturating_sub(self.last_sync.lock().elapsed());
                if !wait.is_zero() {
                    self.wake.wait_for(&mut ctl, wait);
                }
            }
            if ctl.stop {
                return;
            }
            let kicked = self.kicked.swap(false, Ordering::AcqRel);
            parking_lot::MutexGuard::unlocked(&mut ctl, || self.flush_tick(kicked));
        }
    }

    /// One flusher pass. `kicked`: woken by a record count (checkpoint or
    /// pending records) rather than by the group-commit timer.
    fn flush_tick(&self, kicked: bool) {
        // S4.2 item 2: the journal is synced every GROUP_COMMIT_INTERVAL,
        // or at once when GROUP_COMMIT_MAX_PENDING records are pending. A
        // checkpoint kick does not sync it by itself: a light checkpoint
        // needs no durable journal.
        let pending = self.journal.pending();
        let now = Instant::now();
        let sync = pending > 0
            && (!kicked
                || pending >= GROUP_COMMIT_MAX_PENDING
                || self.last_sync.lock().elapsed() >= GROUP_COMMIT_INTERVAL);
        if sync && let Err(e) = self.journal.sync() {
            self.counters.flusher_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "placement journal group commit failed");
        }
        if sync || !kicked {
            *self.last_sync.lock() = now;
        }
        // S4.5: light after CHECKPOINT_RECORDS records; durable when a
        // light one is older than DURABLE_CHECKPOINT_INTERVAL, or 60 s
        // after the last durable one.
        let (durable, light) = {
            let order = self.order.lock();
            let since_durable = order.last_durable.elapsed();
            let busy = order.since_durable > order.since_checkpoint
                || order.since_durable >= CHECKPOINT_RECORDS;
            let durable = order.since_durable > 0
                && ((busy && since_durable >= DURABLE_CHECKPOINT_INTERVAL)
                    || since_durable >= CHECKPOINT_INTERVAL);
            (durable, order.since_checkpoint >= CHECKPOINT_RECORDS)
        };
        if (durable || light)
            && !self.index_diverged.load(Ordering::Acquire)
            && let Err(e) = self.checkpoint(durable)
        {
            self.counters.flusher_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "identity index checkpoint failed");
        }
    }

    /// S4.3 item 2: every object not in `placed` is resolved by the table
    /// and a record bringing it to `placed` (or a tombstone) is appended.
    fn normalise(&self) -> Result<Vec<Normalised>> {
        let mut out = Vec::new();
        for (rec, source) in self.index.moving()? {
            let from = rec.movement_state;
            let res = resolve_unfinished(from, rec.slot, rec.intended_slot, source);
            let n = match res {
                Resolution::Placed {
                    slot,
                    remove_slot,
                    remove_staging,
                } => {
                    self.record(
                        Record::Move {
                            oid: rec.oid,
                            state: state::PLACED,
                            current_slot: slot,
                            intended_slot: NO_SLOT,
                            transaction_seq: rec.transaction_seq,
                            reason: format!("replay: {}", state::name(from)),
                        },
                        None,
                    )?;
                    Normalised {
                        oid: rec.oid,
                        rel_path: rec.rel_path.clone(),
                        from_state: from,
                        placed_slot: slot,
                        remove_slot,
                        remove_staging,
                    }
                }
                Resolution::Tombstoned => {
                    let r = Record::Unlink {
                        oid: rec.oid,
                        gen_: rec.r#gen,
                        remaining_links: 0,
                        path: rec.rel_path.clone(),
                    };
                    self.record(r, None)?;
                    self.journal.sync()?;
                    Normalised {
                        oid: rec.oid,
                        rel_path: rec.rel_path.clone(),
                        from_state: from,
                        placed_slot: rec.slot,
                        remove_slot: None,
                        remove_staging: true,
                    }
                }
            };
            tracing::info!(oid = %n.oid, rel_path = %n.rel_path, from = state::name(from), placed_slot = n.placed_slot, "unfinished move normalised");
            out.push(n);
        }
        Ok(out)
    }
}

fn check_path(p: &str) -> Result<()> {
    if p.starts_with('/')
        || p.ends_with('/')
        || p.contains('\0')
        || p.split('/').any(|c| c == "." || c == "..")
    {
        return Err(err!(libc::EINVAL, "placement: bad relative path {p:?}"));
    }
    Ok(())
}

fn logged<T>(r: Result<Option<T>>) -> Option<T> {
    match r {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "identity index read failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_states_resolve_per_s4_3_table() {
        use Resolution::Placed;
        // Object on 0, moving to 1.
        for s in [state::PLAN_ACCEPTED, 2, 3, 4, 5, state::FAILED] {
            assert_eq!(
                resolve_unfinished(s, 0, 1, 0),
                Placed {
                    slot: 0,
                    remove_slot: None,
                    remove_staging: true
                },
                "{}",
                state::name(s)
            );
        }
        assert_eq!(
            resolve_unfinished(state::CUTOVER_IN_PROGRESS, 0, 1, 0),
            Placed {
                slot: 0,
                remove_slot: Some(1),
                remove_staging: true
            }
        );
        for s in [state::SWITCHED, state::CLEANUP_IN_PROGRESS] {
            assert_eq!(
                resolve_unfinished(s, 1, 1, 0),
                Placed {
                    slot: 1,
                    remove_slot: Some(0),
                    remove_staging: false
                }
            );
        }
        assert_eq!(
            resolve_unfinished(state::CLEANUP_COMPLETE, 1, 1, 0),
            Placed {
                slot: 1,
                remove_slot: None,
                remove_staging: false
            }
        );
        assert_eq!(
            resolve_unfinished(state::STALE, 0, 1, 0),
            Resolution::Tombstoned
        );
    }

    #[test]
    fn relative_paths_are_checked() {
        assert!(check_path("a/b").is_ok());
        assert!(check_path("").is_ok());
        assert!(check_path("/a").is_err());
        assert!(check_path("a/../b").is_err());
    }
}
