//! Mount options (SPEC S1.1): the `-o` string given to `smoothfs mount` and
//! the `mount.fuse.smoothfs` helper.
//!
//! Parsing is split in two so each half can be tested on its own:
//! - [`OptionSpec::parse`] is pure string work (keys, ranges, the pool name,
//!   the UUID, splitting `tiers=`); it never touches the filesystem.
//! - [`OptionSpec::resolve`] checks the tier paths and the mountpoint on the
//!   real filesystem (exists, is a directory, distinct, not nested).
//!
//! [`MountOptions::parse`] does both. This module never opens a tier for
//! anything but `stat`/`realpath`; the tier roots are opened later by the
//! mount sequence (S1.9).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use crate::err;
use crate::error::{Error, Result};

/// Most tiers a pool can have (S29.1).
pub const MAX_TIERS: usize = 8;
/// Default near-full threshold in percent (S29.1).
pub const DEFAULT_FULL_PCT: u8 = 98;
/// Default heat drain period (S29.1).
pub const DEFAULT_HEAT_INTERVAL_MS: u32 = 30_000;
/// Default kernel entry/attr cache lifetime (S29.1).
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_secs(1);
/// Directory holding the control socket, pool record and lock (S29.1).
pub const DEFAULT_RUN_DIR: &str = "/run/smoothfs";

/// `passthrough=` (S1.1 item 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassthroughMode {
    /// Use FUSE passthrough when the kernel and privileges allow it.
    #[default]
    Auto,
    /// Fail the mount with EOPNOTSUPP when passthrough is unavailable.
    On,
    /// Every handle is mediated.
    Off,
}

/// `standby_listing=` (S2.2 item 6, [P3]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StandbyListing {
    #[default]
    Off,
    Index,
}

/// Generic mount flags applied to the FUSE mount itself (S1.1 item 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountFlag {
    Ro,
    Rw,
    Nosuid,
    Nodev,
    Noexec,
    Noatime,
    Relatime,
    Nodiratime,
}

impl MountFlag {
    fn from_key(key: &str) -> Option<MountFlag> {
        Some(match key {
            "ro" => MountFlag::Ro,
            "rw" => MountFlag::Rw,
            "nosuid" => MountFlag::Nosuid,
            "nodev" => MountFlag::Nodev,
            "noexec" => MountFlag::Noexec,
            "noatime" => MountFlag::Noatime,
            "relatime" => MountFlag::Relatime,
            "nodiratime" => MountFlag::Nodiratime,
            _ => return None,
        })
    }

    /// The option spelling, as given to the kernel / fuser.
    pub fn as_str(self) -> &'static str {
        match self {
            MountFlag::Ro => "ro",
            MountFlag::Rw => "rw",
            MountFlag::Nosuid => "nosuid",
            MountFlag::Nodev => "nodev",
            MountFlag::Noexec => "noexec",
            MountFlag::Noatime => "noatime",
            MountFlag::Relatime => "relatime",
            MountFlag::Nodiratime => "nodiratime",
        }
    }
}

/// Options accepted and ignored (fstab / systemd / util-linux bookkeeping).
fn is_ignored_option(key: &str, has_value: bool) -> bool {
    if key.starts_with("x-") || key == "comment" {
        return true;
    }
    !has_value
        && matches!(
            key,
            "defaults"
                | "auto"
                | "noauto"
                | "nofail"
                | "_netdev"
                | "user"
                | "users"
                | "nouser"
                | "owner"
                | "group"
        )
}

/// The tunables of S1.1 item 7 with their defaults (S29.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    pub passthrough: PassthroughMode,
    pub full_pct: u8,
    /// `metadata_mask=` as given (None = all tiers). Use
    /// [`MountOptions::metadata_active_tier_mask`] for the effective value.
    pub metadata_mask: Option<u32>,
    pub write_staging: bool,
    pub heat_interval_ms: u32,
    pub entry_timeout: Duration,
    pub attr_timeout: Duration,
    /// FUSE worker threads; 0 = number of CPUs.
    pub threads: u32,
    /// Control socket; None = `/run/smoothfs/<uuid>.sock`.
    pub socket: Option<PathBuf>,
    pub standby_listing: StandbyListing,
    pub meta_rebuild: bool,
    pub mediated_comm: Vec<String>,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            passthrough: PassthroughMode::Auto,
            full_pct: DEFAULT_FULL_PCT,
            metadata_mask: None,
            write_staging: false,
            heat_interval_ms: DEFAULT_HEAT_INTERVAL_MS,
            entry_timeout: DEFAULT_CACHE_TIMEOUT,
            attr_timeout: DEFAULT_CACHE_TIMEOUT,
            threads: 0,
            socket: None,
            standby_listing: StandbyListing::Off,
            meta_rebuild: false,
            mediated_comm: Vec::new(),
        }
    }
}

