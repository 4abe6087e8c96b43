//! Lower filesystem capability probe (SPEC S1.3).
//!
//! Every mount (and REPROBE) runs round-trip checks inside a fresh
//! `<tier>/.smoothfs/probe-<random>/` and reports a TIER_CAPS bit mask. There
//! is deliberately no list of filesystem types: a tier is accepted when the
//! required checks pass, whatever it is.
//!
//! All probe files are created relative to the probe directory descriptor,
//! never by path. The FUSE passthrough registration check (S1.3 item 6) needs
//! a FUSE session and is done by the FUSE adapter, not here.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, SeekFrom, XattrFlags};
use rustix::io::Errno;

use crate::err;
use crate::error::{Error, Result};
use crate::marker::open_internal_dir;

/// TIER_CAPS bits (S1.3 item 2).
pub mod caps {
    pub const XATTR_USER: u32 = 1 << 0;
    pub const XATTR_TRUSTED: u32 = 1 << 1;
    pub const XATTR_SECURITY: u32 = 1 << 2;
    pub const POSIX_ACL: u32 = 1 << 3;
    pub const RENAME_ATOMIC: u32 = 1 << 4;
    pub const HARDLINK: u32 = 1 << 5;
    pub const MMAP_COHERENT: u32 = 1 << 6;
    pub const DIRECT_IO: u32 = 1 << 7;
    pub const FSYNC_DURABLE: u32 = 1 << 8;
    pub const SPARSE_SEEK: u32 = 1 << 9;
    pub const INODE_GENERATION: u32 = 1 << 10;
    /// Reserved, reported 0.
    pub const QUOTA_USER: u32 = 1 << 11;
    /// Reserved, reported 0.
    pub const QUOTA_PROJECT: u32 = 1 << 12;
    pub const REFLINK: u32 = 1 << 13;
    pub const COPY_FILE_RANGE: u32 = 1 << 14;
    /// Reserved, reported 0.
    pub const FSCRYPT: u32 = 1 << 15;
}

/// Bits a tier must have (S1.3 item 3, S29.1).
pub const REQUIRED_CAPS: u32 = 0x173;
/// Time limit for probing one tier (S29.1).
pub const PROBE_BUDGET: Duration = Duration::from_secs(5);
/// Prefix of probe directories inside `.smoothfs/`.
pub const PROBE_DIR_PREFIX: &str = "probe-";

/// Names of the bits, as used in messages and STATUS.
pub const CAP_NAMES: [(u32, &str); 16] = [
    (caps::XATTR_USER, "xattr_user"),
    (caps::XATTR_TRUSTED, "xattr_trusted"),
    (caps::XATTR_SECURITY, "xattr_security"),
    (caps::POSIX_ACL, "posix_acl"),
    (caps::RENAME_ATOMIC, "rename_atomic"),
    (caps::HARDLINK, "hardlink"),
    (caps::MMAP_COHERENT, "mmap_coherent"),
    (caps::DIRECT_IO, "direct_io"),
    (caps::FSYNC_DURABLE, "fsync_durable"),
    (caps::SPARSE_SEEK, "sparse_seek"),
    (caps::INODE_GENERATION, "inode_generation"),
    (caps::QUOTA_USER, "quota_user"),
    (caps::QUOTA_PROJECT, "quota_project"),
    (caps::REFLINK, "reflink"),
    (caps::COPY_FILE_RANGE, "copy_file_range"),
    (caps::FSCRYPT, "fscrypt"),
];

/// Name of one capability bit ("?" for an unknown bit).
pub fn cap_name(bit: u32) -> &'static str {
    CAP_NAMES
        .iter()
        .find(|(b, _)| *b == bit)
        .map_or("?", |(_, n)| n)
}

