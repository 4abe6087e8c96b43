//! The persistent identity index (SPEC S3.5) in `<meta>/.smoothfs/index/`:
//! one redb database holding, per OID, the object's identity, placement,
//! movement state, pins, names and attribute snapshot, with the secondary
//! keys st_ino -> OID, rel_path -> OID and (slot, lower inode) -> OID,
//! tombstones, the checkpoint seq and the scrub cursor.
//!
//! Owns the index's tables and the meaning of applying each journal record
//! to them. It changes identity state only through [`Index::apply`] and
//! [`Index::apply_batch`] (S3.5 item 3); the attribute snapshot and the
//! scrub cursor are the only un-journaled writes. It never touches the
//! journal or a lower file.
//!
//! Durability: applies are committed with `Durability::None` (visible to
//! readers at once, persisted by the next durable commit); only
//! [`Index::commit_checkpoint`] is durable. After a crash redb returns to
//! the last checkpoint and the journal tail is applied again, so every
//! apply is idempotent: applying a sequence of records a second time, from
//! any state that already reflects it, changes nothing.
//!
//! Path keys are `parent ‖ 0x00 ‖ name` (the root, "", is the empty key), so
//! one directory's entries are one contiguous key range.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::err;
use crate::error::{Error, Result};
use crate::journal::{NO_SLOT, Record};
use crate::oid::Oid;
use crate::placement::state;

/// Object kinds stored in the index.
pub mod kind {
    pub const FILE: u8 = 1;
    pub const DIR: u8 = 2;
    pub const SYMLINK: u8 = 3;
    pub const OTHER: u8 = 4;
}

/// The only protocol pin persisted across remount (S8.3): `pin_lun`.
pub const PIN_LUN: u8 = 5;
/// Tombstones are kept this long (S3.3 item 2).
pub const TOMBSTONE_KEEP_SECS: u64 = 30 * 24 * 3600;
const INDEX_FILE: &str = "index.redb";
/// redb's own page cache, per pool. Its default (1 GiB) fills with the
/// whole index of a large pool: about 270 bytes per object at a million
/// objects, a third of the daemon's memory (S28 N8). Pages beyond this are
/// read again from the kernel's page cache.
const INDEX_CACHE_BYTES: usize = 64 << 20;
const VALUE_VERSION: u8 = 1;

const OBJECTS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("objects");
const BY_INO: TableDefinition<u64, [u8; 16]> = TableDefinition::new("by_ino");
const BY_PATH: TableDefinition<&[u8], [u8; 16]> = TableDefinition::new("by_path");
const BY_LOWER: TableDefinition<(u8, u64), [u8; 16]> = TableDefinition::new("by_lower");
/// oid -> (generation, deleted-at unix seconds)
const TOMBSTONES: TableDefinition<[u8; 16], (u32, u64)> = TableDefinition::new("tombstones");
/// (deleted-at, oid): expiry order for tombstones.
const TOMB_EXPIRY: TableDefinition<(u64, [u8; 16]), ()> = TableDefinition::new("tombstone_expiry");
/// Objects whose movement state is not `placed` (normalised at mount) ->
/// the slot the move started from.
const MOVING: TableDefinition<[u8; 16], u8> = TableDefinition::new("moving");
/// oid -> (stage kind, source slot), S14.
const STAGED: TableDefinition<[u8; 16], (u8, u8)> = TableDefinition::new("staged");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_CHECKPOINT_SEQ: &str = "checkpoint_seq";
const META_SCRUB_CURSOR: &str = "scrub_cursor";

/// Attribute snapshot (S3.5 item 1), refreshed on release and movement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AttrSnapshot {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

/// One object as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRec {
    pub oid: Oid,
    pub r#gen: u32,
    /// [`kind`]: 1 file, 2 dir, 3 symlink, 4 other.
    pub kind: u8,
    /// Slot of the authoritative copy; 0xFF for directories.
    pub slot: u8,
    /// Lower inode number on `slot`; 0 when unknown (after a switch until
    /// the namespace records the destination's inode with a new PLACED).
    pub lower_ino: u64,
    pub rel_path: String,
    pub movement_state: u8,
    /// 0xFF when no movement is in flight.
    pub intended_slot: u8,
    pub transaction_seq: u64,
    pub policy_pin: u8,
    /// Only `pin_lun` (5) is stored; `pin_lease` lives in memory.
    pub protocol_pin: u8,
    pub always_mediated: bool,
    /// Every name made through smoothfs; the first is the primary name and
    /// equals `rel_path`.
    pub nlink_names: Vec<String>,
    pub attrs: AttrSnapshot,
}