/// The result of the pure string half of option parsing: every value is
/// syntactically valid, but tier paths have not been looked at yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSpec {
    pub pool: String,
    /// Canonical form is `uuid.hyphenated()` (lowercase, dashed).
    pub uuid: Uuid,
    /// Tier paths exactly as written (absolute, empty components dropped).
    pub tiers: Vec<PathBuf>,
    pub tunables: Tunables,
    /// Generic flags for the FUSE mount, in the order given.
    pub flags: Vec<MountFlag>,
}

/// Fully validated mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// The source string given by the caller; used as the FUSE fsname.
    pub source: String,
    /// The mountpoint with symlinks resolved.
    pub mountpoint: PathBuf,
    pub pool: String,
    pub uuid: Uuid,
    /// Tier paths as written in `tiers=`, in rank order.
    pub tier_args: Vec<PathBuf>,
    /// Tier paths with symlinks resolved, in rank order.
    pub tiers: Vec<PathBuf>,
    pub tunables: Tunables,
    pub flags: Vec<MountFlag>,
}

impl MountOptions {
    /// Parse and validate `-o opts` for a mount of `source` on `mountpoint`.
    pub fn parse(source: &str, mountpoint: &Path, opts: &str) -> Result<MountOptions> {
        OptionSpec::parse(opts)?.resolve(source, mountpoint)
    }

    /// `uuid` in canonical form (lowercase, dashed).
    pub fn uuid_string(&self) -> String {
        self.uuid.hyphenated().to_string()
    }

    /// The control socket path (`socket=` or `/run/smoothfs/<uuid>.sock`).
    pub fn socket_path(&self) -> PathBuf {
        match &self.tunables.socket {
            Some(p) => p.clone(),
            None => Path::new(DEFAULT_RUN_DIR).join(format!("{}.sock", self.uuid_string())),
        }
    }

    /// Effective initial `metadata_active_tier_mask` (S2.2 item 1): bits for
    /// ranks the pool does not have are dropped and bit 0 is always set.
    pub fn metadata_active_tier_mask(&self) -> u32 {
        let all = all_tiers_mask(self.tiers.len());
        match self.tunables.metadata_mask {
            None => all,
            Some(m) => (m | 1) & all,
        }
    }

    /// FUSE worker threads with 0 replaced by the number of CPUs.
    pub fn effective_threads(&self) -> u32 {
        if self.tunables.threads != 0 {
            return self.tunables.threads;
        }
        std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(1))
            .unwrap_or(1)
    }

    pub fn read_only(&self) -> bool {
        // The last of ro/rw wins, as with mount(8).
        self.flags
            .iter()
            .rev()
            .find(|f| matches!(f, MountFlag::Ro | MountFlag::Rw))
            .is_some_and(|f| *f == MountFlag::Ro)
    }
}

fn all_tiers_mask(n: usize) -> u32 {
    if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
}