/// Names of every bit set in `mask`, lowest first.
pub fn cap_names(mask: u32) -> Vec<&'static str> {
    CAP_NAMES
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// A check that did not pass, with the errno that made it fail (0 when the
/// call succeeded but the result was wrong, e.g. mismatched data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCheck {
    pub bit: u32,
    pub name: &'static str,
    pub errno: i32,
    pub detail: String,
}

/// Result of probing one tier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TierCaps {
    /// TIER_CAPS bit mask.
    pub mask: u32,
    /// Checks that ran and failed (reserved bits are not checks).
    pub failed: Vec<FailedCheck>,
}

impl TierCaps {
    pub fn has(&self, bit: u32) -> bool {
        self.mask & bit != 0
    }

    /// Required bits this tier lacks.
    pub fn missing_required(&self) -> u32 {
        REQUIRED_CAPS & !self.mask
    }

    pub fn failed_names(&self) -> Vec<&'static str> {
        self.failed.iter().map(|f| f.name).collect()
    }

    /// EOPNOTSUPP unless every required bit is set (S1.3 item 3).
    pub fn require(&self, rank: usize, tier_root: &Path) -> Result<()> {
        let missing = self.missing_required();
        if missing == 0 {
            return Ok(());
        }
        let failed: Vec<String> = self
            .failed
            .iter()
            .filter(|f| f.bit & missing != 0)
            .map(|f| {
                if f.detail.is_empty() {
                    f.name.to_string()
                } else {
                    format!("{} ({})", f.name, f.detail)
                }
            })
            .collect();
        Err(err!(
            libc::EOPNOTSUPP,
            "tier {rank} '{}' lacks required capabilities: has 0x{:04x}, needs 0x{REQUIRED_CAPS:04x}; failed checks: {}",
            tier_root.display(),
            self.mask,
            failed.join(", ")
        ))
    }
}

/// Probe tier `rank` at `tier_root` and fail unless the required bits are
/// present (the mount-time entry point).
pub fn probe_tier(rank: usize, tier_root: &Path) -> Result<TierCaps> {
    let caps = probe_caps(tier_root)?;
    caps.require(rank, tier_root)?;
    Ok(caps)
}

/// Run every check on `tier_root` and report the mask without enforcing the
/// required set (REPROBE reports caps even for a degraded tier).
///
/// Errors: the environmental errno (EROFS, EACCES, EIO, ENOSPC, ...) when the
/// probe could not run, ETIMEDOUT when the tier took longer than
/// [`PROBE_BUDGET`].
pub fn probe_caps(tier_root: &Path) -> Result<TierCaps> {
    probe_caps_with_budget(tier_root, PROBE_BUDGET)
}

/// [`probe_caps`] with an explicit time limit.
pub fn probe_caps_with_budget(tier_root: &Path, budget: Duration) -> Result<TierCaps> {
    // The probe runs on its own thread so that a lower filesystem stuck in a
    // syscall (a hung network mount) cannot hold the mount past the budget;
    // such a thread is abandoned and finishes (and cleans up) on its own.
    let (tx, rx) = mpsc::channel();
    let root: PathBuf = tier_root.to_path_buf();
    std::thread::Builder::new()
        .name("smoothfs-probe".into())
        .spawn(move || {
            let _ = tx.send(run_probe(&root));
        })
        .map_err(|e| Error::io("spawn probe thread", e))?;
    match rx.recv_timeout(budget) {
        Ok(r) => r,
        Err(_) => Err(err!(
            libc::ETIMEDOUT,
            "capability probe of tier '{}' took longer than {} ms",
            tier_root.display(),
            budget.as_millis()
        )),
    }
}

