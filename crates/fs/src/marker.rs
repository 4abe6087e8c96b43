//! Tier markers, pool identity and the pool lock (SPEC S1.2).
//!
//! Each tier carries `<tier>/.smoothfs/tier.toml` naming the pool it belongs
//! to, the tier's own UUID, its permanent slot and whether it is the meta
//! tier. This module owns reading, validating and atomically writing those
//! markers, the slot/meta election, and the per-host exclusive pool lock.
//!
//! Every access below the tier root is relative to a directory descriptor
//! opened with `O_NOFOLLOW`, so a symlink planted as `.smoothfs` or
//! `tier.toml` is refused rather than followed out of the tier (S1.8).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::err;
use crate::error::{Error, Result};

/// Name of the internal directory on every tier (never visible in the mount).
pub const INTERNAL_DIR: &str = ".smoothfs";
/// Marker file name inside [`INTERNAL_DIR`].
pub const MARKER_FILE: &str = "tier.toml";
/// The only marker format this build reads and writes.
pub const MARKER_FORMAT: u32 = 1;
/// Highest slot number (slots are 0..=254).
pub const MAX_SLOT: u8 = 254;
const INTERNAL_DIR_MODE: u32 = 0o700;
const MARKER_MODE: u32 = 0o600;

/// The content of `tier.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierMarker {
    pub pool_uuid: Uuid,
    pub tier_uuid: Uuid,
    pub slot: u8,
    pub meta: bool,
}

/// On-disk shape; UUIDs are stored in canonical text form.
#[derive(Serialize, Deserialize)]
struct MarkerFile {
    format: u32,
    pool_uuid: String,
    tier_uuid: String,
    slot: u32,
    meta: bool,
}

impl TierMarker {
    /// TOML text as written to disk.
    pub fn to_toml(&self) -> Result<String> {
        let f = MarkerFile {
            format: MARKER_FORMAT,
            pool_uuid: self.pool_uuid.hyphenated().to_string(),
            tier_uuid: self.tier_uuid.hyphenated().to_string(),
            slot: u32::from(self.slot),
            meta: self.meta,
        };
        toml::to_string(&f).map_err(|e| err!(libc::EINVAL, "cannot encode tier marker: {e}"))
    }

    /// Parse marker text; `what` names the file in errors.
    pub fn from_toml(text: &str, what: &str) -> Result<TierMarker> {
        let f: MarkerFile = toml::from_str(text)
            .map_err(|e| err!(libc::EINVAL, "malformed tier marker {what}: {e}"))?;
        if f.format != MARKER_FORMAT {
            return Err(err!(
                libc::EINVAL,
                "tier marker {what} has format {} (this build reads format {MARKER_FORMAT})",
                f.format
            ));
        }
        let uuid = |s: &str, key: &str| {
            Uuid::try_parse(s)
                .map_err(|_| err!(libc::EINVAL, "tier marker {what}: bad {key} '{s}'"))
        };
        let pool_uuid = uuid(&f.pool_uuid, "pool_uuid")?;
        let tier_uuid = uuid(&f.tier_uuid, "tier_uuid")?;
        let slot = u8::try_from(f.slot)
            .ok()
            .filter(|s| *s <= MAX_SLOT)
            .ok_or_else(|| {
                err!(
                    libc::EINVAL,
                    "tier marker {what}: slot {} out of range 0..={MAX_SLOT}",
                    f.slot
                )
            })?;
        Ok(TierMarker {
            pool_uuid,
            tier_uuid,
            slot,
            meta: f.meta,
        })
    }
}

fn io_at(ctx: impl Into<String>, e: Errno) -> Error {
    Error::io(ctx, std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Open a tier root as a directory descriptor.
pub fn open_tier_root(tier_root: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        tier_root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(format!("open tier '{}'", tier_root.display()), e))
}

/// Open (creating if needed, mode 0700) `<tier>/.smoothfs/` without
/// following a symlink there.
pub fn open_internal_dir(tier_root: &Path) -> Result<OwnedFd> {
    let root = open_tier_root(tier_root)?;
    let ctx = || format!("'{}/{INTERNAL_DIR}'", tier_root.display());
    match rustix::fs::mkdirat(&root, INTERNAL_DIR, Mode::from_raw_mode(INTERNAL_DIR_MODE)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_at(format!("create {}", ctx()), e)),
    }
    let dir = rustix::fs::openat(
        &root,
        INTERNAL_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => err!(
            libc::EINVAL,
            "{} is not a directory (symlink or file?)",
            ctx()
        ),
        e => io_at(format!("open {}", ctx()), e),
    })?;
    // Internal state is root-only whatever umask or an old layout left.
    let st = rustix::fs::fstat(&dir).map_err(|e| io_at(format!("stat {}", ctx()), e))?;
    if st.st_mode & 0o7777 != INTERNAL_DIR_MODE {
        set_mode(&dir, INTERNAL_DIR_MODE, &ctx())?;
    }
    Ok(dir)
}