impl ObjectRec {
    /// A freshly placed object with no movement, pins or names.
    pub fn new(oid: Oid, kind: u8, slot: u8, lower_ino: u64, rel_path: &str) -> ObjectRec {
        ObjectRec {
            oid,
            r#gen: 0,
            kind,
            slot,
            lower_ino,
            rel_path: rel_path.to_string(),
            movement_state: state::PLACED,
            intended_slot: NO_SLOT,
            transaction_seq: 0,
            policy_pin: 0,
            protocol_pin: 0,
            always_mediated: false,
            nlink_names: vec![rel_path.to_string()],
            attrs: AttrSnapshot::default(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(80 + self.nlink_names.iter().map(|n| n.len() + 2).sum::<usize>());
        out.push(VALUE_VERSION);
        out.extend_from_slice(&self.r#gen.to_le_bytes());
        out.extend_from_slice(&[self.kind, self.slot]);
        out.extend_from_slice(&self.lower_ino.to_le_bytes());
        out.extend_from_slice(&[self.movement_state, self.intended_slot]);
        out.extend_from_slice(&self.transaction_seq.to_le_bytes());
        out.extend_from_slice(&[
            self.policy_pin,
            self.protocol_pin,
            u8::from(self.always_mediated),
        ]);
        out.extend_from_slice(&self.attrs.size.to_le_bytes());
        out.extend_from_slice(&self.attrs.mode.to_le_bytes());
        out.extend_from_slice(&self.attrs.uid.to_le_bytes());
        out.extend_from_slice(&self.attrs.gid.to_le_bytes());
        out.extend_from_slice(&self.attrs.mtime_ns.to_le_bytes());
        out.extend_from_slice(&(self.nlink_names.len() as u32).to_le_bytes());
        for n in &self.nlink_names {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(n.as_bytes());
        }
        out
    }

    fn decode(oid: Oid, b: &[u8]) -> Result<ObjectRec> {
        let bad = || err!(libc::EIO, "identity index: malformed record for {oid}");
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = b.get(pos..pos + n).ok_or_else(bad)?;
            pos += n;
            Ok(s)
        };
        if take(1)?[0] != VALUE_VERSION {
            return Err(bad());
        }
        let gen_ = u32::from_le_bytes(arr(take(4)?));
        let ks = take(2)?;
        let (kind, slot) = (ks[0], ks[1]);
        let lower_ino = u64::from_le_bytes(arr(take(8)?));
        let ms = take(2)?;
        let (movement_state, intended_slot) = (ms[0], ms[1]);
        let transaction_seq = u64::from_le_bytes(arr(take(8)?));
        let p = take(3)?;
        let (policy_pin, protocol_pin, always_mediated) = (p[0], p[1], p[2] != 0);
        let attrs = AttrSnapshot {
            size: u64::from_le_bytes(arr(take(8)?)),
            mode: u32::from_le_bytes(arr(take(4)?)),
            uid: u32::from_le_bytes(arr(take(4)?)),
            gid: u32::from_le_bytes(arr(take(4)?)),
            mtime_ns: i64::from_le_bytes(arr(take(8)?)),
        };
        let count = u32::from_le_bytes(arr(take(4)?)) as usize;
        let mut names = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let len = u32::from_le_bytes(arr(take(4)?)) as usize;
            let s = std::str::from_utf8(take(len)?).map_err(|_| bad())?;
            names.push(s.to_string());
        }
        Ok(ObjectRec {
            oid,
            r#gen: gen_,
            kind,
            slot,
            lower_ino,
            rel_path: names.first().cloned().unwrap_or_default(),
            movement_state,
            intended_slot,
            transaction_seq,
            policy_pin,
            protocol_pin,
            always_mediated,
            nlink_names: names,
            attrs,
        })
    }
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

fn db_err(context: &'static str) -> impl Fn(redb::Error) -> Error {
    move |e| err!(libc::EIO, "identity index: {context}: {e}")
}

/// `parent ‖ 0x00 ‖ name`; the root ("") is the empty key.
pub fn path_key(rel_path: &str) -> Vec<u8> {
    if rel_path.is_empty() {
        return Vec::new();
    }
    let (parent, name) = rel_path.rsplit_once('/').unwrap_or(("", rel_path));
    let mut k = Vec::with_capacity(rel_path.len() + 1);
    k.extend_from_slice(parent.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Filters a protocol pin to what the index persists.
fn persisted_protocol_pin(pin: u8) -> u8 {
    if pin == PIN_LUN { PIN_LUN } else { 0 }
}

/// Changes applied since the last flush, keyed like the tables; `None`
/// marks a deletion. Readers look here before the database.
#[derive(Default)]
struct Overlay {
    objects: HashMap<[u8; 16], Option<ObjectRec>>,
    by_ino: HashMap<u64, Option<[u8; 16]>>,
    by_path: BTreeMap<Vec<u8>, Option<[u8; 16]>>,
    by_lower: HashMap<(u8, u64), Option<[u8; 16]>>,
    tombstones: HashMap<[u8; 16], Option<(u32, u64)>>,
    tomb_expiry: BTreeMap<(u64, [u8; 16]), Option<()>>,
    moving: BTreeMap<[u8; 16], Option<u8>>,
    staged: HashMap<[u8; 16], Option<(u8, u8)>>,
}

impl Overlay {
    fn len(&self) -> usize {
        self.objects.len()
            + self.by_ino.len()
            + self.by_path.len()
            + self.by_lower.len()
            + self.tombstones.len()
            + self.tomb_expiry.len()
            + self.moving.len()
            + self.staged.len()
    }

    /// Puts `older`'s entries back under this (newer) overlay.
    fn absorb_older(&mut self, older: &Overlay) {
        fn merge<K: Clone + Eq + std::hash::Hash, V: Clone>(
            n: &mut HashMap<K, V>,
            o: &HashMap<K, V>,
        ) {
            for (k, v) in o {
                n.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        fn merge_b<K: Clone + Ord, V: Clone>(n: &mut BTreeMap<K, V>, o: &BTreeMap<K, V>) {
            for (k, v) in o {
                n.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        merge(&mut self.objects, &older.objects);
        merge(&mut self.by_ino, &older.by_ino);
        merge_b(&mut self.by_path, &older.by_path);
        merge(&mut self.by_lower, &older.by_lower);
        merge(&mut self.tombstones, &older.tombstones);
        merge_b(&mut self.tomb_expiry, &older.tomb_expiry);
        merge_b(&mut self.moving, &older.moving);
        merge(&mut self.staged, &older.staged);
    }
}

/// Overlay state: `active` takes new changes; `frozen` is being written to
/// the database by a flush and is still consulted by readers until the
/// commit is visible.
#[derive(Default)]
struct OverlayState {
    active: Overlay,
    frozen: Option<Arc<Overlay>>,
}

macro_rules! tx {
    ($e:expr, $ctx:expr) => {
        $e.map_err(|e| db_err($ctx)(e.into()))?
    };
}

/// Writes the overlay map `$map` into the open table `$t`: a `Some` value
/// is inserted (`$key` and `$value` make the table's key and value of the
/// map's), a `None` removes the key. Errors read "write `$what`" or
/// "remove `$what`".
macro_rules! write_entries {
    ($t:ident, $map:expr, |$k:ident| $key:expr, |$v:ident| $value:expr, $what:literal) => {
        for ($k, v) in $map {
            match v {
                Some($v) => tx!($t.insert($key, $value), concat!("write ", $what)),
                None => tx!($t.remove($key), concat!("remove ", $what)),
            };
        }
    };
}

/// Looks `$key` up in the active overlay, then the frozen one, then the
/// database table `$def`, yielding `Option<V>`.
macro_rules! layered {
    ($active:expr, $frozen:expr, $field:ident, $key:expr, $db:expr, $def:ident, $conv:expr) => {{
        let key = $key;
        if let Some(v) = $active.$field.get(&key) {
            v.clone()
        } else if let Some(v) = $frozen.and_then(|f| f.$field.get(&key)) {
            v.clone()
        } else {
            let snap = $db.snap()?;
            let got = tx!(snap.$def.get(key.clone()), "read");
            got.map(|v| ($conv)(v.value()))
        }
    }};
}

/// The database with a shared read snapshot for point lookups. The
/// database changes only through commits made by this module, each
/// followed by [`Store::committed`]; between two commits every lookup can
/// share one read transaction instead of opening its own (a lookup is on
/// the path of every LOOKUP, CREATE, UNLINK and RENAME).
struct Store {
    db: Database,
    snap: Mutex<Option<Arc<Snap>>>,
}

/// The tables point lookups read, opened in one read transaction.
struct Snap {
    objects: redb::ReadOnlyTable<[u8; 16], &'static [u8]>,
    by_ino: redb::ReadOnlyTable<u64, [u8; 16]>,
    by_path: redb::ReadOnlyTable<&'static [u8], [u8; 16]>,
    by_lower: redb::ReadOnlyTable<(u8, u64), [u8; 16]>,
    tombstones: redb::ReadOnlyTable<[u8; 16], (u32, u64)>,
    moving: redb::ReadOnlyTable<[u8; 16], u8>,
}

impl Store {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        self.db.begin_read()
    }

    fn begin_write(&self) -> std::result::Result<redb::WriteTransaction, redb::TransactionError> {
        self.db.begin_write()
    }

    /// The current read snapshot. It is made under the lock, so one made
    /// before a commit is always dropped by that commit's `committed`.
    fn snap(&self) -> Result<Arc<Snap>> {
        let mut cur = self.snap.lock();
        if let Some(s) = cur.as_ref() {
            return Ok(Arc::clone(s));
        }
        let open = || -> Result<Snap> {
            let rtxn = tx!(self.db.begin_read(), "begin read");
            Ok(Snap {
                objects: tx!(rtxn.open_table(OBJECTS), "open objects"),
                by_ino: tx!(rtxn.open_table(BY_INO), "open by_ino"),
                by_path: tx!(rtxn.open_table(BY_PATH), "open by_path"),
                by_lower: tx!(rtxn.open_table(BY_LOWER), "open by_lower"),
                tombstones: tx!(rtxn.open_table(TOMBSTONES), "open tombstones"),
                moving: tx!(rtxn.open_table(MOVING), "open moving"),
            })
        };
        let s = Arc::new(open()?);
        *cur = Some(Arc::clone(&s));
        Ok(s)
    }

    /// A commit just became visible: later lookups take a new snapshot.
    /// Called before the committed changes leave the overlay.
    fn committed(&self) {
        *self.snap.lock() = None;
    }
}

fn decode_owned(oid: [u8; 16], b: &[u8]) -> Result<ObjectRec> {
    ObjectRec::decode(Oid(oid), b)
}

/// The apply context: the active overlay over the frozen one over the
/// database.
struct Tx<'a> {
    db: &'a Store,
    ov: &'a mut Overlay,
    frozen: Option<&'a Overlay>,
}

impl Tx<'_> {
    fn get(&self, oid: &Oid) -> Result<Option<ObjectRec>> {
        if let Some(v) = self.ov.objects.get(&oid.0) {
            return Ok(v.clone());
        }
        if let Some(v) = self.frozen.and_then(|f| f.objects.get(&oid.0)) {
            return Ok(v.clone());
        }
        db_object(self.db, oid)
    }

    fn put(&mut self, rec: &ObjectRec) -> Result<()> {
        self.ov.objects.insert(rec.oid.0, Some(rec.clone()));
        Ok(())
    }

    fn path_get(&self, key: &[u8]) -> Result<Option<Oid>> {
        let key = key.to_vec();
        let r: Option<[u8; 16]> = if let Some(v) = self.ov.by_path.get(&key) {
            *v
        } else if let Some(v) = self.frozen.and_then(|f| f.by_path.get(&key)) {
            *v
        } else {
            let snap = self.db.snap()?;
            tx!(snap.by_path.get(key.as_slice()), "read path").map(|v| v.value())
        };
        Ok(r.map(Oid))
    }

    fn ino_get(&self, ino: u64) -> Result<Option<Oid>> {
        let r: Option<[u8; 16]> =
            layered!(self.ov, self.frozen, by_ino, ino, self.db, by_ino, |v| v);
        Ok(r.map(Oid))
    }

    fn lower_get(&self, slot: u8, lower_ino: u64) -> Result<Option<Oid>> {
        let r: Option<[u8; 16]> = layered!(
            self.ov,
            self.frozen,
            by_lower,
            (slot, lower_ino),
            self.db,
            by_lower,
            |v| v
        );
        Ok(r.map(Oid))
    }

    fn tomb_get(&self, oid: &Oid) -> Result<Option<(u32, u64)>> {
        Ok(layered!(
            self.ov,
            self.frozen,
            tombstones,
            oid.0,
            self.db,
            tombstones,
            |v| v
        ))
    }

    fn moving_get(&self, oid: &Oid) -> Result<Option<u8>> {
        Ok(layered!(
            self.ov,
            self.frozen,
            moving,
            oid.0,
            self.db,
            moving,
            |v| v
        ))
    }

    /// Direct entries of `dir` as (name, oid), merged over all layers.
    fn dir_entries(&self, dir: &str) -> Result<Vec<(String, Oid)>> {
        dir_entries(self.db, self.frozen, Some(self.ov), dir)
    }

    /// Points `path` at `oid`, taking the name away from any other object
    /// that still claims it (a name shows exactly one object).
    fn claim_path(&mut self, path: &str, oid: &Oid) -> Result<()> {
        let key = path_key(path);
        let prev = self.path_get(&key)?;
        self.ov.by_path.insert(key, Some(oid.0));
        if let Some(prev) = prev
            && prev != *oid
            && let Some(mut other) = self.get(&prev)?
        {
            other.nlink_names.retain(|n| n != path);
            other.rel_path = other.nlink_names.first().cloned().unwrap_or_default();
            self.put(&other)?;
        }
        Ok(())
    }

    /// Removes the `path` key if it points at `oid`.
    fn release_path(&mut self, path: &str, oid: &Oid) -> Result<()> {
        let key = path_key(path);
        if self.path_get(&key)? == Some(*oid) {
            self.ov.by_path.insert(key, None);
        }
        Ok(())
    }

    fn release_lower(&mut self, slot: u8, lower_ino: u64, oid: &Oid) -> Result<()> {
        if slot == NO_SLOT || lower_ino == 0 {
            return Ok(());
        }
        if self.lower_get(slot, lower_ino)? == Some(*oid) {
            self.ov.by_lower.insert((slot, lower_ino), None);
        }
        Ok(())
    }

    fn clear_tombstone(&mut self, oid: &Oid) -> Result<()> {
        if let Some((_, at)) = self.tomb_get(oid)? {
            self.ov.tombstones.insert(oid.0, None);
            self.ov.tomb_expiry.insert((at, oid.0), None);
        }
        Ok(())
    }

    /// Deletes the object and every key pointing at it, and also releases
    /// `name` (an unlinked name the object may no longer list); keeps
    /// (oid -> gen).
    fn tombstone(&mut self, oid: &Oid, gen_: u32, now: u64, name: Option<&str>) -> Result<()> {
        if let Some(n) = name {
            self.release_path(n, oid)?;
        }
        let live = self.get(oid)?;
        if let Some(rec) = &live {
            for n in &rec.nlink_names {
                self.release_path(n, oid)?;
            }
            self.release_lower(rec.slot, rec.lower_ino, oid)?;
            if self.ino_get(oid.ino())? == Some(*oid) {
                self.ov.by_ino.insert(oid.ino(), None);
            }
            self.ov.objects.insert(oid.0, None);
            // `moving` holds exactly the objects not in `placed` (it is
            // written with the state by Record::Move only).
            if rec.movement_state != state::PLACED {
                self.ov.moving.insert(oid.0, None);
            }
            self.ov.staged.insert(oid.0, None);
        }
        // A live object has no tombstone (PLACED clears it), so only an
        // unknown OID needs the check that keeps an older tombstone.
        if live.is_some() || self.tomb_get(oid)?.is_none() {
            self.ov.tombstones.insert(oid.0, Some((gen_, now)));
            self.ov.tomb_expiry.insert((now, oid.0), Some(()));
        }
        Ok(())
    }

    /// Rewrites every name under `old_dir/` to `new_dir/`, depth first.
    fn rewrite_subtree(&mut self, old_dir: &str, new_dir: &str) -> Result<()> {
        if old_dir == new_dir || old_dir.is_empty() || new_dir.starts_with(&format!("{old_dir}/")) {
            return Ok(());
        }
        for (name, child) in self.dir_entries(old_dir)? {
            let old_path = join(old_dir, &name);
            let new_path = join(new_dir, &name);
            self.ov.by_path.insert(path_key(&old_path), None);
            self.ov.by_path.insert(path_key(&new_path), Some(child.0));
            if let Some(mut rec) = self.get(&child)? {
                for n in rec.nlink_names.iter_mut() {
                    if *n == old_path {
                        n.clone_from(&new_path);
                    }
                }
                rec.rel_path = rec.nlink_names.first().cloned().unwrap_or_default();
                self.put(&rec)?;
                if rec.kind == kind::DIR {
                    self.rewrite_subtree(&old_path, &new_path)?;
                }
            }
        }
        Ok(())
    }

    /// Renames one name of `oid` (and the subtree below it for a directory).
    fn rename_name(&mut self, oid: &Oid, old_path: &str, new_path: &str) -> Result<()> {
        let Some(mut rec) = self.get(oid)? else {
            return Ok(());
        };
        if old_path == new_path {
            return Ok(());
        }
        match rec.nlink_names.iter().position(|n| n == old_path) {
            Some(i) => {
                rec.nlink_names[i] = new_path.to_string();
                let mut seen = std::collections::HashSet::new();
                rec.nlink_names.retain(|n| seen.insert(n.clone()));
            }
            None if !rec.nlink_names.iter().any(|n| n == new_path) => {
                rec.nlink_names.push(new_path.to_string())
            }
            None => {}
        }
        rec.rel_path = rec.nlink_names.first().cloned().unwrap_or_default();
        self.put(&rec)?;
        self.release_path(old_path, oid)?;
        self.claim_path(new_path, oid)?;
        if rec.kind == kind::DIR {
            self.rewrite_subtree(old_path, new_path)?;
        }
        Ok(())
    }

    fn apply(&mut self, rec: &Record, now: u64, attrs: Option<&AttrSnapshot>) -> Result<()> {
        match rec {
            Record::Placed {
                oid,
                gen_,
                kind,
                slot,
                policy_pin,
                protocol_pin,
                always_mediated,
                lower_ino,
                path,
            } => {
                self.clear_tombstone(oid)?;
                let mut obj = match self.get(oid)? {
                    Some(mut obj) => {
                        if (obj.slot, obj.lower_ino) != (*slot, *lower_ino) {
                            self.release_lower(obj.slot, obj.lower_ino, oid)?;
                        }
                        match obj.nlink_names.iter().position(|n| n == path) {
                            Some(i) => {
                                let p = obj.nlink_names.remove(i);
                                obj.nlink_names.insert(0, p);
                            }
                            None if obj.nlink_names.is_empty() => {
                                obj.nlink_names.push(path.clone())
                            }
                            None => {
                                let old = std::mem::replace(&mut obj.nlink_names[0], path.clone());
                                self.release_path(&old, oid)?;
                            }
                        }
                        obj
                    }
                    None => ObjectRec::new(*oid, *kind, *slot, *lower_ino, path),
                };
                obj.r#gen = *gen_;
                obj.kind = *kind;
                obj.slot = *slot;
                obj.lower_ino = *lower_ino;
                obj.policy_pin = *policy_pin;
                obj.protocol_pin = persisted_protocol_pin(*protocol_pin);
                obj.always_mediated = *always_mediated;
                obj.rel_path.clone_from(path);
                if let Some(a) = attrs {
                    obj.attrs = *a;
                }
                self.put(&obj)?;
                self.claim_path(path, oid)?;
                self.ov.by_ino.insert(oid.ino(), Some(oid.0));
                if *slot != NO_SLOT && *lower_ino != 0 {
                    self.ov.by_lower.insert((*slot, *lower_ino), Some(oid.0));
                }
            }
            Record::Move {
                oid,
                state: st,
                current_slot,
                intended_slot,
                transaction_seq,
                ..
            } => {
                let Some(mut obj) = self.get(oid)? else {
                    return Ok(());
                };
                let before = obj.slot;
                // After the switch the authoritative copy is the intended one.
                let authoritative = if state::is_past_switch(*st) {
                    *intended_slot
                } else {
                    *current_slot
                };
                if authoritative != obj.slot && obj.slot != NO_SLOT {
                    self.release_lower(obj.slot, obj.lower_ino, oid)?;
                    obj.slot = authoritative;
                    obj.lower_ino = 0;
                }
                obj.movement_state = *st;
                obj.intended_slot = if *st == state::PLACED {
                    NO_SLOT
                } else {
                    *intended_slot
                };
                obj.transaction_seq = *transaction_seq;
                self.put(&obj)?;
                if *st == state::PLACED {
                    self.ov.moving.insert(oid.0, None);
                } else {
                    let known = self.moving_get(oid)?;
                    let source = if !state::is_past_switch(*st) {
                        *current_slot
                    } else if let Some(s) = known {
                        s
                    } else if *current_slot != *intended_slot {
                        *current_slot
                    } else if before != *intended_slot {
                        before
                    } else {
                        NO_SLOT
                    };
                    self.ov.moving.insert(oid.0, Some(source));
                }
            }
            Record::Link { oid, path } => {
                let Some(mut obj) = self.get(oid)? else {
                    return Ok(());
                };
                if !obj.nlink_names.iter().any(|n| n == path) {
                    obj.nlink_names.push(path.clone());
                    obj.rel_path = obj.nlink_names[0].clone();
                    self.put(&obj)?;
                }
                self.claim_path(path, oid)?;
            }
            Record::Unlink {
                oid,
                gen_,
                remaining_links,
                path,
            } => {
                if *remaining_links == 0 {
                    // The last name: the tombstone releases it with the rest.
                    self.tombstone(oid, *gen_, now, Some(path))?;
                } else if let Some(mut obj) = self.get(oid)? {
                    let before = obj.nlink_names.len();
                    obj.nlink_names.retain(|n| n != path);
                    if obj.nlink_names.len() != before {
                        obj.rel_path = obj.nlink_names.first().cloned().unwrap_or_default();
                        self.put(&obj)?;
                    }
                    self.release_path(path, oid)?;
                }
            }
            Record::Rename {
                oid,
                replaced,
                old_path,
                new_path,
            } => {
                if let Some(r) = replaced
                    && r != oid
                    && let Some(mut victim) = self.get(r)?
                {
                    victim.nlink_names.retain(|n| n != new_path);
                    if victim.nlink_names.is_empty() {
                        self.tombstone(r, victim.r#gen, now, None)?;
                    } else {
                        victim.rel_path = victim.nlink_names[0].clone();
                        self.put(&victim)?;
                        self.release_path(new_path, r)?;
                    }
                }
                self.rename_name(oid, old_path, new_path)?;
            }
            // A directory rename moves the names while the old path still
            // names this directory; later records of the same rename (tier
            // progress, S2.5 item 4) find it moved and must not move names
            // created at the old path since.
            Record::DirRename {
                oid,
                old_path,
                new_path,
                ..
            } => {
                if self.path_get(&path_key(old_path))? == Some(*oid) {
                    self.rename_name(oid, old_path, new_path)?;
                }
            }
            Record::Pin {
                oid,
                policy_pin,
                protocol_pin,
                always_mediated,
            } => {
                if let Some(mut obj) = self.get(oid)? {
                    obj.policy_pin = *policy_pin;
                    obj.protocol_pin = persisted_protocol_pin(*protocol_pin);
                    obj.always_mediated = *always_mediated;
                    self.put(&obj)?;
                }
            }
            Record::Gen { oid, gen_ } => {
                if let Some(mut obj) = self.get(oid)? {
                    obj.r#gen = *gen_;
                    self.put(&obj)?;
                }
            }
            Record::Stage {
                oid,
                kind: k,
                source_slot,
            } => {
                if *k == 0 {
                    self.ov.staged.insert(oid.0, None);
                } else if self.get(oid)?.is_some() {
                    self.ov.staged.insert(oid.0, Some((*k, *source_slot)));
                }
            }
            Record::Checkpoint { .. } | Record::Unknown { .. } => {}
        }
        Ok(())
    }
}

/// Everything the index holds about live objects and tombstones, for
/// comparing two indexes in tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSnapshot {
    pub objects: Vec<ObjectRec>,
    pub paths: Vec<(String, Oid)>,
    pub inos: Vec<(u64, Oid)>,
    pub lowers: Vec<((u8, u64), Oid)>,
    pub tombstones: Vec<(Oid, u32)>,
    pub moving: Vec<(Oid, u8)>,
    pub staged: Vec<(Oid, u8, u8)>,
}

fn db_object(db: &Store, oid: &Oid) -> Result<Option<ObjectRec>> {
    let snap = db.snap()?;
    match tx!(snap.objects.get(oid.0), "read object") {
        Some(v) => Ok(Some(decode_owned(oid.0, v.value())?)),
        None => Ok(None),
    }
}

/// Direct entries of `dir`: the database range, then the frozen and the
/// active overlay on top.
fn dir_entries(
    db: &Store,
    frozen: Option<&Overlay>,
    active: Option<&Overlay>,
    dir: &str,
) -> Result<Vec<(String, Oid)>> {
    let mut lo = dir.as_bytes().to_vec();
    lo.push(0);
    let mut hi = dir.as_bytes().to_vec();
    hi.push(1);
    let mut merged: BTreeMap<Vec<u8>, [u8; 16]> = BTreeMap::new();
    {
        let rtxn = tx!(db.begin_read(), "begin read");
        let t = tx!(rtxn.open_table(BY_PATH), "open by_path");
        for item in tx!(t.range(lo.as_slice()..hi.as_slice()), "scan directory") {
            let (k, v) = tx!(item, "scan directory");
            merged.insert(k.value().to_vec(), v.value());
        }
    }
    for ov in [frozen, active].into_iter().flatten() {
        for (k, v) in ov.by_path.range(lo.clone()..hi.clone()) {
            match v {
                Some(o) => merged.insert(k.clone(), *o),
                None => merged.remove(k),
            };
        }
    }
    Ok(merged
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k[lo.len()..]).into_owned(), Oid(v)))
        .collect())
}

/// How [`Index::commit_frozen`] commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Memory bound only: no checkpoint seq, no fsync.
    Flush,
    /// A checkpoint at this seq without fsync (S4.5 light checkpoint): it
    /// becomes durable with the next `Durable` commit. A crash before that
    /// returns the database to the last durable checkpoint, whose journal
    /// tail is still on disk, so nothing is lost; replay is just longer.
    Light(u64),
    /// A checkpoint at this seq, durable when the call returns. The journal
    /// must already be durable up to the seq.
    Durable(u64),
}

/// Changes set aside by [`Index::freeze`]; holds the index's flush lock.
pub struct Frozen<'a> {
    _one_flush: parking_lot::MutexGuard<'a, ()>,
    ov: Arc<Overlay>,
}