impl OptionSpec {
    /// Pure parse of the `-o` string. Never touches the filesystem.
    pub fn parse(opts: &str) -> Result<OptionSpec> {
        let mut pool: Option<&str> = None;
        let mut uuid: Option<&str> = None;
        let mut tiers: Option<&str> = None;
        let mut t = Tunables::default();
        let mut flags = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();

        for item in opts.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            if is_ignored_option(key, value.is_some()) {
                continue;
            }
            if value.is_none()
                && let Some(flag) = MountFlag::from_key(key)
            {
                flags.push(flag);
                continue;
            }
            if !is_value_key(key) {
                return Err(err!(libc::EINVAL, "unknown mount option '{item}'"));
            }
            let Some(value) = value else {
                return Err(err!(
                    libc::EINVAL,
                    "mount option '{key}' needs a value ({key}=...)"
                ));
            };
            // A repeated smoothfs key is ambiguous (which pool? which uuid?),
            // so it is refused rather than resolved by position.
            if !seen.insert(key) {
                return Err(err!(
                    libc::EINVAL,
                    "mount option '{key}' given more than once"
                ));
            }
            match key {
                "pool" => pool = Some(value),
                "uuid" => uuid = Some(value),
                "tiers" => tiers = Some(value),
                "passthrough" => {
                    t.passthrough = match value {
                        "auto" => PassthroughMode::Auto,
                        "on" => PassthroughMode::On,
                        "off" => PassthroughMode::Off,
                        _ => return Err(bad_value(key, value, "auto, on or off")),
                    }
                }
                "full_pct" => t.full_pct = parse_ranged(key, value, 1, 100)? as u8,
                "metadata_mask" => t.metadata_mask = Some(parse_mask(value)?),
                "write_staging" => t.write_staging = parse_bool01(key, value)?,
                "heat_interval_ms" => {
                    t.heat_interval_ms = parse_ranged(key, value, 1000, 3_600_000)? as u32
                }
                "entry_timeout" => {
                    t.entry_timeout = Duration::from_secs(parse_ranged(key, value, 0, 3600)?)
                }
                "attr_timeout" => {
                    t.attr_timeout = Duration::from_secs(parse_ranged(key, value, 0, 3600)?)
                }
                "threads" => t.threads = parse_ranged(key, value, 0, 256)? as u32,
                "socket" => {
                    let p = Path::new(value);
                    if !p.is_absolute() {
                        return Err(bad_value(key, value, "an absolute path"));
                    }
                    t.socket = Some(p.to_path_buf());
                }
                "standby_listing" => {
                    t.standby_listing = match value {
                        "off" => StandbyListing::Off,
                        "index" => StandbyListing::Index,
                        _ => return Err(bad_value(key, value, "off or index")),
                    }
                }
                "meta_rebuild" => t.meta_rebuild = parse_bool01(key, value)?,
                "mediated_comm" => t.mediated_comm = parse_comm_list(value)?,
                // is_value_key() and this match list the same keys.
                _ => return Err(err!(libc::EINVAL, "unknown mount option '{item}'")),
            }
        }

        let missing: Vec<&str> = [("pool", pool), ("uuid", uuid), ("tiers", tiers)]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
        let (Some(pool), Some(uuid), Some(tiers)) = (pool, uuid, tiers) else {
            return Err(err!(
                libc::EINVAL,
                "missing required mount option(s): {}",
                missing.join(", ")
            ));
        };

        validate_pool_name(pool)?;
        let uuid = parse_pool_uuid(uuid)?;
        let tiers = split_tiers(tiers)?;
        Ok(OptionSpec {
            pool: pool.to_string(),
            uuid,
            tiers,
            tunables: t,
            flags,
        })
    }

    /// Filesystem half: resolve and check tiers and mountpoint (S1.1 items 5, 6).
    pub fn resolve(self, source: &str, mountpoint: &Path) -> Result<MountOptions> {
        let mut resolved: Vec<PathBuf> = Vec::with_capacity(self.tiers.len());
        let mut ids: Vec<(u64, u64)> = Vec::with_capacity(self.tiers.len());
        for (rank, tier) in self.tiers.iter().enumerate() {
            let real = std::fs::canonicalize(tier)
                .map_err(|e| Error::io(format!("tier {rank} '{}'", tier.display()), e))?;
            let md = std::fs::metadata(&real)
                .map_err(|e| Error::io(format!("tier {rank} '{}'", tier.display()), e))?;
            if !md.is_dir() {
                return Err(err!(
                    libc::ENOTDIR,
                    "tier {rank} '{}' is not a directory",
                    tier.display()
                ));
            }
            let id = (md.dev(), md.ino());
            if let Some(other) = ids.iter().position(|x| *x == id) {
                return Err(err!(
                    libc::EINVAL,
                    "tiers {other} '{}' and {rank} '{}' are the same directory",
                    self.tiers[other].display(),
                    tier.display()
                ));
            }
            ids.push(id);
            resolved.push(real);
        }
        check_nesting(&self.tiers, &resolved)?;

        let mnt = std::fs::canonicalize(mountpoint)
            .map_err(|e| Error::io(format!("mountpoint '{}'", mountpoint.display()), e))?;
        let md = std::fs::metadata(&mnt)
            .map_err(|e| Error::io(format!("mountpoint '{}'", mountpoint.display()), e))?;
        if !md.is_dir() {
            return Err(err!(
                libc::ENOTDIR,
                "mountpoint '{}' is not a directory",
                mountpoint.display()
            ));
        }
        check_mountpoint_placement(&mnt, &self.tiers, &resolved)?;

        Ok(MountOptions {
            source: source.to_string(),
            mountpoint: mnt,
            pool: self.pool,
            uuid: self.uuid,
            tier_args: self.tiers,
            tiers: resolved,
            tunables: self.tunables,
            flags: self.flags,
        })
    }
}

