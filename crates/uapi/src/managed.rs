//! Managed pools: systemd `.mount` units for smoothfs pools (SPEC S21).
//!
//! This module validates pool names and tier lists, derives the mountpoint
//! and the systemd unit name, renders the unit, and creates/destroys it with
//! rollback. It owns nothing but the unit file (and a mountpoint it made
//! itself); tier data is never touched.
//!
//! `systemctl` and the "is this path a mount point" decision are behind the
//! [`SystemctlRunner`] and [`MountPointProbe`] traits so tests can script
//! them; [`Systemctl`] and [`MountInfoProbe`] are the real implementations.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

/// Where mountpoints go unless a base is given (S21.1 item 3).
pub const DEFAULT_MOUNT_BASE: &str = "/mnt/smoothfs";
/// Where unit files go (S21.2).
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// The mount type in units and fstab.
pub const FS_TYPE: &str = "fuse.smoothfs";

/// Errors of the managed-pool helpers. Each validation rule has its own
/// variant so callers (and tests) can tell which rule refused the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagedError {
    #[error("invalid pool name '{0}': must match ^[a-z0-9][a-z0-9._-]{{0,62}}$")]
    InvalidName(String),
    #[error("no tiers given")]
    NoTiers,
    #[error("tier path '{}' is not absolute", .0.display())]
    RelativeTier(PathBuf),
    #[error("tier path {0:?} contains a newline")]
    TierHasNewline(PathBuf),
    #[error("tier path {0:?} contains a NUL byte")]
    TierHasNul(PathBuf),
    #[error("tier path '{}' contains ','", .0.display())]
    TierHasComma(PathBuf),
    #[error("tier path '{}' contains ':'", .0.display())]
    TierHasColon(PathBuf),
    #[error("tier path '{}' does not exist", .0.display())]
    TierMissing(PathBuf),
    #[error("tier path '{}' is not a directory", .0.display())]
    TierNotDirectory(PathBuf),
    #[error("tier path '{}' is listed twice", .0.display())]
    DuplicateTier(PathBuf),
    #[error("tier path '{}' is inside tier path '{}'", .inner.display(), .outer.display())]
    NestedTier { inner: PathBuf, outer: PathBuf },
    #[error("cannot derive a unit name from '{}': {reason}", .path.display())]
    BadUnitPath { path: PathBuf, reason: &'static str },
    #[error("unit file '{}' already exists", .0.display())]
    UnitExists(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("systemctl {args} failed ({status}): {stderr}")]
    Systemctl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("unit file '{}' is not a smoothfs unit we can read: {reason}", .path.display())]
    BadUnit { path: PathBuf, reason: String },
}

impl ManagedError {
    /// The errno this error maps to on the control socket / CLI exit.
    pub fn errno(&self) -> i32 {
        match self {
            ManagedError::TierMissing(_) => libc::ENOENT,
            ManagedError::TierNotDirectory(_) => libc::ENOTDIR,
            ManagedError::UnitExists(_) => libc::EEXIST,
            ManagedError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ManagedError::Systemctl { .. } => libc::EIO,
            _ => libc::EINVAL,
        }
    }

    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ManagedError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, ManagedError>;

// ---------------------------------------------------------------------------
// Validation (S21.1)

/// `^[a-z0-9][a-z0-9._-]{0,62}$`
pub fn validate_pool_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = b[1.min(b.len())..]
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && b.len() <= 63 {
        Ok(())
    } else {
        Err(ManagedError::InvalidName(name.to_string()))
    }
}

