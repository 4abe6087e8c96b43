//! The union namespace over the tiers (S2), object identity on lower files
//! (S3), create placement and spill (S5) and the in-memory node table.
//!
//! This module does not depend on `fuser`: every operation takes plain
//! arguments and returns `Result<_, Error>` where the error carries the
//! errno. The FUSE adapter ([`crate::fuse`]) only translates.
//!
//! Node table invariant: a node id is the object's `st_ino` (S3.2), so it
//! is stable across restarts; a node that is not in memory is recovered
//! from the persistent index by `st_ino` ([`Namespace::node_by_ino`]).
//! Each node records the rel_path it was last reached by; a directory
//! rename rewrites the rel_path of every resident descendant under the
//! `nodes` write lock, so no operation sees a half-renamed tree.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tracing::{debug, warn};

use crate::err;
use crate::error::{Error, Result};
use crate::oid::{Oid, OidMinter, ROOT_INO, XATTR_RESERVED_PREFIX, fileid};
use crate::placement::{AttrSnapshot, ObjectRec, Placement};
use crate::sys;
use crate::tier::Tier;

pub const KIND_FILE: u8 = 1;
pub const KIND_DIR: u8 = 2;
pub const KIND_SYMLINK: u8 = 3;
pub const KIND_OTHER: u8 = 4;

/// The inode-flag ioctls forwarded to the lower file (S2.7/4). The kernel
/// sends them (from `chattr`/`lsattr`, `xfs_io`, ...) through its file
/// attribute calls; FICLONE, FICLONERANGE, FIDEDUPERANGE and FIEMAP never
/// reach a FUSE daemon (docs/semantics.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAttrIoctl {
    GetFlags,
    SetFlags,
    FsGetXattr,
    FsSetXattr,
}

/// `struct fsxattr`: 4 + 4 + 4 + 4 + 12 bytes.
const FSXATTR_LEN: usize = 28;

impl FileAttrIoctl {
    const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
    const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
    const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
    const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
    const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
    const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

    /// The request a FUSE_IOCTL command number asks for, if it is one of these.
    pub fn from_cmd(cmd: u32) -> Option<FileAttrIoctl> {
        match cmd {
            Self::FS_IOC_GETFLAGS | Self::FS_IOC32_GETFLAGS => Some(FileAttrIoctl::GetFlags),
            Self::FS_IOC_SETFLAGS | Self::FS_IOC32_SETFLAGS => Some(FileAttrIoctl::SetFlags),
            Self::FS_IOC_FSGETXATTR => Some(FileAttrIoctl::FsGetXattr),
            Self::FS_IOC_FSSETXATTR => Some(FileAttrIoctl::FsSetXattr),
            _ => None,
        }
    }

    /// Whether it changes the lower inode.
    pub fn sets(self) -> bool {
        matches!(self, FileAttrIoctl::SetFlags | FileAttrIoctl::FsSetXattr)
    }

    /// Bytes of its argument: the flags are an `int` whatever the command
    /// number's size field says.
    pub fn arg_len(self) -> usize {
        match self {
            FileAttrIoctl::GetFlags | FileAttrIoctl::SetFlags => 4,
            FileAttrIoctl::FsGetXattr | FileAttrIoctl::FsSetXattr => FSXATTR_LEN,
        }
    }

    fn lower_cmd(self) -> u32 {
        match self {
            FileAttrIoctl::GetFlags => Self::FS_IOC_GETFLAGS,
            FileAttrIoctl::SetFlags => Self::FS_IOC_SETFLAGS,
            FileAttrIoctl::FsGetXattr => Self::FS_IOC_FSGETXATTR,
            FileAttrIoctl::FsSetXattr => Self::FS_IOC_FSSETXATTR,
        }
    }
}

pub const SLOT_NONE: u8 = 0xFF;

pub(crate) const OID_XATTR_C: &CStr = c"trusted.smoothfs.oid";
pub(crate) const GEN_XATTR_C: &CStr = c"trusted.smoothfs.gen";
const ACL_DEFAULT_C: &CStr = c"system.posix_acl_default";

/// The index vouches for a lower non-directory: its record is on this tier
/// with this lower inode and kind, so its identity is the record's without
/// reading xattrs. A file replaced out of band has another inode.
fn index_vouches(rec: &ObjectRec, slot: u8, lower_ino: u64, kind: u8) -> bool {
    kind != KIND_DIR
        && rec.kind == kind
        && rec.slot == slot
        && rec.lower_ino != 0
        && rec.lower_ino == lower_ino
}

/// Attributes of an object from its index snapshot, for a tier that must
/// not be touched (S23.2 item 2).
fn stat_from_snapshot(rec: &ObjectRec) -> libc::stat {
    // SAFETY: libc::stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_ino = rec.oid.ino();
    st.st_mode = rec.attrs.mode;
    st.st_uid = rec.attrs.uid;
    st.st_gid = rec.attrs.gid;
    st.st_size = i64::try_from(rec.attrs.size).unwrap_or(i64::MAX);
    st.st_nlink = rec.nlink_names.len().max(1) as libc::nlink_t;
    st.st_mtime = rec.attrs.mtime_ns.div_euclid(1_000_000_000);
    st.st_mtime_nsec = rec.attrs.mtime_ns.rem_euclid(1_000_000_000);
    st.st_ctime = st.st_mtime;
    st.st_ctime_nsec = st.st_mtime_nsec;
    st.st_atime = st.st_mtime;
    st.st_atime_nsec = st.st_mtime_nsec;
    st.st_blksize = 4096;
    st.st_blocks = (st.st_size + 511) / 512;
    st
}

/// One cached parent-directory descriptor: (namespace, dir_gen, rank,
/// rel_path, taken at, fd -- `None`: the directory does not exist on that
/// tier).
/// (namespace, dir_gen, tier rank, rel_path, when, value): one entry of a
/// per-thread directory cache.
type Cached<V> = (usize, u64, u8, OsString, std::time::Instant, V);
type CachedDir = Cached<Option<std::sync::Arc<OwnedFd>>>;

/// Bumps the namespace's dir_gen when dropped (see [`Namespace::parent_dir`]).
struct BumpOnDrop<'a>(&'a Namespace);

impl Drop for BumpOnDrop<'_> {
    fn drop(&mut self) {
        self.0.dirs_changed();
    }
}

thread_local! {
    /// A few recently opened parent directories per request thread: a
    /// lookup or getattr walks the same parent again and again (ls -l,
    /// readdirplus, metadata-heavy clients), and each open is a path walk
    /// from the tier root.
    static DIR_CACHE: std::cell::RefCell<Vec<CachedDir>> = const { std::cell::RefCell::new(Vec::new()) };
}
const DIR_CACHE_ENTRIES: usize = 8;

thread_local! {
    /// Whether a recently used parent directory has a default ACL (the
    /// create mode depends on it), keyed like [`DIR_CACHE`].
    static DIR_ACL: std::cell::RefCell<Vec<Cached<bool>>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// Changes made to a tier behind smoothfs's back are seen after this long.
const DIR_CACHE_TTL: std::time::Duration = std::time::Duration::from_millis(500);

/// Message prefix of the EXDEV a file rename returns when the target's
/// parent chain cannot be made on the file's tier (S2.5 item 6).
const MATERIALISE_FAILED: &str = "cannot materialise";

/// The internal directory on every tier, hidden at the mount root.
pub const INTERNAL_DIR: &str = ".smoothfs";

pub fn kind_of_mode(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFREG => KIND_FILE,
        libc::S_IFDIR => KIND_DIR,
        libc::S_IFLNK => KIND_SYMLINK,
        _ => KIND_OTHER,
    }
}

/// Counters exposed through STATUS (S26.1).
#[derive(Default)]
pub struct Counters {
    pub spill_creates_total: AtomicU64,
    pub spill_creates_failed_all_tiers: AtomicU64,
    pub any_spill_since_mount: AtomicU64,
    pub metadata_tier_skips: AtomicU64,
    pub metadata_tier_wakes: AtomicU64,
    pub inactive_tier_data_opens: AtomicU64,
    pub stale_duplicates_seen: AtomicU64,
    pub name_conflicts: AtomicU64,
    pub oid_collisions: AtomicU64,
    pub oid_restored_total: AtomicU64,
    pub oid_duplicates_total: AtomicU64,
    pub gen_bumps_total: AtomicU64,
    pub passthrough_opens_total: AtomicU64,
    pub mediated_opens_total: AtomicU64,
    /// Duplicates the scrub moved to quarantine (S4.6 item 2).
    pub duplicates_quarantined_total: AtomicU64,
    /// Stale duplicates (same OID and content as the authoritative copy) the scrub removed.
    pub stale_duplicates_removed_total: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A spilled create, reported as a SPILL record when its handle is released.
#[derive(Clone, Debug)]
pub struct SpillRecord {
    pub oid: Oid,
    pub first_rank: u8,
    pub used_rank: u8,
    pub size: u64,
    pub rel_path: String,
}

/// One resident object.
#[derive(Clone, Debug)]
pub struct Node {
    pub oid: Oid,
    pub generation: u32,
    pub kind: u8,
    /// Path relative to the pool root ("" for the root), as last reached.
    pub rel_path: OsString,
    /// Rank of the tier holding the authoritative copy (non-directories).
    pub rank: Option<u8>,
    /// Kernel lookup count (FUSE forget protocol).
    pub lookups: u64,
    /// Last attributes seen, answered while the tier is metadata-inactive.
    pub attr: Option<NodeAttr>,
}

/// The attributes a node keeps between requests: the fields of a
/// `libc::stat` that replies and movement use, in 80 bytes instead of 144.
/// There is one per inode the kernel holds, so this is most of the data
/// plane's memory per resident object (S28 N8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    size: i64,
    blocks: i64,
    atime: i64,
    mtime: i64,
    ctime: i64,
    rdev: u64,
    atime_ns: u32,
    mtime_ns: u32,
    ctime_ns: u32,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    blksize: u32,
}

impl From<&libc::stat> for NodeAttr {
    fn from(st: &libc::stat) -> NodeAttr {
        // Nanoseconds are < 1e9; a link count above u32 is saturated
        // (FUSE replies carry 32 bits).
        let ns = |v: i64| u32::try_from(v).unwrap_or(0);
        NodeAttr {
            size: st.st_size,
            blocks: st.st_blocks,
            atime: st.st_atime,
            mtime: st.st_mtime,
            ctime: st.st_ctime,
            atime_ns: ns(st.st_atime_nsec),
            mtime_ns: ns(st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime_nsec),
            mode: st.st_mode,
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        }
    }
}

impl NodeAttr {
    /// Back to a `libc::stat`; fields not kept (`st_dev`, `st_ino`: the
    /// caller sets the pool's) are zero.
    pub fn to_stat(&self) -> libc::stat {
        // SAFETY: libc::stat is plain old data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_size = self.size;
        st.st_blocks = self.blocks;
        st.st_atime = self.atime;
        st.st_mtime = self.mtime;
        st.st_ctime = self.ctime;
        st.st_atime_nsec = i64::from(self.atime_ns);
        st.st_mtime_nsec = i64::from(self.mtime_ns);
        st.st_ctime_nsec = i64::from(self.ctime_ns);
        st.st_mode = self.mode;
        st.st_nlink = libc::nlink_t::from(self.nlink);
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_rdev = self.rdev;
        st.st_blksize = libc::blksize_t::from(self.blksize);
        st
    }
}

