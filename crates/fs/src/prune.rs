//! Directory pruning, PRUNE_DIRS (S15.3): removes the empty directory
//! copies that parent-chain materialisation (S5.3) leaves on slower tiers,
//! and brings the mode and owner of the copies it keeps in line with the
//! canonical copy.
//!
//! Owns the walk of the slower tiers and the remove-or-keep decision. It
//! must never:
//! - open a tier whose metadata bit is clear (S2.2): inactive tiers are
//!   neither pruned nor consulted as "faster copies";
//! - remove a directory that is the only copy of its name, or one that is
//!   not empty: every removal re-checks, under `ns_lock`, that the copy is
//!   still empty and a faster copy still exists. Creates, renames and links
//!   materialise parent chains under the same lock, so a create never finds
//!   the chain it just built removed under it (S15.3/A2);
//! - hold `ns_lock` across the walk: it is taken per removal only;
//! - change the index: directory copies on slower tiers have no index
//!   entries of their own (a directory's record is per OID, not per tier).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use tracing::{debug, info, warn};

use crate::err;
use crate::error::Result;
use crate::namespace::{INTERNAL_DIR, KIND_DIR, Namespace, join, kind_of_mode, split};
use crate::sys;
use crate::tier::Tier;

/// The PRUNE_DIRS reply (S15.3 item 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Empty slower copies removed.
    pub dirs_removed: u64,
    /// Kept slower copies whose mode, owner or group were set to the canonical copy's.
    pub dirs_updated: u64,
    /// Directories visited and kept (non-empty, or no faster copy).
    pub dirs_kept: u64,
}

impl PruneReport {
    /// The reply's STATUS_ITEMS.
    pub fn status_items(&self) -> Vec<(String, String)> {
        vec![
            ("dirs_removed".into(), self.dirs_removed.to_string()),
            ("dirs_updated".into(), self.dirs_updated.to_string()),
            ("dirs_kept".into(), self.dirs_kept.to_string()),
        ]
    }
}

/// REL_PATH as a clean relative path ("" = the pool root): no leading or
/// trailing '/', no empty, `.` or `..` component, not inside `.smoothfs`.
fn clean_under(under: Option<&OsStr>) -> Result<OsString> {
    let Some(u) = under else {
        return Ok(OsString::new());
    };
    let b = u.as_bytes();
    let trimmed = {
        let start = b.iter().position(|c| *c != b'/').unwrap_or(b.len());
        let end = b.iter().rposition(|c| *c != b'/').map_or(start, |i| i + 1);
        &b[start..end.max(start)]
    };
    if trimmed.is_empty() {
        return Ok(OsString::new());
    }
    for (i, c) in trimmed.split(|c| *c == b'/').enumerate() {
        if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
            return Err(err!(libc::EINVAL, "bad REL_PATH {:?}", u));
        }
        if i == 0 && c == INTERNAL_DIR.as_bytes() {
            return Err(err!(libc::EINVAL, "REL_PATH inside {INTERNAL_DIR}"));
        }
    }
    if trimmed.len() > 4095 {
        return Err(err!(libc::EINVAL, "REL_PATH too long"));
    }
    Ok(OsString::from_vec(trimmed.to_vec()))
}

impl Namespace {
    /// PRUNE_DIRS (S15.3): tiers from the last rank up to rank 1, those
    /// metadata-active and (if given) in `tier_mask` (bit = rank), only the
    /// subtree at `under` (itself included, unless it is the root) if
    /// given; directories deepest first, `.smoothfs` skipped. An empty
    /// copy with a copy on a faster active tier is removed; every other
    /// copy is kept, and a kept copy with a faster (canonical) copy gets
    /// its mode, owner and group.
    pub fn prune_dirs(&self, tier_mask: Option<u64>, under: Option<&OsStr>) -> Result<PruneReport> {
        self.check_writable()?;
        let under = clean_under(under)?;
        let mut report = PruneReport::default();
        for t in self.tiers.iter().skip(1).rev() {
            if !t.is_ok() || !self.meta_active(t.rank) {
                continue;
            }
            if let Some(m) = tier_mask
                && m & (1 << t.rank) == 0
            {
                continue;
            }
            let dirs = match self.prune_collect(t, &under) {
                Ok(d) => d,
                Err(e) => {
                    warn!("prune: cannot walk tier {}: {e}", t.rank);
                    continue;
                }
            };
            for rel in dirs {
                self.prune_one(t, &rel, &mut report);
            }
        }
        info!(
            removed = report.dirs_removed,
            updated = report.dirs_updated,
            kept = report.dirs_kept,
            "directory pruning done"
        );
        Ok(report)
    }