/// Check a tier list rule by rule in the S21.1 order, stopping at the first
/// rule that fails.
pub fn validate_tiers(tiers: &[PathBuf]) -> Result<()> {
    if tiers.is_empty() {
        return Err(ManagedError::NoTiers);
    }
    if let Some(t) = tiers.iter().find(|t| !t.is_absolute()) {
        return Err(ManagedError::RelativeTier(t.clone()));
    }
    let has = |t: &PathBuf, c: u8| t.as_os_str().as_bytes().contains(&c);
    for t in tiers {
        if has(t, b'\n') {
            return Err(ManagedError::TierHasNewline(t.clone()));
        }
        if has(t, 0) {
            return Err(ManagedError::TierHasNul(t.clone()));
        }
        if has(t, b',') {
            return Err(ManagedError::TierHasComma(t.clone()));
        }
        if has(t, b':') {
            return Err(ManagedError::TierHasColon(t.clone()));
        }
    }
    for t in tiers {
        if std::fs::metadata(t).is_err() {
            return Err(ManagedError::TierMissing(t.clone()));
        }
    }
    for t in tiers {
        if !std::fs::metadata(t).is_ok_and(|m| m.is_dir()) {
            return Err(ManagedError::TierNotDirectory(t.clone()));
        }
    }
    for (i, t) in tiers.iter().enumerate() {
        if tiers[..i].iter().any(|u| u.as_os_str() == t.as_os_str()) {
            return Err(ManagedError::DuplicateTier(t.clone()));
        }
    }
    // Lexically (as written, `/a` and `/a/` are the same place) and after
    // resolving symlinks.
    let resolved: Vec<PathBuf> = tiers
        .iter()
        .map(|t| std::fs::canonicalize(t).unwrap_or_else(|_| t.clone()))
        .collect();
    for (i, inner) in tiers.iter().enumerate() {
        for (j, outer) in tiers.iter().enumerate() {
            if i != j && (inner.starts_with(outer) || resolved[i].starts_with(&resolved[j])) {
                return Err(ManagedError::NestedTier {
                    inner: inner.clone(),
                    outer: outer.clone(),
                });
            }
        }
    }
    Ok(())
}

/// `<base>/<name>`, base `/mnt/smoothfs` unless given (S21.1 item 3).
pub fn mountpoint(base: Option<&Path>, name: &str) -> Result<PathBuf> {
    validate_pool_name(name)?;
    Ok(base.unwrap_or(Path::new(DEFAULT_MOUNT_BASE)).join(name))
}

// ---------------------------------------------------------------------------
// Unit names (S21.2)

/// systemd path escaping of the cleaned path plus `.mount`
/// (`systemd-escape --path --suffix=mount`).
pub fn unit_name_for_path(path: &Path) -> Result<String> {
    if !path.is_absolute() {
        return Err(ManagedError::BadUnitPath {
            path: path.to_path_buf(),
            reason: "not absolute",
        });
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.as_bytes()),
            Component::ParentDir => {
                return Err(ManagedError::BadUnitPath {
                    path: path.to_path_buf(),
                    reason: "contains '..'",
                });
            }
            Component::Prefix(_) => {
                return Err(ManagedError::BadUnitPath {
                    path: path.to_path_buf(),
                    reason: "has a prefix",
                });
            }
        }
    }
    if parts.is_empty() {
        return Ok("-.mount".to_string());
    }
    let joined = parts.join(&b'/');
    let mut out = String::with_capacity(joined.len() + 6);
    for (i, &b) in joined.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push_str(".mount");
    Ok(out)
}

// ---------------------------------------------------------------------------
// Mount-point probe

/// Decides whether a path is a mount point (S21.3 item 5).
pub trait MountPointProbe {
    fn is_mount_point(&self, path: &Path) -> bool;
}

/// The real probe: the path appears as a mount point in
/// `/proc/self/mountinfo`, or (when that cannot be read) its device differs
/// from its parent's.
#[derive(Debug, Default, Clone, Copy)]
pub struct MountInfoProbe;

impl MountPointProbe for MountInfoProbe {
    fn is_mount_point(&self, path: &Path) -> bool {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
            return text
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|mp| unescape_mountinfo(mp) == real);
        }
        let (Ok(md), Some(parent)) = (std::fs::metadata(&real), real.parent()) else {
            return real == Path::new("/");
        };
        std::fs::metadata(parent).is_ok_and(|p| p.dev() != md.dev() || p.ino() == md.ino())
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&out)))
}

// ---------------------------------------------------------------------------
// Unit content (S21.3)

/// systemd expands `%` specifiers in these settings; a literal `%` is `%%`.
fn spec_escape(s: &str) -> String {
    s.replace('%', "%%")
}

fn spec_unescape(s: &str) -> String {
    s.replace("%%", "%")
}