/// fchmod, tolerating filesystems without Unix modes (vfat answers EPERM):
/// such a tier is refused by the capability probe (S1.3) with a clearer
/// message than a chmod failure would give.
fn set_mode(fd: &OwnedFd, mode: u32, what: &str) -> Result<()> {
    match rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) | Err(Errno::OPNOTSUPP) => {
            tracing::warn!("{what}: filesystem does not keep mode {mode:o}");
            Ok(())
        }
        Err(e) => Err(io_at(format!("chmod {what}"), e)),
    }
}

/// Read `<tier>/.smoothfs/tier.toml`; `Ok(None)` when the tier has none yet
/// (including when `.smoothfs` does not exist).
pub fn read_marker(tier_root: &Path) -> Result<Option<TierMarker>> {
    let root = open_tier_root(tier_root)?;
    let path = format!("{}/{INTERNAL_DIR}/{MARKER_FILE}", tier_root.display());
    let dir = match rustix::fs::openat(
        &root,
        INTERNAL_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(io_at(
                format!("open '{}/{INTERNAL_DIR}'", tier_root.display()),
                e,
            ));
        }
    };
    let fd = match rustix::fs::openat(
        &dir,
        MARKER_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_at(format!("open '{path}'"), e)),
    };
    let mut text = String::new();
    File::from(fd)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(format!("read '{path}'"), e))?;
    TierMarker::from_toml(&text, &format!("'{path}'")).map(Some)
}

/// Write `<tier>/.smoothfs/tier.toml` atomically: temporary file (0600),
/// fsync, rename over the marker, fsync of `.smoothfs`.
pub fn write_marker(tier_root: &Path, marker: &TierMarker) -> Result<()> {
    let dir = open_internal_dir(tier_root)?;
    let text = marker.to_toml()?;
    let tmp = format!("{MARKER_FILE}.tmp-{:016x}", rand::random::<u64>());
    let path = format!("{}/{INTERNAL_DIR}/{MARKER_FILE}", tier_root.display());
    let write = || -> Result<()> {
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(MARKER_MODE),
        )
        .map_err(|e| io_at(format!("create temporary marker for '{path}'"), e))?;
        set_mode(&fd, MARKER_MODE, &format!("'{path}'"))?;
        let mut file = File::from(fd);
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| Error::io(format!("write '{path}'"), e))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("fsync '{path}'"), e))?;
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, MARKER_FILE)
            .map_err(|e| io_at(format!("rename marker into '{path}'"), e))?;
        Ok(())
    };
    if let Err(e) = write() {
        // Best effort: the temporary may or may not exist.
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    rustix::fs::fsync(&dir)
        .map_err(|e| io_at(format!("fsync '{}/{INTERNAL_DIR}'", tier_root.display()), e))
}

/// One tier's identity after marker processing, in rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierIdentity {
    pub rank: usize,
    pub path: PathBuf,
    pub slot: u8,
    pub tier_uuid: Uuid,
    pub is_meta: bool,
    /// This mount wrote a new marker for the tier (it joined the pool now).
    pub created: bool,
}

/// The outcome of [`establish_markers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIdentity {
    pub tiers: Vec<TierIdentity>,
    /// Rank of the meta tier.
    pub meta_rank: usize,
    /// No marker existed: this is the pool's first mount.
    pub first_mount: bool,
    /// `meta_rebuild=1` moved the meta role to rank 0; the caller must start
    /// an empty index and schedule a full scrub (S1.2 item 5).
    pub meta_rebuilt: bool,
}