    /// The directories of `t` at and below `under`, every one after all of
    /// its descendants (reversed pre-order).
    fn prune_collect(&self, t: &Tier, under: &OsStr) -> std::io::Result<Vec<OsString>> {
        let start = match t.open_dir(under) {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        if !under.is_empty() {
            out.push(under.to_os_string());
        }
        let mut todo: Vec<(OsString, OwnedFd)> = vec![(under.to_os_string(), start)];
        while let Some((rel, dir)) = todo.pop() {
            let entries = match sys::read_dir_all(dir.as_fd()) {
                Ok(e) => e,
                Err(e) => {
                    debug!("prune: cannot list {:?} on tier {}: {e}", rel, t.rank);
                    continue;
                }
            };
            for e in entries {
                let name = OsString::from_vec(e.name);
                if rel.is_empty() && (name == INTERNAL_DIR || name == "lost+found") {
                    continue;
                }
                let is_dir = match e.d_type {
                    libc::DT_DIR => true,
                    libc::DT_UNKNOWN => matches!(
                        sys::fstatat(dir.as_fd(), &name),
                        Ok(st) if kind_of_mode(st.st_mode) == KIND_DIR
                    ),
                    _ => false,
                };
                if !is_dir {
                    continue;
                }
                let Ok(child) =
                    sys::openat_beneath(dir.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY, 0)
                else {
                    continue;
                };
                let crel = join(&rel, &name);
                out.push(crel.clone());
                todo.push((crel, child));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The copy of directory `rel` on the lowest-rank active tier faster than `t`.
    fn prune_faster_copy(&self, t: &Tier, rel: &OsStr) -> Option<OwnedFd> {
        self.tiers
            .iter()
            .filter(|f| f.rank < t.rank && f.is_ok() && self.meta_active(f.rank))
            .find_map(|f| f.open_dir(rel).ok())
    }

    fn prune_one(&self, t: &Tier, rel: &OsStr, report: &mut PruneReport) {
        let (parent, name) = split(rel);
        let Ok(pd) = t.open_dir(&parent) else {
            return;
        };
        let Ok(st) = sys::fstatat(pd.as_fd(), &name) else {
            return;
        };
        if kind_of_mode(st.st_mode) != KIND_DIR {
            return;
        }
        let is_empty = |pd: &OwnedFd| -> bool {
            sys::openat_beneath(pd.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY, 0)
                .and_then(|d| sys::read_dir_all(d.as_fd()))
                .is_ok_and(|e| e.is_empty())
        };
        let Some(canon) = self.prune_faster_copy(t, rel) else {
            // Exists only here and on slower tiers: this copy is the one shown.
            report.dirs_kept += 1;
            return;
        };
        if is_empty(&pd) {
            let _g = self.ns_lock.lock();
            let still = matches!(sys::fstatat(pd.as_fd(), &name), Ok(s) if s.st_ino == st.st_ino)
                && is_empty(&pd)
                && self.prune_faster_copy(t, rel).is_some();
            if still {
                self.dirs_changed();
                let removed = sys::unlinkat(pd.as_fd(), &name, true);
                self.dirs_changed();
                match removed {
                    Ok(()) => {
                        report.dirs_removed += 1;
                        debug!("prune: removed empty {:?} from tier {}", rel, t.rank);
                        return;
                    }
                    Err(e) => {
                        debug!("prune: keeping {:?} on tier {}: {e}", rel, t.rank);
                    }
                }
            }
        }
        report.dirs_kept += 1;
        let Ok(cst) = sys::fstat(canon.as_fd()) else {
            return;
        };
        let want_mode = cst.st_mode & 0o7777;
        if (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (want_mode, cst.st_uid, cst.st_gid) {
            return;
        }
        // chown first: it clears set-id bits that chmod then puts back.
        let r = sys::fchownat(pd.as_fd(), &name, cst.st_uid, cst.st_gid)
            .and_then(|()| sys::fchmodat(pd.as_fd(), &name, want_mode));
        match r {
            Ok(()) => {
                report.dirs_updated += 1;
                debug!(
                    "prune: {:?} on tier {} set to mode {:o} owner {}:{}",
                    rel, t.rank, want_mode, cst.st_uid, cst.st_gid
                );
            }
            Err(e) => warn!("prune: cannot update {:?} on tier {}: {e}", rel, t.rank),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::NamespaceConfig;
    use crate::oid::ROOT_INO;
    use crate::placement::Placement;
    use std::fs::{File, FileTimes};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    const POOL: [u8; 16] = [8; 16];

    struct Fixture {
        _dir: tempfile::TempDir,
        tiers: Vec<PathBuf>,
        ns: Arc<Namespace>,
    }

    fn fixture(n: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut tiers = Vec::new();
        let mut paths = Vec::new();
        for rank in 0..n {
            let p = dir.path().join(format!("t{rank}"));
            std::fs::create_dir_all(p.join(".smoothfs")).unwrap();
            let root = crate::marker::open_tier_root(&p).unwrap();
            tiers.push(Tier::new(rank as u8, rank as u8, p.clone(), root, 0x173));
            paths.push(p);
        }
        let (placement, _) = Placement::open(&paths[0].join(".smoothfs"), POOL).unwrap();
        let ns = Namespace::new(
            tiers,
            placement,
            NamespaceConfig {
                full_pct: 98,
                metadata_mask: u32::MAX,
                read_only: false,
            },
        );
        Fixture {
            _dir: dir,
            tiers: paths,
            ns: Arc::new(ns),
        }
    }

    fn mkdirs(root: &Path, rel: &str) {
        std::fs::create_dir_all(root.join(rel)).unwrap();
    }

    fn age(path: &Path) {
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::open(path)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap();
    }

    /// S15.3/A1: empty slower copies go, deepest first; a non-empty one and
    /// one that exists only on the slower tier stay.
    #[test]
    fn s15_3_a1_empty_slower_copies_are_removed_deepest_first() {
        let f = fixture(2);
        let (t0, t1) = (&f.tiers[0], &f.tiers[1]);
        for t in [t0, t1] {
            mkdirs(t, "a/b");
            mkdirs(t, "c");
        }
        std::fs::write(t1.join("c/file"), b"x").unwrap();
        mkdirs(t1, "spill-only");
        mkdirs(t0, "x");
        mkdirs(t1, "x/y/z");
        let r = f.ns.prune_dirs(None, None).unwrap();
        assert_eq!(
            r,
            PruneReport {
                dirs_removed: 2,
                dirs_updated: 0,
                // c, spill-only, x, x/y, x/y/z
                dirs_kept: 5,
            }
        );
        assert!(!t1.join("a").exists(), "slow a/b, then slow a, removed");
        assert!(t0.join("a/b").is_dir(), "the fast copy is never touched");
        assert!(t1.join("c/file").exists());
        assert!(t1.join("spill-only").is_dir());
        assert!(t1.join("x/y/z").is_dir());
        assert!(t1.join(".smoothfs").is_dir(), ".smoothfs is skipped");
        // Nothing left to do.
        let again = f.ns.prune_dirs(None, None).unwrap();
        assert_eq!(again.dirs_removed, 0);
        let items = again.status_items();
        assert_eq!(items[0], ("dirs_removed".to_string(), "0".to_string()));
    }

    /// S15.3/A2: creates in `a/b/` that spill to tier 1 (materialising the
    /// chain there) while pruning runs over and over never fail.
    #[test]
    fn s15_3_a2_creates_during_repeated_pruning_never_fail() {
        let f = fixture(2);
        mkdirs(&f.tiers[0], "a/b");
        let ns = Arc::clone(&f.ns);
        // Every create spills: tier 0 always counts as near full.
        ns.full_pct.store(0, Ordering::Relaxed);
        let a = ns.lookup(ROOT_INO, OsStr::new("a")).unwrap().ino;
        let b = ns.lookup(a, OsStr::new("b")).unwrap().ino;
        let done = Arc::new(AtomicBool::new(false));
        let pruner = {
            let (ns, done) = (Arc::clone(&ns), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut removed = 0;
                let mut runs = 0;
                while !done.load(Ordering::Acquire) {
                    removed += ns.prune_dirs(None, None).unwrap().dirs_removed;
                    runs += 1;
                }
                (runs, removed)
            })
        };
        for i in 0..1000 {
            let name = OsString::from(format!("f{i}"));
            let (e, _fd) = ns
                .create(b, &name, 0o644, 0o022, libc::O_RDWR, 0, 0)
                .unwrap_or_else(|e| panic!("create {i} failed: {e}"));
            assert!(e.ino != 0);
            assert!(f.tiers[1].join(format!("a/b/f{i}")).exists());
            // Empty it again so the pruner has something to remove.
            ns.unlink(b, &name).unwrap();
        }
        done.store(true, Ordering::Release);
        let (runs, removed) = pruner.join().unwrap();
        assert!(runs > 0);
        eprintln!("{runs} prune runs removed {removed} directories");
        assert!(f.tiers[0].join("a/b").is_dir());
    }

    /// S15.3/A3 (with S2.2): an inactive tier is neither pruned nor read:
    /// its directories keep their (old) access times.
    #[test]
    fn s15_3_a3_inactive_tier_is_untouched() {
        let f = fixture(2);
        let t1 = &f.tiers[1];
        mkdirs(&f.tiers[0], "a/b");
        mkdirs(t1, "a/b");
        for p in [t1.join("a/b"), t1.join("a"), t1.clone()] {
            age(&p);
        }
        let stamp = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.atime(), m.atime_nsec(), m.ctime(), m.ctime_nsec())
        };
        let before: Vec<_> = [t1.join("a/b"), t1.join("a"), t1.clone()]
            .iter()
            .map(|p| stamp(p))
            .collect();
        f.ns.set_metadata_mask(0x1);
        assert_eq!(f.ns.prune_dirs(None, None).unwrap(), PruneReport::default());
        let after: Vec<_> = [t1.join("a/b"), t1.join("a"), t1.clone()]
            .iter()
            .map(|p| stamp(p))
            .collect();
        assert_eq!(before, after);
        assert!(t1.join("a/b").is_dir());
        f.ns.set_metadata_mask(0x3);
        assert_eq!(f.ns.prune_dirs(None, None).unwrap().dirs_removed, 2);
    }

    /// S15.3 item 3: a kept slower copy gets the canonical copy's mode and owner.
    #[test]
    fn kept_slower_copy_gets_the_canonical_mode_and_owner() {
        let f = fixture(2);
        let (t0, t1) = (&f.tiers[0], &f.tiers[1]);
        mkdirs(t0, "m");
        mkdirs(t1, "m");
        std::fs::write(t1.join("m/data"), b"x").unwrap();
        std::os::unix::fs::chown(t0.join("m"), Some(1000), Some(1000)).unwrap();
        std::fs::set_permissions(t0.join("m"), std::fs::Permissions::from_mode(0o2750)).unwrap();
        std::fs::set_permissions(t1.join("m"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = f.ns.prune_dirs(None, None).unwrap();
        assert_eq!((r.dirs_removed, r.dirs_updated, r.dirs_kept), (0, 1, 1));
        let m = std::fs::metadata(t1.join("m")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o2750, 1000, 1000));
        assert_eq!(f.ns.prune_dirs(None, None).unwrap().dirs_updated, 0);
    }

    #[test]
    fn rel_path_and_tier_mask_narrow_the_walk() {
        let f = fixture(3);
        for t in &f.tiers {
            mkdirs(t, "keep/x");
            mkdirs(t, "sub/x");
        }
        // Only under `sub`, only tier 2.
        let r =
            f.ns.prune_dirs(Some(0b100), Some(OsStr::new("/sub/")))
                .unwrap();
        assert_eq!(r.dirs_removed, 2);
        assert!(!f.tiers[2].join("sub").exists());
        assert!(f.tiers[1].join("sub/x").is_dir());
        assert!(f.tiers[2].join("keep/x").is_dir());
        // Rank 0 is never pruned, whatever the mask says.
        let r = f.ns.prune_dirs(Some(0b001), None).unwrap();
        assert_eq!(r, PruneReport::default());
        for bad in ["../x", "a/../b", ".smoothfs/quarantine", "a//b", "."] {
            let e = f.ns.prune_dirs(None, Some(OsStr::new(bad))).unwrap_err();
            assert_eq!(e.errno, libc::EINVAL, "{bad}");
        }
        // A REL_PATH that does not exist prunes nothing.
        assert_eq!(
            f.ns.prune_dirs(None, Some(OsStr::new("nope"))).unwrap(),
            PruneReport::default()
        );
    }
}