/// What lookup/create return: the node id (= st_ino), generation and attributes.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub ino: u64,
    pub generation: u32,
    pub attr: libc::stat,
}

/// A readdir entry of the merged snapshot.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    pub kind: u8,
}

pub struct NamespaceConfig {
    pub full_pct: u32,
    pub metadata_mask: u32,
    pub read_only: bool,
}

pub struct Namespace {
    pub tiers: Vec<Tier>,
    pub placement: Placement,
    pub counters: Counters,
    minter: OidMinter,
    pub(crate) nodes: RwLock<HashMap<u64, Node>>,
    pub full_pct: AtomicU64,
    pub metadata_mask: AtomicU64,
    /// `create_disabled_tier_mask` (S24): new objects never land on these
    /// ranks (a tier being evacuated).
    pub create_disabled_mask: AtomicU64,
    read_only: bool,
    /// Spilled creates waiting for their creating handle's release.
    pub pending_spills: Mutex<Vec<SpillRecord>>,
    /// Serialises namespace-changing operations (rename, rmdir, unlink,
    /// create) so union invariants hold; reads never take it.
    pub(crate) ns_lock: Mutex<()>,
    /// Open, moving and lease-pinned objects (S11, S13).
    pub live: crate::live::Live,
    /// Movement settings and counters (S11, S15).
    pub moves: crate::movement::MoveCtl,
    /// Heat counters (S6).
    pub heat: crate::heat::HeatTable,
    /// Bumped by every operation that can change what a directory path
    /// names (rename, rmdir, pruning); per-thread cached parent
    /// descriptors from an older value are not used.
    dir_gen: AtomicU64,
}

pub fn join(parent: &OsStr, name: &OsStr) -> OsString {
    if parent.is_empty() {
        name.to_os_string()
    } else {
        let mut p = parent.to_os_string();
        p.push("/");
        p.push(name);
        p
    }
}

/// (parent rel_path, final name) of a rel_path.
pub fn split(rel: &OsStr) -> (OsString, OsString) {
    let b = rel.as_bytes();
    match b.iter().rposition(|c| *c == b'/') {
        Some(i) => (
            OsString::from_vec(b[..i].to_vec()),
            OsString::from_vec(b[i + 1..].to_vec()),
        ),
        None => (OsString::new(), rel.to_os_string()),
    }
}

fn to_str(p: &OsStr) -> String {
    p.to_string_lossy().into_owned()
}

fn io_err(ctx: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(ctx(), e)
}

/// Performs a lower create in (parent fd, name, mode); returns an open
/// descriptor for regular files.
type LowerCreate<'a> = dyn Fn(BorrowedFd<'_>, &OsStr, u32) -> std::io::Result<Option<OwnedFd>> + 'a;

/// Validate one name component from FUSE.
fn check_name(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(err!(libc::EINVAL, "invalid name {:?}", name));
    }
    if b.len() > 255 {
        return Err(err!(libc::ENAMETOOLONG, "name too long"));
    }
    Ok(())
}

impl Namespace {
    pub fn new(tiers: Vec<Tier>, placement: Placement, cfg: NamespaceConfig) -> Namespace {
        let all = (1u64 << tiers.len()) - 1;
        let mask = (cfg.metadata_mask as u64 & all) | 1;
        let ns = Namespace {
            tiers,
            placement,
            counters: Counters::default(),
            minter: OidMinter::new(),
            nodes: RwLock::new(HashMap::new()),
            full_pct: AtomicU64::new(cfg.full_pct as u64),
            metadata_mask: AtomicU64::new(mask),
            create_disabled_mask: AtomicU64::new(0),
            read_only: cfg.read_only,
            pending_spills: Mutex::new(Vec::new()),
            ns_lock: Mutex::new(()),
            live: crate::live::Live::default(),
            moves: crate::movement::MoveCtl::default(),
            heat: crate::heat::HeatTable::new(),
            dir_gen: AtomicU64::new(0),
        };
        ns.nodes.write().insert(
            ROOT_INO,
            Node {
                oid: Oid::ROOT,
                generation: 0,
                kind: KIND_DIR,
                rel_path: OsString::new(),
                rank: None,
                lookups: u64::MAX / 2,
                attr: None,
            },
        );
        ns
    }

    /// The directory `rel` on tier `t`, from the per-thread cache when it
    /// is fresh (same namespace generation, younger than the TTL).
    fn parent_dir(&self, t: &Tier, rel: &OsStr) -> std::io::Result<std::sync::Arc<OwnedFd>> {
        if rel.is_empty() {
            // The tier root is held open for the life of the mount.
            return Ok(std::sync::Arc::clone(&t.root));
        }
        // An absent directory is remembered too (a tier that lacks the
        // parent is asked on every lookup and unlink otherwise); creating a
        // directory through smoothfs bumps dir_gen, which drops it.
        let fd = self.thread_cached(&DIR_CACHE, t, rel, || match t.open_dir(rel) {
            Ok(fd) => Ok(Some(std::sync::Arc::new(fd))),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
        fd.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// The value cached in this thread's `cache` for (`t`, `rel`) when it is
    /// fresh (same namespace and dir_gen, younger than the TTL), else
    /// `compute`'s, remembered unless it is an error.
    fn thread_cached<V: Clone>(
        &self,
        cache: &'static std::thread::LocalKey<std::cell::RefCell<Vec<Cached<V>>>>,
        t: &Tier,
        rel: &OsStr,
        compute: impl FnOnce() -> std::io::Result<V>,
    ) -> std::io::Result<V> {
        let id = self as *const Namespace as usize;
        let g = self.dir_gen.load(Ordering::Acquire);
        let hit = cache.with(|c| {
            c.borrow()
                .iter()
                .find(|e| {
                    e.0 == id
                        && e.1 == g
                        && e.2 == t.rank
                        && e.3 == rel
                        && e.4.elapsed() < DIR_CACHE_TTL
                })
                .map(|e| e.5.clone())
        });
        if let Some(v) = hit {
            return Ok(v);
        }
        let v = compute()?;
        cache.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|e| e.0 != id || (e.1 == g && !(e.2 == t.rank && e.3 == rel)));
            if c.len() >= DIR_CACHE_ENTRIES {
                c.remove(0);
            }
            c.push((
                id,
                g,
                t.rank,
                rel.to_os_string(),
                std::time::Instant::now(),
                v.clone(),
            ));
        });
        Ok(v)
    }

    /// Directory paths may name something else now: drop cached parents.
    pub(crate) fn dirs_changed(&self) {
        self.dir_gen.fetch_add(1, Ordering::AcqRel);
    }