/// A path value in a space-separated list setting (RequiresMountsFor=):
/// quoted when it contains whitespace or quotes.
fn list_path(p: &Path) -> String {
    let s = spec_escape(&p.to_string_lossy());
    if s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

fn tiers_option(tiers: &[PathBuf]) -> String {
    tiers
        .iter()
        .map(|t| t.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Render the `.mount` unit for a pool (S21.3). Validates name and tiers.
pub fn render_mount_unit(
    name: &str,
    uuid: &Uuid,
    tiers: &[PathBuf],
    mountpoint: &Path,
    probe: &dyn MountPointProbe,
) -> Result<String> {
    validate_pool_name(name)?;
    validate_tiers(tiers)?;
    let mut u = String::new();
    u.push_str(&format!(
        "# smoothfs pool '{name}'. Generated by smoothfs; change it with `smoothfs pool`, not by hand.\n"
    ));
    u.push_str("[Unit]\n");
    u.push_str(&format!("Description=smoothfs pool {name}\n"));
    u.push_str("Documentation=man:smoothfs(8)\n");
    u.push_str("After=local-fs-pre.target\n");
    u.push_str("Wants=local-fs-pre.target\n");
    u.push_str("# Tiers, in rank order: a tier that is a mount point needs its mount unit, a plain directory needs the mounts holding it.\n");
    for t in tiers {
        if probe.is_mount_point(t) {
            let unit = unit_name_for_path(t)?;
            u.push_str(&format!(
                "Requires={}\nAfter={}\n",
                spec_escape(&unit),
                spec_escape(&unit)
            ));
        } else {
            u.push_str(&format!("RequiresMountsFor={}\n", list_path(t)));
        }
    }
    u.push_str("\n[Mount]\n");
    u.push_str(&format!("What=smoothfs:{name}\n"));
    u.push_str(&format!(
        "Where={}\n",
        spec_escape(&mountpoint.to_string_lossy())
    ));
    u.push_str(&format!("Type={FS_TYPE}\n"));
    u.push_str(&format!(
        "Options={}\n",
        spec_escape(&format!(
            "pool={name},uuid={},tiers={}",
            uuid.hyphenated(),
            tiers_option(tiers)
        ))
    ));
    u.push_str("\n[Install]\nWantedBy=local-fs.target\n");
    Ok(u)
}

// ---------------------------------------------------------------------------
// systemctl

/// What one `systemctl` invocation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemctlOutput {
    /// Exit status (-1 when killed by a signal).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `systemctl <args>` (S21.4 item 3).
pub trait SystemctlRunner {
    fn run(&self, args: &[&str]) -> std::io::Result<SystemctlOutput>;
}

/// Runs the real `systemctl` binary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Systemctl;

impl SystemctlRunner for Systemctl {
    fn run(&self, args: &[&str]) -> std::io::Result<SystemctlOutput> {
        let out = Command::new("systemctl").args(args).output()?;
        Ok(SystemctlOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn systemctl(runner: &dyn SystemctlRunner, args: &[&str]) -> Result<()> {
    let joined = args.join(" ");
    match runner.run(args) {
        Ok(o) if o.status == 0 => Ok(()),
        Ok(o) => Err(ManagedError::Systemctl {
            args: joined,
            status: format!("exit status {}", o.status),
            stderr: o.stderr.trim().to_string(),
        }),
        Err(e) => Err(ManagedError::Systemctl {
            args: joined,
            status: "not run".into(),
            stderr: e.to_string(),
        }),
    }
}

/// `systemctl is-active <unit>` output ("active", "inactive", "failed", ...).
pub fn unit_state(runner: &dyn SystemctlRunner, unit: &str) -> String {
    match runner.run(&["is-active", unit]) {
        Ok(o) if !o.stdout.trim().is_empty() => o.stdout.trim().to_string(),
        _ => "unknown".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Create / destroy / list (S21.4)

/// Where and how units are managed.
pub struct Systemd<'a> {
    /// Normally [`DEFAULT_UNIT_DIR`].
    pub unit_dir: PathBuf,
    pub runner: &'a dyn SystemctlRunner,
    pub probe: &'a dyn MountPointProbe,
}

impl Systemd<'static> {
    /// The host's systemd: `/etc/systemd/system`, real systemctl and probe.
    pub fn host() -> Systemd<'static> {
        Systemd {
            unit_dir: PathBuf::from(DEFAULT_UNIT_DIR),
            runner: &Systemctl,
            probe: &MountInfoProbe,
        }
    }
}

/// Input of [`create_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePool {
    pub name: String,
    /// None: generate a random one.
    pub uuid: Option<Uuid>,
    pub tiers: Vec<PathBuf>,
    /// None: [`DEFAULT_MOUNT_BASE`].
    pub mount_base: Option<PathBuf>,
}

/// A managed pool as described by its unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUnit {
    pub name: String,
    pub uuid: Uuid,
    pub mountpoint: PathBuf,
    pub tiers: Vec<PathBuf>,
    pub unit_name: String,
    pub unit_path: PathBuf,
}

/// Create a pool's unit and start it (S21.4 item 1). On failure everything
/// this call made is undone (see the module doc of S21.4).
pub fn create_pool(sys: &Systemd<'_>, req: &CreatePool) -> Result<PoolUnit> {
    validate_pool_name(&req.name)?;
    validate_tiers(&req.tiers)?;
    let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
    let mnt = mountpoint(req.mount_base.as_deref(), &req.name)?;
    let unit_name = unit_name_for_path(&mnt)?;
    let unit_path = sys.unit_dir.join(&unit_name);
    if std::fs::symlink_metadata(&unit_path).is_ok() {
        return Err(ManagedError::UnitExists(unit_path));
    }
    let content = render_mount_unit(&req.name, &uuid, &req.tiers, &mnt, sys.probe)?;

    let created_dirs = create_dir_all_tracked(&mnt)?;
    let mut unit_written = false;
    let mut reloaded = false;
    let result = (|| {
        write_unit_atomically(&sys.unit_dir, &unit_path, &content)?;
        unit_written = true;
        systemctl(sys.runner, &["daemon-reload"])?;
        reloaded = true;
        systemctl(sys.runner, &["enable", "--now", &unit_name])
    })();
    if let Err(e) = result {
        // Rollback is best effort; the error reported is the one that made
        // the create fail.
        if unit_written {
            let _ = std::fs::remove_file(&unit_path);
        }
        if reloaded {
            let _ = systemctl(sys.runner, &["daemon-reload"]);
        }
        for d in created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        return Err(e);
    }
    Ok(PoolUnit {
        name: req.name.clone(),
        uuid,
        mountpoint: mnt,
        tiers: req.tiers.clone(),
        unit_name,
        unit_path,
    })
}

/// Create `dir` and missing parents with mode 0755; return the directories
/// this call created, outermost first.
fn create_dir_all_tracked(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if std::fs::symlink_metadata(p).is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        match std::fs::create_dir(&d) {
            Ok(()) => {
                // Mode 0755 whatever the umask.
                if let Err(e) = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
                {
                    created.push(d.clone());
                    rollback_dirs(&created);
                    return Err(ManagedError::io(
                        format!("chmod mountpoint '{}'", d.display()),
                        e,
                    ));
                }
                created.push(d);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                rollback_dirs(&created);
                return Err(ManagedError::io(
                    format!("create mountpoint '{}'", d.display()),
                    e,
                ));
            }
        }
    }
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err(ManagedError::io(
            format!("mountpoint '{}'", dir.display()),
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    Ok(created)
}

fn rollback_dirs(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// Write the unit (0644) to a temporary name, fsync, then link it into
/// place so an existing unit is never replaced, and fsync the directory.
fn write_unit_atomically(unit_dir: &Path, unit_path: &Path, content: &str) -> Result<()> {
    let tmp = unit_dir.join(format!(
        ".smoothfs-unit.{}.{:08x}.tmp",
        std::process::id(),
        rand_u32()
    ));
    let write = || -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| ManagedError::io(format!("create '{}'", tmp.display()), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| ManagedError::io(format!("chmod '{}'", tmp.display()), e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| ManagedError::io(format!("write '{}'", tmp.display()), e))?;
        f.sync_all()
            .map_err(|e| ManagedError::io(format!("fsync '{}'", tmp.display()), e))?;
        std::fs::hard_link(&tmp, unit_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ManagedError::UnitExists(unit_path.to_path_buf())
            } else {
                ManagedError::io(format!("install '{}'", unit_path.display()), e)
            }
        })
    };
    let r = write();
    let _ = std::fs::remove_file(&tmp);
    r?;
    std::fs::File::open(unit_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ManagedError::io(format!("fsync '{}'", unit_dir.display()), e))
}

fn rand_u32() -> u32 {
    // Uniqueness of the temporary name only; v4 UUIDs are random.
    let b = Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Stop, disable and remove a pool's unit (S21.4 item 2). Every step runs;
/// the first error is returned. The mountpoint and tier data are left alone.
///
/// The unit is found by pool name among the smoothfs units in the unit
/// directory; when there is none, the name derived from the default
/// mountpoint (or `mount_base`) is used.
pub fn destroy_pool(sys: &Systemd<'_>, name: &str, mount_base: Option<&Path>) -> Result<()> {
    validate_pool_name(name)?;
    let found = list_pools(&sys.unit_dir).ok().and_then(|pools| {
        pools
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| (p.unit_name, p.unit_path))
    });
    let (unit_name, unit_path) = match found {
        Some(x) => x,
        None => {
            let unit = unit_name_for_path(&mountpoint(mount_base, name)?)?;
            let path = sys.unit_dir.join(&unit);
            (unit, path)
        }
    };
    let mut first: Option<ManagedError> = None;
    if let Err(e) = systemctl(sys.runner, &["disable", "--now", &unit_name]) {
        first.get_or_insert(e);
    }
    match std::fs::remove_file(&unit_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            first.get_or_insert(ManagedError::io(
                format!("remove '{}'", unit_path.display()),
                e,
            ));
        }
    }
    if let Err(e) = systemctl(sys.runner, &["daemon-reload"]) {
        first.get_or_insert(e);
    }
    first.map_or(Ok(()), Err)
}

/// Every smoothfs pool unit (`Type=fuse.smoothfs`, `What=smoothfs:<name>`)
/// in `unit_dir`, sorted by name. Other units are skipped; a smoothfs unit
/// that cannot be parsed is an error.
pub fn list_pools(unit_dir: &Path) -> Result<Vec<PoolUnit>> {
    let rd = match std::fs::read_dir(unit_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ManagedError::io(
                format!("read '{}'", unit_dir.display()),
                e,
            ));
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| ManagedError::io(format!("read '{}'", unit_dir.display()), e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !file_name.ends_with(".mount") || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ManagedError::io(format!("read '{}'", path.display()), e))?;
        if let Some(p) = parse_unit(&text, &file_name, &path)? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Parse one unit file; `Ok(None)` when it is not a smoothfs unit.
pub fn parse_unit(text: &str, unit_name: &str, path: &Path) -> Result<Option<PoolUnit>> {
    let mut section = "";
    let (mut what, mut where_, mut ty, mut options) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[Mount]" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(spec_unescape(v.trim()));
            match k.trim() {
                "What" => what = v,
                "Where" => where_ = v,
                "Type" => ty = v,
                "Options" => options = v,
                _ => {}
            }
        }
    }
    if ty.as_deref() != Some(FS_TYPE)
        || !what.as_deref().is_some_and(|w| w.starts_with("smoothfs:"))
    {
        return Ok(None);
    }
    let bad = |reason: &str| ManagedError::BadUnit {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let where_ = where_.ok_or_else(|| bad("no Where="))?;
    let options = options.ok_or_else(|| bad("no Options="))?;
    let (mut name, mut uuid, mut tiers) = (None, None, None);
    for item in options.split(',') {
        match item.split_once('=') {
            Some(("pool", v)) => name = Some(v.to_string()),
            Some(("uuid", v)) => {
                uuid = Some(Uuid::try_parse(v).map_err(|_| bad("bad uuid= in Options="))?)
            }
            Some(("tiers", v)) => {
                tiers = Some(
                    v.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect::<Vec<_>>(),
                )
            }
            _ => {}
        }
    }
    Ok(Some(PoolUnit {
        name: name.ok_or_else(|| bad("no pool= in Options="))?,
        uuid: uuid.ok_or_else(|| bad("no uuid= in Options="))?,
        mountpoint: PathBuf::from(where_),
        tiers: tiers.ok_or_else(|| bad("no tiers= in Options="))?,
        unit_name: unit_name.to_string(),
        unit_path: path.to_path_buf(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(
            unescape_mountinfo("/srv/tier\\040a"),
            PathBuf::from("/srv/tier a")
        );
        assert_eq!(unescape_mountinfo("/a\\134b"), PathBuf::from("/a\\b"));
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
        assert_eq!(
            unescape_mountinfo("/trail\\04"),
            PathBuf::from("/trail\\04")
        );
    }

    #[test]
    fn list_path_quotes_spaces() {
        assert_eq!(list_path(Path::new("/a/b")), "/a/b");
        assert_eq!(list_path(Path::new("/srv/tier a")), "\"/srv/tier a\"");
        assert_eq!(list_path(Path::new("/100%")), "/100%%");
    }
}