/// Read or write the markers of every tier of a pool (S1.2 items 1-5).
///
/// `tiers` are the resolved tier roots in rank order. Existing markers are
/// validated first (another pool's UUID, duplicate `tier_uuid`, duplicate
/// slot, more than one meta tier); nothing is written unless every check
/// passes. New tiers get a random `tier_uuid` and the lowest free slot. On
/// the first mount rank 0 becomes the meta tier; later, if no listed tier is
/// the meta tier, the mount fails with EINVAL unless `meta_rebuild`.
pub fn establish_markers(
    tiers: &[PathBuf],
    pool_uuid: Uuid,
    meta_rebuild: bool,
) -> Result<PoolIdentity> {
    if tiers.is_empty() {
        return Err(err!(
            libc::EINVAL,
            "pool {} has no tiers",
            pool_uuid.hyphenated()
        ));
    }
    let mut existing: Vec<Option<TierMarker>> = Vec::with_capacity(tiers.len());
    for t in tiers {
        existing.push(read_marker(t)?);
    }

    let mut seen_uuid: Vec<(Uuid, usize)> = Vec::new();
    let mut used_slots: BTreeSet<u8> = BTreeSet::new();
    let mut meta_rank: Option<usize> = None;
    for (rank, m) in existing.iter().enumerate() {
        let Some(m) = m else { continue };
        let path = tiers[rank].display();
        if m.pool_uuid != pool_uuid {
            return Err(err!(
                libc::EINVAL,
                "tier {rank} '{path}' belongs to pool {}, not to pool {}",
                m.pool_uuid.hyphenated(),
                pool_uuid.hyphenated()
            ));
        }
        if let Some((_, other)) = seen_uuid.iter().find(|(u, _)| *u == m.tier_uuid) {
            return Err(err!(
                libc::EINVAL,
                "tiers {other} '{}' and {rank} '{path}' have the same tier_uuid {} (copied marker?)",
                tiers[*other].display(),
                m.tier_uuid.hyphenated()
            ));
        }
        seen_uuid.push((m.tier_uuid, rank));
        if !used_slots.insert(m.slot) {
            return Err(err!(
                libc::EINVAL,
                "tier {rank} '{path}' reuses slot {} of another tier",
                m.slot
            ));
        }
        if m.meta {
            if let Some(other) = meta_rank {
                return Err(err!(
                    libc::EINVAL,
                    "tiers {other} '{}' and {rank} '{path}' both claim to be the meta tier",
                    tiers[other].display()
                ));
            }
            meta_rank = Some(rank);
        }
    }

    let first_mount = existing.iter().all(Option::is_none);
    let mut meta_rebuilt = false;
    let meta_rank = match meta_rank {
        Some(r) => r,
        None if first_mount => 0,
        None if meta_rebuild => {
            meta_rebuilt = true;
            0
        }
        None => {
            return Err(err!(
                libc::EINVAL,
                "metadata tier missing: pool {} has tier markers but none of the listed tiers is its meta tier \
                 (list it, or mount with meta_rebuild=1 to start an empty index on rank 0)",
                pool_uuid.hyphenated()
            ));
        }
    };

    let mut out = Vec::with_capacity(tiers.len());
    for (rank, m) in existing.iter().enumerate() {
        let is_meta = rank == meta_rank;
        let (marker, write) = match m {
            Some(m) => (
                TierMarker {
                    meta: is_meta,
                    ..*m
                },
                m.meta != is_meta,
            ),
            None => {
                let slot = (0..=MAX_SLOT)
                    .find(|s| !used_slots.contains(s))
                    .ok_or_else(|| {
                        err!(
                            libc::ENOSPC,
                            "pool {} has no free tier slot",
                            pool_uuid.hyphenated()
                        )
                    })?;
                used_slots.insert(slot);
                let tier_uuid = Uuid::new_v4();
                (
                    TierMarker {
                        pool_uuid,
                        tier_uuid,
                        slot,
                        meta: is_meta,
                    },
                    true,
                )
            }
        };
        out.push((rank, marker, write, m.is_none()));
    }

    // The meta marker is written first so that a crash part-way through a
    // first mount leaves a pool whose meta tier is recorded.
    let order = std::iter::once(meta_rank).chain((0..tiers.len()).filter(|r| *r != meta_rank));
    for rank in order {
        let (_, marker, write, _) = &out[rank];
        if *write {
            write_marker(&tiers[rank], marker)?;
        }
    }

    let tiers_out: Vec<TierIdentity> = out
        .into_iter()
        .map(|(rank, m, _, created)| TierIdentity {
            rank,
            path: tiers[rank].clone(),
            slot: m.slot,
            tier_uuid: m.tier_uuid,
            is_meta: m.meta,
            created,
        })
        .collect();
    for t in &tiers_out {
        if usize::from(t.slot) != t.rank && !t.created {
            tracing::info!(rank = t.rank, slot = t.slot, path = %t.path.display(), "tier listed at a rank other than its slot");
        }
    }
    if meta_rebuilt {
        tracing::warn!(path = %tiers[0].display(), "meta tier missing; meta_rebuild=1 makes rank 0 the meta tier");
    }
    Ok(PoolIdentity {
        tiers: tiers_out,
        meta_rank,
        first_mount,
        meta_rebuilt,
    })
}