fn run_probe(tier_root: &Path) -> Result<TierCaps> {
    let internal = open_internal_dir(tier_root)?;
    remove_leftover_probe_dirs(&internal, tier_root)?;
    let name = format!("{PROBE_DIR_PREFIX}{:016x}", rand::random::<u64>());
    let ctx = format!("'{}/.smoothfs/{name}'", tier_root.display());
    rustix::fs::mkdirat(&internal, name.as_str(), Mode::from_raw_mode(0o700))
        .map_err(|e| env_err(format!("create probe directory {ctx}"), e))?;
    let result = rustix::fs::openat(
        &internal,
        name.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| env_err(format!("open probe directory {ctx}"), e))
    .and_then(|dir| run_checks(&dir, &ctx));
    let cleanup =
        remove_tree_at(internal.as_fd(), &name).map_err(|e| env_err(format!("remove {ctx}"), e));
    let caps = result?;
    cleanup?;
    Ok(caps)
}

/// Remove `probe-*` directories left by a crashed probe (S1.3 item 1).
pub fn remove_leftover_probe_dirs(internal: &OwnedFd, tier_root: &Path) -> Result<()> {
    for name in list_dir(internal.as_fd())
        .map_err(|e| env_err(format!("list '{}/.smoothfs'", tier_root.display()), e))?
    {
        if name.starts_with(PROBE_DIR_PREFIX) {
            remove_tree_at(internal.as_fd(), &name).map_err(|e| {
                env_err(
                    format!("remove leftover '{}/.smoothfs/{name}'", tier_root.display()),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<String>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let d = rustix::fs::Dir::read_from(&fd)?;
    let mut out = Vec::new();
    for entry in d {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    Ok(out)
}

/// Remove `name` under `dir` recursively without following symlinks.
fn remove_tree_at(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    for child in list_dir(sub.as_fd())? {
        remove_tree_at(sub.as_fd(), &child)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Errnos that mean "the probe could not run here", not "the filesystem
/// lacks the feature" (S1.3 item 3).
fn is_environmental(e: Errno) -> bool {
    matches!(
        e,
        Errno::ROFS | Errno::ACCESS | Errno::IO | Errno::NOSPC | Errno::DQUOT
    )
}

fn env_err(ctx: String, e: Errno) -> Error {
    Error::io(ctx, std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Why one check did not pass.
enum CheckError {
    /// The call failed with this errno.
    Sys(Errno, &'static str),
    /// The calls worked but the result was wrong.
    Wrong(String),
}

impl From<Errno> for CheckError {
    fn from(e: Errno) -> Self {
        CheckError::Sys(e, "")
    }
}

type Check = fn(BorrowedFd<'_>) -> std::result::Result<(), CheckError>;

/// Which checks run, in order; required ones first so an unusable tier is
/// diagnosed even if an optional check is slow.
const CHECKS: [(u32, Check); 13] = [
    (caps::XATTR_USER, check_xattr_user),
    (caps::XATTR_TRUSTED, check_xattr_trusted),
    (caps::RENAME_ATOMIC, check_rename_atomic),
    (caps::HARDLINK, check_hardlink),
    (caps::MMAP_COHERENT, check_mmap_coherent),
    (caps::FSYNC_DURABLE, check_fsync_durable),
    (caps::XATTR_SECURITY, check_xattr_security),
    (caps::POSIX_ACL, check_posix_acl),
    (caps::DIRECT_IO, check_direct_io),
    (caps::SPARSE_SEEK, check_sparse_seek),
    (caps::INODE_GENERATION, check_inode_generation),
    (caps::REFLINK, check_reflink),
    (caps::COPY_FILE_RANGE, check_copy_file_range),
];

fn run_checks(dir: &OwnedFd, ctx: &str) -> Result<TierCaps> {
    let mut caps = TierCaps::default();
    for (bit, check) in CHECKS {
        let name = cap_name(bit);
        match check(dir.as_fd()) {
            Ok(()) => caps.mask |= bit,
            Err(CheckError::Sys(e, step)) => {
                // EACCES from an optional check (an LSM refusing security.*
                // for instance) only clears that bit; for required checks
                // and for the other environmental errnos the probe as a
                // whole cannot be trusted.
                let required = bit & REQUIRED_CAPS != 0;
                if is_environmental(e) && (required || e != Errno::ACCESS) {
                    let step = if step.is_empty() {
                        String::new()
                    } else {
                        format!(" ({step})")
                    };
                    return Err(env_err(
                        format!("capability check {name}{step} in {ctx}"),
                        e,
                    ));
                }
                let detail = if step.is_empty() {
                    errno_text(e)
                } else {
                    format!("{step}: {}", errno_text(e))
                };
                caps.failed.push(FailedCheck {
                    bit,
                    name,
                    errno: e.raw_os_error(),
                    detail,
                });
            }
            Err(CheckError::Wrong(detail)) => caps.failed.push(FailedCheck {
                bit,
                name,
                errno: 0,
                detail,
            }),
        }
    }
    Ok(caps)
}

fn errno_text(e: Errno) -> String {
    if e == Errno::NOTTY {
        return "ENOTTY".to_string();
    }
    let name = crate::error::errno_name(e.raw_os_error());
    if name == "EUNKNOWN" {
        format!("errno {}", e.raw_os_error())
    } else {
        name.to_string()
    }
}

trait Step<T> {
    fn step(self, what: &'static str) -> std::result::Result<T, CheckError>;
}

impl<T> Step<T> for rustix::io::Result<T> {
    fn step(self, what: &'static str) -> std::result::Result<T, CheckError> {
        self.map_err(|e| CheckError::Sys(e, what))
    }
}

fn create(dir: BorrowedFd<'_>, name: &str) -> std::result::Result<OwnedFd, CheckError> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .step("create")
}

fn write_all_at(
    fd: BorrowedFd<'_>,
    data: &[u8],
    offset: u64,
) -> std::result::Result<(), CheckError> {
    let mut done = 0;
    while done < data.len() {
        let n = rustix::io::pwrite(fd, &data[done..], offset + done as u64).step("pwrite")?;
        if n == 0 {
            return Err(CheckError::Wrong("short write".into()));
        }
        done += n;
    }
    Ok(())
}

fn read_at(
    fd: BorrowedFd<'_>,
    len: usize,
    offset: u64,
) -> std::result::Result<Vec<u8>, CheckError> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = rustix::io::pread(fd, &mut buf[done..], offset + done as u64).step("pread")?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

fn xattr_round_trip(
    dir: BorrowedFd<'_>,
    file: &str,
    name: &str,
) -> std::result::Result<(), CheckError> {
    let fd = create(dir, file)?;
    let value = b"smoothfs-probe";
    rustix::fs::fsetxattr(&fd, name, value, XattrFlags::CREATE).step("setxattr")?;
    let mut buf = [0u8; 64];
    let n = rustix::fs::fgetxattr(&fd, name, &mut buf[..]).step("getxattr")?;
    if &buf[..n] != value {
        return Err(CheckError::Wrong("getxattr returned other bytes".into()));
    }
    let mut list = vec![0u8; 4096];
    let n = rustix::fs::flistxattr(&fd, &mut list[..]).step("listxattr")?;
    if !list[..n].split(|b| *b == 0).any(|n| n == name.as_bytes()) {
        return Err(CheckError::Wrong(
            "listxattr does not show the attribute".into(),
        ));
    }
    rustix::fs::fremovexattr(&fd, name).step("removexattr")?;
    match rustix::fs::fgetxattr(&fd, name, &mut buf[..]) {
        Err(Errno::NODATA) => Ok(()),
        Ok(_) => Err(CheckError::Wrong(
            "attribute still present after removexattr".into(),
        )),
        Err(e) => Err(CheckError::Sys(e, "getxattr after remove")),
    }
}

fn check_xattr_user(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    xattr_round_trip(dir, "xattr-user", "user.smoothfs.probe")
}

fn check_xattr_trusted(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    xattr_round_trip(dir, "xattr-trusted", "trusted.smoothfs.probe")
}

fn check_xattr_security(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    xattr_round_trip(dir, "xattr-security", "security.smoothfs.probe")
}

/// `system.posix_acl_access` value layout (linux/posix_acl_xattr.h): a
/// little-endian u32 version (2), then 8-byte entries {u16 tag, u16 perm,
/// u32 id}, sorted by tag then id.
pub mod acl {
    pub const VERSION: u32 = 2;
    pub const USER_OBJ: u16 = 0x01;
    pub const USER: u16 = 0x02;
    pub const GROUP_OBJ: u16 = 0x04;
    pub const GROUP: u16 = 0x08;
    pub const MASK: u16 = 0x10;
    pub const OTHER: u16 = 0x20;
    pub const UNDEFINED_ID: u32 = u32::MAX;

    /// One ACL entry (tag, perm, id).
    pub type Entry = (u16, u16, u32);

    pub fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 8 * entries.len());
        v.extend_from_slice(&VERSION.to_le_bytes());
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> Option<Vec<Entry>> {
        let (head, rest) = bytes.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*head) != VERSION || rest.len() % 8 != 0 {
            return None;
        }
        Some(
            rest.chunks_exact(8)
                .map(|c| {
                    (
                        u16::from_le_bytes([c[0], c[1]]),
                        u16::from_le_bytes([c[2], c[3]]),
                        u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                    )
                })
                .collect(),
        )
    }
}

fn check_posix_acl(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    let fd = create(dir, "acl")?;
    let entries: [acl::Entry; 5] = [
        (acl::USER_OBJ, 6, acl::UNDEFINED_ID),
        (acl::USER, 4, 65534),
        (acl::GROUP_OBJ, 4, acl::UNDEFINED_ID),
        (acl::MASK, 4, acl::UNDEFINED_ID),
        (acl::OTHER, 0, acl::UNDEFINED_ID),
    ];
    rustix::fs::fsetxattr(
        &fd,
        "system.posix_acl_access",
        &acl::encode(&entries),
        XattrFlags::empty(),
    )
    .step("setxattr")?;
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::fgetxattr(&fd, "system.posix_acl_access", &mut buf[..]).step("getxattr")?;
    let got = acl::decode(&buf[..n])
        .ok_or_else(|| CheckError::Wrong("unreadable ACL read back".into()))?;
    if got.contains(&(acl::USER, 4, 65534)) {
        Ok(())
    } else {
        Err(CheckError::Wrong(
            "named-user ACL entry not read back".into(),
        ))
    }
}

fn check_rename_atomic(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    let a = create(dir, "rename-a")?;
    write_all_at(a.as_fd(), b"A", 0)?;
    let b = create(dir, "rename-b")?;
    write_all_at(b.as_fd(), b"B", 0)?;
    match rustix::fs::renameat_with(dir, "rename-a", dir, "rename-b", RenameFlags::NOREPLACE) {
        Err(Errno::EXIST) => {}
        Ok(()) => {
            return Err(CheckError::Wrong(
                "RENAME_NOREPLACE replaced an existing target".into(),
            ));
        }
        Err(e) => return Err(CheckError::Sys(e, "RENAME_NOREPLACE")),
    }
    rustix::fs::renameat_with(dir, "rename-a", dir, "rename-b", RenameFlags::EXCHANGE)
        .step("RENAME_EXCHANGE")?;
    let fd = rustix::fs::openat(
        dir,
        "rename-a",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .step("open")?;
    if read_at(fd.as_fd(), 1, 0)? != b"B" {
        return Err(CheckError::Wrong(
            "RENAME_EXCHANGE did not swap the names".into(),
        ));
    }
    Ok(())
}

fn check_hardlink(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    drop(create(dir, "link-1")?);
    rustix::fs::linkat(dir, "link-1", dir, "link-2", AtFlags::empty()).step("linkat")?;
    for name in ["link-1", "link-2"] {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).step("stat")?;
        if st.st_nlink != 2 {
            return Err(CheckError::Wrong(format!(
                "st_nlink of {name} is {}, not 2",
                st.st_nlink
            )));
        }
    }
    Ok(())
}

fn check_mmap_coherent(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    const LEN: usize = 4096;
    let fd = create(dir, "mmap")?;
    rustix::fs::ftruncate(&fd, LEN as u64).step("ftruncate")?;
    write_all_at(fd.as_fd(), b"written-by-write", 0)?;
    // SAFETY: a fresh shared mapping of LEN bytes of a file we own and have
    // sized to LEN; it is only accessed through `map` below and unmapped
    // before returning. No other code maps this file.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            LEN,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .step("mmap")?;
    // SAFETY: ptr is a valid, writable mapping of LEN bytes until munmap.
    let map = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), LEN) };
    let seen = map[..16] == *b"written-by-write";
    map[100..116].copy_from_slice(b"stored-via-mmap!");
    // SAFETY: same mapping as above.
    let synced = unsafe { rustix::mm::msync(ptr, LEN, rustix::mm::MsyncFlags::SYNC) };
    // SAFETY: unmapping the mapping created above; `map` is not used after.
    let unmapped = unsafe { rustix::mm::munmap(ptr, LEN) };
    synced.step("msync")?;
    unmapped.step("munmap")?;
    if !seen {
        return Err(CheckError::Wrong(
            "write() data not visible through the mapping".into(),
        ));
    }
    if read_at(fd.as_fd(), 16, 100)? != b"stored-via-mmap!" {
        return Err(CheckError::Wrong(
            "mapping store not visible to read()".into(),
        ));
    }
    Ok(())
}

/// A 4096-byte slice aligned to 4096 inside `buf` (which must be 8192 long).
fn aligned_4k(buf: &mut [u8]) -> &mut [u8] {
    let off = buf.as_ptr().align_offset(4096);
    &mut buf[off..off + 4096]
}

fn check_direct_io(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    let fd = rustix::fs::openat(
        dir,
        "direct",
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .step("open O_DIRECT")?;
    let mut wbuf = vec![0u8; 8192];
    let w = aligned_4k(&mut wbuf);
    for (i, b) in w.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let n = rustix::io::pwrite(&fd, w, 0).step("O_DIRECT write")?;
    if n != 4096 {
        return Err(CheckError::Wrong(format!("O_DIRECT write returned {n}")));
    }
    let mut rbuf = vec![0u8; 8192];
    let r = aligned_4k(&mut rbuf);
    let n = rustix::io::pread(&fd, &mut *r, 0).step("O_DIRECT read")?;
    if n != 4096 || r != aligned_4k(&mut wbuf) {
        return Err(CheckError::Wrong(
            "O_DIRECT read returned other data".into(),
        ));
    }
    Ok(())
}

fn check_fsync_durable(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    let fd = create(dir, "fsync")?;
    write_all_at(fd.as_fd(), b"durable", 0)?;
    rustix::fs::fsync(&fd).step("fsync")?;
    rustix::fs::fdatasync(&fd).step("fdatasync")?;
    rustix::fs::fsync(dir).step("directory fsync")?;
    Ok(())
}

fn check_sparse_seek(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    const HOLE: u64 = 1 << 20;
    let fd = create(dir, "sparse")?;
    write_all_at(fd.as_fd(), &[0xa5; 4096], HOLE)?;
    let data = rustix::fs::seek(&fd, SeekFrom::Data(0)).step("SEEK_DATA")?;
    let hole = rustix::fs::seek(&fd, SeekFrom::Hole(0)).step("SEEK_HOLE")?;
    if data == 0 || hole != 0 {
        return Err(CheckError::Wrong(format!(
            "SEEK_DATA={data} SEEK_HOLE={hole} for a 1 MiB leading hole"
        )));
    }
    Ok(())
}

/// `FS_IOC_GETVERSION` = `_IOR('v', 1, long)`.
const FS_IOC_GETVERSION: libc::c_ulong =
    0x8000_0000 | ((size_of::<libc::c_long>() as libc::c_ulong) << 16) | (0x76 << 8) | 1;

fn check_inode_generation(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    use std::os::fd::AsRawFd;
    let fd = create(dir, "generation")?;
    let mut generation: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one `long` through the pointer, which
    // points at a live local of that type; fd is open for the whole call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETVERSION as _,
            &mut generation as *mut libc::c_long,
        )
    };
    if rc < 0 {
        return Err(CheckError::Sys(
            Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO),
            "ioctl",
        ));
    }
    Ok(())
}

fn check_reflink(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    let src = create(dir, "clone-src")?;
    write_all_at(src.as_fd(), &[0x5a; 65536], 0)?;
    let dst = create(dir, "clone-dst")?;
    rustix::fs::ioctl_ficlone(&dst, &src).step("FICLONE")?;
    if read_at(dst.as_fd(), 65536, 0)? != [0x5a; 65536] {
        return Err(CheckError::Wrong("FICLONE target has other data".into()));
    }
    Ok(())
}

fn check_copy_file_range(dir: BorrowedFd<'_>) -> std::result::Result<(), CheckError> {
    let src = create(dir, "cfr-src")?;
    write_all_at(src.as_fd(), b"copied-by-copy_file_range", 0)?;
    let dst = create(dir, "cfr-dst")?;
    let mut off_in = 0u64;
    let mut off_out = 0u64;
    let n = rustix::fs::copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), 25)
        .step("copy_file_range")?;
    if n != 25 || read_at(dst.as_fd(), 25, 0)? != b"copied-by-copy_file_range" {
        return Err(CheckError::Wrong(format!(
            "copy_file_range copied {n} bytes or other data"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_mask_is_the_named_bits() {
        let named = caps::XATTR_USER
            | caps::XATTR_TRUSTED
            | caps::RENAME_ATOMIC
            | caps::HARDLINK
            | caps::MMAP_COHERENT
            | caps::FSYNC_DURABLE;
        assert_eq!(named, REQUIRED_CAPS);
        assert_eq!(
            cap_names(REQUIRED_CAPS),
            [
                "xattr_user",
                "xattr_trusted",
                "rename_atomic",
                "hardlink",
                "mmap_coherent",
                "fsync_durable"
            ]
        );
    }

    #[test]
    fn getversion_ioctl_number() {
        assert_eq!(FS_IOC_GETVERSION, 0x8008_7601);
    }

    #[test]
    fn acl_codec_round_trip() {
        let e = vec![
            (acl::USER_OBJ, 6, acl::UNDEFINED_ID),
            (acl::USER, 4, 65534),
            (acl::OTHER, 0, acl::UNDEFINED_ID),
        ];
        let bytes = acl::encode(&e);
        assert_eq!(bytes.len(), 4 + 24);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(acl::decode(&bytes).unwrap(), e);
        assert!(acl::decode(&bytes[..5]).is_none());
        assert!(acl::decode(&[1, 0, 0, 0]).is_none());
    }

    #[test]
    fn require_message_names_everything() {
        let c = TierCaps {
            mask: 0x171,
            failed: vec![FailedCheck {
                bit: caps::XATTR_TRUSTED,
                name: "xattr_trusted",
                errno: libc::EOPNOTSUPP,
                detail: "setxattr: EOPNOTSUPP".into(),
            }],
        };
        let e = c.require(3, Path::new("/t3")).unwrap_err();
        assert_eq!(e.errno, libc::EOPNOTSUPP);
        for s in ["tier 3", "/t3", "0x0171", "0x0173", "xattr_trusted"] {
            assert!(e.msg.contains(s), "{s} not in {}", e.msg);
        }
        assert!(
            TierCaps {
                mask: 0xffff,
                failed: vec![]
            }
            .require(0, Path::new("/t"))
            .is_ok()
        );
    }
}