    pub fn tier_by_slot(&self, slot: u8) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.slot == slot)
    }

    /// Set the metadata mask: bit 0 always set, bits beyond the pool dropped (S2.2).
    pub fn set_metadata_mask(&self, mask: u64) -> u64 {
        let all = (1u64 << self.tiers.len()) - 1;
        let m = (mask & all) | 1;
        let old = self.metadata_mask.swap(m, Ordering::Relaxed);
        if old != m {
            // Listings skip metadata-inactive tiers, so every directory
            // listing the kernel has cached may now be wrong.
            let dirs: Vec<u64> = self
                .nodes
                .read()
                .iter()
                .filter(|(_, n)| n.kind == KIND_DIR)
                .map(|(ino, _)| *ino)
                .collect();
            for ino in dirs {
                self.invalidate_inode(ino);
            }
        }
        m
    }

    pub(crate) fn meta_active(&self, rank: u8) -> bool {
        self.metadata_mask.load(Ordering::Relaxed) & (1 << rank) != 0
    }

    // ---- node table -----------------------------------------------------

    pub fn node(&self, ino: u64) -> Result<Node> {
        if let Some(n) = self.nodes.read().get(&ino) {
            return Ok(n.clone());
        }
        self.node_by_ino(ino)
    }

    /// Recover a node that is not resident (after a restart or eviction),
    /// through the persistent index: NFS file handles depend on this.
    fn node_by_ino(&self, ino: u64) -> Result<Node> {
        let rec = self
            .placement
            .by_ino(ino)
            .ok_or_else(|| err!(libc::ESTALE, "unknown inode {ino:#x}"))?;
        let rel = OsString::from(rec.rel_path.clone());
        let rank = if rec.kind == KIND_DIR {
            None
        } else {
            self.tier_by_slot(rec.slot).map(|t| t.rank)
        };
        // Verify the object is still there with the same OID.
        let (parent, name) = split(&rel);
        let found = self.find_in_dir(&parent, &name)?;
        match found {
            Some((oid, gen_, kind, r, st)) if oid == rec.oid => {
                let node = Node {
                    oid,
                    generation: gen_,
                    kind,
                    rel_path: rel,
                    rank: r.or(rank),
                    lookups: 0,
                    attr: Some(NodeAttr::from(&st)),
                };
                self.nodes.write().entry(ino).or_insert(node.clone());
                Ok(node)
            }
            _ => Err(err!(
                libc::ESTALE,
                "object {} no longer at {}",
                rec.oid,
                rec.rel_path
            )),
        }
    }

    fn remember(
        &self,
        rel: OsString,
        oid: Oid,
        gen_: u32,
        kind: u8,
        rank: Option<u8>,
        st: libc::stat,
    ) -> Entry {
        let ino = oid.ino();
        let mut nodes = self.nodes.write();
        let n = nodes.entry(ino).or_insert_with(|| Node {
            oid,
            generation: gen_,
            kind,
            rel_path: rel.clone(),
            rank,
            lookups: 0,
            attr: None,
        });
        n.rel_path = rel;
        n.rank = rank;
        n.generation = gen_;
        n.kind = kind;
        n.attr = Some(NodeAttr::from(&st));
        if ino != ROOT_INO {
            n.lookups += 1;
        }
        let mut attr = st;
        attr.st_ino = ino;
        Entry {
            ino,
            generation: gen_,
            attr,
        }
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut nodes = self.nodes.write();
        if let Some(n) = nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                nodes.remove(&ino);
            }
        }
    }

    pub fn resident_nodes(&self) -> usize {
        self.nodes.read().len()
    }

    /// The node for `ino` if it is resident; never touches the index or a
    /// tier (INSPECT, S20.4.1).
    pub fn resident_node(&self, ino: u64) -> Option<Node> {
        self.nodes.read().get(&ino).cloned()
    }

    // ---- identity (S3) --------------------------------------------------

    /// Identity of the lower entry `name` in `dir` on tier `rank`: read the
    /// OID xattr, restore it from the index, or mint a new one (written
    /// create-only before we answer). Returns None for a stale duplicate.
    pub(crate) fn identify(
        &self,
        rank: u8,
        dir: BorrowedFd<'_>,
        rel: &OsStr,
        name: &OsStr,
        st: &libc::stat,
    ) -> Result<Option<(Oid, u32)>> {
        let tier = &self.tiers[rank as usize];
        let kind = kind_of_mode(st.st_mode);
        // Fast path: the index already knows this very lower file (same
        // tier, same lower inode, same kind, this path): its identity is
        // the index's, without reading the xattrs. A lower file replaced
        // out of band has another inode and takes the full path below.
        if kind != KIND_DIR
            && let Some(rec) = self.placement.by_path(&to_str(rel))
            && index_vouches(&rec, tier.slot, st.st_ino, kind)
        {
            return Ok(Some((rec.oid, rec.r#gen)));
        }
        match sys::lgetxattr(dir, name, OID_XATTR_C) {
            Ok(v) if v.len() == 16 => {
                let oid = Oid::from_slice(&v).unwrap_or_default();
                let gen_ = sys::lgetxattr(dir, name, GEN_XATTR_C)
                    .ok()
                    .and_then(|g| <[u8; 4]>::try_from(g.as_slice()).ok())
                    .map(u32::from_le_bytes)
                    .unwrap_or(0);
                if kind != KIND_DIR {
                    if let Some(rec) = self.placement.get(&oid) {
                        let rec_path = OsStr::new(&rec.rel_path);
                        if rec.slot != tier.slot
                            && rec.slot != SLOT_NONE
                            && self.tier_by_slot(rec.slot).is_some()
                        {
                            // The index puts this object on another tier.
                            if rec_path == rel {
                                bump(&self.counters.stale_duplicates_seen);
                                return Ok(None);
                            }
                        }
                        if rec_path != rel
                            && rec.slot == tier.slot
                            && rec.lower_ino != st.st_ino
                            && rec.lower_ino != 0
                        {
                            // Another live object carries this OID (a `cp -a` on the lower).
                            if self.path_holds_oid(&rec, &oid) {
                                bump(&self.counters.oid_duplicates_total);
                                return self.mint_for(rank, dir, rel, name, st, true).map(Some);
                            }
                        }
                    } else if let Some(tomb_gen) = self.placement.tombstone(&oid) {
                        // Restored from a backup: a new incarnation (S3.3).
                        let g = tomb_gen.wrapping_add(1);
                        let _ = sys::lsetxattr(dir, name, GEN_XATTR_C, &g.to_le_bytes(), 0);
                        bump(&self.counters.gen_bumps_total);
                        self.record_placed(oid, g, kind, tier.slot, st, rel)?;
                        let _ = self.placement.set_gen(&oid, g);
                        return Ok(Some((oid, g)));
                    } else {
                        self.record_placed(oid, gen_, kind, tier.slot, st, rel)?;
                    }
                } else if self.placement.get(&oid).is_none() {
                    self.record_placed(oid, gen_, kind, SLOT_NONE, st, rel)?;
                }
                Ok(Some((oid, gen_)))
            }
            _ => {
                // S3.5 item 5: restore from the index when it knows this lower file.
                if let Some(rec) = self.placement.by_lower(tier.slot, st.st_ino)
                    && OsStr::new(&rec.rel_path) == rel
                {
                    let _ = sys::lsetxattr(dir, name, OID_XATTR_C, &rec.oid.0, 0);
                    let _ = sys::lsetxattr(dir, name, GEN_XATTR_C, &rec.r#gen.to_le_bytes(), 0);
                    bump(&self.counters.oid_restored_total);
                    return Ok(Some((rec.oid, rec.r#gen)));
                }
                self.mint_for(rank, dir, rel, name, st, false).map(Some)
            }
        }
    }

    fn path_holds_oid(&self, rec: &ObjectRec, oid: &Oid) -> bool {
        let Some(t) = self.tier_by_slot(rec.slot) else {
            return false;
        };
        let (p, n) = split(OsStr::new(&rec.rel_path));
        let Ok(d) = t.open_dir(&p) else { return false };
        matches!(sys::lgetxattr(d.as_fd(), &n, OID_XATTR_C), Ok(v) if v == oid.0)
    }

    pub(crate) fn mint_for(
        &self,
        rank: u8,
        dir: BorrowedFd<'_>,
        rel: &OsStr,
        name: &OsStr,
        st: &libc::stat,
        replace: bool,
    ) -> Result<(Oid, u32)> {
        self.mint_tagging(rank, dir, None, rel, name, st, replace)
    }

    /// As [`mint_for`](Self::mint_for); `obj`, an open descriptor of the
    /// object itself, takes the identity xattrs without a path walk.
    #[allow(clippy::too_many_arguments)]
    fn mint_tagging(
        &self,
        rank: u8,
        dir: BorrowedFd<'_>,
        obj: Option<BorrowedFd<'_>>,
        rel: &OsStr,
        name: &OsStr,
        st: &libc::stat,
        replace: bool,
    ) -> Result<(Oid, u32)> {
        let set = |attr: &std::ffi::CStr, value: &[u8], flags: i32| match obj {
            Some(fd) => sys::fsetxattr(fd, attr, value, flags),
            None => sys::lsetxattr(dir, name, attr, value, flags),
        };
        let tier = &self.tiers[rank as usize];
        let kind = kind_of_mode(st.st_mode);
        if self.read_only {
            // Provisional identity from (slot, lower inode), never written (S3.1 item 5).
            let mut b = [0u8; 16];
            b[0] = 0xff;
            b[1] = tier.slot;
            b[8..16].copy_from_slice(&st.st_ino.to_le_bytes());
            return Ok((Oid(b), 0));
        }
        let mut oid = self.minter.mint();
        while self.placement.by_ino(oid.ino()).is_some() {
            bump(&self.counters.oid_collisions);
            oid = self.minter.mint();
        }
        let flags = if replace { 0 } else { libc::XATTR_CREATE };
        match set(OID_XATTR_C, &oid.0, flags) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // A concurrent lookup minted first: use its OID.
                let v = sys::lgetxattr(dir, name, OID_XATTR_C)
                    .map_err(io_err(|| format!("read OID of {rel:?}")))?;
                oid = Oid::from_slice(&v)
                    .ok_or_else(|| err!(libc::EIO, "bad OID xattr on {rel:?}"))?;
                return Ok((oid, 0));
            }
            Err(e) if kind == KIND_SYMLINK || kind == KIND_OTHER => {
                debug!("cannot tag {rel:?} with an OID xattr: {e}; index-only identity");
            }
            Err(e) => {
                return Err(Error::io(
                    format!("write OID of {} on tier {}", to_str(rel), tier.rank),
                    e,
                ));
            }
        }
        let _ = set(GEN_XATTR_C, &0u32.to_le_bytes(), 0);
        let slot = if kind == KIND_DIR {
            SLOT_NONE
        } else {
            tier.slot
        };
        self.record_placed(oid, 0, kind, slot, st, rel)?;
        Ok((oid, 0))
    }

    fn record_placed(
        &self,
        oid: Oid,
        gen_: u32,
        kind: u8,
        slot: u8,
        st: &libc::stat,
        rel: &OsStr,
    ) -> Result<()> {
        let rec = ObjectRec {
            oid,
            r#gen: gen_,
            kind,
            slot,
            lower_ino: st.st_ino,
            rel_path: to_str(rel),
            movement_state: 0,
            intended_slot: slot,
            transaction_seq: 0,
            policy_pin: 0,
            protocol_pin: 0,
            always_mediated: false,
            nlink_names: vec![to_str(rel)],
            attrs: snapshot(st),
        };
        self.placement.placed(&rec)
    }

    // ---- lookup (S2.1) --------------------------------------------------

    /// Find `name` in the union directory `parent_rel`. Returns the identity,
    /// kind, rank (non-directories) and the attributes of the winning copy.
    #[allow(clippy::type_complexity)]
    fn find_in_dir(
        &self,
        parent_rel: &OsStr,
        name: &OsStr,
    ) -> Result<Option<(Oid, u32, u8, Option<u8>, libc::stat)>> {
        if parent_rel.is_empty() && name == INTERNAL_DIR {
            return Ok(None);
        }
        let rel = join(parent_rel, name);
        // 1. The path index: jump straight to the authoritative tier.
        let indexed = self.placement.by_path(&to_str(&rel));
        // A faulted or down tier is not touched: its objects stay
        // resolvable from the index snapshot (S23.2 item 2).
        if let Some(rec) = &indexed
            && rec.kind != KIND_DIR
            && let Some(t) = self.tier_by_slot(rec.slot)
            && !t.is_ok()
        {
            return Ok(Some((
                rec.oid,
                rec.r#gen,
                rec.kind,
                Some(t.rank),
                stat_from_snapshot(rec),
            )));
        }
        if let Some(rec) = indexed
            && rec.kind != KIND_DIR
            && let Some(t) = self.tier_by_slot(rec.slot)
            && (self.meta_active(t.rank) || self.nodes.read().contains_key(&rec.oid.ino()))
            && let Ok(d) = self.parent_dir(t, parent_rel)
            && let Ok(st) = sys::fstatat(d.as_fd(), name)
            && let Some((oid, gen_)) =
                if index_vouches(&rec, t.slot, st.st_ino, kind_of_mode(st.st_mode)) {
                    // The record just read vouches for this file: no second
                    // index read and no xattr reads.
                    Some((rec.oid, rec.r#gen))
                } else {
                    self.identify(t.rank, d.as_fd(), &rel, name, &st)?
                }
        {
            let kind = kind_of_mode(st.st_mode);
            return Ok(Some((
                oid,
                gen_,
                kind,
                (kind != KIND_DIR).then_some(t.rank),
                st,
            )));
        }
        // 2./3. Canonical copy first, then other metadata-active copies in rank order.
        let mut dir_hit: Option<(Oid, u32, libc::stat)> = None;
        for t in &self.tiers {
            if !t.is_ok() {
                continue;
            }
            if !self.meta_active(t.rank) {
                bump(&self.counters.metadata_tier_skips);
                continue;
            }
            let d = match self.parent_dir(t, parent_rel) {
                Ok(d) => d,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT)
                            | Some(libc::ENOTDIR)
                            | Some(libc::ELOOP)
                            | Some(libc::EXDEV)
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("open {} on tier {}", to_str(parent_rel), t.rank),
                        e,
                    ));
                }
            };
            let st = match sys::fstatat(d.as_fd(), name) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("stat {} on tier {}", to_str(&rel), t.rank),
                        e,
                    ));
                }
            };
            let kind = kind_of_mode(st.st_mode);
            if let Some((oid, gen_, dst)) = dir_hit {
                if kind != KIND_DIR {
                    bump(&self.counters.name_conflicts);
                    warn!(
                        "name conflict: {} is a directory on a faster tier and a non-directory on tier {}",
                        to_str(&rel),
                        t.rank
                    );
                }
                return Ok(Some((oid, gen_, KIND_DIR, None, dst)));
            }
            let Some((oid, gen_)) = self.identify(t.rank, d.as_fd(), &rel, name, &st)? else {
                continue;
            };
            if kind == KIND_DIR {
                dir_hit = Some((oid, gen_, st));
                // The canonical copy decides attributes; stop at the first copy.
                break;
            }
            return Ok(Some((oid, gen_, kind, Some(t.rank), st)));
        }
        Ok(dir_hit.map(|(o, g, st)| (o, g, KIND_DIR, None, st)))
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        let pnode = self.node(parent)?;
        if name == "." {
            // NFS handle decoding: LOOKUP(nodeid, ".") for files and directories.
            let attr = self.getattr(parent)?;
            if parent != ROOT_INO {
                let mut nodes = self.nodes.write();
                nodes.entry(parent).or_insert_with(|| pnode.clone()).lookups += 1;
            }
            return Ok(Entry {
                ino: parent,
                generation: pnode.generation,
                attr,
            });
        }
        if name == ".." {
            let (pp, _) = split(&pnode.rel_path);
            let (pp_parent, pp_name) = split(&pp);
            if pp.is_empty() {
                let attr = self.getattr(ROOT_INO)?;
                return Ok(Entry {
                    ino: ROOT_INO,
                    generation: 0,
                    attr,
                });
            }
            return self.lookup_path(&pp_parent, &pp_name);
        }
        if pnode.kind != KIND_DIR {
            return Err(err!(libc::ENOTDIR, "not a directory"));
        }
        self.lookup_path(&pnode.rel_path, name)
    }

    fn lookup_path(&self, parent_rel: &OsStr, name: &OsStr) -> Result<Entry> {
        match self.find_in_dir(parent_rel, name)? {
            Some((oid, gen_, kind, rank, st)) => {
                Ok(self.remember(join(parent_rel, name), oid, gen_, kind, rank, st))
            }
            None => Err(err!(
                libc::ENOENT,
                "{} not found",
                to_str(&join(parent_rel, name))
            )),
        }
    }

    /// Lower attributes of a node; st_ino replaced with the pool's.
    pub fn getattr(&self, ino: u64) -> Result<libc::stat> {
        let mut st = self.on_node(ino, |node| self.stat_node(node))?;
        st.st_ino = ino;
        if let Some(n) = self.nodes.write().get_mut(&ino) {
            n.attr = Some(NodeAttr::from(&st));
        }
        Ok(st)
    }

    fn stat_node(&self, node: &Node) -> Result<libc::stat> {
        if node.kind == KIND_DIR {
            for t in &self.tiers {
                if !t.is_ok() {
                    continue;
                }
                // The directory itself, from the same cache as parents.
                if let Ok(d) = self.parent_dir(t, &node.rel_path) {
                    return sys::fstat(d.as_fd())
                        .map_err(io_err(|| format!("stat dir {:?}", node.rel_path)));
                }
            }
            return Err(err!(
                libc::ENOENT,
                "directory {} vanished",
                to_str(&node.rel_path)
            ));
        }
        let rank = node
            .rank
            .ok_or_else(|| err!(libc::EIO, "object without tier"))?;
        self.check_tier_ok(rank)?;
        if !self.meta_active(rank)
            && let Some(a) = node.attr
        {
            bump(&self.counters.metadata_tier_skips);
            return Ok(a.to_stat());
        }
        let (p, n) = split(&node.rel_path);
        let t = &self.tiers[rank as usize];
        let d = self.parent_dir(t, &p).map_err(io_err(|| {
            format!("open parent of {:?} on tier {rank}", node.rel_path)
        }))?;
        sys::fstatat(d.as_fd(), &n).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                err!(
                    libc::ESTALE,
                    "{} vanished from tier {rank}",
                    to_str(&node.rel_path)
                )
            } else {
                Error::io(format!("stat {:?}", node.rel_path), e)
            }
        })
    }

    /// The tier and parent fd holding a non-directory node.
    fn locate(&self, node: &Node) -> Result<(&Tier, OwnedFd, OsString)> {
        let rank = node
            .rank
            .ok_or_else(|| err!(libc::EISDIR, "is a directory"))?;
        let t = &self.tiers[rank as usize];
        let (p, n) = split(&node.rel_path);
        let d = t
            .open_dir(&p)
            .map_err(io_err(|| format!("open parent of {:?}", node.rel_path)))?;
        Ok((t, d, n))
    }

    /// `f` on the node of `ino`; when it fails with ENOENT or ESTALE after a
    /// cutover switched the node to another tier or path meanwhile (the
    /// source copy leaves the namespace at the switch), `f` once more on
    /// the node as it is now.
    fn on_node<T>(&self, ino: u64, f: impl Fn(&Node) -> Result<T>) -> Result<T> {
        let node = self.node(ino)?;
        match f(&node) {
            Err(e) if e.errno == libc::ENOENT || e.errno == libc::ESTALE => {
                let now = self.node(ino)?;
                if now.rank != node.rank || now.rel_path != node.rel_path {
                    f(&now)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    /// Canonical copy of a directory node: (tier, fd of the directory itself).
    fn canonical_dir(&self, rel: &OsStr) -> Result<(&Tier, std::sync::Arc<OwnedFd>)> {
        for t in &self.tiers {
            if let Ok(d) = self.parent_dir(t, rel) {
                return Ok((t, d));
            }
        }
        Err(err!(
            libc::ENOENT,
            "directory {} not on any tier",
            to_str(rel)
        ))
    }

    /// (fd of the parent dir, final name) for any node, on its authoritative
    /// (or canonical, for directories) tier. The root gives (root fd, "").
    fn target_of(&self, node: &Node) -> Result<(OwnedFd, OsString)> {
        if node.kind == KIND_DIR {
            if node.rel_path.is_empty() {
                let d = self.tiers[0]
                    .open_dir(OsStr::new(""))
                    .map_err(io_err(|| "open tier 0 root".into()))?;
                return Ok((d, OsString::new()));
            }
            let (t, _) = self.canonical_dir(&node.rel_path)?;
            let (p, n) = split(&node.rel_path);
            let d = t.open_dir(&p).map_err(io_err(|| format!("open {:?}", p)))?;
            return Ok((d, n));
        }
        let (_, d, n) = self.locate(node)?;
        Ok((d, n))
    }

    // ---- setattr --------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Option<libc::timespec>>,
        mtime: Option<Option<libc::timespec>>,
        fh_fd: Option<BorrowedFd<'_>>,
    ) -> Result<libc::stat> {
        self.check_writable()?;
        let node = self.node(ino)?;
        let (d, n) = self.target_of(&node)?;
        if uid.is_some() || gid.is_some() {
            sys::fchownat(
                d.as_fd(),
                &n,
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
            )
            .map_err(io_err(|| format!("chown {:?}", node.rel_path)))?;
        }
        if let Some(m) = mode
            && node.kind != KIND_SYMLINK
        {
            sys::fchmodat(d.as_fd(), &n, m & 0o7777)
                .map_err(io_err(|| format!("chmod {:?}", node.rel_path)))?;
        }
        if let Some(sz) = size {
            match fh_fd {
                Some(fd) => sys::ftruncate(fd, sz),
                None => {
                    let f = sys::openat_name(d.as_fd(), &n, libc::O_WRONLY, 0)
                        .map_err(io_err(|| format!("open {:?} for truncate", node.rel_path)))?;
                    sys::ftruncate(f.as_fd(), sz)
                }
            }
            .map_err(io_err(|| format!("truncate {:?}", node.rel_path)))?;
        }
        if atime.is_some() || mtime.is_some() {
            let conv = |t: Option<Option<libc::timespec>>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(None) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(Some(ts)) => ts,
            };
            let times = [conv(atime), conv(mtime)];
            if n.is_empty() {
                sys::futimens(d.as_fd(), &times)
            } else {
                sys::utimensat(d.as_fd(), &n, &times)
            }
            .map_err(io_err(|| format!("utimens {:?}", node.rel_path)))?;
        }
        self.getattr(ino)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        let (_, d, n) = self.locate(&node)?;
        sys::readlinkat(d.as_fd(), &n).map_err(io_err(|| format!("readlink {:?}", node.rel_path)))
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(err!(libc::EROFS, "pool mounted read-only"))
        } else {
            Ok(())
        }
    }

    // ---- create placement (S5) -------------------------------------------

    /// Ranks to try for a new object, in order (S5.1).
    fn placement_order(&self) -> Vec<u8> {
        let full_pct = self.full_pct.load(Ordering::Relaxed) as u32;
        let disabled = self.create_disabled_mask.load(Ordering::Relaxed);
        let usable: Vec<&Tier> = self
            .tiers
            .iter()
            .filter(|t| t.is_ok() && disabled & (1 << t.rank) == 0)
            .collect();
        let mut out = Vec::new();
        for (i, t) in usable.iter().enumerate() {
            let last = i + 1 == usable.len();
            match t.near_full(full_pct) {
                Ok(true) if !last => continue,
                Ok(_) => out.push(t.rank),
                Err(_) => continue,
            }
        }
        out
    }

    /// Make sure directory `rel` exists on tier `rank`, creating each
    /// missing component top-down with the canonical copy's mode, owner,
    /// OID, default ACL and `user.*` xattrs (S5.3).
    pub fn materialise(&self, rank: u8, rel: &OsStr) -> Result<()> {
        let t = &self.tiers[rank as usize];
        if self.parent_dir(t, rel).is_ok() {
            return Ok(());
        }
        // Directories appear on this tier: cached absences (some taken by
        // the loop below) are forgotten when it ends, however it ends.
        let _bump = BumpOnDrop(self);
        let mut cur = OsString::new();
        for comp in rel.as_bytes().split(|c| *c == b'/') {
            let comp = OsStr::from_bytes(comp);
            let parent = cur.clone();
            cur = join(&parent, comp);
            if t.open_dir(&cur).is_ok() {
                continue;
            }
            let (_, canon) = self.canonical_dir(&cur)?;
            let st = sys::fstat(canon.as_fd())
                .map_err(io_err(|| format!("stat canonical {:?}", cur)))?;
            let pd = t
                .open_dir(&parent)
                .map_err(io_err(|| format!("open {:?} on tier {rank}", parent)))?;
            match sys::mkdirat(pd.as_fd(), comp, st.st_mode & 0o7777) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("materialise {} on tier {rank}", to_str(&cur)),
                        e,
                    ));
                }
            }
            let _ = sys::fchownat(pd.as_fd(), comp, st.st_uid, st.st_gid);
            let _ = sys::fchmodat(pd.as_fd(), comp, st.st_mode & 0o7777);
            // Copy identity, default ACL and user xattrs from the canonical copy.
            if let Ok(list) = sys::llistxattr(canon.as_fd(), OsStr::new("")) {
                for xname in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                    let keep = xname.starts_with(b"user.")
                        || xname == b"system.posix_acl_default"
                        || xname == b"system.posix_acl_access"
                        || xname == b"trusted.smoothfs.oid"
                        || xname == b"trusted.smoothfs.gen";
                    if !keep {
                        continue;
                    }
                    let Ok(cname) = std::ffi::CString::new(xname) else {
                        continue;
                    };
                    if let Ok(v) = sys::lgetxattr(canon.as_fd(), OsStr::new(""), &cname) {
                        let _ = sys::lsetxattr(pd.as_fd(), comp, &cname, &v, 0);
                    }
                }
            }
        }
        Ok(())
    }

    /// The mode to pass to the lower create: with a default ACL on the
    /// parent the lower filesystem applies it, else we apply the umask.
    fn create_mode(
        &self,
        t: &Tier,
        parent_rel: &OsStr,
        parent_fd: BorrowedFd<'_>,
        mode: u32,
        umask: u32,
    ) -> u32 {
        if self.has_default_acl(t, parent_rel, parent_fd) {
            mode
        } else {
            mode & !umask
        }
    }

    /// Whether the directory `rel` on `t` (open as `fd`) has a default
    /// ACL, cached per thread like the parent descriptors: a setxattr or
    /// removexattr of one through smoothfs bumps dir_gen, a change made
    /// directly on the tier is seen within the cache's TTL.
    fn has_default_acl(&self, t: &Tier, rel: &OsStr, fd: BorrowedFd<'_>) -> bool {
        self.thread_cached(&DIR_ACL, t, rel, || {
            Ok(matches!(
                sys::lgetxattr_size(fd, OsStr::new(""), ACL_DEFAULT_C),
                Ok(n) if n > 0
            ))
        })
        .unwrap_or(false)
    }

    /// Create an object of any kind: tries tiers in placement order,
    /// materialising the parent chain, cascading on ENOSPC/EDQUOT.
    /// `make` performs the lower create in the given parent fd and returns
    /// an optional open descriptor (for regular files).
    #[allow(clippy::too_many_arguments)]
    fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        uid: u32,
        gid: u32,
        make: &LowerCreate<'_>,
        mode: u32,
        umask: u32,
    ) -> Result<(Entry, Option<OwnedFd>, u8)> {
        self.check_writable()?;
        check_name(name)?;
        let pnode = self.node(parent)?;
        if pnode.kind != KIND_DIR {
            return Err(err!(libc::ENOTDIR, "parent is not a directory"));
        }
        if pnode.rel_path.is_empty() && name == INTERNAL_DIR {
            return Err(err!(libc::EPERM, ".smoothfs is reserved"));
        }
        let _g = self.ns_lock.lock();
        if self.find_in_dir(&pnode.rel_path, name)?.is_some() {
            return Err(err!(
                libc::EEXIST,
                "{} exists",
                to_str(&join(&pnode.rel_path, name))
            ));
        }
        let order = self.placement_order();
        let first = self
            .tiers
            .iter()
            .find(|t| t.is_ok())
            .map(|t| t.rank)
            .unwrap_or(0);
        let rel = join(&pnode.rel_path, name);
        // Parent's canonical attributes: setgid inheritance.
        let (_, canon) = self.canonical_dir(&pnode.rel_path)?;
        let pst = sys::fstat(canon.as_fd()).map_err(io_err(|| "stat parent".into()))?;
        let mut last_err = err!(libc::ENOSPC, "no tier can hold {}", to_str(&rel));
        for rank in order {
            let t = &self.tiers[rank as usize];
            if let Err(e) = self.materialise(rank, &pnode.rel_path) {
                if e.errno == libc::ENOSPC || e.errno == libc::EDQUOT {
                    t.invalidate_statfs();
                    last_err = e;
                    continue;
                }
                return Err(e);
            }
            let pd = self.parent_dir(t, &pnode.rel_path).map_err(io_err(|| {
                format!("open {:?} on tier {rank}", pnode.rel_path)
            }))?;
            let lower_mode = self.create_mode(t, &pnode.rel_path, pd.as_fd(), mode, umask);
            let fd = match make(pd.as_fd(), name, lower_mode) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
                    t.invalidate_statfs();
                    last_err = Error::io(format!("create {} on tier {rank}", to_str(&rel)), e);
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("create {} on tier {rank}", to_str(&rel)),
                        e,
                    ));
                }
            };
            // The new object itself: its descriptor when the create opened
            // one (no path walk), else its name in the parent.
            let stat_new = || match fd.as_ref() {
                Some(f) => sys::fstat(f.as_fd()),
                None => sys::fstatat(pd.as_fd(), name),
            };
            let st0 = stat_new().map_err(io_err(|| format!("stat new {:?}", rel)))?;
            let kind = kind_of_mode(st0.st_mode);
            let owner_gid = if pst.st_mode & libc::S_ISGID != 0 {
                pst.st_gid
            } else {
                gid
            };
            // The daemon creates as root: give the object to the caller. A
            // caller who is already the owner (root, or the daemon's own
            // credentials) needs no chown, and nothing then clears set-id
            // bits.
            let chown = st0.st_uid != uid || st0.st_gid != owner_gid;
            let mut changed = false;
            if kind == KIND_SYMLINK {
                if chown {
                    let _ = sys::fchownat(pd.as_fd(), name, uid, owner_gid);
                    changed = true;
                }
            } else {
                if chown {
                    sys::fchownat(pd.as_fd(), name, uid, owner_gid)
                        .map_err(io_err(|| format!("chown new {:?}", rel)))?;
                    changed = true;
                }
                // chown clears set-id bits; put back what the caller asked for.
                let mut want = st0.st_mode & 0o7777;
                if kind == KIND_DIR && pst.st_mode & libc::S_ISGID != 0 {
                    want |= libc::S_ISGID;
                }
                if want != st0.st_mode & 0o7777
                    || (chown && want & (libc::S_ISUID | libc::S_ISGID) != 0)
                {
                    let _ = sys::fchmodat(pd.as_fd(), name, want);
                    changed = true;
                }
            }
            let st = if changed {
                stat_new().map_err(io_err(|| format!("stat new {:?}", rel)))?
            } else {
                st0
            };
            let obj = fd.as_ref().map(|f| f.as_fd());
            let (oid, gen_) = match self.mint_tagging(rank, pd.as_fd(), obj, &rel, name, &st, false)
            {
                Ok(v) => v,
                Err(e) if e.errno == libc::ENOSPC || e.errno == libc::EDQUOT => {
                    let _ = sys::unlinkat(pd.as_fd(), name, kind == KIND_DIR);
                    last_err = e;
                    continue;
                }
                Err(e) => {
                    let _ = sys::unlinkat(pd.as_fd(), name, kind == KIND_DIR);
                    return Err(e);
                }
            };
            // Identity xattrs changed ctime: answer with the final attributes.
            let st = stat_new().unwrap_or(st);
            if rank != first {
                bump(&self.counters.spill_creates_total);
                self.counters
                    .any_spill_since_mount
                    .store(1, Ordering::Relaxed);
                self.pending_spills.lock().push(SpillRecord {
                    oid,
                    first_rank: first,
                    used_rank: rank,
                    size: 0,
                    rel_path: to_str(&rel),
                });
            }
            let r = (kind != KIND_DIR).then_some(rank);
            return Ok((self.remember(rel, oid, gen_, kind, r, st), fd, rank));
        }
        bump(&self.counters.spill_creates_failed_all_tiers);
        Err(last_err)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(Entry, OwnedFd)> {
        let open_flags = (flags
            & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_DIRECT))
            | libc::O_CREAT
            | libc::O_EXCL;
        let make = |d: BorrowedFd<'_>, n: &OsStr, m: u32| {
            // Always O_RDWR so the descriptor can back every later open.
            let fl = (open_flags & !libc::O_ACCMODE & !libc::O_TRUNC) | libc::O_RDWR;
            sys::openat_name(d, n, fl, m).map(Some)
        };
        let (e, fd, _) = self.create_object(
            parent,
            name,
            uid,
            gid,
            &make,
            (mode & 0o7777) | libc::S_IFREG,
            umask,
        )?;
        let fd = fd.ok_or_else(|| err!(libc::EIO, "create returned no descriptor"))?;
        Ok((e, fd))
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let make =
            |d: BorrowedFd<'_>, n: &OsStr, m: u32| sys::mkdirat(d, n, m & 0o7777).map(|_| None);
        let r = self
            .create_object(parent, name, uid, gid, &make, mode, umask)
            .map(|r| r.0);
        // A cached "absent" for this path must not outlive the new directory.
        self.dirs_changed();
        r
    }

    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let fmt = mode & libc::S_IFMT;
        let make = move |d: BorrowedFd<'_>, n: &OsStr, m: u32| {
            sys::mknodat(d, n, fmt | (m & 0o7777), rdev as u64).map(|_| None)
        };
        self.create_object(parent, name, uid, gid, &make, mode, umask)
            .map(|r| r.0)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let target = target.as_os_str().to_os_string();
        let make = move |d: BorrowedFd<'_>, n: &OsStr, _m: u32| {
            sys::symlinkat(&target, d, n).map(|_| None)
        };
        self.create_object(parent, name, uid, gid, &make, 0o777, 0)
            .map(|r| r.0)
    }

    // ---- removal (S2.4) ---------------------------------------------------

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        let pnode = self.node(parent)?;
        let _g = self.ns_lock.lock();
        let (oid, gen_, kind, rank, st) = self
            .find_in_dir(&pnode.rel_path, name)?
            .ok_or_else(|| err!(libc::ENOENT, "no such entry"))?;
        if kind == KIND_DIR {
            return Err(err!(libc::EISDIR, "is a directory"));
        }
        let rank = rank.ok_or_else(|| err!(libc::EIO, "object without tier"))?;
        self.check_tier_ok(rank)?;
        if !self.meta_active(rank) {
            bump(&self.counters.metadata_tier_wakes);
        }
        let t = &self.tiers[rank as usize];
        let d = self
            .parent_dir(t, &pnode.rel_path)
            .map_err(io_err(|| "open parent".into()))?;
        sys::unlinkat(d.as_fd(), name, false)
            .map_err(io_err(|| format!("unlink {:?} on tier {rank}", name)))?;
        let rel = join(&pnode.rel_path, name);
        // Stale duplicates of the same OID at the same path on other tiers.
        for other in &self.tiers {
            if other.rank == rank {
                continue;
            }
            if let Ok(od) = self.parent_dir(other, &pnode.rel_path)
                && matches!(sys::lgetxattr(od.as_fd(), name, OID_XATTR_C), Ok(v) if v == oid.0)
            {
                let _ = sys::unlinkat(od.as_fd(), name, false);
            }
        }
        let remaining = (st.st_nlink as u32).saturating_sub(1);
        self.placement
            .unlink(&oid, gen_, remaining, &to_str(&rel))?;
        if remaining == 0 {
            self.abort_in_flight(&oid, "last name unlinked");
            self.object_removed(oid, gen_);
        }
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        // Before and after: no thread may cache the old directory while
        // the removal runs.
        self.dirs_changed();
        let r = self.rmdir_inner(parent, name);
        self.dirs_changed();
        r
    }

    fn rmdir_inner(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        // A faulted or down tier may hold a copy we cannot check (S23.2).
        if let Some(t) = self.tiers.iter().find(|t| !t.is_ok()) {
            return Err(err!(libc::EIO, "tier {} is not available", t.rank));
        }
        let pnode = self.node(parent)?;
        let _g = self.ns_lock.lock();
        let rel = join(&pnode.rel_path, name);
        let (oid, gen_, kind, _, _) = self
            .find_in_dir(&pnode.rel_path, name)?
            .ok_or_else(|| err!(libc::ENOENT, "no such entry"))?;
        if kind != KIND_DIR {
            return Err(err!(libc::ENOTDIR, "not a directory"));
        }
        self.remove_dir_everywhere(&rel)?;
        self.placement.unlink(&oid, gen_, 0, &to_str(&rel))?;
        self.object_removed(oid, gen_);
        Ok(())
    }

    /// Remove the directory `rel` from every tier: empty everywhere first,
    /// then highest rank down, canonical copy last (S2.4 item 3).
    fn remove_dir_everywhere(&self, rel: &OsStr) -> Result<()> {
        let mut holders = Vec::new();
        for t in &self.tiers {
            if let Ok(d) = t.open_dir(rel) {
                if !self.meta_active(t.rank) {
                    bump(&self.counters.metadata_tier_wakes);
                }
                let entries =
                    sys::read_dir_all(d.as_fd()).map_err(io_err(|| format!("list {:?}", rel)))?;
                if !entries.is_empty() {
                    return Err(err!(
                        libc::ENOTEMPTY,
                        "{} not empty on tier {}",
                        to_str(rel),
                        t.rank
                    ));
                }
                holders.push(t);
            }
        }
        let (p, n) = split(rel);
        for t in holders.iter().rev() {
            let pd = t.open_dir(&p).map_err(io_err(|| "open parent".into()))?;
            sys::unlinkat(pd.as_fd(), &n, true)
                .map_err(io_err(|| format!("rmdir {:?} on tier {}", rel, t.rank)))?;
        }
        Ok(())
    }

    // ---- rename (S2.5) and link (S2.6) ------------------------------------

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        // rename_inner bumps dir_gen before and after renaming a directory
        // (a file rename leaves every cached directory descriptor valid).
        self.rename_relocating(parent, name, newparent, newname, flags)
    }

    fn rename_relocating(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        match self.rename_inner(parent, name, newparent, newname, flags) {
            // S2.5 item 6: the target's parent chain cannot be made on the
            // file's tier (full or read-only there): move the file to the
            // tier of the target parent's canonical copy, then rename there.
            Err(e)
                if e.errno == libc::EXDEV
                    && e.msg.starts_with(MATERIALISE_FAILED)
                    && flags & libc::RENAME_EXCHANGE == 0 =>
            {
                let pnode = self.node(parent)?;
                let npnode = self.node(newparent)?;
                let Some((oid, _, KIND_FILE, Some(_), _)) =
                    self.find_in_dir(&pnode.rel_path, name)?
                else {
                    return Err(e);
                };
                let (t, _) = self.canonical_dir(&npnode.rel_path)?;
                let rank = t.rank;
                match self.relocate(&oid, &[rank], "rename: parent chain cannot be materialised") {
                    Ok(_) => self.rename_inner(parent, name, newparent, newname, flags),
                    Err(r) => {
                        warn!("rename relocation of {oid} failed: {r}");
                        Err(e)
                    }
                }
            }
            other => other,
        }
    }

    fn rename_inner(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        check_name(newname)?;
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(err!(libc::EINVAL, "RENAME_WHITEOUT is not supported"));
        }
        let pnode = self.node(parent)?;
        let npnode = self.node(newparent)?;
        if npnode.rel_path.is_empty() && newname == INTERNAL_DIR {
            return Err(err!(libc::EPERM, ".smoothfs is reserved"));
        }
        let _g = self.ns_lock.lock();
        let old_rel = join(&pnode.rel_path, name);
        let new_rel = join(&npnode.rel_path, newname);
        let (soid, _sgen, skind, srank, _sst) = self
            .find_in_dir(&pnode.rel_path, name)?
            .ok_or_else(|| err!(libc::ENOENT, "no such entry"))?;
        let target = self.find_in_dir(&npnode.rel_path, newname)?;
        // A directory is renamed or replaced: cached descriptors of paths
        // under it go stale, now and again when the lower renames are done.
        let _bump =
            (skind == KIND_DIR || target.as_ref().is_some_and(|t| t.2 == KIND_DIR)).then(|| {
                self.dirs_changed();
                BumpOnDrop(self)
            });
        if old_rel == new_rel {
            return Ok(());
        }
        if let Some((toid, _, _, _, _)) = &target
            && *toid == soid
        {
            // Two names of one hard-linked file: POSIX says do nothing.
            return Ok(());
        }
        if flags & libc::RENAME_NOREPLACE != 0 && target.is_some() {
            return Err(err!(libc::EEXIST, "{} exists", to_str(&new_rel)));
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            let (toid, _, tkind, trank, _) =
                target.ok_or_else(|| err!(libc::ENOENT, "exchange target missing"))?;
            return self.rename_exchange(
                &old_rel,
                &new_rel,
                (soid, skind, srank),
                (toid, tkind, trank),
            );
        }
        if skind == KIND_DIR
            && new_rel.as_bytes().starts_with(old_rel.as_bytes())
            && new_rel.as_bytes().get(old_rel.len()) == Some(&b'/')
        {
            return Err(err!(libc::EINVAL, "cannot move a directory into itself"));
        }
        if skind == KIND_DIR {
            if let Some((toid, _, tkind, _, _)) = target {
                if tkind != KIND_DIR {
                    return Err(err!(libc::ENOTDIR, "target is not a directory"));
                }
                self.remove_dir_everywhere(&new_rel)?;
                let _ = self.placement.unlink(&toid, 0, 0, &to_str(&new_rel));
                self.object_removed(toid, 0);
            }
            return self.rename_dir(soid, &old_rel, &new_rel);
        }
        let srank = srank.ok_or_else(|| err!(libc::EIO, "object without tier"))?;
        if let Some(t) = &target
            && t.2 == KIND_DIR
        {
            return Err(err!(libc::EISDIR, "target is a directory"));
        }
        let t = &self.tiers[srank as usize];
        self.materialise(srank, &npnode.rel_path).map_err(|e| {
            if e.errno == libc::ENOSPC || e.errno == libc::EDQUOT || e.errno == libc::EROFS {
                err!(
                    libc::EXDEV,
                    "{MATERIALISE_FAILED} {} on tier {srank}: {}",
                    to_str(&npnode.rel_path),
                    e
                )
            } else {
                e
            }
        })?;
        let replaced = target
            .as_ref()
            .filter(|t| t.3 != Some(srank))
            .map(|t| (t.0, t.1, t.3, t.4));
        // A replacing rename across tiers is journaled before it happens (S2.5 item 3).
        self.placement.rename(
            &soid,
            replaced.as_ref().map(|r| &r.0),
            &to_str(&old_rel),
            &to_str(&new_rel),
        )?;
        let od = self
            .parent_dir(t, &pnode.rel_path)
            .map_err(io_err(|| "open source parent".into()))?;
        let nd = self
            .parent_dir(t, &npnode.rel_path)
            .map_err(io_err(|| "open target parent".into()))?;
        sys::renameat2(od.as_fd(), name, nd.as_fd(), newname, 0)
            .map_err(io_err(|| format!("rename {:?} on tier {srank}", old_rel)))?;
        if let Some((roid, rgen, Some(rrank), rst)) = replaced {
            let rt = &self.tiers[rrank as usize];
            if let Ok(rd) = self.parent_dir(rt, &npnode.rel_path) {
                sys::unlinkat(rd.as_fd(), newname, false).map_err(io_err(|| {
                    format!("unlink replaced {:?} on tier {rrank}", new_rel)
                }))?;
            }
            let remaining = (rst.st_nlink as u32).saturating_sub(1);
            if remaining == 0 {
                let _ = self.placement.unlink(&roid, rgen, 0, &to_str(&new_rel));
                self.object_removed(roid, rgen);
            }
        }
        if let Some((toid, tgen, _, Some(trank), tst)) = &target
            && *trank == srank
        {
            // Replaced in place by the lower rename.
            let remaining = (tst.st_nlink as u32).saturating_sub(1);
            let _ = self
                .placement
                .unlink(toid, *tgen, remaining, &to_str(&new_rel));
            if remaining == 0 {
                self.object_removed(*toid, *tgen);
            }
        }
        self.renamed_node(soid.ino(), &old_rel, &new_rel, false);
        Ok(())
    }

    fn rename_exchange(
        &self,
        a: &OsStr,
        b: &OsStr,
        sa: (Oid, u8, Option<u8>),
        sb: (Oid, u8, Option<u8>),
    ) -> Result<()> {
        let holders = |rel: &OsStr, kind: u8, rank: Option<u8>| -> Vec<u8> {
            if kind == KIND_DIR {
                self.tiers
                    .iter()
                    .filter(|t| t.open_dir(rel).is_ok())
                    .map(|t| t.rank)
                    .collect()
            } else {
                rank.into_iter().collect()
            }
        };
        let ha = holders(a, sa.1, sa.2);
        let hb = holders(b, sb.1, sb.2);
        if ha.len() != 1 || ha != hb {
            return Err(err!(
                libc::EXDEV,
                "RENAME_EXCHANGE of objects on different tiers"
            ));
        }
        let t = &self.tiers[ha[0] as usize];
        let (ap, an) = split(a);
        let (bp, bn) = split(b);
        let ad = t.open_dir(&ap).map_err(io_err(|| "open".into()))?;
        let bd = t.open_dir(&bp).map_err(io_err(|| "open".into()))?;
        sys::renameat2(ad.as_fd(), &an, bd.as_fd(), &bn, libc::RENAME_EXCHANGE)
            .map_err(io_err(|| "exchange".into()))?;
        self.placement.rename(&sa.0, None, &to_str(a), &to_str(b))?;
        self.placement.rename(&sb.0, None, &to_str(b), &to_str(a))?;
        let mut nodes = self.nodes.write();
        for (oid, to) in [(sa.0, b), (sb.0, a)] {
            if let Some(n) = nodes.get_mut(&oid.ino()) {
                n.rel_path = to.to_os_string();
            }
        }
        Ok(())
    }

    fn rename_dir(&self, oid: Oid, old_rel: &OsStr, new_rel: &OsStr) -> Result<()> {
        let (np, nn) = split(new_rel);
        let (op, on) = split(old_rel);
        let mut mask = 0u16;
        for t in &self.tiers {
            if t.open_dir(old_rel).is_ok() {
                mask |= 1 << t.slot;
            }
        }
        self.placement
            .dir_rename(&oid, mask, 0, &to_str(old_rel), &to_str(new_rel))?;
        // Rename the canonical copy last so a failure leaves the old name visible.
        let holders: Vec<&Tier> = self
            .tiers
            .iter()
            .filter(|t| mask & (1 << t.slot) != 0)
            .collect();
        for t in holders.iter().rev() {
            self.materialise(t.rank, &np).map_err(|e| {
                err!(
                    libc::EXDEV,
                    "cannot materialise {} on tier {}: {}",
                    to_str(&np),
                    t.rank,
                    e
                )
            })?;
            let od = t
                .open_dir(&op)
                .map_err(io_err(|| "open source parent".into()))?;
            let nd = t
                .open_dir(&np)
                .map_err(io_err(|| "open target parent".into()))?;
            sys::renameat2(od.as_fd(), &on, nd.as_fd(), &nn, 0).map_err(io_err(|| {
                format!("rename dir {:?} on tier {}", old_rel, t.rank)
            }))?;
            let _ = smoothfs_uapi::failpoint::hit("dir_rename_between_tiers");
        }
        // Every copy renamed: replay must not redo it (S2.5 item 4).
        if mask != 0 {
            self.placement
                .dir_rename(&oid, mask, mask, &to_str(old_rel), &to_str(new_rel))?;
        }
        self.renamed_node(oid.ino(), old_rel, new_rel, true);
        Ok(())
    }

    /// Finish directory renames a crash interrupted (S2.5 item 4): on each
    /// tier of the record not yet done, a directory still at the old path
    /// that carries the renamed directory's OID is renamed to the new path.
    /// A directory created at the old path later (another OID) is left
    /// alone. Called at mount, before the FUSE session starts.
    pub fn finish_dir_renames(&self, list: &[crate::placement::UnfinishedDirRename]) {
        self.dirs_changed();
        for u in list {
            let (old, new) = (OsStr::new(&u.old_path), OsStr::new(&u.new_path));
            let (op, on) = split(old);
            let (np, nn) = split(new);
            let mut done = u.done_mask;
            for t in &self.tiers {
                let bit = 1u16 << t.slot;
                if u.tier_mask & bit == 0 || done & bit != 0 {
                    continue;
                }
                let Ok(od) = t.open_dir(&op) else {
                    done |= bit;
                    continue;
                };
                match sys::lgetxattr(od.as_fd(), &on, OID_XATTR_C) {
                    Ok(v) if v == u.oid.0 => {}
                    // Gone (already renamed) or another directory: nothing to do.
                    _ => {
                        done |= bit;
                        continue;
                    }
                }
                let r = self.materialise(t.rank, &np).and_then(|()| {
                    let nd = t
                        .open_dir(&np)
                        .map_err(io_err(|| "open target parent".into()))?;
                    sys::renameat2(od.as_fd(), &on, nd.as_fd(), &nn, libc::RENAME_NOREPLACE)
                        .map_err(io_err(|| format!("finish rename of {:?}", old)))
                });
                match r {
                    Ok(()) => {
                        done |= bit;
                        warn!(
                            "replay: finished directory rename {} -> {} on tier {}",
                            u.old_path, u.new_path, t.rank
                        );
                    }
                    Err(e) => warn!(
                        "replay: directory rename {} -> {} on tier {} not finished: {e}",
                        u.old_path, u.new_path, t.rank
                    ),
                }
            }
            if done & u.tier_mask == u.tier_mask
                && let Err(e) =
                    self.placement
                        .dir_rename(&u.oid, u.tier_mask, done, &u.old_path, &u.new_path)
            {
                warn!("replay: journaling the finished directory rename: {e}");
            }
        }
    }

    /// Update resident rel_paths after a rename (descendants too for a directory).
    fn renamed_node(&self, ino: u64, old_rel: &OsStr, new_rel: &OsStr, dir: bool) {
        let mut nodes = self.nodes.write();
        if let Some(n) = nodes.get_mut(&ino) {
            n.rel_path = new_rel.to_os_string();
        }
        if dir {
            let mut prefix = old_rel.as_bytes().to_vec();
            prefix.push(b'/');
            for n in nodes.values_mut() {
                if n.rel_path.as_bytes().starts_with(&prefix) {
                    let mut p = new_rel.as_bytes().to_vec();
                    p.extend_from_slice(&n.rel_path.as_bytes()[old_rel.len()..]);
                    n.rel_path = OsString::from_vec(p);
                }
            }
        }
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Entry> {
        self.check_writable()?;
        check_name(newname)?;
        let npnode = self.node(newparent)?;
        if npnode.rel_path.is_empty() && newname == INTERNAL_DIR {
            return Err(err!(libc::EPERM, ".smoothfs is reserved"));
        }
        let _g = self.ns_lock.lock();
        // Read under ns_lock: a cutover switches the node under it, and a
        // node read before would name the source copy it just retired.
        let node = self.node(ino)?;
        if node.kind == KIND_DIR {
            return Err(err!(libc::EPERM, "hard link to a directory"));
        }
        if self.find_in_dir(&npnode.rel_path, newname)?.is_some() {
            return Err(err!(libc::EEXIST, "target exists"));
        }
        let (t, d, n) = self.locate(&node)?;
        self.materialise(t.rank, &npnode.rel_path).map_err(|e| {
            err!(
                libc::EXDEV,
                "cannot materialise {} on tier {}: {}",
                to_str(&npnode.rel_path),
                t.rank,
                e
            )
        })?;
        let nd = t
            .open_dir(&npnode.rel_path)
            .map_err(io_err(|| "open target parent".into()))?;
        sys::linkat(d.as_fd(), &n, nd.as_fd(), newname).map_err(io_err(|| "link".into()))?;
        self.abort_in_flight(&node.oid, "hard link created");
        let new_rel = join(&npnode.rel_path, newname);
        self.placement.link(&node.oid, &to_str(&new_rel))?;
        let st = sys::fstatat(nd.as_fd(), newname).map_err(io_err(|| "stat link".into()))?;
        let mut attr = st;
        attr.st_ino = ino;
        if let Some(nn) = self.nodes.write().get_mut(&ino) {
            nn.lookups += 1;
            nn.attr = Some(NodeAttr::from(&st));
        }
        Ok(Entry {
            ino,
            generation: node.generation,
            attr,
        })
    }

    // ---- open / io ---------------------------------------------------------

    /// Open the authoritative lower file of `ino` with `flags` (O_CREAT etc. stripped).
    pub fn open_lower(&self, ino: u64, flags: i32) -> Result<(OwnedFd, u8)> {
        self.on_node(ino, |node| self.open_node(node, flags))
    }

    fn open_node(&self, node: &Node, flags: i32) -> Result<(OwnedFd, u8)> {
        let rank = node
            .rank
            .ok_or_else(|| err!(libc::EISDIR, "is a directory"))?;
        self.check_tier_ok(rank)?;
        if !self.meta_active(rank) {
            bump(&self.counters.inactive_tier_data_opens);
        }
        let t = &self.tiers[rank as usize];
        let fl = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        let fd = t.open_file(&node.rel_path, fl).map_err(io_err(|| {
            format!("open {:?} on tier {rank}", node.rel_path)
        }))?;
        Ok((fd, rank))
    }

    /// Report the size of a spilled file once its creating handle is released.
    pub fn spill_released(&self, ino: u64, size: u64) -> Option<SpillRecord> {
        let mut p = self.pending_spills.lock();
        let i = p.iter().position(|s| s.oid.ino() == ino)?;
        let mut s = p.remove(i);
        s.size = size;
        Some(s)
    }

    pub fn statfs(&self) -> Result<libc::statvfs> {
        let mut sum: Option<libc::statvfs> = None;
        let bs = 4096u128;
        let (mut blocks, mut bfree, mut bavail) = (0u128, 0u128, 0u128);
        for t in &self.tiers {
            if !t.is_ok() {
                continue;
            }
            let Ok(st) = sys::fstatvfs(t.root()) else {
                continue;
            };
            let fr = st.f_frsize as u128;
            blocks += st.f_blocks as u128 * fr / bs;
            bfree += st.f_bfree as u128 * fr / bs;
            bavail += st.f_bavail as u128 * fr / bs;
            match &mut sum {
                None => sum = Some(st),
                Some(s) => {
                    s.f_files += st.f_files;
                    s.f_ffree += st.f_ffree;
                    s.f_favail += st.f_favail;
                    s.f_namemax = s.f_namemax.min(st.f_namemax);
                }
            }
        }
        let mut s = sum.ok_or_else(|| err!(libc::EIO, "no tier answers statfs"))?;
        s.f_bsize = 4096;
        s.f_frsize = 4096;
        s.f_blocks = blocks as u64;
        s.f_bfree = bfree as u64;
        s.f_bavail = bavail as u64;
        Ok(s)
    }

    // ---- xattrs (S3.4) ------------------------------------------------------

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        let nb = name.as_bytes();
        if let Some(rest) = nb.strip_prefix(XATTR_RESERVED_PREFIX.as_bytes()) {
            return match rest {
                b"oid" => Ok(node.oid.0.to_vec()),
                b"gen" => Ok(node.generation.to_le_bytes().to_vec()),
                b"fileid" => Ok(fileid(&node.oid, node.generation).to_vec()),
                b"lease" | b"lun" => {
                    let which = if rest == b"lease" { 4 } else { 5 };
                    Ok(vec![self.protocol_xattr(&node.oid, which)])
                }
                _ => Err(err!(libc::ENODATA, "no such reserved attribute")),
            };
        }
        let c = std::ffi::CString::new(nb).map_err(|_| err!(libc::EINVAL, "bad xattr name"))?;
        self.on_node(ino, |node| {
            let (d, n) = self.target_of(node)?;
            sys::lgetxattr(d.as_fd(), &n, &c).map_err(|e| Error::io("getxattr", e))
        })
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let raw = self.on_node(ino, |node| {
            let (d, n) = self.target_of(node)?;
            sys::llistxattr(d.as_fd(), &n).map_err(|e| Error::io("listxattr", e))
        })?;
        let mut out = Vec::with_capacity(raw.len());
        for x in raw.split(|b| *b == 0).filter(|x| !x.is_empty()) {
            if x.starts_with(XATTR_RESERVED_PREFIX.as_bytes()) {
                continue;
            }
            out.extend_from_slice(x);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        uid: u32,
    ) -> Result<()> {
        self.check_writable()?;
        let node = self.node(ino)?;
        let nb = name.as_bytes();
        if let Some(rest) = nb.strip_prefix(XATTR_RESERVED_PREFIX.as_bytes()) {
            // lease/lun are the protocol pins (S8.4); identity is never settable.
            return match rest {
                b"lease" => self.set_protocol_xattr(&node.oid, 4, Some(value), uid),
                b"lun" => self.set_protocol_xattr(&node.oid, 5, Some(value), uid),
                _ => Err(err!(libc::EPERM, "{} is reserved", name.to_string_lossy())),
            };
        }
        let (d, n) = self.target_of(&node)?;
        let c = std::ffi::CString::new(nb).map_err(|_| err!(libc::EINVAL, "bad xattr name"))?;
        let r =
            sys::lsetxattr(d.as_fd(), &n, &c, value, flags).map_err(|e| Error::io("setxattr", e));
        if c.as_c_str() == ACL_DEFAULT_C {
            // Creates in this directory now take the new default ACL.
            self.dirs_changed();
        }
        r
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr, uid: u32) -> Result<()> {
        self.check_writable()?;
        let node = self.node(ino)?;
        let nb = name.as_bytes();
        if let Some(rest) = nb.strip_prefix(XATTR_RESERVED_PREFIX.as_bytes()) {
            return match rest {
                b"lease" => self.set_protocol_xattr(&node.oid, 4, None, uid),
                b"lun" => self.set_protocol_xattr(&node.oid, 5, None, uid),
                _ => Err(err!(libc::EPERM, "{} is reserved", name.to_string_lossy())),
            };
        }
        let (d, n) = self.target_of(&node)?;
        let c = std::ffi::CString::new(nb).map_err(|_| err!(libc::EINVAL, "bad xattr name"))?;
        let r = sys::lremovexattr(d.as_fd(), &n, &c).map_err(|e| Error::io("removexattr", e));
        if c.as_c_str() == ACL_DEFAULT_C {
            self.dirs_changed();
        }
        r
    }

    /// Inode-flag ioctls (S2.7/4): `req` (one of [`FileAttrIoctl`]) on the
    /// authoritative lower of `ino` (a directory's canonical copy), with
    /// `arg` as the ioctl's argument, filled in by a get. Only regular
    /// files and directories: the lower of a device node is never opened.
    /// Privilege is the kernel's business: it checks ownership and
    /// CAP_LINUX_IMMUTABLE before it forwards a set.
    pub fn fileattr_ioctl(&self, ino: u64, req: FileAttrIoctl, arg: &mut [u8]) -> Result<()> {
        if req.sets() {
            self.check_writable()?;
        }
        let node = self.node(ino)?;
        let dir = match node.kind {
            KIND_DIR => true,
            KIND_FILE => false,
            _ => return Err(err!(libc::ENOTTY, "inode flags of a special file")),
        };
        if arg.len() < req.arg_len() {
            return Err(err!(libc::EINVAL, "ioctl argument too short"));
        }
        let (d, n) = self.target_of(&node)?;
        // The pool root's target is tier 0's root descriptor itself (an
        // O_PATH one, which takes no ioctl): open it again as ".".
        let name = if n.is_empty() {
            OsStr::new(".")
        } else {
            n.as_os_str()
        };
        let flags = libc::O_RDONLY
            | libc::O_NONBLOCK
            | libc::O_NOATIME
            | if dir { libc::O_DIRECTORY } else { 0 };
        let fd = sys::openat_name(d.as_fd(), name, flags, 0).map_err(io_err(|| {
            format!("open {:?} for its inode flags", node.rel_path)
        }))?;
        sys::ioctl_arg(fd.as_fd(), req.lower_cmd(), arg)
            .map_err(io_err(|| format!("inode flags of {:?}", node.rel_path)))
    }

    // ---- readdir (S2.3) -------------------------------------------------------

    /// The merged listing of directory `ino`: canonical copy first, then the
    /// other metadata-active copies in rank order, first name wins.
    pub fn list_dir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        if node.kind != KIND_DIR {
            return Err(err!(libc::ENOTDIR, "not a directory"));
        }
        // A file moving from a slower tier to a faster one while the tiers
        // are read one after the other could be missed on both: list again
        // until no switch in this directory overlapped the listing. A switch
        // in progress is waited out first; after 2 s of switches the last
        // listing is returned as it is.
        let seq = self.moves.switch_seq_of(&node.rel_path);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let mut before = seq.load(Ordering::Acquire);
            while !before.is_multiple_of(2) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_micros(200));
                before = seq.load(Ordering::Acquire);
            }
            let out = self.list_dir_once(&node)?;
            let after = seq.load(Ordering::Acquire);
            if (before == after && before.is_multiple_of(2))
                || std::time::Instant::now() >= deadline
            {
                return Ok(out);
            }
        }
    }

    fn list_dir_once(&self, node: &Node) -> Result<Vec<DirEntry>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        // The directory's indexed children, read once for every tier.
        let mut children: Option<Vec<(String, ObjectRec)>> = None;
        for t in &self.tiers {
            if !t.is_ok() {
                // Names on a faulted or down tier stay listed (S23.2 item 2).
                let children = children
                    .get_or_insert_with(|| self.placement.children(&to_str(&node.rel_path)));
                for (name, rec) in children.iter() {
                    let name = OsString::from(name);
                    if rec.kind != KIND_DIR && rec.slot == t.slot && seen.insert(name.clone()) {
                        out.push(DirEntry {
                            name,
                            ino: rec.oid.ino(),
                            kind: rec.kind,
                        });
                    }
                }
                continue;
            }
            if !self.meta_active(t.rank) {
                bump(&self.counters.metadata_tier_skips);
                continue;
            }
            let Ok(d) = t.open_dir(&node.rel_path) else {
                continue;
            };
            let _ = smoothfs_uapi::failpoint::hit("list_dir_tier");
            let entries = sys::read_dir_all(d.as_fd()).map_err(io_err(|| {
                format!("list {:?} on tier {}", node.rel_path, t.rank)
            }))?;
            // Indexed children of this directory, for the fast path: an entry
            // whose lower inode is the one the index has for that name on
            // this tier needs no stat and no xattr read.
            let indexed: HashMap<&OsStr, &ObjectRec> = if entries.len() > 8 {
                children
                    .get_or_insert_with(|| self.placement.children(&to_str(&node.rel_path)))
                    .iter()
                    .filter(|(_, r)| {
                        r.slot == t.slot
                            && (r.kind == KIND_FILE || r.kind == KIND_SYMLINK)
                            && r.lower_ino != 0
                    })
                    .map(|(n, r)| (OsStr::new(n.as_str()), r))
                    .collect()
            } else {
                HashMap::new()
            };
            for e in entries {
                let name = OsString::from_vec(e.name);
                if node.rel_path.is_empty() && name == INTERNAL_DIR {
                    continue;
                }
                if seen.contains(&name) {
                    continue;
                }
                if let Some(rec) = indexed.get(name.as_os_str())
                    && index_vouches(rec, t.slot, e.ino, rec.kind)
                    && rec.rel_path.as_bytes() == join(&node.rel_path, &name).as_bytes()
                {
                    seen.insert(name.clone());
                    out.push(DirEntry {
                        name,
                        ino: rec.oid.ino(),
                        kind: rec.kind,
                    });
                    continue;
                }
                let rel = join(&node.rel_path, &name);
                let Ok(st) = sys::fstatat(d.as_fd(), &name) else {
                    continue;
                };
                // An entry that left since it was read (a switch retired a
                // source copy, an unlink) is skipped, as a failed stat is;
                // the switch's sequence makes the caller list again.
                let ident = match self.identify(t.rank, d.as_fd(), &rel, &name, &st) {
                    Err(e) if e.errno == libc::ENOENT => continue,
                    r => r?,
                };
                let Some((oid, _)) = ident else { continue };
                seen.insert(name.clone());
                out.push(DirEntry {
                    name,
                    ino: oid.ino(),
                    kind: kind_of_mode(st.st_mode),
                });
            }
        }
        Ok(out)
    }

    /// Attributes of the parent directory of `ino` (st_ino set), for "..".
    pub fn parent_attr(&self, ino: u64) -> Option<libc::stat> {
        let node = self.node(ino).ok()?;
        if node.rel_path.is_empty() {
            return self.getattr(ROOT_INO).ok();
        }
        let (p, _) = split(&node.rel_path);
        if p.is_empty() {
            return self.getattr(ROOT_INO).ok();
        }
        let (_, d) = self.canonical_dir(&p).ok()?;
        let mut st = sys::fstat(d.as_fd()).ok()?;
        let oid = sys::lgetxattr(d.as_fd(), OsStr::new(""), OID_XATTR_C)
            .ok()
            .and_then(|v| Oid::from_slice(&v))?;
        st.st_ino = oid.ino();
        Some(st)
    }

    /// Lookup used by READDIRPLUS: the entry and its attributes, counted as a lookup.
    pub fn lookup_child(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        self.lookup(parent, name)
    }

    // ---- sync --------------------------------------------------------------

    pub fn fsync_dir(&self, ino: u64) -> Result<()> {
        let node = self.node(ino)?;
        for t in &self.tiers {
            if let Ok(d) = t.open_file(&node.rel_path, libc::O_RDONLY | libc::O_DIRECTORY) {
                sys::fsync(d.as_fd(), false).map_err(|e| Error::io("fsync dir", e))?;
            }
        }
        self.placement.sync()
    }

    /// Refresh the index's attribute snapshot (on release).
    pub fn refresh_snapshot(&self, ino: u64, st: &libc::stat) {
        if let Some(n) = self.nodes.read().get(&ino) {
            self.placement.update_attrs(&n.oid, snapshot(st));
        }
    }
}