/// Exclusive per-host lock on a pool UUID (S1.2 item 6), held for the life
/// of the mount. Dropping it removes the lock file while still holding the
/// lock, then releases it, so unmounted pools leave nothing in the run
/// directory. A mount that opened the file just before it was removed
/// finds, once it holds the lock, that the path no longer names its inode
/// and starts over: two mounts never hold locks on two different inodes.
#[derive(Debug)]
pub struct PoolLock {
    /// Holds the flock; closed after `Drop::drop` has removed the file.
    _fd: OwnedFd,
    path: PathBuf,
}

impl PoolLock {
    /// Take `<run_dir>/<uuid>.lock` (run_dir is `/run/smoothfs` in
    /// production); EBUSY when another mount holds it.
    pub fn acquire(run_dir: &Path, pool_uuid: Uuid) -> Result<PoolLock> {
        std::fs::create_dir_all(run_dir)
            .map_err(|e| Error::io(format!("create run directory '{}'", run_dir.display()), e))?;
        let path = run_dir.join(format!("{}.lock", pool_uuid.hyphenated()));
        // A handful of rounds: each lost round means another mount removed
        // the file between our open and our lock, i.e. it just unmounted.
        for _ in 0..16 {
            let fd = rustix::fs::open(
                &path,
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| io_at(format!("open pool lock '{}'", path.display()), e))?;
            match rustix::fs::flock(fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => {
                    return Err(err!(
                        libc::EBUSY,
                        "pool {} is already mounted on this host (lock '{}' is held)",
                        pool_uuid.hyphenated(),
                        path.display()
                    ));
                }
                Err(e) => return Err(io_at(format!("lock '{}'", path.display()), e)),
            }
            let ours = rustix::fs::fstat(&fd)
                .map_err(|e| io_at(format!("stat pool lock '{}'", path.display()), e))?;
            match rustix::fs::lstat(&path) {
                Ok(now) if now.st_dev == ours.st_dev && now.st_ino == ours.st_ino => {
                    return Ok(PoolLock { _fd: fd, path });
                }
                // Removed (or replaced) by an unmount after our open: again.
                Ok(_) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_at(format!("stat pool lock '{}'", path.display()), e)),
            }
        }
        Err(err!(
            libc::EBUSY,
            "pool {}: lock '{}' keeps being replaced; is another mount starting and stopping?",
            pool_uuid.hyphenated(),
            path.display()
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PoolLock {
    fn drop(&mut self) {
        // Still locked here: the descriptor closes after this body.
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove pool lock file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_toml_round_trip() {
        let m = TierMarker {
            pool_uuid: Uuid::new_v4(),
            tier_uuid: Uuid::new_v4(),
            slot: 7,
            meta: true,
        };
        let text = m.to_toml().unwrap();
        assert!(text.contains("format = 1"));
        assert!(text.contains(&m.pool_uuid.hyphenated().to_string()));
        assert_eq!(TierMarker::from_toml(&text, "t").unwrap(), m);
    }

    #[test]
    fn marker_rejects_bad_content() {
        let p = Uuid::new_v4().hyphenated().to_string();
        let t = Uuid::new_v4().hyphenated().to_string();
        for bad in [
            String::new(),
            "garbage".to_string(),
            format!(
                "format = 2\npool_uuid = \"{p}\"\ntier_uuid = \"{t}\"\nslot = 0\nmeta = true\n"
            ),
            format!("format = 1\npool_uuid = \"x\"\ntier_uuid = \"{t}\"\nslot = 0\nmeta = true\n"),
            format!(
                "format = 1\npool_uuid = \"{p}\"\ntier_uuid = \"{t}\"\nslot = 255\nmeta = true\n"
            ),
            format!("format = 1\npool_uuid = \"{p}\"\ntier_uuid = \"{t}\"\nslot = 0\n"),
        ] {
            assert_eq!(
                TierMarker::from_toml(&bad, "t").unwrap_err().errno,
                libc::EINVAL,
                "{bad}"
            );
        }
    }
}