fn is_value_key(key: &str) -> bool {
    matches!(
        key,
        "pool"
            | "uuid"
            | "tiers"
            | "passthrough"
            | "full_pct"
            | "metadata_mask"
            | "write_staging"
            | "heat_interval_ms"
            | "entry_timeout"
            | "attr_timeout"
            | "threads"
            | "socket"
            | "standby_listing"
            | "meta_rebuild"
            | "mediated_comm"
    )
}

fn bad_value(key: &str, value: &str, want: &str) -> Error {
    err!(libc::EINVAL, "mount option {key}={value}: expected {want}")
}

fn parse_ranged(key: &str, value: &str, lo: u64, hi: u64) -> Result<u64> {
    let range = format!("an integer in {lo}..={hi}");
    // u64::from_str accepts a leading '+'; the option syntax does not.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_value(key, value, &range));
    }
    match value.parse::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(bad_value(key, value, &range)),
    }
}

fn parse_bool01(key: &str, value: &str) -> Result<bool> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(bad_value(key, value, "0 or 1")),
    }
}

/// `metadata_mask=`: hex `0x…` or decimal, fitting in 32 bits.
pub fn parse_mask(value: &str) -> Result<u32> {
    let parsed = if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            None
        } else {
            u32::from_str_radix(hex, 16).ok()
        }
    } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u32>().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| {
        bad_value(
            "metadata_mask",
            value,
            "a hex (0x...) or decimal 32-bit mask",
        )
    })
}

/// `mediated_comm=`: process names separated by `:`; empty entries dropped.
/// A name longer than the kernel's 15-byte comm could never match.
fn parse_comm_list(value: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in value.split(':').filter(|s| !s.is_empty()) {
        if name.len() > 15 {
            return Err(bad_value(
                "mediated_comm",
                value,
                "process names of at most 15 bytes",
            ));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// `^[a-z0-9][a-z0-9._-]{0,62}$` (S1.1 item 3).
pub fn validate_pool_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = b
        .iter()
        .skip(1)
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && b.len() <= 63 {
        Ok(())
    } else {
        Err(err!(
            libc::EINVAL,
            "invalid pool name '{name}': must match ^[a-z0-9][a-z0-9._-]{{0,62}}$"
        ))
    }
}

/// `uuid=` (S1.1 item 4): 36-character dashed or 32 hex digits, any case,
/// not nil.
pub fn parse_pool_uuid(value: &str) -> Result<Uuid> {
    let shape_ok = match value.len() {
        32 => value.bytes().all(|b| b.is_ascii_hexdigit()),
        36 => value.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        }),
        _ => false,
    };
    let uuid = if shape_ok {
        Uuid::try_parse(value).ok()
    } else {
        None
    };
    match uuid {
        Some(u) if !u.is_nil() => Ok(u),
        Some(_) => Err(err!(
            libc::EINVAL,
            "uuid={value}: the nil UUID is not a pool identity"
        )),
        None => Err(err!(
            libc::EINVAL,
            "uuid={value}: expected 36-character dashed form or 32 hex digits"
        )),
    }
}