pub fn snapshot(st: &libc::stat) -> AttrSnapshot {
    AttrSnapshot {
        size: st.st_size as u64,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_are_inverse() {
        assert_eq!(
            split(OsStr::new("a/b/c")),
            (OsString::from("a/b"), OsString::from("c"))
        );
        assert_eq!(
            split(OsStr::new("c")),
            (OsString::new(), OsString::from("c"))
        );
        assert_eq!(join(OsStr::new(""), OsStr::new("x")), OsString::from("x"));
        assert_eq!(
            join(OsStr::new("a/b"), OsStr::new("x")),
            OsString::from("a/b/x")
        );
    }

    #[test]
    fn names_with_slash_or_dots_are_rejected() {
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(check_name(OsStr::new(bad)).unwrap_err().errno, libc::EINVAL);
        }
        assert_eq!(
            check_name(OsStr::new(&"x".repeat(256))).unwrap_err().errno,
            libc::ENAMETOOLONG
        );
        assert!(check_name(OsStr::new("ok")).is_ok());
    }

    #[test]
    fn node_attributes_keep_what_replies_use_in_less_memory() {
        // SAFETY: libc::stat is plain old data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = 7;
        st.st_ino = 42;
        st.st_mode = libc::S_IFREG | 0o640;
        st.st_nlink = 3;
        st.st_uid = 1000;
        st.st_gid = 100;
        st.st_rdev = 0x0801;
        st.st_size = 5 << 40;
        st.st_blocks = 123;
        st.st_blksize = 4096;
        st.st_atime = -5;
        st.st_atime_nsec = 1;
        st.st_mtime = 1_700_000_000;
        st.st_mtime_nsec = 999_999_999;
        st.st_ctime = 1_700_000_001;
        st.st_ctime_nsec = 2;
        let back = NodeAttr::from(&st).to_stat();
        let mut want = st;
        want.st_dev = 0;
        want.st_ino = 0;
        assert_eq!(
            (
                back.st_dev,
                back.st_ino,
                back.st_mode,
                back.st_nlink,
                back.st_uid,
                back.st_gid,
                back.st_rdev,
                back.st_size,
                back.st_blocks,
                back.st_blksize
            ),
            (
                want.st_dev,
                want.st_ino,
                want.st_mode,
                want.st_nlink,
                want.st_uid,
                want.st_gid,
                want.st_rdev,
                want.st_size,
                want.st_blocks,
                want.st_blksize
            )
        );
        assert_eq!(
            (
                back.st_atime,
                back.st_atime_nsec,
                back.st_mtime,
                back.st_mtime_nsec
            ),
            (-5, 1, 1_700_000_000, 999_999_999)
        );
        assert_eq!((back.st_ctime, back.st_ctime_nsec), (1_700_000_001, 2));
        // One per inode the kernel holds (S28 N8).
        assert!(std::mem::size_of::<Option<NodeAttr>>() <= 88);
        assert!(std::mem::size_of::<Node>() <= 144);
    }
}