/// The open index.
pub struct Index {
    db: Store,
    state: Mutex<OverlayState>,
    /// Serialises flushes.
    flush_lock: Mutex<()>,
}

/// Past this many overlay entries a flush happens without waiting for the
/// checkpoint (bounds memory during a long replay).
const OVERLAY_SPILL_ENTRIES: usize = 1 << 18;

impl Index {
    /// Opens or creates `<dir>/index.redb`.
    pub fn open(dir: &Path) -> Result<Index> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create index directory {}", dir.display()), e))?;
        let path = dir.join(INDEX_FILE);
        let db = tx!(
            redb::Builder::new()
                .set_cache_size(INDEX_CACHE_BYTES)
                .create(&path),
            "open database"
        );
        let mut txn = tx!(db.begin_write(), "begin");
        tx!(txn.set_durability(Durability::Immediate), "durability");
        {
            tx!(txn.open_table(OBJECTS), "open objects");
            tx!(txn.open_table(BY_INO), "open by_ino");
            tx!(txn.open_table(BY_PATH), "open by_path");
            tx!(txn.open_table(BY_LOWER), "open by_lower");
            tx!(txn.open_table(TOMBSTONES), "open tombstones");
            tx!(txn.open_table(TOMB_EXPIRY), "open tombstone_expiry");
            tx!(txn.open_table(MOVING), "open moving");
            tx!(txn.open_table(STAGED), "open staged");
            tx!(txn.open_table(META), "open meta");
        }
        tx!(txn.commit(), "commit");
        Ok(Index {
            db: Store {
                db,
                snap: Mutex::new(None),
            },
            state: Mutex::new(OverlayState::default()),
            flush_lock: Mutex::new(()),
        })
    }

    /// The highest journal seq the durable index state reflects.
    pub fn checkpoint_seq(&self) -> Result<u64> {
        let txn = tx!(self.db.begin_read(), "begin read");
        let meta = tx!(txn.open_table(META), "open meta");
        let v = tx!(meta.get(META_CHECKPOINT_SEQ), "read checkpoint seq");
        Ok(v.map(|v| {
            let b = v.value();
            if b.len() == 8 {
                u64::from_le_bytes(arr(b))
            } else {
                0
            }
        })
        .unwrap_or(0))
    }

    /// Applies one record (and for PLACED the caller's attribute snapshot)
    /// to the in-memory overlay; it reaches the database at the next flush.
    pub fn apply(&self, rec: &Record, attrs: Option<&AttrSnapshot>) -> Result<()> {
        self.apply_one(rec, unix_now, attrs)
    }

    /// Applies many records in order (replay).
    pub fn apply_batch<'a>(&self, recs: impl IntoIterator<Item = &'a Record>) -> Result<()> {
        let now = unix_now();
        for rec in recs {
            self.apply_one(rec, || now, None)?;
        }
        Ok(())
    }

    /// Applies one record at `now()` (read under the state lock), then
    /// flushes (non-durably) once the active overlay holds
    /// `OVERLAY_SPILL_ENTRIES`.
    fn apply_one(
        &self,
        rec: &Record,
        now: impl FnOnce() -> u64,
        attrs: Option<&AttrSnapshot>,
    ) -> Result<()> {
        let spill = self.with_tx(|t| {
            t.apply(rec, now(), attrs)?;
            Ok(t.ov.len() >= OVERLAY_SPILL_ENTRIES)
        })?;
        if spill {
            self.flush(Commit::Flush)?;
        }
        Ok(())
    }

    /// Runs `f` on a [`Tx`] over the active and frozen overlays, under the
    /// state lock.
    fn with_tx<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock();
        let st = &mut *st;
        f(&mut Tx {
            db: &self.db,
            ov: &mut st.active,
            frozen: st.frozen.as_deref(),
        })
    }

    /// Durably commits everything applied so far as reflecting the journal
    /// up to `seq`, and drops tombstones older than 30 days.
    pub fn commit_checkpoint(&self, seq: u64) -> Result<()> {
        self.flush(Commit::Durable(seq))
    }

    /// Writes the overlay to the database as `how` says.
    fn flush(&self, how: Commit) -> Result<()> {
        let frozen = self.freeze();
        self.commit_frozen(frozen, how)
    }

    /// Sets the changes applied so far aside for [`Index::commit_frozen`];
    /// later applies go to a fresh overlay. Readers still see the frozen
    /// changes until they are committed. Waits for an earlier freeze to be
    /// committed first.
    pub fn freeze(&self) -> Frozen<'_> {
        let guard = self.flush_lock.lock();
        let mut st = self.state.lock();
        let ov = Arc::new(std::mem::take(&mut st.active));
        st.frozen = Some(Arc::clone(&ov));
        Frozen {
            _one_flush: guard,
            ov,
        }
    }

    /// Writes frozen changes to the database as `how` says. On failure the
    /// changes go back to the overlay.
    pub fn commit_frozen(&self, frozen: Frozen<'_>, how: Commit) -> Result<()> {
        let res = self.write_overlay(&frozen.ov, how);
        // Lookups must not read a snapshot older than this commit once the
        // frozen changes are gone from the overlay below.
        self.db.committed();
        let mut st = self.state.lock();
        if res.is_err() {
            // Keep the changes: they are older than anything applied since.
            st.active.absorb_older(&frozen.ov);
        }
        st.frozen = None;
        res
    }

    fn write_overlay(&self, ov: &Overlay, how: Commit) -> Result<()> {
        let mut txn = tx!(self.db.begin_write(), "begin");
        let (checkpoint, durability) = match how {
            Commit::Flush => (None, Durability::None),
            Commit::Light(seq) => (Some(seq), Durability::None),
            Commit::Durable(seq) => (Some(seq), Durability::Immediate),
        };
        tx!(txn.set_durability(durability), "durability");
        {
            let mut t = tx!(txn.open_table(OBJECTS), "open objects");
            write_entries!(
                t,
                &ov.objects,
                |k| *k,
                |rec| rec.encode().as_slice(),
                "object"
            );
            let mut t = tx!(txn.open_table(BY_INO), "open by_ino");
            write_entries!(t, &ov.by_ino, |k| *k, |o| *o, "ino");
            let mut t = tx!(txn.open_table(BY_PATH), "open by_path");
            write_entries!(t, &ov.by_path, |k| k.as_slice(), |o| *o, "path");
            let mut t = tx!(txn.open_table(BY_LOWER), "open by_lower");
            write_entries!(t, &ov.by_lower, |k| *k, |o| *o, "lower");
            let mut tombs = tx!(txn.open_table(TOMBSTONES), "open tombstones");
            write_entries!(tombs, &ov.tombstones, |k| *k, |o| *o, "tombstone");
            let mut expiry = tx!(txn.open_table(TOMB_EXPIRY), "open tombstone_expiry");
            write_entries!(expiry, &ov.tomb_expiry, |k| *k, |o| *o, "tombstone expiry");
            let mut t = tx!(txn.open_table(MOVING), "open moving");
            write_entries!(t, &ov.moving, |k| *k, |o| *o, "moving");
            let mut t = tx!(txn.open_table(STAGED), "open staged");
            write_entries!(t, &ov.staged, |k| *k, |o| *o, "staged");
            if let Some(seq) = checkpoint {
                let mut meta = tx!(txn.open_table(META), "open meta");
                tx!(
                    meta.insert(META_CHECKPOINT_SEQ, seq.to_le_bytes().as_slice()),
                    "write checkpoint seq"
                );
                let cutoff = unix_now().saturating_sub(TOMBSTONE_KEEP_SECS);
                let mut expired = Vec::new();
                for item in tx!(expiry.range(..(cutoff, [0u8; 16])), "scan tombstones") {
                    let (k, _) = tx!(item, "scan tombstones");
                    expired.push(k.value());
                }
                for (at, oid) in expired {
                    tx!(expiry.remove((at, oid)), "remove tombstone expiry");
                    let same =
                        tx!(tombs.get(oid), "read tombstone").is_some_and(|v| v.value().1 == at);
                    if same {
                        tx!(tombs.remove(oid), "remove tombstone");
                    }
                }
            }
        }
        tx!(txn.commit(), "commit index");
        Ok(())
    }

    /// Runs `f` against the overlays (active, then frozen) under the state
    /// lock; `None` from both means "ask the database".
    fn overlay_lookup<T>(&self, f: impl Fn(&Overlay) -> Option<T>) -> Option<T> {
        let st = self.state.lock();
        f(&st.active).or_else(|| st.frozen.as_deref().and_then(&f))
    }

    pub fn get(&self, oid: &Oid) -> Result<Option<ObjectRec>> {
        if let Some(v) = self.overlay_lookup(|o| o.objects.get(&oid.0).cloned()) {
            return Ok(v);
        }
        db_object(&self.db, oid)
    }

    /// Objects in OID order after `after` (exclusive), at most `limit`,
    /// merged over the overlays (LIST_OBJECTS, S7.4).
    pub fn list_objects(&self, after: Option<[u8; 16]>, limit: usize) -> Result<Vec<ObjectRec>> {
        let mut over: BTreeMap<[u8; 16], Option<ObjectRec>> = BTreeMap::new();
        {
            let st = self.state.lock();
            for ov in [st.frozen.as_deref(), Some(&st.active)]
                .into_iter()
                .flatten()
            {
                for (k, v) in &ov.objects {
                    if after.is_none_or(|a| *k > a) {
                        over.insert(*k, v.clone());
                    }
                }
            }
        }
        let mut merged: BTreeMap<[u8; 16], ObjectRec> = BTreeMap::new();
        {
            let txn = tx!(self.db.begin_read(), "begin read");
            let objects = tx!(txn.open_table(OBJECTS), "open objects");
            let range = match after {
                Some(a) => tx!(
                    objects.range::<[u8; 16]>((
                        std::ops::Bound::Excluded(a),
                        std::ops::Bound::Unbounded
                    )),
                    "range objects"
                ),
                None => tx!(objects.iter(), "scan objects"),
            };
            let want = limit + over.len();
            for item in range {
                let (k, v) = tx!(item, "scan objects");
                let k = k.value();
                if over.contains_key(&k) {
                    continue;
                }
                merged.insert(k, ObjectRec::decode(Oid(k), v.value())?);
                if merged.len() >= want {
                    break;
                }
            }
        }
        let db_last = merged.keys().next_back().copied();
        let db_full = merged.len() >= limit + over.len();
        for (k, v) in over {
            // Beyond the database page only if the page was not cut short.
            if db_full && db_last.is_some_and(|l| k > l) {
                continue;
            }
            match v {
                Some(r) => {
                    merged.insert(k, r);
                }
                None => {
                    merged.remove(&k);
                }
            }
        }
        Ok(merged.into_values().take(limit).collect())
    }

    fn get_via(
        &self,
        pick: impl Fn(&Overlay) -> Option<Option<[u8; 16]>>,
        db: impl FnOnce() -> Result<Option<[u8; 16]>>,
    ) -> Result<Option<ObjectRec>> {
        let oid = match self.overlay_lookup(pick) {
            Some(v) => v,
            None => db()?,
        };
        match oid {
            Some(o) => self.get(&Oid(o)),
            None => Ok(None),
        }
    }

    pub fn by_path(&self, rel_path: &str) -> Result<Option<ObjectRec>> {
        let key = path_key(rel_path);
        self.get_via(
            |o| o.by_path.get(&key).copied(),
            || {
                let snap = self.db.snap()?;
                Ok(tx!(snap.by_path.get(key.as_slice()), "read path").map(|v| v.value()))
            },
        )
    }

    pub fn by_ino(&self, ino: u64) -> Result<Option<ObjectRec>> {
        self.get_via(
            |o| o.by_ino.get(&ino).copied(),
            || {
                let snap = self.db.snap()?;
                Ok(tx!(snap.by_ino.get(ino), "read ino").map(|v| v.value()))
            },
        )
    }

    pub fn by_lower(&self, slot: u8, lower_ino: u64) -> Result<Option<ObjectRec>> {
        self.get_via(
            |o| o.by_lower.get(&(slot, lower_ino)).copied(),
            || {
                let snap = self.db.snap()?;
                Ok(tx!(snap.by_lower.get((slot, lower_ino)), "read lower").map(|v| v.value()))
            },
        )
    }

    /// Generation of a tombstoned OID.
    pub fn tombstone(&self, oid: &Oid) -> Result<Option<u32>> {
        if let Some(v) = self.overlay_lookup(|o| o.tombstones.get(&oid.0).copied()) {
            return Ok(v.map(|(g, _)| g));
        }
        let snap = self.db.snap()?;
        Ok(tx!(snap.tombstones.get(oid.0), "read tombstone").map(|v| v.value().0))
    }

    /// The entries of directory `dir_rel_path` ("" is the root), by name.
    pub fn children(&self, dir_rel_path: &str) -> Result<Vec<(String, ObjectRec)>> {
        let entries = {
            let st = self.state.lock();
            dir_entries(
                &self.db,
                st.frozen.as_deref(),
                Some(&st.active),
                dir_rel_path,
            )?
        };
        let mut out = Vec::with_capacity(entries.len());
        for (name, oid) in entries {
            if let Some(rec) = self.get(&oid)? {
                out.push((name, rec));
            }
        }
        Ok(out)
    }

    /// Objects whose movement state is not `placed`, with the slot their
    /// move started from.
    pub fn moving(&self) -> Result<Vec<(ObjectRec, u8)>> {
        let mut merged: BTreeMap<[u8; 16], u8> = BTreeMap::new();
        {
            let rtxn = tx!(self.db.begin_read(), "begin read");
            let t = tx!(rtxn.open_table(MOVING), "open moving");
            for item in tx!(t.iter(), "scan moving") {
                let (k, v) = tx!(item, "scan moving");
                merged.insert(k.value(), v.value());
            }
        }
        {
            let st = self.state.lock();
            for ov in [st.frozen.as_deref(), Some(&st.active)]
                .into_iter()
                .flatten()
            {
                for (k, v) in &ov.moving {
                    match v {
                        Some(s) => merged.insert(*k, *s),
                        None => merged.remove(k),
                    };
                }
            }
        }
        let mut out = Vec::new();
        for (oid, source) in merged {
            if let Some(rec) = self.get(&Oid(oid))? {
                out.push((rec, source));
            }
        }
        Ok(out)
    }

    /// (stage kind, source slot) of a staged object (S14).
    pub fn staged(&self, oid: &Oid) -> Result<Option<(u8, u8)>> {
        if let Some(v) = self.overlay_lookup(|o| o.staged.get(&oid.0).copied()) {
            return Ok(v);
        }
        let rtxn = tx!(self.db.begin_read(), "begin read");
        let t = tx!(rtxn.open_table(STAGED), "open staged");
        Ok(tx!(t.get(oid.0), "read staged").map(|v| v.value()))
    }

    /// Refreshes the attribute snapshot (not journaled; persisted at the
    /// next checkpoint).
    pub fn set_attrs(&self, oid: &Oid, attrs: &AttrSnapshot) -> Result<()> {
        self.with_tx(|t| {
            // Unchanged attributes (a release after reads) write nothing:
            // the overlay, and the next flush, stay small.
            if let Some(mut rec) = t.get(oid)?
                && rec.attrs != *attrs
            {
                rec.attrs = *attrs;
                t.put(&rec)?;
            }
            Ok(())
        })
    }

    /// The scrub's resume point (S4.6), opaque to the index.
    pub fn scrub_cursor(&self) -> Result<Option<Vec<u8>>> {
        let txn = tx!(self.db.begin_read(), "begin read");
        let t = tx!(txn.open_table(META), "open meta");
        Ok(tx!(t.get(META_SCRUB_CURSOR), "read scrub cursor").map(|v| v.value().to_vec()))
    }

    /// Stores the scrub cursor (persisted at the next checkpoint).
    pub fn set_scrub_cursor(&self, cursor: &[u8]) -> Result<()> {
        let mut txn = tx!(self.db.begin_write(), "begin");
        tx!(txn.set_durability(Durability::None), "durability");
        {
            let mut t = tx!(txn.open_table(META), "open meta");
            tx!(t.insert(META_SCRUB_CURSOR, cursor), "write scrub cursor");
        }
        tx!(txn.commit(), "commit");
        self.db.committed();
        Ok(())
    }

    /// Full dump, for tests and debugging: flushes the overlay
    /// (non-durably) and reads every table.
    #[doc(hidden)]
    pub fn snapshot(&self) -> Result<IndexSnapshot> {
        self.flush(Commit::Flush)?;
        let txn = tx!(self.db.begin_read(), "begin read");
        let mut s = IndexSnapshot::default();
        let objects = tx!(txn.open_table(OBJECTS), "open objects");
        for item in tx!(objects.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            s.objects
                .push(ObjectRec::decode(Oid(k.value()), v.value())?);
        }
        let paths = tx!(txn.open_table(BY_PATH), "open by_path");
        for item in tx!(paths.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            let k = k.value();
            let p = match k.iter().position(|b| *b == 0) {
                Some(i) => join(
                    &String::from_utf8_lossy(&k[..i]),
                    &String::from_utf8_lossy(&k[i + 1..]),
                ),
                None => String::new(),
            };
            s.paths.push((p, Oid(v.value())));
        }
        s.paths.sort();
        let inos = tx!(txn.open_table(BY_INO), "open by_ino");
        for item in tx!(inos.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            s.inos.push((k.value(), Oid(v.value())));
        }
        let lowers = tx!(txn.open_table(BY_LOWER), "open by_lower");
        for item in tx!(lowers.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            s.lowers.push((k.value(), Oid(v.value())));
        }
        let tombs = tx!(txn.open_table(TOMBSTONES), "open tombstones");
        for item in tx!(tombs.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            s.tombstones.push((Oid(k.value()), v.value().0));
        }
        let moving = tx!(txn.open_table(MOVING), "open moving");
        for item in tx!(moving.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            s.moving.push((Oid(k.value()), v.value()));
        }
        let staged = tx!(txn.open_table(STAGED), "open staged");
        for item in tx!(staged.iter(), "scan") {
            let (k, v) = tx!(item, "scan");
            let (a, b) = v.value();
            s.staged.push((Oid(k.value()), a, b));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_keep_a_directory_contiguous() {
        assert_eq!(path_key(""), b"");
        assert_eq!(path_key("x"), b"\0x");
        assert_eq!(path_key("a/b/c"), b"a/b\0c");
        let mut keys = [
            path_key("a/b/z"),
            path_key("a/bb"),
            path_key("a/b/c/d"),
            path_key("a/b/a"),
            path_key("a/b"),
        ];
        keys.sort();
        let pos: Vec<_> = keys.iter().map(|k| k.starts_with(b"a/b\0")).collect();
        // The two direct children of a/b are adjacent.
        let first = pos.iter().position(|p| *p).unwrap();
        assert!(pos[first + 1]);
        assert_eq!(pos.iter().filter(|p| **p).count(), 2);
    }

    /// Lookups share a read snapshot between commits; every commit (a
    /// flush, a checkpoint, the scrub cursor) must retire it, or a lookup
    /// after the overlay is emptied would read the database as it was.
    #[test]
    fn lookups_after_each_commit_see_that_commit() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let oid = Oid([9; 16]);
        let placed = Record::Placed {
            oid,
            gen_: 0,
            kind: kind::FILE,
            slot: 0,
            policy_pin: 0,
            protocol_pin: 0,
            always_mediated: false,
            lower_ino: 77,
            path: "d/f".into(),
        };
        // A snapshot taken while the database is empty.
        assert_eq!(idx.by_path("d/f").unwrap(), None);
        idx.apply(&placed, None).unwrap();
        idx.flush(Commit::Flush).unwrap();
        assert_eq!(idx.by_path("d/f").unwrap().map(|r| r.oid), Some(oid));
        assert_eq!(
            idx.by_ino(oid.ino()).unwrap().map(|r| r.lower_ino),
            Some(77)
        );
        assert!(idx.by_lower(0, 77).unwrap().is_some());
        let unlink = Record::Unlink {
            oid,
            gen_: 0,
            remaining_links: 0,
            path: "d/f".into(),
        };
        idx.apply(&unlink, None).unwrap();
        idx.commit_checkpoint(2).unwrap();
        assert_eq!(idx.by_path("d/f").unwrap(), None);
        assert_eq!(idx.get(&oid).unwrap(), None);
        assert_eq!(idx.tombstone(&oid).unwrap(), Some(0));
        idx.set_scrub_cursor(b"c").unwrap();
        assert_eq!(idx.by_path("d/f").unwrap(), None);
        assert_eq!(idx.scrub_cursor().unwrap().as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn object_value_round_trips() {
        let mut rec = ObjectRec::new(Oid([7; 16]), kind::FILE, 1, 42, "a/b");
        rec.nlink_names.push("c".into());
        rec.attrs = AttrSnapshot {
            size: 5,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            mtime_ns: -3,
        };
        rec.movement_state = state::SWITCHED;
        let back = ObjectRec::decode(rec.oid, &rec.encode()).unwrap();
        assert_eq!(back, rec);
        assert!(ObjectRec::decode(rec.oid, &rec.encode()[..10]).is_err());
    }
}