/// Split `tiers=` (S1.1 item 5): `:`-separated, empty components ignored,
/// 1..=8 absolute paths.
pub fn split_tiers(value: &str) -> Result<Vec<PathBuf>> {
    let parts: Vec<&str> = value.split(':').filter(|s| !s.is_empty()).collect();
    if parts.is_empty() {
        return Err(err!(libc::EINVAL, "tiers= lists no tier"));
    }
    if parts.len() > MAX_TIERS {
        return Err(err!(
            libc::E2BIG,
            "tiers= lists {} tiers; at most {MAX_TIERS} are allowed",
            parts.len()
        ));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (rank, p) in parts.iter().enumerate() {
        if p.starts_with('@') {
            return Err(err!(
                libc::EOPNOTSUPP,
                "tier {rank} '{p}': object-storage tiers are not supported yet"
            ));
        }
        if !p.starts_with('/') {
            return Err(err!(
                libc::EINVAL,
                "tier {rank} '{p}' is not an absolute path"
            ));
        }
        out.push(PathBuf::from(p));
    }
    Ok(out)
}

/// `inner` is `outer` or below it (component-wise, no filesystem access).
fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

/// S1.1 item 6, tiers against each other (on resolved paths; same-directory
/// pairs were already refused by device/inode).
fn check_nesting(args: &[PathBuf], resolved: &[PathBuf]) -> Result<()> {
    for (i, a) in resolved.iter().enumerate() {
        for (j, b) in resolved.iter().enumerate() {
            if i != j && is_within(a, b) {
                return Err(err!(
                    libc::EINVAL,
                    "tier {i} '{}' is inside tier {j} '{}'",
                    args[i].display(),
                    args[j].display()
                ));
            }
        }
    }
    Ok(())
}

/// S1.1 item 6, mountpoint against tiers (on resolved paths).
fn check_mountpoint_placement(mnt: &Path, args: &[PathBuf], resolved: &[PathBuf]) -> Result<()> {
    for (rank, tier) in resolved.iter().enumerate() {
        if is_within(mnt, tier) {
            return Err(err!(
                libc::EINVAL,
                "mountpoint '{}' is inside tier {rank} '{}'",
                mnt.display(),
                args[rank].display()
            ));
        }
        if is_within(tier, mnt) {
            return Err(err!(
                libc::EINVAL,
                "tier {rank} '{}' is inside the mountpoint '{}'",
                args[rank].display(),
                mnt.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0f3c2a6e-9b1d-4c8e-a2f0-5d6b7c8e9fa1";

    fn spec(opts: &str) -> Result<OptionSpec> {
        OptionSpec::parse(opts)
    }

    fn base(extra: &str) -> String {
        format!("pool=tank,uuid={U},tiers=/a:/b{extra}")
    }

    #[test]
    fn minimal_options_parse_with_defaults() {
        let s = spec(&base("")).unwrap();
        assert_eq!(s.pool, "tank");
        assert_eq!(s.uuid.hyphenated().to_string(), U);
        assert_eq!(s.tiers, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(s.tunables, Tunables::default());
        assert!(s.flags.is_empty());
    }

    #[test]
    fn missing_keys_are_all_named() {
        let e = spec("tiers=/a").unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(
            e.msg.contains("pool") && e.msg.contains("uuid"),
            "{}",
            e.msg
        );
        let e = spec("").unwrap_err();
        assert!(
            e.msg.contains("pool") && e.msg.contains("uuid") && e.msg.contains("tiers"),
            "{}",
            e.msg
        );
    }

    // S1.1/A2
    #[test]
    fn a2_omitting_uuid_pool_or_tiers_is_einval() {
        let e = spec("pool=tank,tiers=/a").unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.msg.contains("uuid"));
        let e = spec(&format!("uuid={U},tiers=/a")).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.msg.contains("pool"));
        let e = spec(&format!("pool=tank,uuid={U}")).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.msg.contains("tiers"));
    }

    // S1.1/A3
    #[test]
    fn a3_bad_pool_names_are_einval() {
        for name in [
            "Tank",
            &"a".repeat(64),
            "",
            "-x",
            ".x",
            "_x",
            "a b",
            "a/b",
            "a:b",
        ] {
            let e = spec(&format!("pool={name},uuid={U},tiers=/a")).unwrap_err();
            assert_eq!(e.errno, libc::EINVAL, "{name}");
        }
        for name in [
            "tank",
            "a",
            "0",
            "pool.v2",
            "abc_123",
            "fast-and-slow",
            &"a".repeat(63),
        ] {
            assert!(
                spec(&format!("pool={name},uuid={U},tiers=/a")).is_ok(),
                "{name}"
            );
        }
    }

    // S1.1/A4 (parse part)
    #[test]
    fn a4_uuid_forms() {
        for bad in [
            "not-a-uuid",
            "00000000-0000-0000-0000-000000000000",
            "00000000000000000000000000000000",
            "",
            "{0f3c2a6e-9b1d-4c8e-a2f0-5d6b7c8e9fa1}",
            "urn:uuid:0f3c2a6e-9b1d-4c8e-a2f0-5d6b7c8e9fa1",
            "0f3c2a6e9b1d-4c8e-a2f0-5d6b7c8e9fa1",
            "0f3c2a6e-9b1d-4c8e-a2f0-5d6b7c8e9fa",
            "0f3c2a6e-9b1d-4c8e-a2f0-5d6b7c8e9fag",
        ] {
            let e = spec(&format!("pool=p,uuid={bad},tiers=/a")).unwrap_err();
            assert_eq!(e.errno, libc::EINVAL, "{bad}");
        }
        let upper = U.to_ascii_uppercase();
        let s = spec(&format!("pool=p,uuid={upper},tiers=/a")).unwrap();
        assert_eq!(s.uuid.hyphenated().to_string(), U);
        let simple = U.replace('-', "").to_ascii_uppercase();
        let s = spec(&format!("pool=p,uuid={simple},tiers=/a")).unwrap();
        assert_eq!(s.uuid.hyphenated().to_string(), U);
    }

    #[test]
    fn tiers_split_and_count() {
        assert_eq!(split_tiers("/a::/b").unwrap().len(), 2);
        assert_eq!(split_tiers(":/a:").unwrap().len(), 1);
        assert_eq!(split_tiers("").unwrap_err().errno, libc::EINVAL);
        assert_eq!(split_tiers(":::").unwrap_err().errno, libc::EINVAL);
        let eight: Vec<String> = (0..8).map(|i| format!("/t{i}")).collect();
        assert_eq!(split_tiers(&eight.join(":")).unwrap().len(), 8);
        let nine: Vec<String> = (0..9).map(|i| format!("/t{i}")).collect();
        assert_eq!(split_tiers(&nine.join(":")).unwrap_err().errno, libc::E2BIG);
        let e = split_tiers("/a:rel/b").unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.msg.contains("rel/b"));
        assert_eq!(split_tiers("@s3").unwrap_err().errno, libc::EOPNOTSUPP);
    }

    // S1.1/A7 (parse part)
    #[test]
    fn a7_unknown_option_named_and_ignored_ones_accepted() {
        let e = spec(&base(",foo=1")).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.msg.contains("foo"));
        let e = spec(&base(",bar")).unwrap_err();
        assert!(e.msg.contains("bar"));
        let s = spec(&base(",nofail,x-systemd.automount,_netdev")).unwrap();
        assert!(s.flags.is_empty());
        let s = spec(&base(
            ",defaults,auto,noauto,user,users,nouser,owner,group,comment=systemd.foo,x-gvfs-hide",
        ))
        .unwrap();
        assert!(s.flags.is_empty());
    }

    #[test]
    fn generic_flags_kept_in_order() {
        let s = spec(&base(
            ",ro,nosuid,nodev,noexec,noatime,relatime,nodiratime,rw",
        ))
        .unwrap();
        assert_eq!(
            s.flags,
            vec![
                MountFlag::Ro,
                MountFlag::Nosuid,
                MountFlag::Nodev,
                MountFlag::Noexec,
                MountFlag::Noatime,
                MountFlag::Relatime,
                MountFlag::Nodiratime,
                MountFlag::Rw
            ]
        );
        // A flag with a value is not that flag.
        assert_eq!(spec(&base(",ro=1")).unwrap_err().errno, libc::EINVAL);
        // Ignored words with values are not ignored.
        assert_eq!(spec(&base(",nofail=1")).unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn every_tunable_parses_at_its_bounds() {
        let s = spec(&base(
            ",passthrough=off,full_pct=1,metadata_mask=0x3,write_staging=1,heat_interval_ms=1000,\
             entry_timeout=0,attr_timeout=3600,threads=256,socket=/tmp/s.sock,standby_listing=index,\
             meta_rebuild=1,mediated_comm=smbd:tgtd::qemu",
        ))
        .unwrap();
        let t = &s.tunables;
        assert_eq!(t.passthrough, PassthroughMode::Off);
        assert_eq!(t.full_pct, 1);
        assert_eq!(t.metadata_mask, Some(3));
        assert!(t.write_staging);
        assert_eq!(t.heat_interval_ms, 1000);
        assert_eq!(t.entry_timeout, Duration::ZERO);
        assert_eq!(t.attr_timeout, Duration::from_secs(3600));
        assert_eq!(t.threads, 256);
        assert_eq!(t.socket.as_deref(), Some(Path::new("/tmp/s.sock")));
        assert_eq!(t.standby_listing, StandbyListing::Index);
        assert!(t.meta_rebuild);
        assert_eq!(t.mediated_comm, vec!["smbd", "tgtd", "qemu"]);

        let s = spec(&base(
            ",passthrough=on,full_pct=100,metadata_mask=5,heat_interval_ms=3600000",
        ))
        .unwrap();
        assert_eq!(s.tunables.passthrough, PassthroughMode::On);
        assert_eq!(s.tunables.full_pct, 100);
        assert_eq!(s.tunables.metadata_mask, Some(5));
        assert_eq!(s.tunables.heat_interval_ms, 3_600_000);
    }

    #[test]
    fn every_tunable_rejects_out_of_range() {
        for bad in [
            "passthrough=yes",
            "passthrough=",
            "full_pct=0",
            "full_pct=101",
            "full_pct=+5",
            "full_pct=-1",
            "full_pct=abc",
            "metadata_mask=",
            "metadata_mask=0x",
            "metadata_mask=0xg",
            "metadata_mask=0x100000000",
            "metadata_mask=-1",
            "write_staging=2",
            "write_staging=true",
            "heat_interval_ms=999",
            "heat_interval_ms=3600001",
            "entry_timeout=3601",
            "attr_timeout=-1",
            "threads=257",
            "socket=rel.sock",
            "socket=",
            "standby_listing=on",
            "meta_rebuild=yes",
            "mediated_comm=averyveryverylongname",
            "pool",
            "full_pct",
        ] {
            let e = spec(&base(&format!(",{bad}"))).unwrap_err();
            assert_eq!(e.errno, libc::EINVAL, "{bad}: {}", e.msg);
            let key = bad.split('=').next().unwrap_or(bad);
            assert!(e.msg.contains(key), "{bad}: {}", e.msg);
        }
    }

    #[test]
    fn repeated_key_is_refused() {
        let e = spec(&base(",pool=other")).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(e.msg.contains("pool"));
    }

    #[test]
    fn empty_option_items_are_skipped() {
        assert!(spec(&format!(",,pool=tank,,uuid={U},tiers=/a,")).is_ok());
    }

    #[test]
    fn mask_parsing() {
        assert_eq!(parse_mask("0x1F").unwrap(), 0x1f);
        assert_eq!(parse_mask("0X1f").unwrap(), 0x1f);
        assert_eq!(parse_mask("31").unwrap(), 31);
        assert!(parse_mask("0b11").is_err());
        assert!(parse_mask(" 3").is_err());
    }

    #[test]
    fn effective_mask_keeps_bit0_and_drops_absent_ranks() {
        let mk = |mask: Option<u32>, n: usize| MountOptions {
            source: "none".into(),
            mountpoint: "/m".into(),
            pool: "p".into(),
            uuid: Uuid::nil(),
            tier_args: vec![],
            tiers: (0..n).map(|i| PathBuf::from(format!("/t{i}"))).collect(),
            tunables: Tunables {
                metadata_mask: mask,
                ..Tunables::default()
            },
            flags: vec![],
        };
        assert_eq!(mk(None, 2).metadata_active_tier_mask(), 0x3);
        assert_eq!(mk(Some(0x2), 2).metadata_active_tier_mask(), 0x3);
        assert_eq!(mk(Some(0xff), 3).metadata_active_tier_mask(), 0x7);
        assert_eq!(mk(Some(0), 8).metadata_active_tier_mask(), 0x1);
        assert_eq!(mk(None, 8).metadata_active_tier_mask(), 0xff);
        let mut m = mk(None, 1);
        m.uuid = Uuid::try_parse(U).unwrap();
        assert_eq!(
            m.socket_path(),
            PathBuf::from(format!("/run/smoothfs/{U}.sock"))
        );
    }

    #[test]
    fn read_only_follows_last_ro_rw() {
        let s = spec(&base(",rw,ro")).unwrap();
        let m = MountOptions {
            source: String::new(),
            mountpoint: PathBuf::new(),
            pool: s.pool,
            uuid: s.uuid,
            tier_args: vec![],
            tiers: vec![],
            tunables: s.tunables,
            flags: s.flags,
        };
        assert!(m.read_only());
    }
}
